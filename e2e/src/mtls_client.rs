//! The `mtls_client` example of `openshell-server` as a child process: a
//! long-lived mTLS gRPC client that calls `WhoAmI` on an interval and
//! prints one JSON line per call, found (or built) once per test binary,
//! its lines collected, and killed when dropped.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use crate::child::{self, ChildProcess, Target};
use crate::command::describe;
use crate::error::{Error, Result};

/// Environment variable naming a prebuilt `mtls_client` example to run
/// instead of building one.
pub const MTLS_CLIENT_BIN_ENV: &str = "OPENSHELL_MTLS_CLIENT_BIN";

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
    child::binary(
        "openshell-server",
        Target::Example("mtls_client"),
        MTLS_CLIENT_BIN_ENV,
    )
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
    child: ChildProcess,
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
        let mut cmd = child::command(mtls_client_binary()?);
        cmd.args(args.into_iter().map(Into::into))
            .env_remove("RUST_LOG");
        let command = describe(&cmd);
        let child = ChildProcess::start("mtls_client", cmd, command, Vec::new())?;
        Ok(Self { child })
    }

    /// The child's process id: the same for as long as it has not been
    /// restarted.
    pub fn pid(&self) -> u32 {
        self.child.pid()
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

    /// How many lines it has printed on standard output so far.
    pub fn line_count(&self) -> usize {
        self.child.stdout().len()
    }

    /// Its standard output so far, each line parsed as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] quoting the first line that is not JSON.
    pub fn lines(&self) -> Result<Vec<Value>> {
        lines(&self.child)
    }

    /// Its standard error so far, one entry per line.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.child.stderr().clone()
    }

    /// Everything it printed, for failure messages.
    pub fn output(&self) -> String {
        self.child.output()
    }

    /// Waits for the first line from index `from` on satisfying `pred`, for
    /// at most `within`, and returns its index and the line.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` (with the client's output, its
    /// last line last), [`Error::Exited`] when it exits first,
    /// [`Error::Unexpected`] when it prints something other than JSON.
    pub async fn wait_for_line(
        &mut self,
        within: Duration,
        what: &str,
        from: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(usize, Value)> {
        self.child
            .wait_until(within, what, |c| {
                let lines = lines(c)?;
                let found = lines
                    .into_iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| pred(l));
                Ok(found)
            })
            .await
    }

    /// Waits for it to exit (after `--count` calls) and for its output to
    /// be read to the end; `None` when it is still running after `within`.
    ///
    /// # Errors
    ///
    /// When its status cannot be queried.
    pub async fn exit_within(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        self.child.exit_within(within).await
    }
}

/// The client's standard output so far, each line parsed as JSON.
fn lines(child: &ChildProcess) -> Result<Vec<Value>> {
    child
        .stdout()
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .map_err(|e| Error::unexpected("a line of mtls_client", format!("{e}: {line}")))
        })
        .collect()
}
