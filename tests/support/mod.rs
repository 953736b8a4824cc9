//! The library's test support: a real axum server on 127.0.0.1:0 with the
//! layer in front of a small app, on top of what every crate of the
//! workspace shares (`longpoll-test-support`: the raw HTTP/1.1 client, child
//! processes, metric readers, the chaos workload).

#![allow(dead_code)]

#[allow(unused_imports)]
pub(crate) use longpoll_test_support::{
    Conn, PATIENCE, Reply, chaos, eventually, example, get, listener, listener_at, metrics,
    process, redis, request, within,
};

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::routing;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_longpoll::{Hub, LongPollLayer};

/// An axum server with the layer in front of a small app.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) hub: Hub,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The app behind the layer: what pass-through requests reach.
pub(crate) fn app() -> Router {
    Router::new()
        .route("/", routing::get(|| async { "index" }))
        .route(
            "/stream",
            routing::get(|| async {
                let chunks =
                    (0..3).map(|n| Ok::<_, std::io::Error>(Bytes::from(format!("chunk{n};"))));
                (
                    [("x-inner", "yes")],
                    Body::from_stream(futures_stream(chunks)),
                )
            }),
        )
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        )
}

fn futures_stream<I>(items: I) -> impl futures_core::Stream<Item = I::Item> + Send + 'static
where
    I: Iterator + Unpin + Send + 'static,
    I::Item: Send,
{
    struct IterStream<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    IterStream(items)
}

impl TestServer {
    /// Serves `app()` behind `layer`.
    pub(crate) async fn start(layer: LongPollLayer) -> TestServer {
        let hub = layer.hub().clone();
        Self::serve(app().layer(layer), hub).await
    }

    /// Serves any router; `hub` is the one its layer uses.
    pub(crate) async fn serve(router: Router, hub: Hub) -> TestServer {
        Self::serve_on(listener(), router, hub).await
    }

    /// Serves any router on `listener`.
    pub(crate) async fn serve_on(listener: TcpListener, router: Router, hub: Hub) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .unwrap();
        });
        TestServer {
            addr,
            hub,
            stop,
            task,
        }
    }

    /// Waits until `parked` polls are parked in the hub.
    pub(crate) async fn parked(&self, parked: usize) {
        let hub = self.hub.clone();
        eventually(format!("{parked} parked"), || hub.stats().parked == parked).await;
    }

    /// Stops serving: graceful shutdown, awaited.
    pub(crate) async fn stop(self) -> Result<(), tokio::time::error::Elapsed> {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task).await.map(|_| ())
    }

    /// Starts the server's graceful shutdown and returns its task.
    pub(crate) fn begin_stop(self) -> JoinHandle<()> {
        self.stop.cancel();
        self.task
    }
}

/// Polls `since=cursor` with `timeout=0` until a `204`, collecting the
/// events' bodies and whether any reply carried the gap flag.
pub(crate) async fn drain(addr: SocketAddr, id: &str, mut cursor: String) -> (Vec<String>, bool) {
    let (mut seen, mut gap) = (Vec::new(), false);
    loop {
        let reply = get(addr, &format!("/poll/{id}?since={cursor}&timeout=0")).await;
        if reply.status == http::StatusCode::NO_CONTENT {
            return (seen, gap);
        }
        assert_eq!(reply.status, http::StatusCode::OK);
        gap |= reply.header("longpoll-gap") == Some("true");
        seen.push(reply.text().to_owned());
        cursor = reply.cursor();
    }
}
