//! Lease clocks. Every member tracks every lease it has applied; only the primary (the Raft
//! leader) lets them expire, from its own monotonic clock, by proposing revokes through Raft.
//!
//! When a member becomes primary it first extends every lease by its full TTL, as etcd does, so
//! a leader change never expires a lease that was kept alive with the old leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

/// How long an expired lease waits before its revoke is proposed again, if the first
/// proposal got lost (leader change, timeout).
const RETRY_REVOKE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: i64,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct State {
    primary: bool,
    leases: HashMap<i64, Clock>,
}

/// What `time_to_live` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseTtl {
    /// TTL the lease was granted with, seconds.
    pub granted: i64,
    /// Seconds left, rounded up; -1 if this member is not the primary and cannot know.
    pub remaining: i64,
}

/// The lease clocks of one member.
#[derive(Debug, Default)]
pub struct Lessor {
    state: Mutex<State>,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Lessor {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Replaces every clock with the given leases (at start-up or after a snapshot install).
    pub fn reset(&self, leases: impl IntoIterator<Item = (i64, i64)>, now: Instant) {
        self.with(|s| {
            s.leases =
                leases.into_iter().map(|(id, ttl)| (id, Clock { ttl, deadline: now + ttl_duration(ttl) })).collect();
        });
    }

    /// A grant was applied.
    pub fn granted(&self, id: i64, ttl: i64, now: Instant) {
        self.with(|s| s.leases.insert(id, Clock { ttl, deadline: now + ttl_duration(ttl) }));
    }

    /// A revoke was applied.
    pub fn revoked(&self, id: i64) {
        self.with(|s| s.leases.remove(&id));
    }

    /// This member became the leader: extend every lease by its TTL, then start expiring.
    pub fn promote(&self, now: Instant) {
        self.with(|s| {
            s.primary = true;
            for clock in s.leases.values_mut() {
                clock.deadline = now + ttl_duration(clock.ttl);
            }
        });
    }

    /// This member stopped being the leader.
    pub fn demote(&self) {
        self.with(|s| s.primary = false);
    }

    /// Whether this member expires leases.
    pub fn is_primary(&self) -> bool {
        self.with(|s| s.primary)
    }

    /// Renews a lease; returns its TTL, or `None` if it does not exist.
    pub fn keep_alive(&self, id: i64, now: Instant) -> Option<i64> {
        self.with(|s| {
            let clock = s.leases.get_mut(&id)?;
            clock.deadline = now + ttl_duration(clock.ttl);
            Some(clock.ttl)
        })
    }

    /// Granted and remaining TTL of a lease, or `None` if it does not exist.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<LeaseTtl> {
        self.with(|s| {
            let clock = s.leases.get(&id)?;
            let remaining = if s.primary {
                let left = clock.deadline.saturating_duration_since(now);
                i64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
            } else {
                -1
            };
            Some(LeaseTtl { granted: clock.ttl, remaining })
        })
    }

    /// Leases whose deadline has passed, if this member is the primary. Each is reported again
    /// only after a retry delay, so one expiry is proposed once per delay.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        self.with(|s| {
            if !s.primary {
                return Vec::new();
            }
            let mut expired = Vec::new();
            for (id, clock) in &mut s.leases {
                if clock.deadline <= now {
                    expired.push(*id);
                    clock.deadline = now + RETRY_REVOKE_AFTER;
                }
            }
            expired.sort_unstable();
            expired
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_expires_and_a_new_primary_extends_every_lease() {
        let lessor = Lessor::default();
        let t0 = Instant::now();
        lessor.granted(7, 5, t0);
        assert!(lessor.take_expired(t0 + Duration::from_secs(6)).is_empty(), "a follower never expires");

        lessor.promote(t0 + Duration::from_secs(4));
        assert!(lessor.take_expired(t0 + Duration::from_secs(8)).is_empty(), "promotion extended the lease");
        assert_eq!(lessor.take_expired(t0 + Duration::from_secs(9)), vec![7]);
        assert!(lessor.take_expired(t0 + Duration::from_secs(9)).is_empty(), "reported once per retry delay");
    }

    #[test]
    fn keep_alive_moves_the_deadline_and_unknown_leases_are_none() {
        let lessor = Lessor::default();
        let t0 = Instant::now();
        lessor.granted(1, 10, t0);
        lessor.promote(t0);
        assert_eq!(lessor.keep_alive(1, t0 + Duration::from_secs(8)), Some(10));
        let ttl = lessor.time_to_live(1, t0 + Duration::from_secs(9)).expect("lease exists");
        assert_eq!(ttl, LeaseTtl { granted: 10, remaining: 9 });
        assert_eq!(lessor.keep_alive(2, t0), None);
        lessor.revoked(1);
        assert_eq!(lessor.time_to_live(1, t0), None);
    }
}
