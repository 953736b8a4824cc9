//! Slow and broken clients against the demo server, a real process: each
//! gets a timeout or a `4xx`, and the other clients are unaffected.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::chaos::rss_of;
use support::example::Example;
use support::metrics::{eventually_metric, metric};
use support::{Conn, get, request, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A normal client is served while the abuse goes on: a poll parks, a
/// publish answers it.
async fn others_are_served(addr: SocketAddr, id: &str) {
    let mut poll = Conn::connect(addr).await;
    poll.send("GET", &format!("/poll/{id}?since=0"), &[]).await;
    let mut publish = Conn::connect(addr).await;
    publish
        .send_with_body("POST", &format!("/publish/{id}"), &[], b"still here")
        .await;
    assert_eq!(publish.response(false).await.status, StatusCode::ACCEPTED);
    assert_eq!(poll.response(false).await.text(), "still here");
}

/// Reads until the server closes the connection; returns the bytes read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    within("the server to close the connection", async {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    all
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let demo = Example::start("demo", &["--header-timeout", "1"]).await;
    let mut slowloris = TcpStream::connect(demo.addr).await.unwrap();
    slowloris
        .write_all(b"GET /poll/slow HTTP/1.1\r\nHost: x\r\nX-Never: ends")
        .await
        .unwrap();
    let started = Instant::now();
    others_are_served(demo.addr, "during-slowloris").await;
    let answer = read_to_close(&mut slowloris).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_is_let_go() {
    let demo = Example::start("demo", &["--write-timeout", "1", "--max-per-id", "4"]).await;
    // 8 MiB of events, fetched in one batch by a client that reads nothing.
    let mut publisher = Conn::connect(demo.addr).await;
    for _ in 0..8 {
        publisher
            .send_with_body("POST", "/publish/hoarder", &[], &vec![b'x'; 1024 * 1024])
            .await;
        assert_eq!(publisher.response(false).await.status, StatusCode::ACCEPTED);
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(demo.addr).await.unwrap();
    stuck
        .write_all(b"GET /poll/hoarder?since=0&batch=8 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Other clients are served while that write is blocked.
    others_are_served(demo.addr, "during-stall").await;
    // The server gives up on the blocked write after --write-timeout (1 s)
    // without a byte read: its counter says so. Reading before then would
    // unblock the write, so the test waits for the counter, not a clock (on
    // a loaded machine the server may start writing late). What the client
    // can still read afterwards ends well short of 8 MiB.
    eventually_metric(demo.addr, "demo_stalled_writes_total", 1).await;
    let read = read_to_close(&mut stuck).await;
    assert!(read.len() < 8 * 1024 * 1024, "read {} bytes", read.len());
    assert!(String::from_utf8_lossy(&read[..12]).starts_with("HTTP/1.1 200"));
    eventually_metric(demo.addr, "longpoll_waiters", 0).await;
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn a_publish_body_that_trickles_gets_408() {
    let demo = Example::start("demo", &["--body-timeout", "1"]).await;
    let mut trickle = Conn::connect(demo.addr).await;
    trickle
        .send_with_body("POST", "/publish/drip", &[("content-length", "100")], b"")
        .await;
    trickle.send_raw(b"0123456789").await;
    others_are_served(demo.addr, "during-trickle").await;
    let reply = trickle.response(false).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert!(
        reply.text().contains("did not arrive within 1 s"),
        "{}",
        reply.text()
    );
    // Nothing was published.
    let check = get(demo.addr, "/poll/drip?since=0&timeout=0").await;
    assert_eq!(check.status, StatusCode::NO_CONTENT);
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn ten_mib_of_headers_get_431_and_the_server_carries_on() {
    let demo = Example::start("demo", &[]).await;
    let mut huge = TcpStream::connect(demo.addr).await.unwrap();
    let mut head = b"GET /poll/huge HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    // The server may stop reading (and close) long before all of it is sent.
    let _ = within("sending the headers", huge.write_all(&head)).await;
    let answer = read_to_close(&mut huge).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    others_are_served(demo.addr, "after-huge-headers").await;
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_ids_holds_memory_flat() {
    const MAX_IDS: usize = 2_000;
    const BURST: usize = 10_000;
    let demo = Example::start("demo", &["--max-ids", &MAX_IDS.to_string()]).await;
    let addr = demo.addr;
    // A client parked throughout: its id is never evicted for the newcomers.
    let mut vip = Conn::connect(addr).await;
    vip.send("GET", "/poll/vip?since=0&timeout=60", &[]).await;
    eventually_metric(addr, "longpoll_waiters", 1).await;

    // Every new id is published to and polled once, as fast as 16
    // connections go, twice over; the second burst must not grow memory.
    let burst = |round: usize| async move {
        let started = Instant::now();
        let lanes: Vec<_> = (0..16)
            .map(|lane| {
                tokio::spawn(async move {
                    let mut conn = Conn::connect(addr).await;
                    for n in (lane..BURST).step_by(16) {
                        let id = format!("flood-{round}-{n}");
                        conn.send_with_body("POST", &format!("/publish/{id}"), &[], b"x")
                            .await;
                        assert_eq!(conn.response(false).await.status, StatusCode::ACCEPTED);
                        conn.send("GET", &format!("/poll/{id}?since=0"), &[]).await;
                        assert_eq!(conn.response(false).await.text(), "x");
                    }
                })
            })
            .collect();
        for lane in lanes {
            lane.await.unwrap();
        }
        started.elapsed()
    };
    let first = burst(0).await;
    let rss_first = rss_of(demo.pid());
    let second = burst(1).await;
    let rss_second = rss_of(demo.pid());
    let metrics = request(addr, "GET", "/metrics", &[]).await;
    let ids = metric(metrics.text(), "longpoll_ids") as usize;
    println!(
        "{BURST} new ids in {first:?} ({:.0}/s), then {second:?}; {ids} ids kept; RSS {} -> {} MiB",
        BURST as f64 / first.as_secs_f64(),
        rss_first >> 20,
        rss_second >> 20
    );
    assert!(ids <= MAX_IDS + 31, "{ids} ids kept, the cap is {MAX_IDS}");
    assert!(
        rss_second <= rss_first + (16 << 20),
        "memory grew from {} to {} MiB",
        rss_first >> 20,
        rss_second >> 20
    );

    // The parked client was not evicted and still gets its event.
    let mut publish = Conn::connect(addr).await;
    publish
        .send_with_body("POST", "/publish/vip", &[], b"welcome")
        .await;
    assert_eq!(publish.response(false).await.status, StatusCode::ACCEPTED);
    let reply = within("the parked client", vip.response(false)).await;
    assert_eq!(reply.text(), "welcome");
    assert_eq!(reply.header("longpoll-gap"), None);
    assert_eq!(demo.terminate().await.code(), Some(0));
}
