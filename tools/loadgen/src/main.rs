//! A load generator for long-poll servers: ours, Nchan, Pushpin, or any
//! server whose poll and publish URLs fit a template.
//!
//! ```text
//! cargo build --release -p longpoll-loadgen
//! target/release/loadgen --sub-url 'http://127.0.0.1:3000/poll/{id}' \
//!         --pub-url 'http://127.0.0.1:3000/publish/{id}' \
//!         --cursor since --parked-url http://127.0.0.1:3000/metrics \
//!         --parked-key longpoll_waiters --pid "$SERVER_PID" \
//!         fanout 10000 --rounds 3
//! ```
//!
//! Scenarios (each prints one final JSON line on stdout; progress goes to
//! stderr):
//! - `hold N`: N polls parked on their own ids; the server's anonymous RSS
//!   per held poll and its CPU while they sit idle. `--http2` carries them as
//!   streams over `--h2-conns` connections.
//! - `fanout N`: N polls on one id, one publish per round; the time until
//!   each poll has its response (p50/p99/max). Every poll must get it.
//! - `unicast N RATE`: N polls on their own ids, RATE publishes a second to
//!   random ids; publish→receive latency (p50/p99/p999) and the events lost.
//! - `churn N C`: N polls connected and aborted with RST, C times; the
//!   server's RSS after each cycle and its parked count afterwards.
//! - `grip-backend`: a tiny GRIP backend for Pushpin: answers every request
//!   with `Grip-Hold: response` on the channel named by the last path segment.
//!
//! Published bodies come from `--pub-body`, where `{id}` is the id and
//! `{msg}` a marker `lg:<seq>:<nanoseconds>` that the subscribers find in
//! what they receive: that is how latency is measured and losses counted,
//! whatever the server wraps around it.
//!
//! Only loopback addresses are accepted. Source addresses are spread over
//! 127.0.0.2 onwards (`--sources`), so that many thousands of connections
//! do not run out of ephemeral ports. Every phase is bounded by
//! `--max-secs`.

mod clock;
mod h1;
mod publisher;
mod report;
mod scenario;
mod server_stats;
mod subscriber;
mod target;

use clock::base;
use scenario::{churn, fanout, grip_backend, hold, unicast};

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for long-poll servers (loopback only)"
)]
struct Args {
    /// Poll URL template; `{id}` is replaced by the client id or channel.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000/poll/{id}")]
    sub_url: String,
    /// Publish URL template (POST); `{id}` is replaced.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:3000/publish/{id}"
    )]
    pub_url: String,
    /// Publish body template: `{id}` and `{msg}` (the marker subscribers look for).
    #[arg(long, global = true, default_value = "{msg}")]
    pub_body: String,
    /// Extra publish header, `Name: value`; repeatable.
    #[arg(long = "pub-header", global = true)]
    pub_headers: Vec<String>,
    /// How a poll resumes after a response.
    #[arg(long, global = true, value_enum, default_value_t = CursorMode::None)]
    cursor: CursorMode,
    /// Carry polls as HTTP/2 streams (h2c, prior knowledge).
    #[arg(long, global = true)]
    http2: bool,
    /// HTTP/2 connections to spread the streams over.
    #[arg(long, global = true, default_value_t = 500)]
    h2_conns: usize,
    /// Source addresses to spread HTTP/1 connections over: 127.0.0.2 onwards.
    #[arg(long, global = true, default_value_t = 16)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// New connections a second at most (0: no limit).
    #[arg(long, global = true, default_value_t = 0)]
    connect_rate: u64,
    /// Server process whose RSS and CPU are read from /proc, with its
    /// descendants; repeatable (summed).
    #[arg(long = "pid", global = true)]
    pids: Vec<u32>,
    /// A URL whose text has a line `<key> <count>` of parked polls (the
    /// demo's /metrics, Nchan's stub status, the GRIP backend's /holds).
    #[arg(long, global = true)]
    parked_url: Option<String>,
    /// The key of that line, e.g. `longpoll_waiters` or `subscribers:`.
    #[arg(long, global = true, default_value = "longpoll_waiters")]
    parked_key: String,
    /// The count only grows (holds issued so far, as the GRIP backend counts).
    #[arg(long, global = true)]
    parked_cumulative: bool,
    /// Extra wait after the polls are parked (or, without --parked-url,
    /// after they are sent), in milliseconds.
    #[arg(long, global = true, default_value_t = 500)]
    settle_ms: u64,
    /// Upper bound on any phase of a scenario, in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    max_secs: u64,
    /// Prefix of the ids, so that runs do not meet each other's events.
    #[arg(long, global = true)]
    id_prefix: Option<String>,
    /// A label copied into the JSON line.
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N polls held on their own ids: RSS per poll, idle CPU.
    Hold {
        n: usize,
        /// Seconds the polls sit idle while CPU is measured.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
    },
    /// N polls on one id, one publish per round: time to each response.
    Fanout {
        n: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// N polls on their own ids, RATE publishes a second to random ids.
    Unicast {
        n: usize,
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Publishing connections.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
    /// N polls connected and aborted with RST, C times.
    Churn {
        n: usize,
        cycles: usize,
        /// Wait after each cycle before RSS is read, in milliseconds (let
        /// the server's allocator hand freed pages back).
        #[arg(long, default_value_t = 2500)]
        rss_settle_ms: u64,
    },
    /// A GRIP backend for Pushpin: holds every request on the channel named by
    /// the last path segment; `/holds` counts the holds issued.
    GripBackend {
        #[arg(long, default_value = "127.0.0.1:7998")]
        listen: SocketAddr,
        /// Grip-Timeout in seconds.
        #[arg(long, default_value_t = 120)]
        hold_secs: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CursorMode {
    /// Poll without a cursor.
    None,
    /// `?since=<ETag without quotes>`.
    Since,
    /// `If-None-Match: <ETag>`.
    IfNoneMatch,
    /// Nchan: `If-None-Match: <Etag>` and `If-Modified-Since: <Last-Modified>`.
    Nchan,
}

fn main() {
    let args = Args::parse();
    base();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let line = runtime.block_on(async {
        match args.scenario {
            Scenario::Hold { n, idle_secs } => hold(&args, n, idle_secs).await,
            Scenario::Fanout { n, rounds } => fanout(&args, n, rounds).await,
            Scenario::Unicast {
                n,
                rate,
                secs,
                publishers,
            } => unicast(&args, n, rate, secs, publishers).await,
            Scenario::Churn {
                n,
                cycles,
                rss_settle_ms,
            } => churn(&args, n, cycles, Duration::from_millis(rss_settle_ms)).await,
            Scenario::GripBackend { listen, hold_secs } => {
                if let Err(err) = grip_backend(listen, hold_secs).await {
                    eprintln!("grip-backend: {err}");
                    std::process::exit(1);
                }
                unreachable!("the backend serves until it is stopped")
            }
        }
    });
    println!("{line}");
    // Connections still open are closed by the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
}
