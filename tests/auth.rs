//! Access: with the client id taken from a verified token (examples/auth.rs),
//! a client gets its own events and nobody else's, and every forged,
//! tampered, expired or missing token is refused. The demo's publish
//! endpoint needs its token when one is set.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::StatusCode;
use sha2::Sha256;
use support::example::Example;
use support::{Conn, Reply, request};

const SECRET: &str = "the-service-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn encode(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// An HS256 JWT with these claims, signed with `key`.
fn token(claims: serde_json::Value, key: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        encode(&serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        encode(&claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn for_user(user: &str) -> String {
    token(serde_json::json!({"sub": user, "exp": now() + 600}), SECRET)
}

async fn poll_with(addr: std::net::SocketAddr, token: &str) -> Reply {
    request(
        addr,
        "GET",
        "/events?timeout=0&since=0",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

async fn publish(addr: std::net::SocketAddr, user: &str, body: &str) -> StatusCode {
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        &format!("/publish/{user}"),
        &[("authorization", &format!("Bearer {SECRET}"))],
        body.as_bytes(),
    )
    .await;
    conn.response(false).await.status
}

#[tokio::test]
async fn a_client_polls_its_own_events_and_forged_ids_are_refused() {
    let example = Example::start("auth", &["--secret", SECRET]).await;
    let addr = example.addr;
    assert_eq!(
        publish(addr, "alice", "for alice").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(publish(addr, "bob", "for bob").await, StatusCode::ACCEPTED);

    let alice = poll_with(addr, &for_user("alice")).await;
    assert_eq!((alice.status, alice.text()), (StatusCode::OK, "for alice"));
    let bob = poll_with(addr, &for_user("bob")).await;
    assert_eq!((bob.status, bob.text()), (StatusCode::OK, "for bob"));

    // Alice's token with the subject changed to bob: the signature no longer verifies.
    let genuine = for_user("alice");
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let forged_claims = encode(&serde_json::json!({"sub": "bob", "exp": now() + 600}));
    parts[1] = &forged_claims;
    let tampered = parts.join(".");
    let forged_key = token(
        serde_json::json!({"sub": "bob", "exp": now() + 600}),
        "a-guessed-key",
    );
    let expired = token(serde_json::json!({"sub": "bob", "exp": now() - 1}), SECRET);
    let no_subject = token(serde_json::json!({"exp": now() + 600}), SECRET);
    let unsigned = format!(
        "{}.{}.",
        encode(&serde_json::json!({"alg": "none"})),
        encode(&serde_json::json!({"sub": "bob", "exp": now() + 600}))
    );
    for (what, token, says) in [
        ("tampered", tampered.as_str(), "does not verify"),
        (
            "signed with another key",
            forged_key.as_str(),
            "does not verify",
        ),
        ("expired", expired.as_str(), "expired"),
        ("without subject", no_subject.as_str(), "no sub"),
        ("alg none", unsigned.as_str(), "HS256"),
        ("garbage", "not-a-token", "not a JWT"),
    ] {
        let reply = poll_with(addr, token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text()
        );
        assert!(reply.text().contains(says), "{what}: {}", reply.text());
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let anonymous = request(addr, "GET", "/events?timeout=0", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Publishing needs the service's secret.
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        "/publish/alice",
        &[("authorization", "Bearer guess")],
        b"x",
    )
    .await;
    assert_eq!(conn.response(false).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(example.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn the_demo_publish_endpoint_needs_its_token_when_set() {
    let demo = Example::start("demo", &["--publish-token", "pub-secret"]).await;
    let addr = demo.addr;
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer pub-secre"),
        Some("pub-secret"),
    ] {
        let mut conn = Conn::connect(addr).await;
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("authorization", *value))
            .collect();
        conn.send_with_body("POST", "/publish/alice", &headers, b"x")
            .await;
        let reply = conn.response(false).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        "/publish/alice",
        &[("authorization", "Bearer pub-secret")],
        b"ok",
    )
    .await;
    assert_eq!(conn.response(false).await.status, StatusCode::ACCEPTED);
    let reply = request(addr, "GET", "/poll/alice?since=0", &[]).await;
    assert_eq!(reply.text(), "ok");
    assert_eq!(demo.terminate().await.code(), Some(0));
}

mod hook {
    //! The layer's `authorize` hook and the identity extension, in process.

    use axum::Router;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::util::MapRequestLayer;
    use tower_longpoll::{ClientId, Event, Forbidden, Hub, LongPollLayer};

    use super::support::{TestServer, app, request};

    /// What an authentication layer verified.
    #[derive(Clone)]
    struct User(String);

    impl AsRef<str> for User {
        fn as_ref(&self) -> &str {
            &self.0
        }
    }

    /// Stands for an authentication layer: the user named by `x-user`.
    fn authenticated(router: Router) -> Router {
        router.layer(MapRequestLayer::new(|mut request: Request<Body>| {
            let user = request
                .headers()
                .get("x-user")
                .and_then(|value| value.to_str().ok())
                .map(|user| User(user.to_owned()));
            if let Some(user) = user {
                request.extensions_mut().insert(user);
            }
            request
        }))
    }

    #[tokio::test]
    async fn a_path_id_is_authorized_against_the_verified_user() {
        let hub = Hub::new();
        let layer = LongPollLayer::builder(hub.clone())
            .route("/poll/{user}")
            .authorize(|request, id| match request.extensions().get::<User>() {
                Some(User(user)) if user == id => Ok(()),
                _ => Err(Forbidden::because("you may poll only your own id")),
            })
            .build();
        let server = TestServer::serve(authenticated(app().layer(layer)), hub.clone()).await;
        hub.publish("bob", Event::new("for bob")).await.unwrap();

        for (path, user) in [
            ("/poll/bob?since=0", Some("alice")),
            ("/poll/bob?since=0&timeout=0", None),
            ("/poll/bob", Some("alice")),
        ] {
            let headers: Vec<(&str, &str)> = user.iter().map(|user| ("x-user", *user)).collect();
            let reply = request(server.addr, "GET", path, &headers).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path} as {user:?}");
            assert_eq!(reply.text(), "you may poll only your own id\n");
            assert_eq!(reply.header("etag"), None, "nothing of bob's log leaks");
        }
        assert_eq!(hub.stats().rejected, 3);
        assert_eq!(hub.stats().delivered, 0);

        // Bob gets his event, which nobody took.
        let reply = request(server.addr, "GET", "/poll/bob", &[("x-user", "bob")]).await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "for bob"));
        // Other routes are the app's, untouched by the hook.
        let reply = request(server.addr, "GET", "/", &[]).await;
        assert_eq!(reply.text(), "index");
    }

    /// Log lines, as the server writes them.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl tracing_subscriber::fmt::MakeWriter<'_> for Logs {
        type Writer = Logs;

        fn make_writer(&self) -> Logs {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_missing_identity_extension_is_the_servers_fault() {
        // The test's runtime has one thread: the server's tasks log here.
        let logs = Logs::default();
        let _logging = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::ERROR)
                .finish(),
        );
        let hub = Hub::new();
        let layer = LongPollLayer::builder(hub.clone())
            .route("/events")
            .client_id(ClientId::extension::<User>())
            .build();
        // Wrongly stacked: the authentication layer is inside the long-poll layer.
        let server = TestServer::serve(authenticated(app()).layer(layer), hub.clone()).await;
        hub.publish("alice", Event::new("for alice")).await.unwrap();
        let reply = request(
            server.addr,
            "GET",
            "/events?since=0",
            &[("x-user", "alice")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !reply.text().contains("User") && !reply.text().contains("::"),
            "no Rust type name: {}",
            reply.text()
        );
        assert_eq!(hub.stats().delivered, 0);
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("ERROR") && logged.contains("User"),
            "an error naming the extension is logged: {logged}"
        );

        // Stacked right, the same request gets the event.
        let layer = LongPollLayer::builder(hub.clone())
            .route("/events")
            .client_id(ClientId::extension::<User>())
            .build();
        let server = TestServer::serve(authenticated(app().layer(layer)), hub.clone()).await;
        let reply = request(
            server.addr,
            "GET",
            "/events?since=0",
            &[("x-user", "alice")],
        )
        .await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "for alice"));
    }
}
