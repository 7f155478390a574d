//! Benchmarks of the TLS layer and the gateway; see
//! BENCH.md at the repository root.
//!
//! `cargo run --release -p openshell-e2e --bin tls-bench -- [--smoke]
//! [--only NAME[,NAME]] [--clients N]`; `--help` lists the options, their
//! defaults and the figures.
//!
//! Every figure is a ratio or a percentile against a baseline measured in
//! the same run. Figures 1–6 and 8 run in this process over loopback; figure 7
//! drives its servers with `h2load` and also runs nginx and the release
//! gateway binary as child processes when they are present.

// A benchmark's output is its stdout, and its fixtures fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod connector;
mod gateway;
mod handshake;
mod interleave;
mod latency;
mod load;
mod request;
mod resources;
mod util;

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use util::{KeyKind, Row, Settings};

/// Benchmarks of the TLS layer and the gateway (method and figures: BENCH.md).
#[derive(Debug, Parser)]
#[command(name = "tls-bench")]
struct Args {
    /// A few iterations of everything, targets not enforced (< 30 s in
    /// debug) [default: off, the full run].
    #[arg(long)]
    smoke: bool,
    /// Run only these figures, comma-separated or repeated [default: every
    /// figure].
    #[arg(long, value_name = "NAME", value_delimiter = ',', value_enum)]
    only: Vec<Figure>,
    /// Concurrent client loops of figures 1, 2, 6 and 8, 1 to 1024 (the default
    /// is 4 × the cores available).
    #[arg(long, value_name = "N", default_value_t = 4 * cores(),
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
}

/// The figures, by the name `--only` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Figure {
    /// 1. handshakes/s, reloadable vs plain TlsAcceptor (ECDSA, RSA, SNI)
    Handshake,
    /// 2. handshakes/s rotating every 100 ms vs not rotating
    Rotating,
    /// 3. rotation latency, debounce 200 ms and 0
    Latency,
    /// 4. 1,000 rotations under 64 handshake loops (gateway)
    Gateway,
    /// 5. RSS across 10,000 reloads, cost of one reload
    Memory,
    /// 5. idle gateway CPU with the watcher on
    Idle,
    /// 6. gRPC calls/s through the gateway
    Grpc,
    /// 7. request path vs bare hyper, bare tonic and nginx (h2load)
    Request,
    /// 8. connections/s, reloadable vs plain TlsConnector (mTLS client)
    Connector,
}

/// Cores the scheduler gives this process, at most 256 (so that the
/// default client count is a valid `--clients`).
fn cores() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| u16::try_from(n.get().min(256)).unwrap_or(256))
}

fn main() {
    let args = Args::parse();
    let (cores, clients) = (usize::from(cores()), usize::from(args.clients));
    let settings = Settings {
        smoke: args.smoke,
        cores,
        clients,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run(&settings, &args.only));
    // Whatever a figure left running ends with the runtime, within bounds.
    runtime.shutdown_timeout(Duration::from_secs(5));

    let misses: Vec<(&Row, &str)> = rows.iter().filter_map(|r| Some((r, r.missed()?))).collect();
    if !settings.smoke && !misses.is_empty() {
        println!();
        for (r, target) in &misses {
            println!("MISS: {}: {} (target {target})", r.figure, r.value);
        }
    }
    // Smoke mode never fails; full mode reports misses above and exits 0
    // too, as a benchmark is not a test.
}

async fn run(s: &Settings, only: &[Figure]) -> Vec<Row> {
    let started = Instant::now();
    let wanted = |figure: Figure| only.is_empty() || only.contains(&figure);
    let mode = if s.smoke { "smoke" } else { "full" };
    let build = ["release", "debug"][usize::from(cfg!(debug_assertions))];
    let (cores, nproc, cpu) = (s.cores, util::nproc(), util::cpu_model());
    let (now, fs) = (util::now_rfc3339(), util::volume_fs());
    println!(
        "tls-bench: {mode} mode, {build} build, {cores} cores available (nproc {nproc}), CPU {cpu}, {now}"
    );
    println!(
        "server and clients share this process and its {cores}-thread runtime over loopback; \
         client session resumption is off (every handshake is a full TLS 1.3 handshake); \
         certificate files live on {fs}"
    );

    let mut rows = Vec::new();
    // In the order of `Figure`, which is the order of BENCH.md.
    for figure in Figure::value_variants().iter().filter(|f| wanted(**f)) {
        match figure {
            Figure::Handshake => {
                rows.extend(handshake::throughput(s, KeyKind::EcdsaP256).await);
                rows.extend(handshake::throughput(s, KeyKind::Rsa2048).await);
                for identities in [1, 3] {
                    rows.extend(handshake::sni(s, identities).await);
                }
            }
            Figure::Rotating => rows.extend(handshake::rotating(s).await),
            Figure::Latency => {
                rows.extend(latency::latency(s, Duration::from_millis(200)).await);
                rows.extend(latency::latency(s, Duration::ZERO).await);
            }
            Figure::Gateway => rows.extend(gateway::rotations_under_load(s).await),
            Figure::Memory => rows.extend(resources::reloads(s).await),
            Figure::Idle => rows.extend(resources::idle_cpu(s).await),
            Figure::Grpc => rows.extend(gateway::grpc(s).await),
            Figure::Request => rows.extend(request::request_path(s).await),
            Figure::Connector => {
                rows.extend(connector::throughput(s, false).await);
                rows.extend(connector::throughput(s, true).await);
            }
        }
    }

    let secs = started.elapsed().as_secs_f64();
    println!("\n== summary ({mode} mode, {cores} cores, {secs:.0} s)\n");
    print!("{}", util::table(&rows, s.smoke));
    rows
}
