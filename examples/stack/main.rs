//! The layers every axum app stacks, around the long-poll layer, in the
//! order that works (outermost first):
//!
//! 1. `TraceLayer`: sees every request, preflights and refusals included;
//!    logs keepalives as waits and shutdown `503`s without errors;
//! 2. `CorsLayer`: answers preflights before anything can refuse them, and
//!    puts its headers on every answer, refusals included;
//! 3. `CompressionLayer`: compresses events as well as the app's answers;
//! 4. authentication: who the bearer token says, `401` without one;
//! 5. the long-poll layer: holds `GET /poll/{user}`, and lets a user poll
//!    only their own id (its `authorize` hook: `403` otherwise);
//! 6. `TimeoutLayer`: for the app's own routes only; outside the long-poll
//!    layer it would cut every poll short with `408`;
//! 7. the app's routes: `POST /publish/{user}` (JSON), `GET /slow`.
//!
//! ```text
//! cargo run --features serde --example stack -- \
//!     --user alice:alice-token --user bob:bob-token --allow-origin http://localhost:8080
//! curl -i -H 'Authorization: Bearer alice-token' localhost:3007/poll/alice
//! curl -i -H 'Authorization: Bearer bob-token' -H 'content-type: application/json' \
//!      -d '{"text":"hi alice"}' localhost:3007/publish/alice
//! ```

mod layers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_longpoll::{Event, Forbidden, Hub, LongPollLayer};

/// Who a request's bearer token says it comes from.
#[derive(Clone, Debug)]
struct User(Arc<str>);

/// Tokens and their users.
#[derive(Clone)]
struct Users(Arc<HashMap<String, Arc<str>>>);

/// A message from one user to another, as events carry it.
#[derive(Serialize, Deserialize)]
struct Message {
    from: String,
    text: String,
}

struct Args {
    listen: String,
    allow_origin: HeaderValue,
    users: Users,
    timeout: Duration,
}

fn args() -> Args {
    let usage = "usage: stack --user NAME:TOKEN... [--allow-origin ORIGIN] [--timeout SECONDS] [--listen ADDR]";
    let mut listen = "127.0.0.1:3007".to_owned();
    let mut allow_origin = HeaderValue::from_static("http://localhost:8080");
    let mut users = HashMap::new();
    let mut timeout = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{arg} needs a value; {usage}"));
        match arg.as_str() {
            "--listen" => listen = value,
            "--allow-origin" => allow_origin = value.parse().expect("--allow-origin ORIGIN"),
            "--user" => {
                let (name, token) = value.split_once(':').expect("--user NAME:TOKEN");
                users.insert(token.to_owned(), Arc::from(name));
            }
            "--timeout" => {
                timeout = Duration::from_secs_f64(value.parse().expect("--timeout SECONDS"));
            }
            _ => panic!("unknown argument {arg}; {usage}"),
        }
    }
    assert!(!users.is_empty(), "{usage}");
    Args {
        listen,
        allow_origin,
        users: Users(Arc::new(users)),
        timeout,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = args();
    let hub = Hub::new();

    // The id is in the path; the hook ties it to the user the
    // authentication layer (outside this one) verified.
    let longpoll = LongPollLayer::builder(hub.clone())
        .route("/poll/{user}")
        .authorize(|request, id| match request.extensions().get::<User>() {
            Some(User(user)) if **user == *id => Ok(()),
            _ => Err(Forbidden::because("you may poll only your own id")),
        })
        .timeout(Duration::from_secs(30))
        .build();

    // `Router::layer` wraps every route and the fallback, where polls go
    // (they match no route): each layer added later is outside the ones
    // before, so the list reads from the innermost to the outermost.
    let app = Router::new()
        .route("/publish/{user}", post(publish))
        .route("/slow", get(slow))
        .with_state(hub.clone())
        .layer(layers::timeout(args.timeout))
        .layer(longpoll)
        .layer(middleware::from_fn_with_state(args.users, authenticate))
        .layer(layers::compression())
        .layer(layers::cors(args.allow_origin))
        .layer(layers::trace());

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            hub.shutdown();
        })
        .await
}

/// `401` without a known bearer token; otherwise the request carries the
/// token's `User` (the long-poll layer's `authorize` hook checks it against
/// the polled id).
async fn authenticate(State(users): State<Users>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(user) = token.and_then(|token| users.0.get(token)).cloned() else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a known bearer token is required\n",
        )
            .into_response();
    };
    request.extensions_mut().insert(User(user));
    next.run(request).await
}

/// `POST /publish/{user}`: a message to `user`, from whoever is signed in.
async fn publish(
    State(hub): State<Hub>,
    Path(to): Path<String>,
    axum::Extension(User(from)): axum::Extension<User>,
    Json(text): Json<serde_json::Value>,
) -> Response {
    let message = Message {
        from: from.to_string(),
        text: text
            .get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    let event = Event::json(&message).expect("a message is JSON");
    match hub.publish(&to, event).await {
        Ok(cursor) => (StatusCode::ACCEPTED, format!("{cursor}\n")).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

/// Slower than the app's timeout: answered `408` by the timeout layer.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "too late"
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
