//! The real `openshell-gateway` binary as a child process: found once per
//! test binary, started with JSON logs, its listening addresses read from
//! its log, its output and OCSF audit events collected, signalled with
//! `kill -s`, and killed when dropped.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tls_reload::testing::poll;

use crate::command::{self, describe};
use crate::error::{Error, Result};
use crate::ocsf;

/// Environment variable naming a prebuilt gateway binary to test instead
/// of building one.
pub const GATEWAY_BIN_ENV: &str = "OPENSHELL_GATEWAY_BIN";

/// How often the harness looks at the child's output while waiting.
const POLL: Duration = Duration::from_millis(20);

/// The path of the gateway binary to test.
///
/// `OPENSHELL_GATEWAY_BIN` when set. Otherwise the workspace's binary,
/// built with [`escargot`] (`cargo build -p openshell-server --bin
/// openshell-gateway`) once per test binary; tests that start together
/// wait for that one build. Cargo returns at once when the binary is up to
/// date, so an old binary left in the target directory is never what gets
/// tested, and it takes a lock on the target directory, so test binaries
/// running at the same time build one after the other instead of over
/// each other.
///
/// # Errors
///
/// When `OPENSHELL_GATEWAY_BIN` names no file, or the build fails.
pub fn gateway_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(GATEWAY_BIN_ENV) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(Error::unexpected(
                GATEWAY_BIN_ENV,
                format!("{} is not a file", bin.display()),
            )),
        };
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .clone()
        .map_err(|e| Error::unexpected("cargo build -p openshell-server", e))
}

fn build() -> Result<PathBuf, String> {
    let mut build = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .package("openshell-server")
        .bin("openshell-gateway")
        .current_release();
    // `cargo test` gives the test process the variables of the package
    // under test; passed on, they would reach build scripts that watch
    // them (ring's watches CARGO_MANIFEST_DIR), so this build and the next
    // plain one would each rebuild half the dependency tree, and replace
    // the binary under tests that are running it.
    for (name, _) in std::env::vars_os() {
        if is_package_variable(&name.to_string_lossy()) {
            build = build.env_remove(name);
        }
    }
    let run = build.run().map_err(|e| e.to_string())?;
    Ok(run.path().to_owned())
}

/// Whether `name` is one of the variables cargo sets for the process of
/// the package it builds or tests, rather than the user's configuration.
pub(crate) fn is_package_variable(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
}

/// The workspace root: this crate's parent directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

// === impl GatewayCommand ===

/// How to start a gateway: its arguments, environment, OCSF log file and,
/// optionally, the user it runs as and its open-file limit.
///
/// The gateway always gets `--log-format json` (the harness reads its
/// listening address from the log) and `RUST_LOG=info` (unless
/// [`env`](Self::env) sets another), and inherits no `OPENSHELL_*`
/// variable from the test's environment, so a developer's shell settings
/// cannot change what a test runs.
#[derive(Debug, Clone, Default)]
pub struct GatewayCommand {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    ocsf_log: Option<PathBuf>,
    user: Option<(u32, u32)>,
    nofile: Option<u32>,
    log_format: Option<&'static str>,
}

impl GatewayCommand {
    /// A gateway with no arguments (it would bind `0.0.0.0:8080`: give it
    /// at least `--bind 127.0.0.1:0`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the child (`RUST_LOG` included).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }

