//! The one backoff for retrying work that failed because the store did (no leader yet, no
//! quorum, a watch that broke): `backon`'s exponential backoff, which the informers and the API
//! server's start use with `backon::Retryable`.
//!
//! Kubernetes' own backoffs are not retries and live with their owners: the work queue's
//! per-key rate limit ([`crate::workqueue`]), the scheduler's pod backoff and the kubelet's
//! CrashLoopBackOff.

use std::time::Duration;

use backon::ExponentialBuilder;

/// 100 ms, doubling to 2 s, without jitter and without limit: the store comes back (a leader
/// is elected, a quorum returns) within seconds, and a caller that must give up races the
/// retry against its cancellation token (`tokio::select!`), which also ends a sleep at once.
pub const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(2))
    .without_max_times();

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_tenth_of_a_second_to_two_and_never_gives_up() {
        let waits: Vec<u128> = BACKOFF.build().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert!(BACKOFF.build().nth(10_000).is_some(), "no limit on attempts");
    }
}
