//! `Hub::wait_for` behind a plain axum handler, over real sockets: a wait on
//! two ids ends with the first event of either, and a client that goes away
//! takes its waiters with it and consumes nothing.

mod support;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use support::{Conn, TestServer, eventually, get as get_path};
use tower_longpoll::store::ReadFrom;
use tower_longpoll::{Event, Hub, WaitLimits};

/// `GET /either/{a}/{b}`: the first event of `a` or `b`, or 204 after 20 s.
async fn either(State(hub): State<Hub>, Path((a, b)): Path<(String, String)>) -> Response {
    let wait = hub.wait_for(
        [
            (a.as_str(), ReadFrom::Delivered),
            (b.as_str(), ReadFrom::Delivered),
        ],
        1,
        WaitLimits::default(),
    );
    match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(Ok((index, read))) => {
            let stored = &read.events()[0];
            let id = [&a, &b][index];
            hub.store().commit(id, stored.cursor).await.unwrap();
            ([("x-id", id.clone())], stored.event.data().clone()).into_response()
        }
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
        Err(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn server() -> TestServer {
    let hub = Hub::new();
    let router = Router::new()
        .route("/either/{a}/{b}", get(either))
        .with_state(hub.clone());
    TestServer::serve(router, hub).await
}

#[tokio::test]
async fn the_first_event_of_either_id_answers() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/either/red/blue", &[]).await;
    server.parked(2).await;
    server
        .hub
        .publish("blue", Event::new("for blue"))
        .await
        .unwrap();
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "for blue");
    assert_eq!(reply.header("x-id"), Some("blue"));
    server.parked(0).await;
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_no_waiter_and_loses_nothing() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/either/red/blue", &[]).await;
    server.parked(2).await;
    conn.reset();
    server.parked(0).await;

    server.hub.publish("red", Event::new("kept")).await.unwrap();
    let reply = get_path(server.addr, "/either/red/blue").await;
    assert_eq!(reply.text(), "kept");
    assert_eq!(reply.header("x-id"), Some("red"));
    let hub = server.hub.clone();
    eventually("nobody waits", || hub.stats().parked == 0).await;
}
