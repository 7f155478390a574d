//! The real `openshell-gateway` binary as a child process: found once per
//! test binary, started with JSON logs, its listening addresses read from
//! its log, its output and OCSF audit events collected, signalled with
//! `kill -s`, and killed when dropped.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;

use crate::child::{self, ChildProcess, Target};
use crate::command::{self, describe};
use crate::error::{Error, Result};
use crate::ocsf;

/// Environment variable naming a prebuilt gateway binary to test instead
/// of building one.
pub const GATEWAY_BIN_ENV: &str = "OPENSHELL_GATEWAY_BIN";

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
    child::binary(
        "openshell-server",
        Target::Bin("openshell-gateway"),
        GATEWAY_BIN_ENV,
    )
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
            None => child::command(&binary),
            Some(limit) => {
                let mut sh = child::command("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&binary);
                sh
            }
        };
        cmd.args(&self.args);
        if let Some(path) = &self.ocsf_log {
            cmd.arg("--ocsf-log").arg(path);
        }
        cmd.args(["--log-format", self.log_format.unwrap_or("json")])
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        let mut command = describe(&cmd);
        if let Some((uid, gid)) = self.user {
            // std sets the group first, then drops supplementary groups
            // (setgroups) before setuid, so nothing of root's remains.
            cmd.gid(gid).uid(uid);
            command.push_str(&format!("  # as uid {uid}, gid {gid}"));
        }
        let files = self.ocsf_log.iter().cloned().collect();
        Ok(GatewayProcess {
            child: ChildProcess::start("gateway", cmd, command, files)?,
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

/// A running `openshell-gateway`, killed when dropped so that no process
/// outlives a failing test. When dropped during a panic, it prints
/// everything the gateway said, which usually explains the failure.
#[derive(Debug)]
pub struct GatewayProcess {
    child: ChildProcess,
    ocsf_log: Option<PathBuf>,
}

impl GatewayProcess {
    /// The child's process id. It stays the same as long as the gateway
    /// has not been restarted: hot reloads do not change it.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Its standard output so far, one entry per line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.child.stdout().clone()
    }

    /// Its standard error so far (JSON logs, and OCSF events when no
    /// `--ocsf-log` file was given), one entry per line.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.child.stderr().clone()
    }

    /// The JSON log records on stderr (`{"timestamp", "level", "fields",
    /// "target"}`); OCSF events and other lines are left out.
    pub fn logs(&self) -> Vec<Value> {
        logs(&self.child)
    }

    /// How many times it logged `listening`: more than one means it
    /// restarted in place.
    pub fn listening_count(&self) -> usize {
        listening_records(&self.child).count()
    }

    /// The plaintext health port's address, from the `listening` record:
    /// `None` before that record, or without `--health-bind`.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        let record = listening_records(&self.child).next()?;
        // Logged as the `Option` it is: `Some(127.0.0.1:PORT)` or `None`.
        let health = record["fields"]["health"].as_str()?.strip_prefix("Some(")?;
        health.strip_suffix(')')?.parse().ok()
    }

    /// Everything it printed (and its OCSF file), for failure messages.
    pub fn output(&self) -> String {
        self.child.output()
    }

    /// Its exit status, if it has exited.
    ///
    /// # Errors
    ///
    /// When the status cannot be queried.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_status()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
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
            .child
            .wait_until(within, what, |c| Ok(listening_records(c).next()))
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
        self.child
            .wait_until(within, what, |c| {
                Ok(c.stderr().iter().find(|l| pred(l)).cloned())
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
        ocsf_events(&self.child, self.ocsf_log.as_deref())
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
        let ocsf_log = self.ocsf_log.as_deref();
        self.child
            .wait_until(within, what, |c| Ok(pred(&ocsf_events(c, ocsf_log)?)))
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
        self.child.exit_within(within).await
    }
}

/// The JSON log records on the gateway's stderr.
fn logs(child: &ChildProcess) -> Vec<Value> {
    child
        .stderr()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("fields").is_some())
        .collect()
}

/// The `listening` log records: one per start of the serving loop.
fn listening_records(child: &ChildProcess) -> impl Iterator<Item = Value> {
    logs(child)
        .into_iter()
        .filter(|l| l["fields"]["message"] == "listening")
}

/// The OCSF events from `ocsf_log` when given, else from stderr.
fn ocsf_events(child: &ChildProcess, ocsf_log: Option<&Path>) -> Result<Vec<Value>> {
    match ocsf_log {
        Some(path) => ocsf::read_file(path),
        None => Ok(ocsf::events_in(child.stderr().iter().map(String::as_str))),
    }
}
