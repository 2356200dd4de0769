//! When the leader compacts history on its own (etcd's periodic auto-compaction), decided
//! without clocks or Raft: [`Sampler`] is fed the revision at every tick while this member
//! leads and names the newest revision sampled at least a retention ago. A new leader starts
//! sampling afresh, so a leader change postpones compaction, never hastens it.

use std::collections::VecDeque;
use std::time::Duration;
use std::time::Instant;

/// Revisions sampled during this member's current leadership.
#[derive(Debug)]
pub struct Sampler {
    retention: Duration,
    /// `(when, revision)`, oldest first; only the newest sample at least `retention` old is
    /// kept behind the younger ones.
    samples: VecDeque<(Instant, i64)>,
    /// The term the samples were taken in.
    sampled_in: Option<u64>,
}

impl Sampler {
    /// A sampler keeping `retention` of history.
    pub fn new(retention: Duration) -> Self {
        Sampler { retention, samples: VecDeque::new(), sampled_in: None }
    }

    /// Records a tick at `now`: this member leads in term `leading` (`None`: it does not), the
    /// store is at `revision` and compacted up to `compacted`. Returns the term to fence the
    /// compaction with and the revision to compact to, if one is due.
    pub fn tick(&mut self, now: Instant, leading: Option<u64>, revision: i64, compacted: i64) -> Option<(u64, i64)> {
        if leading != self.sampled_in {
            self.samples.clear();
            self.sampled_in = leading;
        }
        let term = leading?;
        self.samples.push_back((now, revision));
        while self.samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= self.retention) {
            self.samples.pop_front();
        }
        let &(taken, revision) = self.samples.front()?;
        (now.duration_since(taken) >= self.retention && revision > compacted).then_some((term, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: Duration = Duration::from_secs(10);

    /// Ticks once a second from `t0 + from` to `t0 + to` seconds, the revision growing by one a
    /// second from `rev0`; returns what each tick decided.
    fn run(
        s: &mut Sampler,
        t0: Instant,
        (from, to): (u64, u64),
        term: Option<u64>,
        rev0: i64,
    ) -> Vec<Option<(u64, i64)>> {
        (from..=to).map(|sec| s.tick(t0 + Duration::from_secs(sec), term, rev0 + sec as i64, 0)).collect()
    }

    #[test]
    fn the_leader_compacts_to_the_newest_revision_a_retention_old() {
        let mut s = Sampler::new(RETENTION);
        let t0 = Instant::now();
        let decided = run(&mut s, t0, (0, 12), Some(3), 100);
        assert!(decided[..10].iter().all(Option::is_none), "nothing is a retention old before 10 s");
        assert_eq!(decided[10..], [Some((3, 100)), Some((3, 101)), Some((3, 102))]);
    }

    #[test]
    fn a_leader_change_starts_the_retention_afresh() {
        let mut s = Sampler::new(RETENTION);
        let t0 = Instant::now();
        run(&mut s, t0, (0, 9), Some(3), 100);
        assert!(run(&mut s, t0, (10, 12), None, 100).iter().all(Option::is_none), "a follower compacts nothing");
        let decided = run(&mut s, t0, (13, 23), Some(4), 100);
        assert!(decided[..10].iter().all(Option::is_none), "the new term's samples are not a retention old yet");
        assert_eq!(decided[10], Some((4, 113)), "the first sample of term 4, taken at 13 s");
    }

    #[test]
    fn nothing_at_or_below_the_compaction_point_is_compacted_again() {
        let mut s = Sampler::new(RETENTION);
        let t0 = Instant::now();
        s.tick(t0, Some(1), 50, 0);
        assert_eq!(s.tick(t0 + RETENTION, Some(1), 60, 50), None, "50 is compacted already");
        assert_eq!(s.tick(t0 + RETENTION * 2, Some(1), 60, 50), Some((1, 60)));
    }
}
