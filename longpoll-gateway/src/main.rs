//! `longpoll-gateway`: a reverse proxy that holds long-polls, compatible with
//! GRIP (Pushpin's protocol), built on tower-longpoll's hub and layer.
//!
//! ```text
//! longpoll-gateway --upstream http://127.0.0.1:8000 --sig-key secret \
//!     --publish-key secret --route '/poll/{client}'
//! ```
//!
//! The gateway is the `longpoll_gateway` library; this binary reads its
//! settings, sets up logging and the allocator, and runs it. See the crate's
//! README.md for the GRIP subset, the differences from Pushpin and how to
//! migrate; `--help` for every setting.

#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use longpoll_gateway::{Args, Config, LogFormat, run};

/// jemalloc keeps its bookkeeping out of the blocks it hands out, so the
/// buffers hyper reserves for each held connection cost no resident memory
/// until they are written (docs/benchmarks.md has the figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread hands pages
/// freed by closed connections back to the system within about 1 s, so RSS
/// follows the connections held, also under churn. With 2 s, RSS read 2.5 s
/// after thousands of connections closed moved by megabytes from one
/// reading to the next (docs/benchmarks.md, issue 16, second round).
/// `slab_sizes`: slabs of 16 pages hold eight of hyper's 8 KiB buffers, where
/// each took a slab, and jemalloc's bookkeeping of it, of its own (issue 16,
/// third round).
// SAFETY: jemalloc reads this NUL-terminated string once, at its start.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,slab_sizes:4097-16384:16\0"[0];

fn main() -> ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("longpoll-gateway: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("longpoll-gateway: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("longpoll-gateway: {err}");
            ExitCode::FAILURE
        }
    }
}