    /// Writes OCSF events to `path` (`--ocsf-log PATH`), where
    /// [`GatewayProcess::ocsf_events`] reads them. Without it the events
    /// go to stderr, and are read from there.
    pub fn ocsf_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.ocsf_log = Some(path.into());
        self
    }

    /// Runs the gateway as user `uid` and group `gid` instead of the test's
    /// own user, with no supplementary groups.
    ///
    /// Tests of file permissions need this when they run as root (in CI
    /// containers, say): root reads a file whatever its mode bits, so a
    /// `chmod 000` would show nothing. Only root can switch users, so
    /// [`spawn`](Self::spawn) fails when the test runs as anyone else and
    /// asks for another user. Everything the gateway opens (the binary, the
    /// TLS files and their directories, the `--ocsf-log` file) must then be
    /// accessible to that user.
    ///
    /// Default: the test's user.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Logs in `format` (`--log-format`, e.g. `pretty`) instead of `json`:
    /// the harness then cannot read the listening address nor
    /// [`GatewayProcess::logs`], so give the gateway a known `--bind`.
    pub fn log_format(mut self, format: &'static str) -> Self {
        self.log_format = Some(format);
        self
    }

    /// Lowers the gateway's open-file limit to `limit` (through the
    /// shell's `ulimit -n`, which then execs the gateway: the process id
    /// stays the gateway's).
    ///
    /// Default: the test's limit.
    pub fn nofile(mut self, limit: u32) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Starts the gateway ([`gateway_binary`]).
    ///
    /// # Errors
    ///
    /// When the binary cannot be found, built or started (which includes
    /// asking for another [`user`](Self::user) without being root).
    pub fn spawn(self) -> Result<GatewayProcess> {
        let binary = gateway_binary()?;
        let mut cmd = match self.nofile {
            None => Command::new(&binary),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&binary);
                sh
            }
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPENSHELL_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(&self.args);
        if let Some(path) = &self.ocsf_log {
            cmd.arg("--ocsf-log").arg(path);
        }
        cmd.args(["--log-format", self.log_format.unwrap_or("json")])
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut command = describe(&cmd);
        if let Some((uid, gid)) = self.user {
            // std sets the group first, then drops supplementary groups
            // (setgroups) before setuid, so nothing of root's remains.
            cmd.gid(gid).uid(uid);
            command.push_str(&format!("  # as uid {uid}, gid {gid}"));
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        let (stdout, stderr) = (Lines::default(), Lines::default());
        let out = child
            .stdout
            .take()
            .map(|pipe| collect(pipe, stdout.clone()));
        let err = child
            .stderr
            .take()
            .map(|pipe| collect(pipe, stderr.clone()));
        let readers = [out, err];
        Ok(GatewayProcess {
            child,
            command,
            stdout,
            stderr,
            readers: readers.into_iter().flatten().collect(),
            status: None,
            ocsf_log: self.ocsf_log,
        })
    }

    /// [`spawn`](Self::spawn), then [`GatewayProcess::listening`]: the
    /// gateway and its TLS port's address.
    ///
    /// # Errors
    ///
    /// As those two.
    pub async fn start(self, within: Duration) -> Result<(GatewayProcess, SocketAddr)> {
        let mut gateway = self.spawn()?;
        let addr = gateway.listening(within).await?;
        Ok((gateway, addr))
    }
}

// === impl GatewayProcess ===

/// Lines a reader thread has collected from one of a child's pipes.
pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

/// A running `openshell-gateway`, killed when dropped so that no process
/// outlives a failing test. When dropped during a panic, it prints
/// everything the gateway said, which usually explains the failure.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    command: String,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    ocsf_log: Option<PathBuf>,
}

