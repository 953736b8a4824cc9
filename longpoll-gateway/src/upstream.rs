//! The upstream: where it is, how to reach it (plain or over TLS), how to
//! sign for it.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::jwt;
use crate::reply::ProxyBody;

/// How long a Grip-Sig is valid.
const SIG_TTL: u64 = 600;

type Connector = HttpsConnector<HttpConnector>;

/// The upstream: where, how to reach it, and how to sign for it.
pub struct Upstream {
    /// http and https, certificates checked against the system's roots.
    client: Client<Connector, ProxyBody>,
    /// http and https, any certificate taken: routes' `insecure` targets.
    insecure: Client<Connector, ProxyBody>,
    /// `--upstream`; `None` with a routes file, where each request's route
    /// says where it goes.
    base: Option<Uri>,
    sig_key: Vec<u8>,
    sig_iss: String,
    timeout: Duration,
}

impl Upstream {
    pub fn new(
        base: Option<Uri>,
        sig_key: Vec<u8>,
        sig_iss: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // The TLS layer hands plain http on to the connector.
        connector.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verified = HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::clone(&provider))
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "no system root certificates: https upstreams can only be `insecure`");
                HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                        .with_safe_default_protocol_versions()
                        .expect("ring offers the default versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            })
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let unchecked = HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .expect("ring offers the default versions")
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = |connector| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .build(connector)
        };
        Upstream {
            client: client(verified),
            insecure: client(unchecked),
            base,
            sig_key,
            sig_iss,
            timeout,
        }
    }

    /// The upstream URL for a client's path and query (or for a link the
    /// upstream gave, relative or absolute).
    pub fn url_for(&self, target: &str) -> Result<Uri, String> {
        if let Ok(uri) = target.parse::<Uri>() {
            if uri.scheme().is_some() {
                return Ok(uri);
            }
        }
        let Some(base) = &self.base else {
            return Err(format!(
                "{target:?} is relative, and with a routes file there is no single upstream"
            ));
        };
        let prefix = base.path().trim_end_matches('/');
        let path = if target.starts_with('/') {
            format!("{prefix}{target}")
        } else {
            format!("{prefix}/{target}")
        };
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path).map_err(|err| err.to_string())?);
        Uri::from_parts(parts).map_err(|err| err.to_string())
    }

    /// A fresh `Grip-Sig`: HS256, `iss`, and an `exp` a few minutes ahead.
    pub fn grip_sig(&self) -> HeaderValue {
        self.grip_sig_with(None, None)
    }

    /// A `Grip-Sig` with a route's own key or issuer in place of the
    /// gateway's.
    pub fn grip_sig_with(&self, key: Option<&[u8]>, iss: Option<&str>) -> HeaderValue {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(iss.unwrap_or(&self.sig_iss)));
        claims.insert("exp".into(), Value::from(jwt::now() + SIG_TTL));
        let key = key.unwrap_or(&self.sig_key);
        HeaderValue::try_from(jwt::sign(&claims, key)).expect("a JWT is ASCII")
    }

    /// Sends a request; the upstream has `timeout` to answer with its head.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<Incoming>, Failure> {
        self.send_checked(request, true).await
    }

    /// Sends a request, over TLS without checking the certificate when
    /// `check` is false.
    pub async fn send_checked(
        &self,
        request: Request<ProxyBody>,
        check: bool,
    ) -> Result<Response<Incoming>, Failure> {
        let client = if check { &self.client } else { &self.insecure };
        match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) if err.is_connect() => Err(Failure::NoConnection(error_chain(&err))),
            Ok(Err(err)) => Err(Failure::Unreachable(error_chain(&err))),
            Err(_) => Err(Failure::TooSlow),
        }
    }
}

/// An error and its causes, which say what went wrong (refused, a bad
/// certificate...).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Why the upstream gave no response.
#[derive(Debug)]
pub enum Failure {
    /// No connection was made (refused, TLS failed...): the request was not
    /// sent, another target may take it.
    NoConnection(String),
    /// It failed after it was sent.
    Unreachable(String),
    TooSlow,
}

/// Takes any certificate, for backends a route marks `insecure` (test
/// backends with self-signed certificates); the handshake's signatures are
/// still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        Upstream::new(
            Some(base.parse().unwrap()),
            b"key".to_vec(),
            "me".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn urls_keep_the_prefix_and_take_absolute_links() {
        let up = upstream("http://127.0.0.1:9/api/");
        assert_eq!(
            up.url_for("/a?b=1").unwrap(),
            "http://127.0.0.1:9/api/a?b=1"
        );
        assert_eq!(up.url_for("gone").unwrap(), "http://127.0.0.1:9/api/gone");
        assert_eq!(up.url_for("http://other:1/x").unwrap(), "http://other:1/x");
        let bare = upstream("http://127.0.0.1:9");
        assert_eq!(bare.url_for("/a").unwrap(), "http://127.0.0.1:9/a");
    }

    #[tokio::test]
    async fn grip_sig_verifies_with_the_key() {
        let up = upstream("http://127.0.0.1:9");
        let sig = up.grip_sig();
        let claims = jwt::verify(sig.to_str().unwrap(), b"key", jwt::now()).unwrap();
        assert_eq!(claims["iss"], "me");
        assert!(claims["exp"].as_u64().unwrap() > jwt::now());
    }
}
