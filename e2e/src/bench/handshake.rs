//! Figures 1 and 2: full-handshake throughput of the reloadable acceptor
//! against a plain `tokio_rustls::TlsAcceptor` over the same config, and
//! with against without rotations every 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tls_reload::ReloadableAcceptor;
use tls_reload::testing::{AtomicWriter, TestCa};

use crate::load::{self, After, ClientSpec, Clients, Published, Rate};
use crate::util::{self, KeyKind, Row, Settings};

/// A pair is disturbed when, in either of its windows, other processes
/// (or the hypervisor) took more than this share of the machine.
pub(crate) const DISTURBED: f64 = 0.05;

/// Timings of an interleaved A/B comparison.
pub(crate) struct Plan {
    /// Undisturbed pairs wanted.
    pub(crate) clean: usize,
    /// Pairs run at most, disturbed or not.
    pub(crate) max: usize,
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
}

impl Plan {
    pub(crate) fn new(s: &Settings) -> Self {
        Self {
            clean: s.pick(8, 1),
            max: s.pick(16, 1),
            warmup: s.pick(Duration::from_millis(250), Duration::from_millis(100)),
            window: s.pick(Duration::from_millis(1000), Duration::from_millis(250)),
        }
    }

    /// Order of the two arms in pair `i`: A B, B A, A B, ... so that a
    /// linear drift of the machine cancels out.
    pub(crate) fn order(i: usize) -> [bool; 2] {
        if i.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "pairs of {} ms windows (after {} ms warm-up each), order A B / B A, until {} \
             undisturbed pairs (other processes < {:.0} % of the machine in both windows) \
             or {} pairs",
            self.window.as_millis(),
            self.warmup.as_millis(),
            self.clean,
            DISTURBED * 100.0,
            self.max
        )
    }
}

/// Per-pair results of an A/B comparison; B is the arm under test.
#[derive(Default)]
pub(crate) struct Pairs {
    a: Vec<f64>,
    b: Vec<f64>,
    ratio: Vec<f64>,
    cpu_ratio: Vec<f64>,
    clean: Vec<bool>,
}

impl Pairs {
    /// Records a pair and prints it; returns whether it was undisturbed.
    pub(crate) fn push(&mut self, i: usize, names: [&str; 2], a: Rate, b: Rate) -> bool {
        let foreign = a.foreign.unwrap_or(0.0).max(b.foreign.unwrap_or(0.0));
        let clean = foreign < DISTURBED;
        self.a.push(a.per_sec);
        self.b.push(b.per_sec);
        self.ratio.push(b.per_sec / a.per_sec);
        // CPU per operation, inverted so that > 1 means B is cheaper, like
        // the throughput ratio.
        let cpu = match (a.cpu_ns_per_op, b.cpu_ns_per_op) {
            (Some(ca), Some(cb)) => ca / cb,
            _ => f64::NAN,
        };
        self.cpu_ratio.push(cpu);
        self.clean.push(clean);
        println!(
            "   pair {:>2}: {} {:.0}/s, {} {:.0}/s, ratio {:.3}, CPU/op ratio {:.3}, \
             other processes {:.1} %{}",
            i + 1,
            names[0],
            a.per_sec,
            names[1],
            b.per_sec,
            b.per_sec / a.per_sec,
            cpu,
            foreign * 100.0,
            if clean { "" } else { " (disturbed)" }
        );
        clean
    }

    pub(crate) fn clean_count(&self) -> usize {
        self.clean.iter().filter(|&&c| c).count()
    }

    /// The pairs the figure is computed from: the undisturbed ones when
    /// there are at least three, else all of them.
    fn kept(&self, v: &[f64]) -> Vec<f64> {
        let use_clean = self.clean_count() >= 3;
        v.iter()
            .zip(&self.clean)
            .filter(|(_, c)| !use_clean || **c)
            .map(|(x, _)| *x)
            .filter(|x| x.is_finite())
            .collect()
    }

    pub(crate) fn summary(&self, a_name: &str, b_name: &str) -> String {
        let ratios = self.kept(&self.ratio);
        let (lo, hi) = util::range(&ratios);
        let which = if self.clean_count() >= 3 {
            format!(
                "median of {} undisturbed pairs of {}",
                ratios.len(),
                self.ratio.len()
            )
        } else {
            format!(
                "median of all {} pairs, only {} undisturbed",
                self.ratio.len(),
                self.clean_count()
            )
        };
        format!(
            "{:.3} ({which}, range {lo:.3}..{hi:.3}; {b_name} {:.0}/s vs {a_name} {:.0}/s; \
             CPU-per-op ratio {:.3})",
            util::median(&ratios),
            util::median(&self.kept(&self.b)),
            util::median(&self.kept(&self.a)),
            util::median(&self.kept(&self.cpu_ratio)),
        )
    }
}

