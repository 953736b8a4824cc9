//! Next links (`Grip-Link: <url>; rel=next`): the gateway asks the upstream
//! for the next part of a stream and continues the same response with it,
//! for paging a large body and for reliable streams (with `Grip-Last`, the
//! upstream sends what a client missed). As in Pushpin, a link is in the
//! client's URL space: a relative one resolves against the URL of the
//! request (or of the previous next link), and the request goes to the
//! upstream as a client's would, signed (`Grip-Sig`), with `Grip-Feature`.

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::grip::{
    self, FEATURES, GRIP_FEATURE, GRIP_LAST, GRIP_SIG, Instruction, MAX_INSTRUCTION_BODY,
};
use crate::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO};
use crate::reply::empty;
use crate::routes::Via;
use crate::state::{State, add};
use crate::upstream::Failure as Unanswered;

/// What a stream keeps of the request that opened it.
pub struct Origin {
    /// The client's path and query: relative links resolve against it.
    pub target: String,
    /// `Host` and `X-Forwarded-*` of the forwarded request, sent with every
    /// next-link request too.
    pub headers: HeaderMap,
    /// Closes the client's HTTP/1.1 connection (a slow reader's).
    pub abort: Option<CancellationToken>,
    /// With a routes file: the route and target the stream came from, which
    /// its next links go to too.
    pub via: Option<Via>,
}

impl Origin {
    /// Keeps what next links need of a forwarded request's head.
    pub fn of(target: &str, forwarded: &HeaderMap, abort: Option<CancellationToken>) -> Origin {
        let mut headers = HeaderMap::new();
        for name in [HOST, X_FORWARDED_FOR, X_FORWARDED_PROTO] {
            if let Some(value) = forwarded.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        Origin {
            target: target.to_owned(),
            headers,
            abort,
            via: None,
        }
    }
}

/// `link` resolved against `base`, both in the client's URL space: an
/// absolute URL or path as it is, `?query` on the base's path, a relative
/// path beside the base's last segment.
pub fn resolve(base: &str, link: &str) -> String {
    let absolute = link
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme().is_some());
    if link.starts_with('/') || absolute {
        return link.to_owned();
    }
    let path = base.split(['?', '#']).next().unwrap_or("/");
    if link.starts_with('?') {
        return format!("{path}{link}");
    }
    let dir = path.rfind('/').map_or("/", |slash| &path[..=slash]);
    let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    let (link_path, query) = match link.find(['?', '#']) {
        Some(at) => (&link[..at], &link[at..]),
        None => (link, ""),
    };
    let mut trailing = false;
    for segment in link_path.split('/') {
        trailing = false;
        match segment {
            "" | "." => trailing = true,
            ".." => {
                segments.pop();
                trailing = true;
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(base.len() + link.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out.push_str(query);
    out
}

/// What a next link answered.
pub struct Page {
    /// The instructions that continue the stream; `None` for a plain
    /// response, which ends it once appended.
    pub instruction: Option<grip::Stream>,
    pub body: PageBody,
}

/// The bytes a next link adds to the stream.
pub enum PageBody {
    Upstream(Incoming),
    Bytes(Bytes),
}

/// Why a next link gave nothing.
pub enum Failure {
    /// Worth trying again: unreachable, too slow, not a `2xx`.
    Retry(String),
    /// Trying again would not help: instructions the stream cannot follow.
    Fatal(String),
}

/// Requests `target` from the upstream for the stream of `origin`, with a
/// `Grip-Last` for each `(channel, last id)`.
pub async fn fetch(
    state: &State,
    origin: &Origin,
    target: &str,
    last: &[(&str, &str)],
) -> Result<Page, Failure> {
    let absolute = target
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme().is_some());
    let uri = match &origin.via {
        Some(via) if !absolute => via.url(target),
        _ => state.upstream.url_for(target),
    }
    .map_err(|err| Failure::Fatal(format!("next link {target:?}: {err}")))?;
    let mut request = Request::new(empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    headers.clone_from(&origin.headers);
    let (key, iss) = origin.via.as_ref().map_or((None, None), Via::signer);
    headers.insert(GRIP_SIG, state.upstream.grip_sig_with(key, iss));
    headers.insert(GRIP_FEATURE, FEATURES);
    for (channel, id) in last {
        if let Ok(value) = HeaderValue::try_from(format!("{channel}; last-id={id}")) {
            headers.append(GRIP_LAST, value);
        }
    }
    add(&state.streams.metrics.next_links);
    add(&state.metrics.proxied);
    let check = origin.via.as_ref().is_none_or(|via| via.checked());
    let response = state
        .upstream
        .send_checked(request, check)
        .await
        .map_err(|err| match err {
            Unanswered::Unreachable(err) | Unanswered::NoConnection(err) => {
                Failure::Retry(format!("next link {target:?}: {err}"))
            }
            Unanswered::TooSlow => {
                Failure::Retry(format!("next link {target:?}: no answer in time"))
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::Retry(format!(
            "next link {target:?} answered {status}"
        )));
    }
    let (head, body) = response.into_parts();
    if !grip::is_instruction(&head.headers) {
        return Ok(Page {
            instruction: None,
            body: PageBody::Upstream(body),
        });
    }
    if grip::streams_its_body(&head.headers) {
        return match grip::parse(StatusCode::OK, head.headers, Bytes::new()) {
            Ok(Instruction::Stream(stream)) => Ok(Page {
                instruction: Some(stream),
                body: PageBody::Upstream(body),
            }),
            Ok(_) => Err(Failure::Fatal(format!(
                "next link {target:?} did not continue the stream"
            ))),
            Err(err) => Err(Failure::Fatal(format!(
                "next link {target:?}: its GRIP instructions cannot be followed: {err}"
            ))),
        };
    }
    let read = Limited::new(body, MAX_INSTRUCTION_BODY).collect();
    let body = match tokio::time::timeout(state.config.upstream_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) => {
            return Err(Failure::Retry(format!(
                "next link {target:?}: its body could not be read: {err}"
            )));
        }
        Err(_) => {
            return Err(Failure::Retry(format!(
                "next link {target:?}: its body did not come in time"
            )));
        }
    };
    match grip::parse(status, head.headers, body) {
        Ok(Instruction::Stream(mut stream)) => {
            let body = std::mem::take(&mut stream.response.body);
            Ok(Page {
                instruction: Some(stream),
                body: PageBody::Bytes(body),
            })
        }
        Ok(Instruction::Respond(whole)) => Ok(Page {
            instruction: None,
            body: PageBody::Bytes(whole.body),
        }),
        Ok(Instruction::Hold(_)) => Err(Failure::Fatal(format!(
            "next link {target:?} answered with a response hold, not a stream"
        ))),
        Err(err) => Err(Failure::Fatal(format!(
            "next link {target:?}: its GRIP instructions cannot be followed: {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn links_resolve_in_the_clients_url_space() {
        let base = "/events/stream?channel=a";
        assert_eq!(resolve(base, "/events/?link=next"), "/events/?link=next");
        assert_eq!(resolve(base, "http://other:1/x"), "http://other:1/x");
        assert_eq!(resolve(base, "?page=2"), "/events/stream?page=2");
        assert_eq!(resolve(base, "next?x=1"), "/events/next?x=1");
        assert_eq!(resolve(base, "../up"), "/up");
        assert_eq!(resolve(base, "./"), "/events/");
        assert_eq!(resolve("/", "a/b"), "/a/b");
        assert_eq!(resolve("/x", "../../.."), "/");
    }
}
