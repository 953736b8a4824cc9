//! In-process costs of the layer and the hub, with criterion.
//!
//! ```text
//! cargo bench --bench core                    # all of them
//! cargo bench --bench core -- fanout          # one group
//! ```
//!
//! Polls go through the public service API, as a server runs them: a
//! [`LongPollLayer`] over a `service_fn`, `call()` with an `http::Request`,
//! and the response future polled by hand with a no-op waker (a parked poll
//! returns `Pending` once, then is woken by a publish). Each figure is what
//! the layer costs on one core, without sockets; `docs/benchmarks.md` puts
//! them next to the socket figures of the load tool.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceExt};
use tower_longpoll::{Cursor, Event, Hub, LongPoll, LongPollLayer, ResponseFuture};

type Inner = tower::util::ServiceFn<fn(Request<Empty<Bytes>>) -> Ready<InnerResult>>;
type InnerResult = Result<Response<Empty<Bytes>>, Infallible>;
type Polls = LongPoll<Inner>;
type Parked = ResponseFuture<Ready<InnerResult>>;

fn not_a_poll(_request: Request<Empty<Bytes>>) -> Ready<InnerResult> {
    ready(Ok(Response::new(Empty::new())))
}

/// A layered service whose polls wait an hour: nothing times out during a
/// measurement, and no id limit gets in the way of a fan-out.
fn service(hub: &Hub) -> Polls {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{id}")
        .timeout(Duration::from_secs(3600))
        .max_per_id(1_000_000)
        .max_parked(2_000_000)
        .build()
        .layer(tower::service_fn(not_a_poll as fn(_) -> _))
}

/// A poll on `id`, after `since` when given (the bench never reads the
/// response bodies, so the delivery position does not move).
fn poll_request(id: &str, since: Option<Cursor>) -> Request<Empty<Bytes>> {
    let uri = match since {
        Some(cursor) => format!("/poll/{id}?since={cursor}"),
        None => format!("/poll/{id}"),
    };
    Request::get(uri).body(Empty::new()).unwrap()
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Parks a poll on `id`: calls the service and polls the future once.
fn park(service: &mut Polls, id: &str, since: Option<Cursor>) -> Parked {
    let mut future = service.call(poll_request(id, since));
    assert!(poll_once(&mut future).is_pending(), "the poll parks");
    future
}

/// Publishes on the in-memory store, which answers at once.
fn publish(hub: &Hub, id: &str, event: Event) -> Cursor {
    // The memory store appends at once; a publish that woke polls yields
    // once to let them answer first.
    let mut future = Box::pin(hub.publish(id, event));
    for _ in 0..4 {
        if let Poll::Ready(result) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return result.expect("publish");
        }
    }
    panic!("the memory store publishes at once")
}

fn answered(future: &mut Parked) {
    match poll_once(future) {
        Poll::Ready(Ok(response)) => assert_eq!(response.status(), 200),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("a woken poll has its response"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn publish_and_wake(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let body = Bytes::from_static(&[b'x'; 64]);
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));

    let hub = Hub::new();
    group.bench_function("no_poll", |b| {
        b.iter(|| publish(&hub, "nobody-waits", Event::new(body.clone())))
    });

    let hub = Hub::new();
    let mut polls = service(&hub);
    let last = Cell::new(None);
    group.bench_function("wakes_one_poll", |b| {
        b.iter_batched(
            || park(&mut polls, "one", last.get()),
            |mut parked| {
                last.set(Some(publish(&hub, "one", Event::new(body.clone()))));
                answered(&mut parked);
                parked
            },
            // One parked poll at a time: a publish wakes only it.
            BatchSize::PerIteration,
        )
    });

    // Park, then the client goes away: hyper drops the future.
    group.bench_function("park_and_cancel", |b| {
        b.iter(|| drop(park(&mut polls, "gone", None)))
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let body = Bytes::from_static(&[b'x'; 64]);
    let mut group = c.benchmark_group("fanout");
    group.sample_size(10);
    for waiters in [10_000usize, 100_000] {
        let hub = Hub::new();
        let mut polls = service(&hub);
        let last = Cell::new(None);
        group.throughput(Throughput::Elements(waiters as u64));
        // One publish, then every parked poll has its response ready.
        group.bench_function(format!("one_event_to_{waiters}"), |b| {
            b.iter_batched(
                || {
                    (0..waiters)
                        .map(|_| park(&mut polls, "channel", last.get()))
                        .collect::<Vec<_>>()
                },
                |mut parked| {
                    last.set(Some(publish(&hub, "channel", Event::new(body.clone()))));
                    for future in parked.iter_mut() {
                        answered(future);
                    }
                    parked
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// What the layer costs a request it does not answer, next to the same
/// service without it.
fn passthrough(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("passthrough");
    group.throughput(Throughput::Elements(1));

    let hub = Hub::new();
    let bare = tower::service_fn(not_a_poll as fn(_) -> _);
    let layered = service(&hub);
    group.bench_function("service_fn/bare", |b| {
        b.to_async(&rt)
            .iter(|| bare.oneshot(Request::get("/other/path").body(Empty::new()).unwrap()))
    });
    group.bench_function("service_fn/layered", |b| {
        b.to_async(&rt).iter(|| {
            layered
                .clone()
                .oneshot(Request::get("/other/path").body(Empty::new()).unwrap())
        })
    });

    let router = || axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let bare = router();
    let layered = router().layer(
        LongPollLayer::builder(hub.clone())
            .route("/poll/{id}")
            .build(),
    );
    let request = || Request::get("/").body(axum::body::Body::empty()).unwrap();
    group.bench_function("axum/bare", |b| {
        b.to_async(&rt).iter(|| bare.clone().oneshot(request()))
    });
    group.bench_function("axum/layered", |b| {
        b.to_async(&rt).iter(|| layered.clone().oneshot(request()))
    });
    group.finish();
}

criterion_group!(benches, publish_and_wake, fanout, passthrough);
criterion_main!(benches);
