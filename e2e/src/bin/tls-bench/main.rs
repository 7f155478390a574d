//! Benchmarks of the TLS layer and the gateway; see
//! BENCH.md at the repository root.
//!
//! `cargo run --release -p openshell-e2e --bin tls-bench [-- --smoke]
//! [--only NAME[,NAME]] [--clients N]`
//!
//! Every figure is a ratio or a percentile against a baseline measured in
//! the same run. Figures 1–6 run in this process over loopback; figure 7
//! drives its servers with `h2load` and also runs nginx and the release
//! gateway binary as child processes when they are present.

// A benchmark's output is its stdout, and its fixtures fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod gateway;
mod handshake;
mod interleave;
mod latency;
mod load;
mod request;
mod resources;
mod util;

use std::time::{Duration, Instant};

use util::{KeyKind, Row, Settings, Verdict};

/// The figures, by the name `--only` takes.
const FIGURES: [(&str, &str); 8] = [
    (
        "handshake",
        "1. handshakes/s, reloadable vs plain TlsAcceptor (ECDSA, RSA)",
    ),
    (
        "rotating",
        "2. handshakes/s rotating every 100 ms vs not rotating",
    ),
    ("latency", "3. rotation latency, debounce 200 ms and 0"),
    (
        "gateway",
        "4. 1,000 rotations under 64 handshake loops (gateway)",
    ),
    ("memory", "5. RSS across 10,000 reloads, cost of one reload"),
    ("idle", "5. idle gateway CPU with the watcher on"),
    ("grpc", "6. gRPC calls/s through the gateway"),
    (
        "request",
        "7. request path vs bare hyper, bare tonic and nginx (h2load)",
    ),
];

struct Args {
    smoke: bool,
    only: Option<Vec<String>>,
    clients: Option<usize>,
}

fn usage() -> String {
    let mut s = String::from(
        "usage: tls-bench [--smoke] [--only NAME[,NAME...]] [--clients N]\n\
         \n  --smoke       a few iterations of everything, targets not enforced (< 30 s in debug)\
         \n  --only NAMES  run only these figures (comma-separated or repeated)\
         \n  --clients N   concurrent client loops of figures 1, 2 and 6 (default 4 × cores)\
         \n\nfigures:\n",
    );
    for (name, what) in FIGURES {
        s.push_str(&format!("  {name:<10} {what}\n"));
    }
    s
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        smoke: false,
        only: None,
        clients: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => args.smoke = true,
            "--only" => {
                let names = it.next().ok_or("--only needs a figure name")?;
                for name in names.split(',').filter(|n| !n.is_empty()) {
                    if !FIGURES.iter().any(|(n, _)| *n == name) {
                        return Err(format!("unknown figure {name:?}"));
                    }
                    args.only.get_or_insert_with(Vec::new).push(name.to_owned());
                }
            }
            "--clients" => {
                let n = it.next().ok_or("--clients needs a number")?;
                args.clients = Some(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0 && n <= 1024)
                        .ok_or(format!("--clients {n:?}: expected 1..=1024"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("tls-bench: {e}\n");
            }
            eprint!("{}", usage());
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = Settings {
        smoke: args.smoke,
        cores,
        clients: args.clients.unwrap_or(4 * cores),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run(&settings, args.only.as_deref()));
    // Whatever a figure left running ends with the runtime, within bounds.
    runtime.shutdown_timeout(Duration::from_secs(5));

    let misses: Vec<&Row> = rows.iter().filter(|r| r.verdict == Verdict::Miss).collect();
    if !settings.smoke && !misses.is_empty() {
        println!();
        for r in &misses {
            println!("MISS: {}: {} (target {})", r.figure, r.value, r.target);
        }
    }
    // Smoke mode never fails; full mode reports misses above and exits 0
    // too, as a benchmark is not a test.
}

async fn run(s: &Settings, only: Option<&[String]>) -> Vec<Row> {
    let started = Instant::now();
    let wanted = |name: &str| only.is_none_or(|o| o.iter().any(|n| n == name));
    println!(
        "tls-bench: {} mode, {} build, {} cores available (nproc {}), CPU {}, {}",
        if s.smoke { "smoke" } else { "full" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        s.cores,
        util::nproc(),
        util::cpu_model(),
        util::now_rfc3339(),
    );
    println!(
        "server and clients share this process and its {}-thread runtime over loopback; \
         client session resumption is off (every handshake is a full TLS 1.3 handshake); \
         certificate files live on {}",
        s.cores,
        util::volume_fs()
    );

    let mut rows = Vec::new();
    if wanted("handshake") {
        rows.extend(handshake::throughput(s, KeyKind::EcdsaP256).await);
        rows.extend(handshake::throughput(s, KeyKind::Rsa2048).await);
    }
    if wanted("rotating") {
        rows.extend(handshake::rotating(s).await);
    }
    if wanted("latency") {
        rows.extend(latency::latency(s, Duration::from_millis(200)).await);
        rows.extend(latency::latency(s, Duration::ZERO).await);
    }
    if wanted("gateway") {
        rows.extend(gateway::rotations_under_load(s).await);
    }
    if wanted("memory") {
        rows.extend(resources::reloads(s).await);
    }
    if wanted("idle") {
        rows.extend(resources::idle_cpu(s).await);
    }
    if wanted("grpc") {
        rows.extend(gateway::grpc(s).await);
    }
    if wanted("request") {
        rows.extend(request::request_path(s).await);
    }

    println!(
        "\n== summary ({} mode, {} cores, {:.0} s)\n",
        if s.smoke { "smoke" } else { "full" },
        s.cores,
        started.elapsed().as_secs_f64()
    );
    print!("{}", util::table(&rows, s.smoke));
    rows
}
