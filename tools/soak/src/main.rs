//! Soak: the chaos workload of `tests/chaos.rs` against a running server for
//! as many minutes as asked, sampling the server's memory and parked polls
//! every 10 s into a CSV and a PNG. Run by `scripts/soak.sh`.
//!
//! Exits non-zero if a client missed or repeated an event, if polls remain
//! parked at the end, or if memory grew by more than 10 % between the
//! first and the last fifth of the run (after a warm-up).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use longpoll_test_support::{chaos, conn};
use plotters::prelude::*;

const EVENTS: u32 = 6;
const ROUND: Duration = Duration::from_secs(1);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

struct Args {
    polls: SocketAddr,
    publishes: SocketAddr,
    metrics: SocketAddr,
    pid: u32,
    minutes: f64,
    clients: usize,
    out: PathBuf,
    font: PathBuf,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut get = |name: &str| -> Option<String> {
        let _ = name;
        args.next()
    };
    let (mut polls, mut publishes, mut metrics, mut pid) = (None, None, None, None);
    let (mut minutes, mut clients) = (30.0, 2_000);
    let mut out = PathBuf::from("target/soak");
    let mut font = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    while let Some(flag) = get("flag") {
        let value = get(&flag).unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--polls" => polls = Some(value.parse().expect("--polls ADDR")),
            "--publishes" => publishes = Some(value.parse().expect("--publishes ADDR")),
            "--metrics" => metrics = Some(value.parse().expect("--metrics ADDR")),
            "--pid" => pid = Some(value.parse().expect("--pid PID")),
            "--minutes" => minutes = value.parse().expect("--minutes N"),
            "--clients" => clients = value.parse().expect("--clients N"),
            "--out" => out = value.into(),
            "--font" => font = value.into(),
            other => panic!("unknown flag {other}"),
        }
    }
    let polls = polls.expect("--polls ADDR");
    Args {
        polls,
        publishes: publishes.unwrap_or(polls),
        metrics: metrics.unwrap_or(polls),
        pid: pid.expect("--pid PID (the server to measure)"),
        minutes,
        clients,
        out,
        font,
    }
}

async fn parked(metrics: SocketAddr) -> u64 {
    let reply = conn::request(metrics, "GET", "/metrics", &[]).await;
    reply
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("longpoll_waiters ")?.parse().ok())
        .unwrap_or(u64::MAX)
}

#[derive(Clone, Copy)]
struct Sample {
    minutes: f64,
    rss_mib: f64,
    parked: u64,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.out).unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.minutes * 60.0);

    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let samples = Arc::clone(&samples);
        let (pid, metrics) = (args.pid, args.metrics);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                let sample = Sample {
                    minutes: started.elapsed().as_secs_f64() / 60.0,
                    rss_mib: chaos::rss_of(pid) as f64 / (1024.0 * 1024.0),
                    parked: parked(metrics).await,
                };
                println!(
                    "{:6.1} min  RSS {:7.1} MiB  parked {}",
                    sample.minutes, sample.rss_mib, sample.parked
                );
                samples.lock().unwrap().push(sample);
            }
        })
    };

    let tally = Arc::new(chaos::Tally::default());
    let (mut phases, mut failures) = (0u64, 0u64);
    while Instant::now() < deadline {
        let ids: Arc<Vec<String>> = Arc::new(
            (0..args.clients)
                .map(|n| format!("soak{phases}-{n}"))
                .collect(),
        );
        let clients: Vec<_> = ids
            .iter()
            .map(|id| {
                tokio::spawn(chaos::client(
                    args.polls,
                    id.clone(),
                    EVENTS,
                    Arc::clone(&tally),
                ))
            })
            .collect();
        let publisher = tokio::spawn(chaos::publish_all(
            args.publishes,
            Arc::clone(&ids),
            EVENTS,
            ROUND,
        ));
        if publisher.await.is_err() {
            failures += 1;
        }
        let expected: Vec<u32> = (0..EVENTS).collect();
        for client in clients {
            match tokio::time::timeout(Duration::from_secs(120), client).await {
                Ok(Ok(received)) if received == expected => {}
                _ => failures += 1,
            }
        }
        phases += 1;
    }
    let settle = Instant::now() + Duration::from_secs(30);
    while parked(args.metrics).await != 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(SAMPLE_EVERY).await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let parked_end = parked(args.metrics).await;

    // Growth: the last fifth of the run against the fifth after the first
    // (the first fifth is the warm-up).
    let window = |from: f64, to: f64| {
        let total = args.minutes;
        let picked: Vec<f64> = samples
            .iter()
            .filter(|s| s.minutes >= total * from && s.minutes <= total * to)
            .map(|s| s.rss_mib)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    let (early, late) = (window(0.2, 0.4), window(0.8, 1.0));
    let growth = (late - early) / early.max(1.0) * 100.0;

    let csv: String = std::iter::once("minutes,rss_mib,parked\n".to_owned())
        .chain(
            samples
                .iter()
                .map(|s| format!("{:.2},{:.1},{}\n", s.minutes, s.rss_mib, s.parked)),
        )
        .collect();
    std::fs::write(args.out.join("soak.csv"), csv).unwrap();
    plot(&args, &samples).unwrap();

    let ok = failures == 0 && parked_end == 0 && growth <= 10.0;
    println!(
        r#"{{"minutes":{},"clients":{},"phases":{phases},"polls":{},"failures":{failures},"parked_end":{parked_end},"rss_early_mib":{early:.1},"rss_late_mib":{late:.1},"growth_pct":{growth:.1},"ok":{ok}}}"#,
        args.minutes,
        args.clients,
        tally.polls.load(std::sync::atomic::Ordering::Relaxed),
    );
    std::process::exit(if ok { 0 } else { 1 });
}

fn plot(args: &Args, samples: &[Sample]) -> Result<(), Box<dyn std::error::Error>> {
    let font: &'static [u8] = Box::leak(std::fs::read(&args.font)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be read")?;
    let path = args.out.join("soak.png");
    let root = BitMapBackend::new(&path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(320);
    let minutes = args.minutes.max(samples.last().map_or(0.0, |s| s.minutes));
    let rss_max = samples.iter().map(|s| s.rss_mib).fold(16.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&top)
        .caption("server memory (RSS, MiB)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, 0.0..rss_max)?;
    chart.configure_mesh().x_desc("minutes").draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.minutes, s.rss_mib)),
        &BLUE,
    ))?;
    let parked_max = samples.iter().map(|s| s.parked).max().unwrap_or(0).max(10) as f64 * 1.2;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("parked polls", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, 0.0..parked_max)?;
    chart.configure_mesh().x_desc("minutes").draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.minutes, s.parked as f64)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}
