//! Shared pieces of the benchmark: run settings, the results table,
//! statistics, `/proc` readers and certificates.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use procfs::process::Process;
use procfs::{Current as _, CurrentSI as _};
use tls_reload::TlsFiles;
use tls_reload::testing::{AtomicWriter, Leaf, LeafOptions, TestCa};
use tokio::task::JoinHandle;

/// How this run was asked to behave.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// A few iterations of everything, targets not enforced.
    pub(crate) smoke: bool,
    /// Cores the scheduler gives this process.
    pub(crate) cores: usize,
    /// Concurrent client loops of the throughput figures.
    pub(crate) clients: usize,
}

impl Settings {
    /// `full` in full mode, `smoke` in smoke mode.
    pub(crate) fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }
}

/// Outcome of one row of the summary.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Measured against a target, which it met or missed.
    Checked { target: String, pass: bool },
    /// No target: a figure to read, not to judge.
    Info,
    /// Could not be measured here.
    Skipped,
}

/// One line of the summary table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) value: String,
    pub(crate) verdict: Verdict,
}

impl Row {
    fn new(figure: impl Into<String>, value: String, verdict: Verdict) -> Self {
        let figure = figure.into();
        Self {
            figure,
            value,
            verdict,
        }
    }

    /// A figure with a target.
    pub(crate) fn check(
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: bool,
    ) -> Self {
        let target = target.into();
        Self::new(figure, value.into(), Verdict::Checked { target, pass })
    }

    /// A count that should be zero.
    pub(crate) fn zero(figure: impl Into<String>, value: impl Into<String>, pass: bool) -> Self {
        Self::check(figure, value, "0", pass)
    }

    /// A figure without a target.
    pub(crate) fn info(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(figure, value.into(), Verdict::Info)
    }

    /// A figure that could not be measured, and why.
    pub(crate) fn skipped(figure: impl Into<String>, reason: impl Into<String>) -> Self {
        let value = format!("skipped: {}", reason.into());
        Self::new(figure, value, Verdict::Skipped)
    }

    /// The target it was measured against, if any.
    pub(crate) fn missed(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Checked { target, pass } if !pass => Some(target),
            _ => None,
        }
    }

    /// The cells of its line in the summary table.
    fn cells(&self, smoke: bool) -> [String; 4] {
        let (target, result) = match &self.verdict {
            Verdict::Checked { target, pass: true } => (target.as_str(), "pass"),
            Verdict::Checked {
                target,
                pass: false,
            } => (target.as_str(), "MISS"),
            Verdict::Info => ("-", "info"),
            Verdict::Skipped => ("-", "skip"),
        };
        let mut result = result.to_owned();
        if smoke && matches!(self.verdict, Verdict::Checked { .. }) {
            result.push_str(" (smoke, not enforced)");
        }
        [self.figure.as_str(), &self.value, target, &result].map(str::to_owned)
    }
}

/// Renders the summary table; in smoke mode the verdicts are marked as not
/// enforced.
pub(crate) fn table(rows: &[Row], smoke: bool) -> String {
    let header = ["figure", "value", "target", "result"].map(String::from);
    let mut lines: Vec<[String; 4]> = std::iter::once(header)
        .chain(rows.iter().map(|r| r.cells(smoke)))
        .collect();
    let width = [0, 1, 2, 3].map(|i| lines.iter().map(|c| c[i].chars().count()).max());
    let width = width.map(Option::unwrap_or_default);
    lines.insert(1, width.map(|w| "-".repeat(w)));
    let mut out = String::new();
    for line in &lines {
        for (cell, w) in line.iter().zip(width) {
            let _ = write!(out, "| {cell:<w$} ");
        }
        out.push_str("|\n");
    }
    out
}

// === statistics ===

/// The median of `values` (mean of the two middle ones for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let (v, n) = (sorted(values), values.len());
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile `p` (0..=100) of `values`.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    rank.min(v.len()).checked_sub(1).map_or(f64::NAN, |i| v[i])
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Smallest and largest of `values`.
pub(crate) fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Arithmetic mean.
/// (NaN for none, as 0 / 0).
pub(crate) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Milliseconds of a duration, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// === /proc ===

