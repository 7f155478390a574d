//! Bounded waiting: poll a probe until it succeeds or a deadline passes.

use std::fmt::{self, Display};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`eventually_blocking`] poll.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `probe` every [`POLL_EVERY`] until it returns `Ok`, for at most
/// `within`, and returns the value.
///
/// `probe` returns `Err(observation)` while the condition does not hold.
///
/// # Panics
///
/// When `probe` has not succeeded after `within`: the message names
/// `what` and quotes the last observation, so a gateway that never
/// reloads fails the test with what it saw instead of hanging it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let mut tries = 0;
/// let n = tls_reload::testing::eventually(Duration::from_secs(1), "three tries", || {
///     tries += 1;
///     let seen = tries;
///     async move { if seen >= 3 { Ok(seen) } else { Err(format!("try {seen}")) } }
/// })
/// .await;
/// assert_eq!(n, 3);
/// # }
/// ```
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    poll(within, POLL_EVERY, what, probe)
        .await
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// [`eventually`] for blocking probes (programs run with
/// [`std::process::Command`], files read with `std::fs`), sleeping the
/// thread between attempts.
///
/// # Panics
///
/// As [`eventually`].
pub fn eventually_blocking<T, E: Display>(
    within: Duration,
    what: &str,
    probe: impl FnMut() -> Result<T, E>,
) -> T {
    poll_blocking(within, POLL_EVERY, what, probe).unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// A probe that did not succeed in time: what was awaited, for how long,
/// and the last observation (empty when the probe gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimedOut {
    /// The condition.
    pub what: String,
    /// How long it was given.
    pub within: Duration,
    /// The probe's last `Err`, as text.
    pub last: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.within, self.what
        )?;
        if !self.last.is_empty() {
            write!(f, "; last seen: {}", self.last)?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

/// The loop under [`eventually`], polling every `every` and returning
/// [`TimedOut`] instead of panicking, for harnesses with errors of their own.
///
/// # Errors
///
/// [`TimedOut`] when `probe` has not succeeded after `within`.
pub async fn poll<T, E, F, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    mut probe: F,
) -> Result<T, TimedOut>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => return Err(timed_out(what, within, &last)),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`poll`] for blocking probes.
///
/// # Errors
///
/// [`TimedOut`] when `probe` has not succeeded after `within`.
pub fn poll_blocking<T, E: Display>(
    within: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => return Err(timed_out(what, within, &last)),
            Err(_) => std::thread::sleep(every),
        }
    }
}

fn timed_out(what: &str, within: Duration, last: &dyn Display) -> TimedOut {
    TimedOut {
        what: what.to_owned(),
        within,
        last: last.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "waiting for the impossible; last seen: still 1")]
    fn a_timeout_names_the_condition_and_the_last_observation() {
        eventually_blocking(Duration::from_millis(50), "the impossible", || {
            Err::<(), _>("still 1")
        });
    }
}
