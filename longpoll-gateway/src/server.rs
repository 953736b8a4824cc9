//! Accepting connections: HTTP/1.1 and HTTP/2 (h2c, or ALPN over TLS),
//! TCP keepalive, upgrades, graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::reply::ProxyBody;

/// Who is on the other end of a client connection; set by the server on
/// every request.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Closes the client's HTTP/1.1 connection when cancelled: how a stream
    /// drops a client that stopped reading, whose connection hyper would
    /// otherwise keep waiting on (`None` on HTTP/2, where the stream is
    /// reset on its own).
    pub abort: Option<CancellationToken>,
}

/// How a connection's requests are answered.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>
        + Send
        + Sync,
>;

/// A listener with a backlog large enough for bursts of new polls (mio's
/// default of 128 drops them).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// TLS with HTTP/2 and HTTP/1.1 offered by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|err| format!("--tls-cert {}: {err}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("--tls-cert {}: {err}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("--tls-cert {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("--tls-key {}: {err}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| format!("TLS: {err}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `listener` until `stop` is cancelled; each connection is watched
/// by `graceful`, which finishes them afterwards.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    stop: CancellationToken,
    graceful: &GracefulShutdown,
) {
    // A client that vanished without FIN or RST is only noticed by TCP
    // keepalive (or its hold's timeout).
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: wait, do not spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        set_options(&tcp, &keepalive);
        let aborted = CancellationToken::new();
        let info = ClientInfo {
            addr: peer,
            tls: tls.is_some(),
            abort: Some(aborted.clone()),
        };
        let handler = Arc::clone(&handler);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let mut info = info.clone();
            if request.version() == http::Version::HTTP_2 {
                info.abort = None;
            }
            request.extensions_mut().insert(info);
            let response = handler(request);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let watcher = graceful.watcher();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => match sniff_http2(&tcp).await {
                    Ok(http2) => {
                        serve_connection(TokioIo::new(tcp), http2, service, watcher, stop, aborted)
                            .await
                    }
                    Err(_) => return,
                },
                // Boxed: the handshake and the TLS stream inline would size
                // every connection's task, plaintext ones included, and a
                // task lives as long as its held request.
                Some(tls) => {
                    Box::pin(async move {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(err)) => {
                                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                    return Ok(());
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return Ok(());
                                }
                            };
                        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_connection(
                            TokioIo::new(stream),
                            http2,
                            service,
                            watcher,
                            stop,
                            aborted,
                        )
                        .await
                    })
                    .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}

/// How long a client has for the TLS handshake, and for the first bytes
/// that tell HTTP/2 from HTTP/1.1.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection with hyper's own HTTP/1.1 or HTTP/2 connection.
///
/// Rather than hyper-util's auto-detecting builder: that one reads the
/// first bytes itself, after which hyper's read buffer grows to 16 KiB, and
/// every held request keeps its connection's buffer (docs/benchmarks.md).
async fn serve_connection<I, S>(
    io: I,
    http2: bool,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    stop: CancellationToken,
    aborted: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Send + 'static,
    S::Future: Send + 'static,
{
    if http2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Every held request holds a stream.
            .max_concurrent_streams(1000)
            // WebSockets over HTTP/2 (RFC 8441), for over_http routes.
            .enable_connect_protocol()
            .serve_connection(io, service);
        // Boxed, so that an HTTP/1 connection's task does not carry an
        // HTTP/2 connection's state (about 1.5 KB) for its whole life.
        Box::pin(watcher.watch(connection)).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            // With a timer, a request head that never ends times out (30 s).
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .with_upgrades();
        // hyper-util's watcher cannot watch a connection that may upgrade:
        // finish it gracefully by hand when the gateway stops, and keep the
        // watcher until then so that the shutdown waits for it.
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection => result,
                    () = aborted.cancelled() => Ok(()),
                }
            }
            // Dropped, not finished: its client was not reading.
            () = aborted.cancelled() => Ok(()),
        };
        drop(watcher);
        result
    }
}

/// Whether a cleartext client opened with the HTTP/2 preface (peeked, not
/// read); gives up after [`HANDSHAKE_TIMEOUT`] without a first byte.
async fn sniff_http2(tcp: &TcpStream) -> io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut start = [0u8; 4];
    let wait = async {
        loop {
            let n = tcp.peek(&mut start).await?;
            let seen = &start[..n];
            if n == 0 || n == start.len() || !PREFACE.starts_with(seen) {
                return Ok(n == start.len() && PREFACE.starts_with(seen));
            }
            // A prefix of the preface so far: wait for the rest.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

fn set_options(tcp: &TcpStream, keepalive: &TcpKeepalive) {
    let socket = SockRef::from(tcp);
    if let Err(err) = socket
        .set_tcp_keepalive(keepalive)
        .and_then(|()| socket.set_tcp_nodelay(true))
    {
        tracing::debug!(error = %err, "could not set TCP options on a connection");
    }
}
