//! The child-process layer under [`GatewayProcess`](crate::GatewayProcess)
//! and [`MtlsClientProcess`](crate::MtlsClientProcess): a workspace binary
//! found (or built) once per test binary, started with its standard output
//! and error collected line by line, waited on with bounded polls, and
//! killed when dropped.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tls_reload::testing::poll;

use crate::command;
use crate::error::{Error, Result};

/// How often the harness looks at a child's output while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Lines a reader thread has collected from one of a child's pipes.
pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

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

// === binaries ===

/// What of a package to build: a binary or an example.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// `--bin NAME`.
    Bin(&'static str),
    /// `--example NAME`.
    Example(&'static str),
}

/// The path of `target` of `package`: the file named by the environment
/// variable `env_var` when it is set, else built with [`escargot`] once
/// per test binary (tests that ask together wait for that one build).
///
/// Cargo returns at once when the target is up to date, so an old file
/// left in the target directory is never what gets run, and it takes a
/// lock on the target directory, so test binaries running at the same
/// time build one after the other instead of over each other.
///
/// # Errors
///
/// When `env_var` names no file, or the build fails.
pub(crate) fn binary(package: &'static str, target: Target, env_var: &str) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env_var) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(Error::unexpected(
                env_var,
                format!("{} is not a file", bin.display()),
            )),
        };
    }
    let what = match target {
        Target::Bin(name) => format!("cargo build -p {package} --bin {name}"),
        Target::Example(name) => {
            format!("cargo build -p {package} --workspace --example {name}")
        }
    };
    type Built = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILT: OnceLock<Mutex<HashMap<String, Built>>> = OnceLock::new();
    let built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(what.clone())
        .or_default()
        .clone();
    built
        .get_or_init(|| build(package, target))
        .clone()
        .map_err(|e| Error::unexpected(what, e))
}

fn build(package: &str, target: Target) -> Result<PathBuf, String> {
    let build = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .package(package);
    let mut build = match target {
        Target::Bin(name) => build.bin(name),
        // Examples build with dev-dependencies: resolved over the whole
        // workspace, their features are those `cargo test --workspace`
        // built, so nothing is compiled a second time.
        Target::Example(name) => build.example(name).arg("--workspace"),
    }
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
fn is_package_variable(name: &str) -> bool {
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

// === processes ===

/// A command running `program` that inherits no `OPENSHELL_*` variable
/// from the test's environment, so that a developer's shell settings
/// cannot change what a test runs (variables set on it afterwards stay).
pub(crate) fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPENSHELL_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Starts `cmd` (described as `command` in errors) with no standard input,
/// each line of its standard output appended to `stdout` and of its
/// standard error to `stderr` (which may be the same) by a reader thread.
///
/// # Errors
///
/// [`Error::Spawn`] when it cannot be started.
pub(crate) fn spawn(
    cmd: &mut Command,
    command: &str,
    stdout: &Lines,
    stderr: &Lines,
) -> Result<(Child, Vec<JoinHandle<()>>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command::spawn(cmd, command)?;
    let out = child
        .stdout
        .take()
        .map(|pipe| collect(pipe, stdout.clone()));
    let err = child
        .stderr
        .take()
        .map(|pipe| collect(pipe, stderr.clone()));
    Ok((child, [out, err].into_iter().flatten().collect()))
}

/// A running child, its output collected, killed when dropped so that no
/// process outlives a failing test. When dropped during a panic, it prints
/// everything the child said, which usually explains the failure.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    /// What the child is, in messages (`gateway`, `mtls_client`).
    name: &'static str,
    child: Child,
    command: String,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    /// Files the child writes, shown with its output.
    files: Vec<PathBuf>,
}

impl ChildProcess {
    /// Starts `cmd` (see [`spawn`]), described in messages as `command`
    /// and named `name`, with the `files` it writes shown in its
    /// [`output`](Self::output).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when it cannot be started.
    pub(crate) fn start(
        name: &'static str,
        mut cmd: Command,
        command: String,
        files: Vec<PathBuf>,
    ) -> Result<Self> {
        let (stdout, stderr) = (Lines::default(), Lines::default());
        let (child, readers) = spawn(&mut cmd, &command, &stdout, &stderr)?;
        Ok(Self {
            name,
            child,
            command,
            stdout,
            stderr,
            readers,
            status: None,
            files,
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard output so far, one entry per line.
    pub(crate) fn stdout(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.stdout)
    }

    /// Its standard error so far, one entry per line.
    pub(crate) fn stderr(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.stderr)
    }

    /// Everything it printed, and the files it writes, for failure
    /// messages.
    pub(crate) fn output(&self) -> String {
        let mut output = format!(
            "$ {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout().join("\n"),
            self.stderr().join("\n")
        );
        for path in &self.files {
            let content = std::fs::read_to_string(path).unwrap_or_default();
            output.push_str(&format!("\n--- {} ---\n{content}", path.display()));
        }
        output
    }

    /// Its exit status, if it has exited.
    ///
    /// # Errors
    ///
    /// When the status cannot be queried.
    pub(crate) fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let status = self.child.try_wait();
            self.status =
                status.map_err(|e| Error::io(format!("waiting for {}", self.command), e))?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Polls `probe` until it finds something, for at most `within`,
    /// failing at once when the child exits or `probe` fails.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` (with the child's output),
    /// [`Error::Exited`] when the child exits first, or `probe`'s error.
    pub(crate) async fn wait_until<T>(
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

    /// Waits for the child to exit and for its output to be read to the
    /// end; `None` when it is still running after `within`.
    ///
    /// # Errors
    ///
    /// When its status cannot be queried.
    pub(crate) async fn exit_within(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        let what = format!("{} to exit", self.name);
        let exited = poll(within, POLL, &what, || {
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
                    program: self.name.to_owned(),
                    status,
                    during: during.to_owned(),
                    output: self.output(),
                })
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // The child's output explains the failed test.
            {
                eprintln!("{} pid {}:\n{}", self.name, self.child.id(), self.output());
            }
        }
    }
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
