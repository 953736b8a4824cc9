//! Configuration: flags, environment variables and a TOML file, in that
//! order of precedence, then the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use http::Uri;
use serde::Deserialize;
use tower_longpoll::{Hub, LongPollLayer};

/// A GRIP-compatible reverse proxy that holds long-polls.
///
/// Every request is forwarded to the upstream, except the polls of the
/// `--route` patterns, which the gateway holds itself. An upstream that
/// answers with GRIP instructions (`Grip-Hold: response` or an
/// `application/grip-instruct` body) has the request held on its channels
/// until a publish or the timeout; with `Grip-Hold: stream`, its response is
/// sent at once and kept open for what is published. Publishing, metrics and
/// health are on the publish listener.
///
/// Every setting can also come from the environment (LONGPOLL_GATEWAY_ and the flag in capitals,
/// shown with each flag) or from the TOML file given with --config (the flag
/// names as keys, e.g. `publish-listen = "127.0.0.1:5561"`,
/// `route = ["/poll/{client}"]`). Flags win over the environment, which wins
/// over the file. Keys may be given as `base64:<data>`, as in Pushpin.
#[derive(Parser, Debug, Default)]
#[command(name = "longpoll-gateway", version, verbatim_doc_comment)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "LONGPOLL_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the clients connect to (port 0 picks a free port; the address
    /// is printed). [default: 127.0.0.1:7999]
    #[arg(long, env = "LONGPOLL_GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The backend every request is forwarded to: http(s)://host:port, with
    /// an optional path prefix. This or --routes is required.
    #[arg(long, env = "LONGPOLL_GATEWAY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// A routes file in Pushpin's syntax, in place of --upstream: each
    /// request goes to the backend of the most specific route matching its
    /// host, path, protocol and TLS. Read again when it changes.
    #[arg(long = "routes", env = "LONGPOLL_GATEWAY_ROUTES", value_name = "FILE")]
    pub routes_file: Option<PathBuf>,
    /// With --upstream: end clients' WebSockets here and speak
    /// WebSocket-over-HTTP to the upstream (a routes file says it per target
    /// with `over_http`). Without it, upgrades are passed through.
    #[arg(long, env = "LONGPOLL_GATEWAY_OVER_HTTP")]
    pub over_http: bool,
    /// Address of the publish API, /metrics and /healthz.
    /// [default: 127.0.0.1:5561]
    #[arg(long, env = "LONGPOLL_GATEWAY_PUBLISH_LISTEN", value_name = "ADDR")]
    pub publish_listen: Option<SocketAddr>,
    /// When set, publishing needs `Authorization: Bearer TOKEN` (or a JWT
    /// signed with --publish-key); otherwise 401.
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_PUBLISH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub publish_token: Option<String>,
    /// When set, publishing accepts `Authorization: Bearer JWT`, the JWT
    /// signed with KEY (HS256) and not expired (`exp` required), as GRIP
    /// publisher libraries send it.
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_PUBLISH_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub publish_key: Option<String>,
    /// Key that signs the Grip-Sig JWT sent upstream (HS256). Without it, a
    /// random key is made at start: backends that verify Grip-Sig then
    /// refuse to hold.
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_SIG_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub sig_key: Option<String>,
    /// `iss` claim of the Grip-Sig JWT. [default: longpoll-gateway]
    #[arg(long, env = "LONGPOLL_GATEWAY_SIG_ISS", value_name = "NAME")]
    pub sig_iss: Option<String>,
    /// A path held by the gateway itself, e.g. /poll/{client}: the client id
    /// is the pattern's only {param}; events come from the publish API.
    /// Repeatable (comma-separated in the environment).
    #[arg(
        long = "route",
        env = "LONGPOLL_GATEWAY_ROUTE",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub routes: Vec<String>,
    /// Seconds a --route poll waits for an event before its keepalive (204).
    /// [default: 30]
    #[arg(long, env = "LONGPOLL_GATEWAY_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Most requests held at once, --route polls and GRIP holds together (a
    /// GRIP hold on N channels counts N). [default: 100000]
    #[arg(long, env = "LONGPOLL_GATEWAY_MAX_WAITERS", value_name = "N")]
    pub max_waiters: Option<usize>,
    /// Most --route polls held at once on one client id. [default: 8]
    #[arg(long, env = "LONGPOLL_GATEWAY_MAX_PER_ID", value_name = "N")]
    pub max_per_id: Option<usize>,
    /// Most GRIP streams (Grip-Hold: stream) open at once; more are answered
    /// 503. [default: 100000]
    #[arg(long, env = "LONGPOLL_GATEWAY_MAX_STREAMS", value_name = "N")]
    pub max_streams: Option<usize>,
    /// Most GRIP streams open at once on one channel. [default: --max-streams]
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_MAX_STREAMS_PER_CHANNEL",
        value_name = "N"
    )]
    pub max_streams_per_channel: Option<usize>,
    /// Bytes written to a GRIP stream that its client may leave unread; a
    /// stream whose client falls further behind is closed. [default: 262144]
    #[arg(long, env = "LONGPOLL_GATEWAY_STREAM_BUFFER", value_name = "BYTES")]
    pub stream_buffer: Option<usize>,
    /// Seconds a GRIP hold lasts when the upstream sends no Grip-Timeout.
    /// [default: 55]
    #[arg(long, env = "LONGPOLL_GATEWAY_GRIP_TIMEOUT", value_name = "SECONDS")]
    pub grip_timeout: Option<u64>,
    /// Shortest Grip-Timeout honoured; shorter ones are raised to it.
    /// [default: 5]
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_GRIP_TIMEOUT_MIN",
        value_name = "SECONDS"
    )]
    pub grip_timeout_min: Option<u64>,
    /// Longest Grip-Timeout honoured; longer ones are cut to it.
    /// [default: 300]
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_GRIP_TIMEOUT_MAX",
        value_name = "SECONDS"
    )]
    pub grip_timeout_max: Option<u64>,
    /// Seconds the upstream has to send its response head before the client
    /// gets 504. [default: 30]
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_UPSTREAM_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub upstream_timeout: Option<f64>,
    /// Seconds to connect to the upstream before the client gets 502.
    /// [default: 5]
    #[arg(long, env = "LONGPOLL_GATEWAY_CONNECT_TIMEOUT", value_name = "SECONDS")]
    pub connect_timeout: Option<f64>,
    /// Seconds connections get to finish after SIGTERM/SIGINT, once held
    /// requests were answered 503. [default: 10]
    #[arg(long, env = "LONGPOLL_GATEWAY_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<f64>,
    /// PEM certificate chain: serve clients over TLS (HTTP/2 and HTTP/1.1
    /// by ALPN). Needs --tls-key.
    #[arg(long, env = "LONGPOLL_GATEWAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LONGPOLL_GATEWAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Keep events in Redis at this URL (redis://host:port; a cluster as
    /// redis-cluster://host:port?node=host:port; a Sentinel-managed primary as
    /// redis-sentinel://host:port?sentinelServiceName=NAME), shared with
    /// every gateway and app node using the same URL and prefix; publishes
    /// fail with 503 while Redis is unreachable. [default: in memory]
    #[arg(long, env = "LONGPOLL_GATEWAY_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// The prefix of the Redis keys and channels. [default: longpoll]
    #[arg(long, env = "LONGPOLL_GATEWAY_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Acknowledge a publish only once N replicas of the Redis primary have
    /// its events (Redis WAIT, at most 1 s; a publish they do not confirm
    /// fails with 503 and is kept once when retried with its
    /// Idempotency-Key), so that a failover loses no acknowledged event.
    /// [default: 0, replication is asynchronous]
    #[arg(long, env = "LONGPOLL_GATEWAY_REDIS_WAIT_REPLICAS", value_name = "N")]
    pub redis_wait_replicas: Option<u32>,
    /// Log lines as `text` or `json` (one object per line); the level comes
    /// from RUST_LOG (default `info`). Flag or environment only.
    #[arg(
        long,
        env = "LONGPOLL_GATEWAY_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The TOML file: the same settings, named as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    upstream: Option<String>,
    routes: Option<PathBuf>,
    over_http: Option<bool>,
    publish_listen: Option<SocketAddr>,
    publish_token: Option<String>,
    publish_key: Option<String>,
    sig_key: Option<String>,
    sig_iss: Option<String>,
    route: Option<Vec<String>>,
    timeout: Option<f64>,
    max_waiters: Option<usize>,
    max_per_id: Option<usize>,
    max_streams: Option<usize>,
    max_streams_per_channel: Option<usize>,
    stream_buffer: Option<usize>,
    grip_timeout: Option<u64>,
    grip_timeout_min: Option<u64>,
    grip_timeout_max: Option<u64>,
    upstream_timeout: Option<f64>,
    connect_timeout: Option<f64>,
    shutdown_grace: Option<f64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    redis: Option<String>,
    redis_prefix: Option<String>,
    redis_wait_replicas: Option<u32>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `--upstream`; `None` when a routes file says where requests go.
    pub upstream: Option<Uri>,
    /// `--routes`.
    pub routes_file: Option<PathBuf>,
    /// `--over-http`.
    pub over_http: bool,
    pub publish_listen: SocketAddr,
    pub publish_token: Option<String>,
    pub publish_key: Option<Vec<u8>>,
    /// `None`: sign with a random key.
    pub sig_key: Option<Vec<u8>>,
    pub sig_iss: String,
    pub routes: Vec<String>,
    pub timeout: Duration,
    pub max_waiters: usize,
    pub max_per_id: usize,
    pub max_streams: usize,
    pub max_streams_per_channel: usize,
    pub stream_buffer: usize,
    pub grip_timeout: Duration,
    pub grip_timeout_min: Duration,
    pub grip_timeout_max: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Redis URL and key prefix; `None` keeps events in memory.
    pub redis: Option<(String, String)>,
    /// Replicas that must confirm a publish (Redis `WAIT`); 0: none.
    pub redis_wait_replicas: u32,
}

