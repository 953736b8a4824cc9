//! Backends that say who they are: every request is answered with a JSON
//! of the backend's name, the path and query it was sent and its headers
//! (or, for a path ending in `/hold`, a GRIP hold on channel `routed`).
//! One may sit behind TLS with a self-signed certificate.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::task::JoinHandle;

/// A running named backend, stopped when dropped.
pub struct Named {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn app(name: &'static str) -> Router {
    Router::new().fallback(move |request: Request| async move { answer(name, request) })
}

fn answer(name: &str, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if request.uri().path().ends_with("/hold") {
        return (
            [("grip-hold", "response"), ("grip-channel", "routed")],
            format!("{name} timed out"),
        )
            .into_response();
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (header, value) in request.headers() {
        headers.insert(
            header.as_str().to_owned(),
            value.to_str().unwrap_or("<binary>").to_owned(),
        );
    }
    (
        [("content-type", "application/json")],
        json!({"name": name, "path": target, "headers": headers}).to_string(),
    )
        .into_response()
}

impl Named {
    /// A plain-HTTP backend on a free port.
    pub async fn start(name: &'static str) -> Named {
        let listener = super::listener();
        let addr = listener.local_addr().unwrap();
        let app = app(name);
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Named { addr, task }
    }

    /// A backend behind TLS, with a certificate for `localhost` that it
    /// signed itself.
    pub async fn start_tls(name: &'static str) -> Named {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = made.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = super::listener();
        let addr = listener.local_addr().unwrap();
        let app = app(name);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Named { addr, task }
    }
}

/// What a named backend answered, read from a reply's body.
pub struct Seen {
    pub name: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Seen {
    pub fn of(body: &str) -> Seen {
        let value: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not a named reply: {body}"));
        Seen {
            name: value["name"].as_str().unwrap().to_owned(),
            path: value["path"].as_str().unwrap().to_owned(),
            headers: serde_json::from_value(value["headers"].clone()).unwrap(),
        }
    }
}
