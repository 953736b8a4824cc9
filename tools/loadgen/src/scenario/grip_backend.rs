//! `grip-backend`: a tiny GRIP backend for Pushpin benchmarks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hyper_util::rt::TokioIo;

use crate::clock::log;

pub(crate) async fn grip_backend(listen: SocketAddr, hold_secs: u64) -> io::Result<()> {
    use hyper::service::service_fn;
    assert!(listen.ip().is_loopback(), "loopback only");
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let holds = Arc::new(AtomicU64::new(0));
    log(format!("GRIP backend on http://{listen}"));
    loop {
        let (stream, _) = listener.accept().await?;
        let holds = holds.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let holds = holds.clone();
                async move {
                    let path = request.uri().path();
                    let response = if path == "/holds" {
                        http::Response::new(http_body_util::Full::new(Bytes::from(format!(
                            "holds {}\n",
                            holds.load(Ordering::Relaxed)
                        ))))
                    } else {
                        let channel = path.rsplit('/').next().unwrap_or("");
                        holds.fetch_add(1, Ordering::Relaxed);
                        http::Response::builder()
                            .header("Grip-Hold", "response")
                            .header("Grip-Channel", channel)
                            .header("Grip-Timeout", hold_secs.to_string())
                            .header("Content-Type", "text/plain")
                            .body(http_body_util::Full::new(Bytes::from_static(b"timeout\n")))
                            .unwrap()
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
