//! Bounded waiting: poll a probe until it succeeds or a deadline passes.
//!
//! Every wait in these tests is bounded, so a gateway that never reloads
//! fails the test with the last thing it saw instead of hanging it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Polls `probe` every `every` until it returns `Ok`, for at most `within`.
///
/// `probe` returns `Err(observation)` while the condition does not hold;
/// the last observation goes into the timeout error.
///
/// # Errors
///
/// [`Error::Timeout`] naming `what`, when `probe` has not succeeded after
/// `within`.
pub async fn eventually<T, F, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(timeout(what, within, last));
        }
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for blocking probes (programs run with
/// [`std::process::Command`]), sleeping the thread between attempts.
///
/// # Errors
///
/// [`Error::Timeout`] naming `what`, when `probe` has not succeeded after
/// `within`.
pub fn eventually_blocking<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(timeout(what, within, last));
        }
        std::thread::sleep(every);
    }
}

fn timeout(what: &str, within: Duration, last: String) -> Error {
    Error::Timeout {
        what: what.to_owned(),
        within,
        detail: if last.is_empty() {
            last
        } else {
            format!("last seen: {last}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success() {
        let mut n = 0;
        let got = eventually(
            Duration::from_secs(2),
            Duration::from_millis(1),
            "three tries",
            || {
                n += 1;
                let n = n;
                async move {
                    if n == 3 {
                        Ok(n)
                    } else {
                        Err(format!("try {n}"))
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[test]
    fn a_timeout_names_the_condition_and_the_last_observation() {
        let err = eventually_blocking(
            Duration::from_millis(30),
            Duration::from_millis(5),
            "the moon to turn blue",
            || Err::<(), _>("grey".to_owned()),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("the moon to turn blue"), "{msg}");
        assert!(msg.contains("last seen: grey"), "{msg}");
    }
}