impl GatewayProcess {
    /// The child's process id. It stays the same as long as the gateway
    /// has not been restarted: hot reloads do not change it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard output so far, one entry per line.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Its standard error so far (JSON logs, and OCSF events when no
    /// `--ocsf-log` file was given), one entry per line.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// The JSON log records on stderr (`{"timestamp", "level", "fields",
    /// "target"}`); OCSF events and other lines are left out.
    pub fn logs(&self) -> Vec<Value> {
        lock(&self.stderr)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("fields").is_some())
            .collect()
    }

    /// The `listening` log records: one per start of the serving loop.
    fn listening_records(&self) -> impl Iterator<Item = Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["fields"]["message"] == "listening")
    }

    /// How many times it logged `listening`: more than one means it
    /// restarted in place.
    pub fn listening_count(&self) -> usize {
        self.listening_records().count()
    }

    /// The plaintext health port's address, from the `listening` record:
    /// `None` before that record, or without `--health-bind`.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        let record = self.listening_records().next()?;
        // Logged as the `Option` it is: `Some(127.0.0.1:PORT)` or `None`.
        let health = record["fields"]["health"].as_str()?.strip_prefix("Some(")?;
        health.strip_suffix(')')?.parse().ok()
    }

    /// Everything it printed (and its OCSF file), for failure messages.
    pub fn output(&self) -> String {
        let mut output = format!(
            "$ {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout_lines().join("\n"),
            self.stderr_lines().join("\n")
        );
        if let Some(path) = &self.ocsf_log {
            let events = std::fs::read_to_string(path).unwrap_or_default();
            output.push_str(&format!("\n--- {} ---\n{events}", path.display()));
        }
        output
    }

    /// Its exit status, if it has exited.
    ///
    /// # Errors
    ///
    /// When the status cannot be queried.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let status = self.child.try_wait();
            self.status =
                status.map_err(|e| Error::io(format!("waiting for {}", self.command), e))?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Checks that this is still the process `pid` that started, running,
    /// and that it never restarted its listener: zero restarts.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] saying which of these does not hold, with the
    /// process output.
    pub fn ensure_not_restarted(&mut self, pid: u32) -> Result<()> {
        let problem = if !self.is_running() {
            "the gateway stopped".to_owned()
        } else if self.pid() != pid {
            format!("pid {} is not the original {pid}", self.pid())
        } else if self.listening_count() != 1 {
            let n = self.listening_count();
            format!("the gateway started listening {n} times")
        } else {
            return Ok(());
        };
        Err(Error::unexpected(
            format!("gateway process {pid}"),
            format!("{problem}\n{}", self.output()),
        ))
    }

    /// Polls `probe` until it finds something, for at most `within`,
    /// failing at once when the gateway exits or `probe` fails.
    async fn wait_until<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut probe: impl FnMut(&Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let outcome = poll(within, POLL, what, || {
            std::future::ready(match probe(self) {
                Ok(Some(found)) => Ok(Ok(found)),
                Err(e) => Ok(Err(e)),
                Ok(None) => match self.check_running(what) {
                    Ok(()) => Err(""),
                    Err(exited) => Ok(Err(exited)),
                },
            })
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                what: what.to_owned(),
                within,
                detail: self.output(),
            }),
        }
    }

    /// Waits for the `listening` log record and returns the TLS port's
    /// address (the `addr` field), for at most `within`.
    ///
    /// # Errors
    ///
    /// [`Error::Exited`] when the gateway exits first (a startup error),
    /// [`Error::Timeout`] when it does not listen in time,
    /// [`Error::Unexpected`] when the record has no address.
    pub async fn listening(&mut self, within: Duration) -> Result<SocketAddr> {
        let what = "the gateway to log `listening`";
        let record = self
            .wait_until(within, what, |p| Ok(p.listening_records().next()))
            .await?;
        record["fields"]["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::unexpected("the gateway's listening record", record.to_string()))
    }

    /// Waits for a stderr line satisfying `pred`, for at most `within`,
    /// and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` (with the gateway's output), or
    /// [`Error::Exited`] when the gateway exits first.
    pub async fn wait_for_stderr(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_until(within, what, |p| {
            Ok(lock(&p.stderr).iter().find(|l| pred(l)).cloned())
        })
        .await
    }

    /// The OCSF events so far: from the `--ocsf-log` file when one was
    /// given, else from stderr.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or holds something other than events.
    pub fn ocsf_events(&self) -> Result<Vec<Value>> {
        match &self.ocsf_log {
            Some(path) => ocsf::read_file(path),
            None => Ok(ocsf::events_in(
                lock(&self.stderr).iter().map(String::as_str),
            )),
        }
    }

    /// Waits until the OCSF events so far satisfy `pred` (it sees them all,
    /// in order, and returns what it found), for at most `within`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` (with the gateway's output and
    /// OCSF file), [`Error::Exited`] when the gateway exits first, or an
    /// error reading the events.
    pub async fn wait_for_ocsf<T>(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> Option<T>,
    ) -> Result<T> {
        self.wait_until(within, what, |p| Ok(pred(&p.ocsf_events()?)))
            .await
    }

    /// Sends the signal `name` (`HUP`, `TERM`, ...) with `kill -s`.
    ///
    /// # Errors
    ///
    /// When `kill` fails (the process has gone, say).
    pub fn signal(&self, name: &str) -> Result<()> {
        command::run(
            Command::new("kill").args(["-s", name, &self.pid().to_string()]),
            None,
            Duration::from_secs(5),
        )
        .map(drop)
    }

    /// Waits for the gateway to exit and for its output to be read to the
    /// end; `None` when it is still running after `within`.
    ///
    /// # Errors
    ///
    /// When its status cannot be queried.
    pub async fn exit_within(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        let exited = poll(within, POLL, "the gateway to exit", || {
            std::future::ready(self.try_status().transpose().ok_or(""))
        })
        .await;
        let Ok(status) = exited else { return Ok(None) };
        let status = status?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(Some(status))
    }

    fn check_running(&mut self, during: &str) -> Result<()> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => {
                // Let the readers catch the last lines, which say why.
                std::thread::sleep(Duration::from_millis(50));
                Err(Error::Exited {
                    status,
                    during: during.to_owned(),
                    output: self.output(),
                })
            }
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // The gateway's output explains the failed test.
            {
                eprintln!("gateway pid {}:\n{}", self.child.id(), self.output());
            }
        }
    }
}

pub(crate) fn lock(lines: &Lines) -> MutexGuard<'_, Vec<String>> {
    // A reader thread cannot panic while holding the lock; if one did, its
    // lines so far are still worth reading.
    lines.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread appending each line of `pipe` to `lines` until it closes.
pub(crate) fn collect(pipe: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lock(&lines).push(line);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_package_variables_of_the_test_process_are_dropped() {
        let package = [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_x",
            "OUT_DIR",
        ];
        for name in package {
            assert!(is_package_variable(name), "{name}");
        }
        for name in ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_BUILD_JOBS", "PATH"] {
            assert!(!is_package_variable(name), "{name}");
        }
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
