//! The `mtls_client` example of `openshell-server` as a child process: a
//! long-lived mTLS gRPC client that calls `WhoAmI` on an interval and
//! prints one JSON line per call, found (or built) once per test binary,
//! its lines collected, and killed when dropped.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tls_reload::testing::poll;

use crate::command::describe;
use crate::error::{Error, Result};
use crate::gateway::{Lines, collect, is_package_variable, lock, workspace_root};

/// Environment variable naming a prebuilt `mtls_client` example to run
/// instead of building one.
pub const MTLS_CLIENT_BIN_ENV: &str = "OPENSHELL_MTLS_CLIENT_BIN";

/// How often the harness looks at the child's output while waiting.
const POLL: Duration = Duration::from_millis(20);

/// The path of the `mtls_client` example.
///
/// `OPENSHELL_MTLS_CLIENT_BIN` when set. Otherwise built with
/// [`escargot`] (`cargo build -p openshell-server --example mtls_client`)
/// once per test binary, as [`gateway_binary`](crate::gateway_binary)
/// builds the gateway.
///
/// # Errors
///
/// When `OPENSHELL_MTLS_CLIENT_BIN` names no file, or the build fails.
pub fn mtls_client_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(MTLS_CLIENT_BIN_ENV) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(Error::unexpected(
                MTLS_CLIENT_BIN_ENV,
                format!("{} is not a file", bin.display()),
            )),
        };
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .clone()
        .map_err(|e| Error::unexpected("cargo build -p openshell-server --example mtls_client", e))
}

fn build() -> Result<PathBuf, String> {
    let mut build = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .package("openshell-server")
        .example("mtls_client")
        .current_release();
    // As for the gateway: the test process's package variables would make
    // build scripts rebuild half the tree.
    for (name, _) in std::env::vars_os() {
        if is_package_variable(&name.to_string_lossy()) {
            build = build.env_remove(name);
        }
    }
    let run = build.run().map_err(|e| e.to_string())?;
    Ok(run.path().to_owned())
}

/// A running `mtls_client` example, killed when dropped. When dropped
/// during a panic, it prints everything the client said.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use openshell_e2e::MtlsClientProcess;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = MtlsClientProcess::spawn([
///     "--addr", "127.0.0.1:8443", "--server-name", "localhost",
///     "--ca", "ca.crt", "--cert", "tls.crt", "--key", "tls.key",
///     "--interval", "200ms",
/// ])?;
/// let (_, first) = client
///     .wait_for_line(Duration::from_secs(10), "a first call", 0, |l| l["ok"] == true)
///     .await?;
/// println!("the gateway saw {}", first["client_fingerprint"]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MtlsClientProcess {
    child: Child,
    command: String,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl MtlsClientProcess {
    /// Starts the example ([`mtls_client_binary`]) with `args`, its
    /// standard output and error collected. It inherits no `OPENSHELL_*`
    /// variable, and `RUST_LOG` is unset.
    ///
    /// # Errors
    ///
    /// When the binary cannot be found, built or started.
    pub fn spawn<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let binary = mtls_client_binary()?;
        let mut cmd = Command::new(&binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPENSHELL_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(args.into_iter().map(Into::into))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = describe(&cmd);
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
        Ok(Self {
            child,
            command,
            stdout,
            stderr,
            readers: [out, err].into_iter().flatten().collect(),
            status: None,
        })
    }

    /// The child's process id: the same for as long as it has not been
    /// restarted.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// How many lines it has printed on standard output so far.
    pub fn line_count(&self) -> usize {
        lock(&self.stdout).len()
    }

    /// Its standard output so far, each line parsed as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] quoting the first line that is not JSON.
    pub fn lines(&self) -> Result<Vec<Value>> {
        lock(&self.stdout)
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| Error::unexpected("a line of mtls_client", format!("{e}: {line}")))
            })
            .collect()
    }

    /// Its standard error so far, one entry per line.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Everything it printed, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "$ {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            lock(&self.stdout).join("\n"),
            self.stderr_lines().join("\n")
        )
    }

    /// Waits for the first line from index `from` on satisfying `pred`, for
    /// at most `within`, and returns its index and the line.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` (with the last line and the
    /// client's output), [`Error::Unexpected`] when it exits first or
    /// prints something other than JSON.
    pub async fn wait_for_line(
        &mut self,
        within: Duration,
        what: &str,
        from: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(usize, Value)> {
        let outcome = poll(within, POLL, what, || {
            let lines = self.lines();
            let found = lines.map(|lines| {
                let found = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l));
                let last = lines.last().map(Value::to_string).unwrap_or_default();
                (found.map(|(i, l)| (i, l.clone())), last)
            });
            std::future::ready(match found {
                Ok((Some(found), _)) => Ok(Ok(found)),
                Err(e) => Ok(Err(e)),
                Ok((None, last)) => match self.try_status() {
                    Ok(None) => Err(last),
                    Ok(Some(status)) => Ok(Err(Error::unexpected(
                        format!("mtls_client, while waiting for {what}"),
                        format!("it exited ({status})\n{}", self.output()),
                    ))),
                    Err(e) => Ok(Err(e)),
                },
            })
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(timed_out) => Err(Error::Timeout {
                what: what.to_owned(),
                within,
                detail: format!("last line: {}\n{}", timed_out.last, self.output()),
            }),
        }
    }

    /// Waits for it to exit (after `--count` calls) and for its output to
    /// be read to the end; `None` when it is still running after `within`.
    ///
    /// # Errors
    ///
    /// When its status cannot be queried.
    pub async fn exit_within(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        let exited = poll(within, POLL, "mtls_client to exit", || {
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
}

impl Drop for MtlsClientProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // Its output explains the failed test.
            {
                eprintln!("mtls_client pid {}:\n{}", self.child.id(), self.output());
            }
        }
    }
}
