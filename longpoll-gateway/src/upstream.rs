//! The upstream: where it is, how to reach it, how to sign for it.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::jwt;
use crate::reply::ProxyBody;

/// How long a Grip-Sig is valid.
const SIG_TTL: u64 = 600;

/// The upstream: where, how to reach it, and how to sign for it.
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    base: Uri,
    sig_key: Vec<u8>,
    sig_iss: String,
    timeout: Duration,
}

impl Upstream {
    pub fn new(
        base: Uri,
        sig_key: Vec<u8>,
        sig_iss: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Upstream {
            client,
            base,
            sig_key,
            sig_iss,
            timeout,
        }
    }

    /// The upstream URL for a client's path and query (or for a link the
    /// upstream gave, relative or absolute).
    pub fn url_for(&self, target: &str) -> Result<Uri, http::Error> {
        if let Ok(uri) = target.parse::<Uri>() {
            if uri.scheme().is_some() {
                return Ok(uri);
            }
        }
        let prefix = self.base.path().trim_end_matches('/');
        let path = if target.starts_with('/') {
            format!("{prefix}{target}")
        } else {
            format!("{prefix}/{target}")
        };
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// The client's path and query of an upstream URL that [`url_for`]
    /// made: the base's path prefix taken off.
    ///
    /// [`url_for`]: Upstream::url_for
    pub fn client_target(&self, uri: &Uri) -> String {
        let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let prefix = self.base.path().trim_end_matches('/');
        match target.strip_prefix(prefix) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            Some(rest) if rest.is_empty() || rest.starts_with('?') => format!("/{rest}"),
            _ => target.to_owned(),
        }
    }

    /// A fresh `Grip-Sig`: HS256, `iss`, and an `exp` a few minutes ahead.
    pub fn grip_sig(&self) -> HeaderValue {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(self.sig_iss.as_str()));
        claims.insert("exp".into(), Value::from(jwt::now() + SIG_TTL));
        HeaderValue::try_from(jwt::sign(&claims, &self.sig_key)).expect("a JWT is ASCII")
    }

    /// Sends a request; the upstream has `timeout` to answer with its head.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(Failure::Unreachable(err.to_string())),
            Err(_) => Err(Failure::TooSlow),
        }
    }
}

/// Why the upstream gave no response.
#[derive(Debug)]
pub enum Failure {
    Unreachable(String),
    TooSlow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        Upstream::new(
            base.parse().unwrap(),
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
        for target in ["/a?b=1", "/", "/apiary"] {
            let uri = up.url_for(target).unwrap();
            assert_eq!(up.client_target(&uri), target);
            assert_eq!(bare.client_target(&bare.url_for(target).unwrap()), target);
        }
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