/// Resident set size of this process in KiB (`VmRSS`).
pub(crate) fn rss_kib() -> Option<u64> {
    Process::myself().ok()?.status().ok()?.vmrss
}

/// User plus system CPU time of this process, all threads (alive or
/// ended); resolution one clock tick.
pub(crate) fn process_cpu() -> Option<Duration> {
    let ticks = stat_ticks(&Process::myself().ok()?)?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// utime + stime of `process`, in clock ticks.
pub(crate) fn stat_ticks(process: &Process) -> Option<u64> {
    let stat = process.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// On-CPU time of each live thread of this process, in nanoseconds, from
/// `/proc/self/task/*/schedstat`: much finer than [`process_cpu`]. Diff two
/// snapshots with [`ThreadsCpu::since`]; a thread that ended between them
/// loses its time within the window (the tokio blocking pool's threads
/// end after 10 s idle), so prefer windows in which few threads end.
#[derive(Debug, Clone, Default)]
pub(crate) struct ThreadsCpu(std::collections::HashMap<i32, u64>);

impl ThreadsCpu {
    pub(crate) fn now() -> Self {
        let tasks = Process::myself()
            .and_then(|p| p.tasks())
            .into_iter()
            .flatten();
        let threads = tasks
            .flatten()
            .filter_map(|task| Some((task.tid, task.schedstat().ok()?.sum_exec_runtime)));
        Self(threads.collect())
    }

    /// CPU time spent since `earlier` by the threads alive now.
    pub(crate) fn since(&self, earlier: &Self) -> u64 {
        self.0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum()
    }
}

/// Busy and total CPU time of the whole machine, in clock ticks (steal
/// counts as busy: another tenant had the core; guest is in user).
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    let t = procfs::KernelStats::current().ok()?.total;
    let extra = [t.irq, t.softirq, t.steal].map(Option::unwrap_or_default);
    let busy = t.user + t.nice + t.system + extra.iter().sum::<u64>();
    Some((busy, busy + t.idle + t.iowait.unwrap_or_default()))
}

/// The start of a measurement window, to learn what the rest of the
/// machine did over it.
pub(crate) struct WindowStart {
    own: Option<Duration>,
    machine: Option<(u64, u64)>,
}

impl WindowStart {
    pub(crate) fn now() -> Self {
        let (own, machine) = (process_cpu(), machine_ticks());
        Self { own, machine }
    }

    /// Share of the machine's CPU capacity used by other processes (and
    /// stolen by the hypervisor) since [`now`](Self::now), 0..1.
    pub(crate) fn foreign(self) -> Option<f64> {
        match (self.own, process_cpu(), self.machine, machine_ticks()) {
            (Some(o0), Some(o1), Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                let own_ticks = (o1.saturating_sub(o0)).as_secs_f64() * clock_ticks() as f64;
                let busy = b1.saturating_sub(b0) as f64;
                Some(((busy - own_ticks).max(0.0) / (t1 - t0) as f64).min(1.0))
            }
            _ => None,
        }
    }
}

/// `sysconf(_SC_CLK_TCK)`.
pub(crate) fn clock_ticks() -> u64 {
    procfs::ticks_per_second()
}

/// The CPU model from `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> String {
    let info = procfs::CpuInfo::current().ok();
    let model = info.as_ref().and_then(|c| c.model_name(0));
    model.map_or_else(|| "unknown".into(), |m| m.trim().to_owned())
}

/// Processors online, as `nproc` prints it.
pub(crate) fn nproc() -> String {
    let out =
        openshell_e2e::command::run(&mut Command::new("nproc"), None, Duration::from_secs(60));
    out.map_or_else(|_| "?".into(), |o| o.trim().to_owned())
}

/// Now, RFC 3339, seconds.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

// === certificates ===

/// The key type of a benchmarked leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

impl KeyKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::Rsa2048 => "RSA-2048",
        }
    }
}

