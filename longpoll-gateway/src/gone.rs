//! `Grip-Link: <url>; rel=gone`: telling the upstream that a held client
//! went away, for response holds and streams alike.

use std::sync::Arc;

use http::{Method, Request};
use http_body_util::BodyExt;

use crate::grip::{FEATURES, GRIP_FEATURE, GRIP_SIG};
use crate::reply::empty;
use crate::state::{State, add};

/// POSTs to `link` (on the upstream, or absolute), signed, once and best
/// effort, as Pushpin does: the outcome is only logged.
pub fn notify(state: &Arc<State>, link: String) {
    let uri = match state.upstream.url_for(&link) {
        Ok(uri) => uri,
        Err(err) => {
            tracing::warn!(link, error = %err, "bad Grip-Link rel=gone");
            return;
        }
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut request = Request::new(empty());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(GRIP_SIG, state.upstream.grip_sig());
        headers.insert(GRIP_FEATURE, FEATURES);
        add(&state.metrics.gone_posts);
        match state.upstream.send(request).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                tracing::debug!(link, %status, "Grip-Link rel=gone sent");
            }
            Err(err) => tracing::debug!(link, error = ?err, "Grip-Link rel=gone failed"),
        }
    });
}