fn failures(counters: &load::Counters) -> (u64, u64, Option<String>) {
    (
        counters.failed.load(Ordering::Relaxed),
        counters.mismatched.load(Ordering::Relaxed),
        counters.first_error.lock().expect("first error").clone(),
    )
}

// === fine-grained interleaving ===

/// Arms A and B alternate in short slots while the same client loops keep
/// running, so that whatever else the machine does falls on both arms
/// alike. Slots go A B, B A, A B, ... within a round; each round gives one
/// ratio, and the figure is the median over rounds.
pub(crate) struct Schedule {
    pub(crate) rounds: usize,
    /// A-and-B slot pairs per round.
    pub(crate) pairs_per_round: usize,
    pub(crate) slot: Duration,
    /// Wait after switching arms before counting, so that connections
    /// started under the other arm have finished.
    pub(crate) guard: Duration,
}

impl Schedule {
    fn describe(&self) -> String {
        format!(
            "{} rounds of {} A/B slot pairs of {} ms (order A B, B A, ...; {} ms guard after each switch)",
            self.rounds,
            self.pairs_per_round,
            self.slot.as_millis(),
            self.guard.as_millis()
        )
    }
}

/// One round of an interleaved comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    pub(crate) a: f64,
    pub(crate) b: f64,
    /// CPU per operation of A over that of B (> 1: B cheaper).
    pub(crate) cpu_ratio: f64,
    /// Share of the machine other processes used during the round.
    pub(crate) foreign: f64,
}

impl Round {
    pub(crate) fn ratio(&self) -> f64 {
        self.b / self.a
    }
}

/// Runs `schedule` against running `clients`. `switch(arm)` selects an
/// arm (false: A, true: B) at the start of each slot; `body(arm)` is the
/// slot itself and must last `schedule.slot`.
pub(crate) async fn interleave<S, B, Fut>(
    schedule: &Schedule,
    clients: &Clients,
    names: [&str; 2],
    mut switch: S,
    mut body: B,
) -> Vec<Round>
where
    S: FnMut(bool),
    B: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut rounds = Vec::with_capacity(schedule.rounds);
    for r in 0..schedule.rounds {
        let window = util::WindowStart::now();
        let mut done = [0u64; 2];
        let mut time = [Duration::ZERO; 2];
        let mut cpu = [0u64; 2];
        for k in 0..schedule.pairs_per_round {
            for arm in Plan::order(k) {
                switch(arm);
                tokio::time::sleep(schedule.guard).await;
                let (c0, t0, n0) = (clients.ok(), Instant::now(), util::ThreadsCpu::now());
                body(arm).await;
                let (c1, t1, n1) = (clients.ok(), Instant::now(), util::ThreadsCpu::now());
                let i = usize::from(arm);
                done[i] += c1.saturating_sub(c0);
                time[i] += t1 - t0;
                cpu[i] += n1.since(&n0);
            }
        }
        let foreign = window.finish().foreign.unwrap_or(f64::NAN);
        let rate = |i: usize| done[i] as f64 / time[i].as_secs_f64();
        let per_op = |i: usize| cpu[i] as f64 / done[i].max(1) as f64;
        let round = Round {
            a: rate(0),
            b: rate(1),
            cpu_ratio: per_op(0) / per_op(1),
            foreign,
        };
        println!(
            "   round {:>2}: {} {:.0}/s, {} {:.0}/s, ratio {:.4}, CPU/op ratio {:.4}, other processes {:.1} %{}",
            r + 1,
            names[0],
            round.a,
            names[1],
            round.b,
            round.ratio(),
            round.cpu_ratio,
            foreign * 100.0,
            if foreign >= DISTURBED {
                " (disturbed)"
            } else {
                ""
            }
        );
        rounds.push(round);
    }
    rounds
}

