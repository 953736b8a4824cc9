//! Heap bytes per parked poll and per kept event, counted by a global
//! allocator that tracks the bytes live.
//!
//! ```text
//! cargo bench --bench memory                  # 100,000 and 1,000,000 parked
//! cargo bench --bench memory -- --quick       # 100,000 only
//! ```
//!
//! Polls are parked through the public service API (a `LongPollLayer` over a
//! `service_fn`, `call()`, the response future polled once), as a server
//! parks them; the figure is everything the layer, the hub and the store
//! keep for a parked poll, without the connection (hyper's buffers and the
//! socket are the load tool's business). Prints one JSON line per figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_longpoll::store::MemoryStore;
use tower_longpoll::{Event, Hub, LongPoll, LongPollLayer, ResponseFuture};

/// The system allocator, counting the bytes live and the allocations made.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// A global allocator is unsafe by its nature; it only forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

type InnerResult = Result<Response<Empty<Bytes>>, Infallible>;
type Inner = tower::util::ServiceFn<fn(Request<Empty<Bytes>>) -> Ready<InnerResult>>;
type Parked = ResponseFuture<Ready<InnerResult>>;

fn not_a_poll(_request: Request<Empty<Bytes>>) -> Ready<InnerResult> {
    ready(Ok(Response::new(Empty::new())))
}

fn service(hub: &Hub, max_per_id: usize) -> LongPoll<Inner> {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{id}")
        .timeout(Duration::from_secs(3600))
        .max_per_id(max_per_id)
        .max_parked(2_000_000)
        .build()
        .layer(tower::service_fn(not_a_poll as fn(_) -> _))
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Bytes per parked poll: `polls` parked on their own ids, or all on one.
fn parked(polls: usize, own_ids: bool) {
    // Room for every id: the default store keeps at most 1,000,000.
    let store = MemoryStore::builder().max_ids(2 * polls).build();
    let hub = Hub::builder().store(store).build();
    let mut service = service(&hub, polls);
    // The futures are held inline, as hyper holds them in a connection task;
    // the vector is allocated before the baseline.
    let mut held: Vec<Parked> = Vec::with_capacity(polls);
    let ids: Vec<String> = (0..polls)
        .map(|n| {
            if own_ids {
                format!("client-{n:07}")
            } else {
                "channel".to_owned()
            }
        })
        .collect();
    let before = live();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    for id in &ids {
        let request = Request::get(format!("/poll/{id}"))
            .body(Empty::new())
            .unwrap();
        let mut future = service.call(request);
        assert!(poll_once(&mut future).is_pending());
        held.push(future);
    }
    let took = started.elapsed();
    let bytes = live() - before;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    assert_eq!(hub.stats().parked, polls);
    println!(
        "{{\"figure\":\"parked_poll\",\"polls\":{polls},\"ids\":\"{}\",\"bytes_per_poll\":{:.1},\"allocations_per_poll\":{:.2},\"response_future_inline_bytes\":{},\"park_ns\":{:.0}}}",
        if own_ids { "own" } else { "one" },
        bytes as f64 / polls as f64,
        allocations as f64 / polls as f64,
        std::mem::size_of::<Parked>(),
        took.as_nanos() as f64 / polls as f64,
    );
    drop(held);
    assert_eq!(hub.stats().parked, 0);
}

/// Bytes per kept event beyond its body: `events` events of `size` bytes,
/// spread over `ids` ids.
fn kept(events: usize, ids: usize, size: usize) {
    let hub = Hub::new();
    let body = Bytes::from(vec![b'x'; size]);
    let names: Vec<String> = (0..ids).map(|n| format!("client-{n:07}")).collect();
    // The ids' logs are made first, so that the figure is the events' own.
    for id in &names {
        publish(&hub, id, Event::new(body.clone()));
    }
    let before = live();
    for n in 0..events {
        // A body of its own per event, as a publish from a request has.
        let data = Bytes::from(body.to_vec());
        publish(&hub, &names[n % ids], Event::new(data));
    }
    let bytes = live() - before;
    let stats = hub.stats();
    // Full logs dropped their oldest events: count what is kept now.
    let kept_now = stats.kept_events - ids;
    let per_event = bytes as f64 / kept_now as f64;
    println!(
        "{{\"figure\":\"kept_event\",\"events\":{kept_now},\"ids\":{ids},\"body_bytes\":{size},\"bytes_per_event\":{per_event:.1},\"overhead_per_event\":{:.1}}}",
        per_event - size as f64
    );
}

fn publish(hub: &Hub, id: &str, event: Event) {
    let mut future = Box::pin(hub.publish(id, event));
    for _ in 0..4 {
        if let Poll::Ready(result) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            result.expect("publish");
            return;
        }
    }
    panic!("the memory store publishes at once")
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    // `cargo test --benches` runs bench binaries with `--test`: keep it short.
    let test = std::env::args().any(|arg| arg == "--test");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let sizes: &[usize] = if test {
        &[1_000]
    } else if quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    for &polls in sizes {
        parked(polls, true);
        parked(polls, false);
    }
    let events = if test { 1_000 } else { 100_000 };
    kept(events, events / 50, 64);
    kept(events, events / 50, 1024);
}
