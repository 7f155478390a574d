//! Bounded waiting: poll a probe until it succeeds or a deadline passes.

use std::fmt::Display;
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
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => timed_out(what, within, &last),
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
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
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => timed_out(what, within, &last),
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

fn timed_out(what: &str, within: Duration, last: &dyn Display) -> ! {
    let last = last.to_string();
    if last.is_empty() {
        panic!("timed out after {within:?} waiting for {what}");
    }
    panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
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