/// The figure of an interleaved comparison: the median round ratio.
pub(crate) fn summarize(rounds: &[Round], names: [&str; 2]) -> (f64, String) {
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_ratio).collect();
    let a: Vec<f64> = rounds.iter().map(|r| r.a).collect();
    let b: Vec<f64> = rounds.iter().map(|r| r.b).collect();
    let pooled = b.iter().sum::<f64>() / a.iter().sum::<f64>();
    let (lo, hi) = util::range(&ratios);
    let disturbed = rounds.iter().filter(|r| r.foreign >= DISTURBED).count();
    let clean: Vec<f64> = rounds
        .iter()
        .filter(|r| r.foreign < DISTURBED)
        .map(Round::ratio)
        .collect();
    let clean_note = if disturbed > 0 && clean.len() >= 3 {
        format!(", undisturbed rounds only {:.3}", util::median(&clean))
    } else {
        String::new()
    };
    let median = util::median(&ratios);
    (
        median,
        format!(
            "{median:.3} (median of {} rounds, range {lo:.3}..{hi:.3}, pooled {pooled:.3}; \
             {} {:.0}/s vs {} {:.0}/s; CPU-per-op ratio {:.3}; {disturbed} rounds disturbed by \
             other processes{clean_note})",
            ratios.len(),
            names[1],
            util::median(&b),
            names[0],
            util::median(&a),
            util::median(&cpu),
        ),
    )
}

