//! The fault schedule: which faults, in which order, for how long. Pure and seeded: the same
//! seed gives the same plan. Targets that depend on the cluster at the time (who leads) are
//! drawn here as a number (`pick`) and resolved when the fault runs, so the plan itself never
//! depends on timing.

use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// SIGKILL the leader; restart it from its data dir after `hold`.
    KillLeader,
    /// SIGKILL a master chosen by `pick` (leader or not); restart it after `hold`.
    KillMaster,
    /// SIGSTOP the leader for `hold`, then SIGCONT.
    PauseLeader,
    /// Cut one master off from the others (both directions) for `hold`; the leader when
    /// `leader` is true, else a follower chosen by `pick`.
    Partition { leader: bool },
    /// Add `delay` to every peer link of one master (chosen by `pick`) for `hold`.
    SlowLinks { delay: Duration },
    /// SIGKILL a node agent (chosen by `pick`); restart it with the same root dir after `hold`.
    RestartNode,
}

impl FaultKind {
    /// Whether the fault takes the leader away (these faults are where the write gap is
    /// measured). A partition of a follower or a random kill is decided when it runs.
    pub fn targets_leader(self) -> bool {
        matches!(self, FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::Partition { leader: true })
    }
}

/// One planned fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// What to do.
    pub kind: FaultKind,
    /// How long the fault lasts (down, paused, cut off) before recovery.
    pub hold: Duration,
    /// Quiet time after recovery before the next fault.
    pub settle: Duration,
    /// Chooses the target among the candidates when the fault runs (`pick % candidates`).
    pub pick: u64,
}

/// The short profile: 10 leader kills, 5 partitions (the leader half of the time), 5 leader
/// pauses, one kill of a random master and one node agent restart, shuffled.
pub fn short(seed: u64) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut kinds = Vec::new();
    kinds.extend([FaultKind::KillLeader; 10]);
    for i in 0..5 {
        kinds.push(FaultKind::Partition { leader: i % 2 == 0 });
    }
    kinds.extend([FaultKind::PauseLeader; 5]);
    kinds.push(FaultKind::KillMaster);
    kinds.push(FaultKind::RestartNode);
    kinds.shuffle(&mut rng);
    kinds.into_iter().map(|kind| plan(kind, &mut rng)).collect()
}

/// One round of the long profile: the short mix plus a slow-links fault; rounds repeat (each
/// freshly shuffled) until the duration is used up.
pub fn long_round(seed: u64, round: u64) -> Vec<Fault> {
    let mut faults = short(seed.wrapping_add(round.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut rng = StdRng::seed_from_u64(seed ^ round ^ 0x510e);
    let delay = Duration::from_millis(rng.random_range(20..=200));
    let at = rng.random_range(0..=faults.len());
    faults.insert(at, plan(FaultKind::SlowLinks { delay }, &mut rng));
    faults
}

fn plan(kind: FaultKind, rng: &mut StdRng) -> Fault {
    let millis = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
    let hold = match kind {
        FaultKind::KillLeader | FaultKind::KillMaster | FaultKind::RestartNode => millis(rng, 1_000, 3_000),
        FaultKind::PauseLeader => millis(rng, 2_000, 5_000),
        FaultKind::Partition { .. } => millis(rng, 3_000, 6_000),
        FaultKind::SlowLinks { .. } => millis(rng, 3_000, 8_000),
    };
    Fault { kind, hold, settle: millis(rng, 2_000, 4_000), pick: rng.random() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_profile_has_the_promised_mix() {
        let plan = short(1);
        let count = |f: &dyn Fn(FaultKind) -> bool| plan.iter().filter(|p| f(p.kind)).count();
        assert_eq!(count(&|k| k == FaultKind::KillLeader), 10);
        assert_eq!(count(&|k| matches!(k, FaultKind::Partition { .. })), 5);
        assert_eq!(count(&|k| k == FaultKind::Partition { leader: true }), 3);
        assert_eq!(count(&|k| k == FaultKind::PauseLeader), 5);
        assert_eq!(count(&|k| k == FaultKind::KillMaster), 1);
        assert_eq!(count(&|k| k == FaultKind::RestartNode), 1);
        for f in &plan {
            assert!(f.hold >= Duration::from_secs(1) && f.hold <= Duration::from_secs(6), "{f:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        assert_eq!(short(7), short(7));
        assert_ne!(short(7), short(8));
        assert_eq!(long_round(7, 3), long_round(7, 3));
        assert_ne!(long_round(7, 3), long_round(7, 4));
    }
}