/// A server leaf for localhost of the given key type, issued by `ca`.
pub(crate) fn leaf(ca: &TestCa, kind: KeyKind) -> Result<Leaf, String> {
    match kind {
        KeyKind::EcdsaP256 => Ok(ca.server()),
        KeyKind::Rsa2048 => {
            // ring cannot generate RSA keys: openssl makes a PKCS#8 PEM
            // key, and the error says why when openssl is unavailable.
            let mut openssl = Command::new("openssl");
            openssl.args("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048".split(' '));
            let out = openshell_e2e::command::run(&mut openssl, None, Duration::from_secs(60));
            let pem = out.map_err(|e| e.to_string())?;
            let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("RSA key: {e}"))?;
            Ok(ca.issue_with_key(&LeafOptions::server(), &key))
        }
    }
}

/// `n` distinct ECDSA server leaves.
pub(crate) fn leaves(ca: &TestCa, n: usize) -> Vec<Leaf> {
    (0..n).map(|_| ca.server()).collect()
}

/// A temporary directory for a Secret volume: on tmpfs (`/dev/shm`) when
/// there is one, as kubelet backs Secret volumes with tmpfs, else in the
/// default temporary directory.
pub(crate) fn volume_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tls-bench-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temporary directory")
}

/// Where [`volume_dir`] puts volumes, for the report.
pub(crate) fn volume_fs() -> &'static str {
    match tempfile::Builder::new()
        .prefix("tls-bench-probe-")
        .tempdir_in("/dev/shm")
    {
        Ok(_) => "tmpfs (/dev/shm), as kubelet backs Secret volumes",
        Err(_) => "the default temporary directory (no /dev/shm)",
    }
}

/// Writes `leaf` as `cert.pem` and `key.pem` into `dir` (plain files).
pub(crate) fn write_plain(dir: &Path, leaf: &Leaf) -> std::io::Result<TlsFiles> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem)?;
    std::fs::write(&key, &leaf.key_pem)?;
    Ok(TlsFiles::new(cert, key))
}

/// The Secret-volume payload kubelet would write for `leaf`.
/// `ca_pem` is the CA certificate (`TestCa::cert_pem`).
pub(crate) fn payload<'a>(leaf: &'a Leaf, ca_pem: &'a str) -> [(&'static str, &'a [u8]); 3] {
    [
        ("tls.crt", leaf.cert_pem.as_bytes()),
        ("tls.key", leaf.key_pem.as_bytes()),
        ("ca.crt", ca_pem.as_bytes()),
    ]
}

/// A Secret volume in `dir/server` holding `leaf` (written as kubelet
/// does), and the certificate and key paths it serves.
pub(crate) fn volume(dir: &Path, leaf: &Leaf, ca: &TestCa) -> (AtomicWriter, TlsFiles) {
    let writer = AtomicWriter::new(dir.join("server")).expect("volume");
    writer
        .write(&payload(leaf, ca.cert_pem()))
        .expect("initial write");
    let files = TlsFiles::new(writer.path("tls.crt"), writer.path("tls.key"));
    (writer, files)
}

/// Writes `leaf` into `writer`'s Secret volume as kubelet does, on a
/// blocking thread, and waits for it.
pub(crate) async fn rotate(writer: &AtomicWriter, leaf: &Leaf, ca: &TestCa) {
    let (writer, leaf, ca) = (writer.clone(), leaf.clone(), ca.cert_pem().to_owned());
    tokio::task::spawn_blocking(move || {
        writer
            .write(&payload(&leaf, &ca))
            .expect("kubelet-style write");
    })
    .await
    .expect("writer task");
}

/// ` (first: ERROR)` when there was an error, for a row's value.
pub(crate) fn first(error: Option<String>) -> String {
    error.map(|e| format!(" (first: {e})")).unwrap_or_default()
}

/// Waits for each task at most `limit`, and aborts one still running then.
pub(crate) async fn join_or_abort<T>(tasks: Vec<JoinHandle<T>>, limit: Duration) {
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout(limit, task).await.is_err() {
            abort.abort();
        }
    }
}
