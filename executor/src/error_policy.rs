//! The executor's error policy, pure: which Docker failures are worth another try, and when.
//!
//! A request that arrives while the Docker engine cannot be reached (daemon restarting, socket
//! proxy down, engine overloaded) is not failed at once: the container lookup that precedes
//! any change is tried again with exponential backoff for at most half of the request's
//! timeout, so the other half is left for the action itself. Only then is the request failed,
//! with the last error and how long the engine was unreachable. An answer from the engine
//! (no such container, conflict, bad request) is final and never retried.

use std::time::Duration;

/// The first wait after a failed attempt; doubled after each one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// The wait before attempt `attempt + 1` (0 is the first retry): 200 ms, 400 ms, ... 4 s.
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// After attempt `attempt` failed `elapsed` into a request of timeout `limit`: retry when the
/// engine was unreachable and the retry still starts within the first half of the timeout.
pub fn after_failure(unreachable: bool, attempt: u32, elapsed: Duration, limit: Duration) -> Next {
    if !unreachable {
        return Next::GiveUp;
    }
    let delay = backoff(attempt);
    if elapsed + delay > limit / 2 {
        return Next::GiveUp;
    }
    Next::RetryAfter(delay)
}

/// Whether a Docker client error means the engine was not reached (or did not answer), as
/// opposed to an answer the engine gave.
pub fn engine_unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let waits: Vec<u64> = (0..8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 4000, 4000, 4000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_unreachable_engine_is_retried_within_half_the_timeout() {
        assert_eq!(
            after_failure(true, 0, Duration::ZERO, LIMIT),
            Next::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(
            after_failure(true, 3, Duration::from_secs(5), LIMIT),
            Next::RetryAfter(Duration::from_millis(1600))
        );
        // 14 s in, a 4 s wait would end past 15 s: give up, leaving time to report.
        assert_eq!(
            after_failure(true, 6, Duration::from_secs(14), LIMIT),
            Next::GiveUp
        );
    }

    #[test]
    fn retries_are_bounded() {
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0;
        while let Next::RetryAfter(d) = after_failure(true, attempts, elapsed, LIMIT) {
            elapsed += d;
            attempts += 1;
            assert!(attempts < 100, "retries never end");
        }
        assert!(elapsed <= LIMIT / 2, "{elapsed:?}");
        assert!(attempts >= 5, "too few tries before giving up: {attempts}");
    }

    #[test]
    fn an_answer_from_the_engine_is_final() {
        assert_eq!(after_failure(false, 0, Duration::ZERO, LIMIT), Next::GiveUp);
        let not_found = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x".into(),
        };
        assert!(!engine_unreachable(&not_found));
    }

    #[test]
    fn connection_failures_are_unreachable() {
        let refused = bollard::errors::Error::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert!(engine_unreachable(&refused));
        assert!(engine_unreachable(
            &bollard::errors::Error::RequestTimeoutError
        ));
        assert!(engine_unreachable(
            &bollard::errors::Error::SocketNotFoundError("/x.sock".into())
        ));
    }
}
