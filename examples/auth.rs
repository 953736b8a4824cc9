//! Long-polling where the client id is the authenticated user, so that no
//! client can poll another's events.
//!
//! An authentication middleware verifies a bearer JWT (HS256, `sub` and `exp`
//! claims) and puts the user in the request extensions; the layer takes the
//! client id from there ([`ClientId::extension`]). There is no id in the URL
//! to forge: a token that does not verify is refused before the layer.
//!
//! ```text
//! cargo run --example auth -- --secret s3cret      # serves 127.0.0.1:3004
//! curl -H "Authorization: Bearer $TOKEN" localhost:3004/events
//! curl -X POST -H "Authorization: Bearer s3cret" -d hi localhost:3004/publish/alice
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower_longpoll::{ClientId, Event, Hub, LongPollLayer};

/// The user an authentication layer verified.
#[derive(Clone, Debug)]
struct User(String);

impl AsRef<str> for User {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
struct Auth {
    secret: std::sync::Arc<[u8]>,
    hub: Hub,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut secret) = ("127.0.0.1:3004".to_owned(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--secret" => secret = args.next(),
            other => panic!("unknown argument {other}; use --listen ADDR --secret KEY"),
        }
    }
    let secret = secret.expect("--secret KEY (signs the users' tokens and guards publishing)");

    let hub = Hub::new();
    let auth = Auth {
        secret: secret.into_bytes().into(),
        hub: hub.clone(),
    };
    let longpoll = LongPollLayer::builder(hub.clone())
        // No id in the path: the id is whoever the token says.
        .route("/events")
        .client_id(ClientId::extension::<User>())
        .timeout(Duration::from_secs(30))
        .build();
    // Outermost first: authentication, then the long-poll layer, then the app.
    let app = Router::new()
        .route("/publish/{user}", post(publish))
        .with_state(auth.clone())
        .layer(longpoll)
        .layer(middleware::from_fn_with_state(auth, authenticate));

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            hub.shutdown();
        })
        .await
}

/// Verifies the bearer token of a poll and makes its subject the request's
/// user. (Publishing has its own check.)
async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    if request.uri().path() != "/events" {
        return next.run(request).await;
    }
    let token = bearer(request.headers());
    match token.map(|token| verify(token, &auth.secret)) {
        Some(Ok(user)) => {
            request.extensions_mut().insert(User(user));
            next.run(request).await
        }
        Some(Err(why)) => refuse(why),
        None => refuse("a bearer token is required"),
    }
}

/// `POST /publish/{user}`: the service's own publish, guarded by the secret.
async fn publish(
    State(auth): State<Auth>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = bearer(&headers).unwrap_or_default().as_bytes();
    // Constant time, as with any secret compared to user input.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"publish").expect("any key length");
    mac.update(&auth.secret);
    let expected = mac.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"publish").expect("any key length");
    mac.update(presented);
    if mac.verify_slice(&expected).is_err() {
        return refuse("publishing needs the secret as bearer token");
    }
    match auth.hub.publish(&user, Event::new(body)).await {
        Ok(cursor) => (StatusCode::ACCEPTED, format!("{cursor}\n")).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn refuse(why: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The `sub` of an HS256 JWT signed with `secret`, if it verifies and has
/// not expired.
fn verify(token: &str, secret: &[u8]) -> Result<String, &'static str> {
    let mut parts = token.split('.');
    let (Some(head), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT");
    };
    let header: serde_json::Value = decode_json(head)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err("the token must be signed with HS256");
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the token's signature is not base64url")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "the token's signature does not verify")?;
    let claims: serde_json::Value = decode_json(claims)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match claims.get("exp").and_then(|exp| exp.as_u64()) {
        Some(exp) if exp > now => {}
        Some(_) => return Err("the token has expired"),
        None => return Err("the token has no exp claim"),
    }
    claims
        .get("sub")
        .and_then(|sub| sub.as_str())
        .filter(|sub| !sub.is_empty())
        .map(str::to_owned)
        .ok_or("the token has no sub claim")
}

fn decode_json(part: &str) -> Result<serde_json::Value, &'static str> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "the token is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "the token is not JSON")
}
