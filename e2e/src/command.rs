//! Running external programs (`cargo`, `kubectl`, `helm`, `kill`) with a
//! deadline, turning a failure into an [`Error`] that names the command line
//! and quotes its standard error.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use tls_reload::testing::poll_blocking;

use crate::error::{Error, Result};

/// The command line of `cmd`, for messages: the program and its arguments,
/// those containing spaces quoted. Environment variables are left out (they
/// may name credentials).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `cmd`, described as `command`.
///
/// # Errors
///
/// [`Error::Spawn`] naming `command` when it cannot be started.
pub(crate) fn spawn(cmd: &mut Command, command: &str) -> Result<Child> {
    cmd.spawn().map_err(|source| Error::Spawn {
        command: command.to_owned(),
        source,
    })
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if s.is_empty() || s.contains(char::is_whitespace) {
        format!("'{s}'")
    } else {
        s.into_owned()
    }
}

/// Runs `cmd` to completion, feeding it `input` on standard input when
/// given, and returns its standard output (lossily decoded).
///
/// The program is killed when it has not exited after `within`.
///
/// # Errors
///
/// [`Error::Spawn`] when it cannot be started, [`Error::Timeout`] when it
/// is still running after `within`, and [`Error::CommandFailed`] (with its
/// standard error) when it exits unsuccessfully.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, within: Duration) -> Result<String> {
    let command = describe(cmd);
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd, &command)?;

    // Pipes are drained by threads so that a chatty program never blocks
    // on a full pipe while we wait for it.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input closes the pipe;
        // its exit status says what went wrong, not the broken pipe.
        let _ = stdin.write_all(input);
    }

    let status = wait_until(&mut child, within, &command)?;
    let stdout = stdout.map(join).unwrap_or_default();
    let stderr = stderr.map(join).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(Error::CommandFailed {
            command,
            status,
            stderr,
        }),
        None => Err(Error::Timeout {
            what: format!("`{command}` to finish"),
            within,
            detail: format!("stderr so far: {}", stderr.trim()),
        }),
    }
}

/// Waits for `child` until `within`; kills it and returns `None` past that.
fn wait_until(child: &mut Child, within: Duration, command: &str) -> Result<Option<ExitStatus>> {
    let exited = poll_blocking(within, Duration::from_millis(20), command, || {
        match child.try_wait() {
            Ok(Some(status)) => Ok(Ok(Some(status))),
            Ok(None) => Err(""),
            Err(e) => Ok(Err(Error::io(format!("waiting for `{command}`"), e))),
        }
    });
    exited.unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        Ok(None)
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join(handle: JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_arguments_with_spaces() {
        let mut cmd = Command::new("kubectl");
        cmd.args([
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].metadata.name}",
            "a b",
        ]);
        assert_eq!(
            describe(&cmd),
            "kubectl get pods -o jsonpath={.items[*].metadata.name} 'a b'"
        );
    }

    #[test]
    fn failures_name_the_command_input_reaches_it_and_a_deadline_kills_it() {
        let sh = |script: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            cmd
        };
        let second = Duration::from_secs(1);
        let err = run(&mut sh("echo nope >&2; exit 3"), None, second).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c") && msg.contains("nope"), "{msg}");

        let out = run(&mut Command::new("cat"), Some(b"hello"), second).unwrap();
        assert_eq!(out, "hello");

        let started = std::time::Instant::now();
        let err = run(Command::new("sleep").arg("5"), None, second / 5).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let missing = "/nonexistent/openshell-e2e-no-such-program";
        let err = run(&mut Command::new(missing), None, second).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }
}