impl Config {
    /// Merges flags (and the environment, which clap reads) over the file
    /// named by `--config`, over the defaults.
    pub fn load(args: Args) -> Result<Config, String> {
        let (name, text) = match &args.config {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
            ),
            None => (String::new(), String::new()),
        };
        Self::from_toml(args, &name, &text)
    }

    /// Merges flags over a TOML text (the contents of the `--config` file
    /// called `name`; empty for no file), over the defaults.
    pub fn from_toml(args: Args, name: &str, text: &str) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|err| format!("{name}: {err}"))?;
        Self::merge(args, file)
    }

    /// The layer that holds the polls of the `--route` patterns; `None`
    /// without routes.
    pub fn poll_layer(&self, hub: Hub) -> Option<LongPollLayer> {
        if self.routes.is_empty() {
            return None;
        }
        let mut layer = LongPollLayer::builder(hub)
            .timeout(self.timeout)
            .max_per_id(self.max_per_id)
            .max_parked(self.max_waiters);
        for route in &self.routes {
            layer = layer.route(route);
        }
        Some(layer.build())
    }

    fn merge(args: Args, file: File) -> Result<Config, String> {
        let routes_file = args.routes_file.or(file.routes);
        let upstream = match (args.upstream.or(file.upstream), &routes_file) {
            (Some(_), Some(_)) => {
                return Err("--upstream and --routes exclude each other: \
                     put the upstream in the routes file as `* host:port`"
                    .into());
            }
            (None, None) => {
                return Err(
                    "--upstream URL or --routes FILE is required (where to forward to)".into(),
                );
            }
            (Some(upstream), None) => Some(parse_upstream(&upstream)?),
            (None, Some(_)) => None,
        };
        let routes = if args.routes.is_empty() {
            file.route.unwrap_or_default()
        } else {
            args.routes
        };
        let mut client_param = None;
        for route in &routes {
            let param = check_route(route)?;
            // The layer takes the client id from the first route's
            // parameter, and panics on a route without it.
            match client_param {
                None => client_param = Some(param),
                Some(first) if first != param => {
                    return Err(format!(
                        "--route {route:?}: every route names the client id alike; \
                         the first calls it `{{{first}}}`"
                    ));
                }
                Some(_) => {}
            }
        }
        let grip_timeout_min = args.grip_timeout_min.or(file.grip_timeout_min).unwrap_or(5);
        let grip_timeout_max = args
            .grip_timeout_max
            .or(file.grip_timeout_max)
            .unwrap_or(300);
        if grip_timeout_min > grip_timeout_max {
            return Err(format!(
                "--grip-timeout-min ({grip_timeout_min}) is above --grip-timeout-max ({grip_timeout_max})"
            ));
        }
        let grip_timeout = args.grip_timeout.or(file.grip_timeout).unwrap_or(55);
        let max_streams = args.max_streams.or(file.max_streams).unwrap_or(100_000);
        let stream_buffer = args
            .stream_buffer
            .or(file.stream_buffer)
            .unwrap_or(256 * 1024);
        if stream_buffer == 0 {
            return Err("--stream-buffer must be at least 1 byte".into());
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let publish_key = args
            .publish_key
            .or(file.publish_key)
            .map(|key| decode_key("--publish-key", &key))
            .transpose()?;
        let sig_key = args
            .sig_key
            .or(file.sig_key)
            .map(|key| decode_key("--sig-key", &key))
            .transpose()?;
        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7999))),
            upstream,
            routes_file,
            over_http: args.over_http || file.over_http.unwrap_or(false),
            publish_listen: args
                .publish_listen
                .or(file.publish_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5561))),
            publish_token: args
                .publish_token
                .or(file.publish_token)
                .filter(|token| !token.is_empty()),
            publish_key,
            sig_key,
            sig_iss: args
                .sig_iss
                .or(file.sig_iss)
                .unwrap_or_else(|| "longpoll-gateway".into()),
            routes,
            timeout: seconds("--timeout", args.timeout.or(file.timeout).unwrap_or(30.0))?,
            max_waiters: args.max_waiters.or(file.max_waiters).unwrap_or(100_000),
            max_per_id: args.max_per_id.or(file.max_per_id).unwrap_or(8),
            max_streams,
            max_streams_per_channel: args
                .max_streams_per_channel
                .or(file.max_streams_per_channel)
                .unwrap_or(max_streams),
            stream_buffer,
            grip_timeout: Duration::from_secs(
                grip_timeout.clamp(grip_timeout_min, grip_timeout_max),
            ),
            grip_timeout_min: Duration::from_secs(grip_timeout_min),
            grip_timeout_max: Duration::from_secs(grip_timeout_max),
            upstream_timeout: seconds(
                "--upstream-timeout",
                args.upstream_timeout
                    .or(file.upstream_timeout)
                    .unwrap_or(30.0),
            )?,
            connect_timeout: seconds(
                "--connect-timeout",
                args.connect_timeout.or(file.connect_timeout).unwrap_or(5.0),
            )?,
            shutdown_grace: seconds(
                "--shutdown-grace",
                args.shutdown_grace.or(file.shutdown_grace).unwrap_or(10.0),
            )?,
            tls,
            redis: args
                .redis
                .or(file.redis)
                .filter(|url| !url.is_empty())
                .map(|url| {
                    let prefix = args
                        .redis_prefix
                        .or(file.redis_prefix)
                        .unwrap_or_else(|| "longpoll".into());
                    (url, prefix)
                }),
            redis_wait_replicas: args
                .redis_wait_replicas
                .or(file.redis_wait_replicas)
                .unwrap_or(0),
        })
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a non-negative number of seconds"))
}

