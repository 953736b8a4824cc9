//! Clients that go away: the waiter leaves at once and nothing is consumed.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::{Conn, PATIENCE, TestServer, eventually, get, within};
use tower_longpoll::{Event, Hub, LongPollLayer};

fn layer(hub: &Hub) -> LongPollLayer {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build()
}

/// Waits for the parked count to reach `parked` and returns how long it took.
async fn time_to_parked(hub: &Hub, parked: usize) -> Duration {
    let started = Instant::now();
    eventually(format!("{parked} parked"), || hub.stats().parked == parked).await;
    started.elapsed()
}

#[tokio::test]
async fn a_poll_closed_with_fin_leaves_at_once_and_its_event_goes_to_the_next_poll() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/fin", &[]).await;
    server.parked(1).await;

    conn.fin().await;
    let left_after = time_to_parked(&hub, 0).await;
    assert!(
        left_after < Duration::from_millis(100),
        "left after {left_after:?}"
    );
    assert!(conn.closed_by_server().await);
    eventually("the cancellation is counted", || hub.stats().cancelled == 1).await;

    hub.publish("fin", Event::new("for the next poll"))
        .await
        .unwrap();
    let next = get(server.addr, "/poll/fin").await;
    assert_eq!(next.text(), "for the next poll");
}

#[tokio::test]
async fn a_poll_reset_with_rst_leaves_at_once_and_its_event_goes_to_the_next_poll() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/rst", &[]).await;
    server.parked(1).await;

    conn.reset();
    let left_after = time_to_parked(&hub, 0).await;
    assert!(
        left_after < Duration::from_millis(100),
        "left after {left_after:?}"
    );

    hub.publish("rst", Event::new("for the next poll"))
        .await
        .unwrap();
    let next = get(server.addr, "/poll/rst").await;
    assert_eq!(next.text(), "for the next poll");
    assert_eq!(
        hub.stats().delivered,
        1,
        "delivered once, to the second poll"
    );
}

#[tokio::test]
async fn a_poll_with_a_body_is_read_first_so_its_disconnect_is_seen() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send_with_body("GET", "/poll/body", &[], &[b'x'; 4096])
        .await;
    server.parked(1).await;
    conn.fin().await;
    let left_after = time_to_parked(&hub, 0).await;
    assert!(
        left_after < Duration::from_millis(100),
        "left after {left_after:?}"
    );
}

/// The client half-closes (FIN) at the moment the event is published, then
/// reads whatever the server still sends. The event must reach exactly one
/// of the two: that connection, or the next poll.
#[tokio::test]
async fn an_event_raced_against_a_fin_is_delivered_exactly_once() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let (mut on_first, mut on_next) = (0, 0);
    for round in 0..40 {
        let id = format!("race-{round}");
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", &format!("/poll/{id}"), &[]).await;
        server.parked(1).await;

        // Vary who goes first: the publish, the FIN, or the FIN by a few
        // scheduler turns.
        let publish = || {
            let hub = hub.clone();
            let id = id.clone();
            tokio::spawn(async move { hub.publish(&id, Event::new("raced")).await.unwrap() })
        };
        match round % 3 {
            0 => {
                let publish = publish();
                conn.fin().await;
                publish.await.unwrap();
            }
            1 => {
                conn.fin().await;
                publish().await.unwrap();
            }
            _ => {
                conn.fin().await;
                for _ in 0..round {
                    tokio::task::yield_now().await;
                }
                publish().await.unwrap();
            }
        }

        let first = within("the first connection to end", conn.read_response(false)).await;
        server.parked(0).await;
        let next = get(server.addr, &format!("/poll/{id}?timeout=0")).await;
        match first {
            Some(reply) => {
                assert_eq!(reply.text(), "raced");
                assert_eq!(
                    next.status,
                    StatusCode::NO_CONTENT,
                    "round {round}: delivered twice"
                );
                on_first += 1;
            }
            None => {
                assert_eq!(next.text(), "raced", "round {round}: lost");
                on_next += 1;
            }
        }
    }
    println!("raced 40 rounds: {on_first} to the closing connection, {on_next} to the next poll");
}

/// A client with a cursor loses nothing whatever happens to its connection.
#[tokio::test]
async fn an_event_raced_against_a_reset_is_there_for_the_cursor() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    for round in 0..20 {
        let id = format!("reset-{round}");
        let start = get(server.addr, &format!("/poll/{id}?timeout=0"))
            .await
            .cursor();
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", &format!("/poll/{id}?since={start}"), &[])
            .await;
        server.parked(1).await;
        let publish = {
            let hub = hub.clone();
            let id = id.clone();
            tokio::spawn(async move { hub.publish(&id, Event::new("raced")).await.unwrap() })
        };
        conn.reset();
        let cursor = publish.await.unwrap();
        server.parked(0).await;
        let next = get(server.addr, &format!("/poll/{id}?since={start}")).await;
        assert_eq!((next.text(), next.cursor()), ("raced", cursor.to_string()));
        let after = get(server.addr, &format!("/poll/{id}?since={cursor}&timeout=0")).await;
        assert_eq!(
            after.status,
            StatusCode::NO_CONTENT,
            "no duplicate after the cursor"
        );
    }
}

#[tokio::test]
async fn two_thousand_concurrent_polls_each_get_their_own_event() {
    const CLIENTS: usize = 2000;
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let addr = server.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await;
                conn.send("GET", &format!("/poll/client-{n}"), &[]).await;
                let reply = conn.response(false).await;
                (n, reply)
            })
        })
        .collect();
    eventually(format!("{CLIENTS} parked"), || {
        hub.stats().parked == CLIENTS
    })
    .await;
    let started = Instant::now();
    for n in 0..CLIENTS {
        hub.publish(format!("client-{n}"), Event::new(format!("event for {n}")))
            .await
            .unwrap();
    }
    for client in clients {
        let (n, reply) = tokio::time::timeout(PATIENCE, client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("event for {n}"));
    }
    println!("{CLIENTS} events delivered in {:?}", started.elapsed());
    assert_eq!(hub.stats().parked, 0);
    eventually("all deliveries counted", || {
        hub.stats().delivered == CLIENTS as u64
    })
    .await;
}