/// Figure 1.
pub(crate) async fn throughput(s: &Settings, kind: KeyKind) -> Vec<Row> {
    let figure = format!(
        "1. handshakes/s, reloadable ÷ plain TlsAcceptor ({})",
        kind.label()
    );
    println!("\n== {figure}");
    let ca = TestCa::new("bench CA");
    let leaf = match util::leaf(&ca, kind) {
        Ok(leaf) => leaf,
        Err(reason) => {
            println!("   skipped: {reason}");
            return vec![Row::skipped(figure, reason)];
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = util::write_plain(tmp.path(), &leaf).expect("write cert and key");
    let (acceptor, watcher) = ReloadableAcceptor::builder(files)
        .start()
        .expect("start acceptor");
    // The baseline serves the very same ServerConfig, without the ArcSwap.
    let plain = tokio_rustls::TlsAcceptor::from(acceptor.server_config());
    // One listener, one accept loop; which acceptor handshakes a connection
    // depends on the arm of the moment, so both arms see the same clients,
    // sockets and machine.
    let reloadable_arm = Arc::new(AtomicBool::new(false));
    let (listener, addr) = load::listen().await;
    let (served, arm) = (acceptor.clone(), reloadable_arm.clone());
    let server = load::spawn_server(listener, move |tcp| {
        if arm.load(Ordering::Relaxed) {
            served.accept(tcp)
        } else {
            plain.accept(tcp)
        }
    });

    let schedule = Schedule {
        rounds: s.pick(12, 1),
        pairs_per_round: s.pick(10, 3),
        slot: Duration::from_millis(100),
        guard: Duration::from_millis(5),
    };
    let spec = ClientSpec {
        addr,
        config: load::client(ca.cert_pem(), &[]),
        after: After::ReadOk,
        published: None,
        limit: Duration::from_secs(120),
    };
    println!(
        "   {} client loops, one listener switching acceptor per slot; {}",
        s.clients,
        schedule.describe()
    );
    let clients = Clients::start(&spec, s.clients);
    tokio::time::sleep(s.pick(Duration::from_millis(500), Duration::from_millis(100))).await;
    let names = ["plain", "reloadable"];
    let rounds = interleave(
        &schedule,
        &clients,
        names,
        |b| reloadable_arm.store(b, Ordering::Relaxed),
        |_| tokio::time::sleep(schedule.slot),
    )
    .await;
    // The noise floor of this schedule on this machine right now: the
    // same comparison with the plain acceptor in both arms.
    let control = if kind == KeyKind::EcdsaP256 {
        let schedule = Schedule {
            rounds: s.pick(6, 1),
            ..schedule
        };
        println!(
            "   control, plain in both arms (A/A): {}",
            schedule.describe()
        );
        reloadable_arm.store(false, Ordering::Relaxed);
        let rounds = interleave(
            &schedule,
            &clients,
            ["plain", "plain"],
            |_| {},
            |_| tokio::time::sleep(schedule.slot),
        )
        .await;
        Some(rounds)
    } else {
        None
    };
    let counters = clients.stop().await;
    server.abort();
    watcher.shutdown().await;

    let (ratio, value) = summarize(&rounds, names);
    let (failed, _, first_error) = failures(&counters);
    let mut rows = vec![Row::check(figure, value, "≥ 0.99", ratio >= 0.99)];
    if let Some(control) = control {
        let ratios: Vec<f64> = control.iter().map(Round::ratio).collect();
        let (lo, hi) = util::range(&ratios);
        rows.push(Row::info(
            "1. noise floor: plain ÷ plain, same schedule (A/A)",
            format!(
                "{:.3} (median of {} rounds, range {lo:.3}..{hi:.3})",
                util::median(&ratios),
                ratios.len()
            ),
        ));
    }
    if failed > 0 {
        rows.push(Row::check(
            format!("1. failed handshakes ({})", kind.label()),
            format!("{failed} (first: {})", first_error.unwrap_or_default()),
            "0",
            false,
        ));
    }
    rows
}

/// Figure 2.
pub(crate) async fn rotating(s: &Settings) -> Vec<Row> {
    let figure = "2. handshakes/s, rotating every 100 ms ÷ not rotating";
    println!("\n== {figure}");
    let ca = Arc::new(TestCa::new("bench CA"));
    let pool = Arc::new(util::leaves(&ca, 4));
    let published = Arc::new(Published::new(pool.iter().map(|l| l.fingerprint.clone())));
    let tmp = tempfile::tempdir().expect("tempdir");
    let writer = AtomicWriter::new(tmp.path().join("server")).expect("volume");
    writer
        .write(&util::payload(&pool[0], &ca))
        .expect("initial write");
    let debounce = Duration::from_millis(10);
    let (acceptor, watcher) = ReloadableAcceptor::builder(tls_reload::TlsFiles::new(
        writer.path("tls.crt"),
        writer.path("tls.key"),
    ))
    .debounce(debounce)
    .start()
    .expect("start acceptor");
    let (listener, addr) = load::listen().await;
    let served = acceptor.clone();
    let server = load::spawn_server(listener, move |tcp| served.accept(tcp));

    let period = Duration::from_millis(100);
    let per_slot = 3u32;
    let schedule = Schedule {
        rounds: s.pick(12, 1),
        pairs_per_round: s.pick(3, 1),
        slot: period * per_slot,
        guard: Duration::from_millis(5),
    };
    let spec = ClientSpec {
        addr,
        config: load::client(ca.cert_pem(), &[]),
        after: After::ReadOk,
        published: Some(published.clone()),
        limit: Duration::from_secs(120),
    };
    println!(
        "   {} client loops checking each served fingerprint; watcher debounce {} ms; a rotating \
         slot writes a new pair kubelet-style every {} ms ({per_slot} per slot); {}",
        s.clients,
        debounce.as_millis(),
        period.as_millis(),
        schedule.describe()
    );
    let reloads_before = acceptor.status().reloads_succeeded;
    let clients = Clients::start(&spec, s.clients);
    tokio::time::sleep(s.pick(Duration::from_millis(500), Duration::from_millis(100))).await;
    let next = Arc::new(AtomicU64::new(1));
    let rotations = Arc::new(AtomicU64::new(0));
    let names = ["steady", "rotating"];
    let rounds = interleave(
        &schedule,
        &clients,
        names,
        |_| {},
        |rotate| {
            let (writer, ca, pool, published, next, rotations) = (
                writer.clone(),
                ca.clone(),
                pool.clone(),
                published.clone(),
                next.clone(),
                rotations.clone(),
            );
            async move {
                if !rotate {
                    tokio::time::sleep(period * per_slot).await;
                    return;
                }
                let start = tokio::time::Instant::now();
                for k in 0..per_slot {
                    tokio::time::sleep_until(start + period * k).await;
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % pool.len();
                    published.publish(i);
                    let (writer, ca, pool) = (writer.clone(), ca.clone(), pool.clone());
                    tokio::task::spawn_blocking(move || {
                        writer
                            .write(&util::payload(&pool[i], &ca))
                            .expect("kubelet-style write")
                    })
                    .await
                    .expect("writer task");
                    rotations.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep_until(start + period * per_slot).await;
            }
        },
    )
    .await;
    let counters = clients.stop().await;
    // Let the last write land (bounded) before counting reloads.
    let last = pool[(next.load(Ordering::Relaxed) as usize - 1) % pool.len()]
        .fingerprint
        .clone();
    let settle = Instant::now();
    while acceptor.status().cert.fingerprint_sha256 != last
        && settle.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = acceptor.status();
    let reloads = status.reloads_succeeded - reloads_before;
    server.abort();
    watcher.shutdown().await;

    let (ratio, value) = summarize(&rounds, names);
    let (failed, mismatched, first_error) = failures(&counters);
    let rotations = rotations.load(Ordering::Relaxed);
    let error = first_error
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    vec![
        Row::check(figure, value, "≥ 0.97", ratio >= 0.97),
        Row::check(
            "2. failed handshakes while rotating",
            format!(
                "{failed} of {} handshakes, {rotations} rotations ({reloads} reloads, {} failed reloads){error}",
                counters.ok.load(Ordering::Relaxed),
                status.reloads_failed
            ),
            "0",
            failed == 0 && status.reloads_failed == 0,
        ),
        Row::check(
            "2. handshakes serving an unpublished cert",
            format!("{mismatched}"),
            "0",
            mismatched == 0,
        ),
    ]
}
