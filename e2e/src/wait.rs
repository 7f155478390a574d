//! Bounded waiting: poll a probe until it succeeds or a deadline passes.
//!
//! Every wait in these tests is bounded, so a gateway that never reloads
//! fails the test with the last thing it saw instead of hanging it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tls_reload::testing::{TimedOut, poll, poll_blocking};

use crate::error::{Error, Result};

/// Polls `probe` every `every` until it returns `Ok`, for at most `within`
/// ([`tls_reload::testing::poll`] with this crate's error).
///
/// `probe` returns `Err(observation)` while the condition does not hold;
/// the last observation goes into the timeout error.
///
/// # Errors
///
/// [`Error::Timeout`] naming `what`, when `probe` has not succeeded after
/// `within`.
pub async fn eventually<T, E, F, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    probe: F,
) -> Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    poll(within, every, what, probe).await.map_err(Error::from)
}

/// [`eventually`] for blocking probes (programs run with
/// [`std::process::Command`]), sleeping the thread between attempts.
///
/// # Errors
///
/// [`Error::Timeout`] naming `what`, when `probe` has not succeeded after
/// `within`.
pub fn eventually_blocking<T, E: Display>(
    within: Duration,
    every: Duration,
    what: &str,
    probe: impl FnMut() -> std::result::Result<T, E>,
) -> Result<T> {
    poll_blocking(within, every, what, probe).map_err(Error::from)
}

impl From<TimedOut> for Error {
    fn from(t: TimedOut) -> Self {
        Error::Timeout {
            what: t.what,
            within: t.within,
            detail: if t.last.is_empty() {
                t.last
            } else {
                format!("last seen: {}", t.last)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