/// A key as given, or decoded from `base64:<data>`.
fn decode_key(flag: &str, key: &str) -> Result<Vec<u8>, String> {
    let bytes = match key.strip_prefix("base64:") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| format!("{flag}: invalid base64: {err}"))?,
        None => key.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(format!("{flag} must not be empty"));
    }
    Ok(bytes)
}

fn parse_upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|err| format!("--upstream {text:?}: {err}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("--upstream {text:?}: expected http(s)://host:port")),
    }
    if uri.authority().is_none() {
        return Err(format!("--upstream {text:?}: no host"));
    }
    if uri.query().is_some() {
        return Err(format!("--upstream {text:?}: a query is not allowed"));
    }
    Ok(uri)
}

/// The layer panics on a malformed pattern: check it here, with a message.
/// The pattern's only parameter, the client id.
fn check_route(pattern: &str) -> Result<&str, String> {
    let bad = |why: &str| Err(format!("--route {pattern:?}: {why}"));
    let Some(rest) = pattern.strip_prefix('/') else {
        return bad("it must start with `/`");
    };
    let mut params = Vec::new();
    for segment in rest.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return bad("a parameter is `{name}` of letters, digits and `_`");
            }
            params.push(name);
        } else if segment.contains(['{', '}']) {
            return bad("a segment is either a literal or a whole `{name}`");
        }
    }
    match params[..] {
        [only] => Ok(only),
        _ => bad("it needs exactly one `{param}`: the client id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("longpoll-gateway").chain(list.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file: File = toml::from_str(
            r#"
            upstream = "http://127.0.0.1:1"
            listen = "127.0.0.1:9000"
            publish-listen = "127.0.0.1:9001"
            route = ["/a/{id}", "/b/{id}"]
            grip-timeout = 20
            sig-key = "base64:c2VjcmV0"
            "#,
        )
        .unwrap();
        let config = Config::merge(
            args(&[
                "--listen",
                "127.0.0.1:9100",
                "--upstream",
                "http://127.0.0.1:2",
            ]),
            file,
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.publish_listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.upstream.unwrap(), "http://127.0.0.1:2");
        assert_eq!(config.routes, ["/a/{id}", "/b/{id}"]);
        assert_eq!(config.grip_timeout, Duration::from_secs(20));
        assert_eq!(config.sig_key.as_deref(), Some(&b"secret"[..]));
        assert_eq!(config.sig_iss, "longpoll-gateway");
        assert_eq!(config.max_per_id, 8);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |list: &[&str]| Config::merge(args(list), File::default()).unwrap_err();
        assert!(err(&[]).contains("--upstream"));
        assert!(err(&["--upstream", "ftp://x"]).contains("http(s)"));
        assert!(err(&["--upstream", "http://x", "--routes", "r"]).contains("exclude"));
        assert!(err(&["--upstream", "http://x", "--route", "/poll"]).contains("exactly one"));
        assert!(err(&["--upstream", "http://x", "--timeout=-1"]).contains("--timeout"));
        assert!(err(&["--upstream", "http://x", "--tls-cert", "c"]).contains("--tls-key"));
        assert!(
            err(&[
                "--upstream",
                "http://x",
                "--grip-timeout-min",
                "9",
                "--grip-timeout-max",
                "3"
            ])
            .contains("above")
        );
        assert!(
            err(&["--upstream", "http://x", "--stream-buffer", "0"]).contains("--stream-buffer")
        );
        assert!(toml::from_str::<File>("nonsense = 1").is_err());
        // Found by fuzz/fuzz_targets/gateway_config.rs: routes naming the
        // client id differently passed here and made the layer panic at start.
        let message = err(&[
            "--upstream",
            "http://x",
            "--route",
            "/a/{id}",
            "--route",
            "/b/{client}",
        ]);
        assert!(
            message.contains("\"/b/{client}\"") && message.contains("`{id}`"),
            "{message}"
        );
    }

    #[test]
    fn routes_sharing_the_client_id_make_a_layer() {
        let config = Config::from_toml(
            args(&["--upstream", "http://x"]),
            "gateway.toml",
            r#"route = ["/a/{id}", "/b/{id}/events"]"#,
        )
        .unwrap();
        assert!(config.poll_layer(Hub::new()).is_some());
        let without = Config::from_toml(args(&["--upstream", "http://x"]), "gateway.toml", "");
        assert!(without.unwrap().poll_layer(Hub::new()).is_none());
    }

    #[test]
    fn a_routes_file_replaces_the_upstream() {
        let config = Config::from_toml(
            args(&[]),
            "gateway.toml",
            "routes = \"/etc/pushpin/routes\"\nover-http = true",
        )
        .unwrap();
        assert!(config.upstream.is_none());
        assert_eq!(
            config.routes_file.as_deref(),
            Some(std::path::Path::new("/etc/pushpin/routes"))
        );
        assert!(config.over_http);
        let https = Config::merge(args(&["--upstream", "https://x:8443"]), File::default());
        assert_eq!(https.unwrap().upstream.unwrap(), "https://x:8443/");
    }

    #[test]
    fn stream_limits_default_and_follow_the_flags() {
        let defaults = Config::merge(args(&["--upstream", "http://x"]), File::default()).unwrap();
        assert_eq!(defaults.max_streams, 100_000);
        assert_eq!(defaults.max_streams_per_channel, 100_000);
        assert_eq!(defaults.stream_buffer, 256 * 1024);
        let file: File = toml::from_str("max-streams = 50\nstream-buffer = 4096").unwrap();
        let set = Config::merge(args(&["--upstream", "http://x"]), file).unwrap();
        assert_eq!((set.max_streams, set.max_streams_per_channel), (50, 50));
        assert_eq!(set.stream_buffer, 4096);
    }

    #[test]
    fn the_default_grip_timeout_respects_the_bounds() {
        let config = Config::merge(
            args(&["--upstream", "http://x", "--grip-timeout-max", "30"]),
            File::default(),
        )
        .unwrap();
        assert_eq!(config.grip_timeout, Duration::from_secs(30));
    }
}
