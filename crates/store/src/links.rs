//! Peer links between members that run in one process, cut and healed one direction at a time,
//! so that tests partition a cluster without processes or proxies.
//!
//! Members opened with [`Store::open_linked`](crate::Store::open_linked) on the same [`Links`]
//! consult it for every message of the peer network (Raft's RPCs, replication streams,
//! snapshots, forwarded requests), on the sending side:
//!
//! - A request from A to B is sent only while A → B is up; otherwise the call fails at once as
//!   never sent, as a refused connection would.
//! - B's answer reaches A only while B → A is up. Otherwise B has handled the request but A gets
//!   an unreachable error at once (where a real network would make it wait for its deadline):
//!   the outcome is unknown to A.
//! - A replication stream from A to B carries every append A sends while A → B is up, and fails
//!   as soon as A → B is cut or one of B's answers is lost on B → A.
//!
//! Members opened with [`Store::open`](crate::Store::open) consult nothing. So does
//! [`Store::discover`](crate::Store::discover), which no member makes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// The directed links that are cut, shared by every member of an in-process cluster. Cheap to
/// clone; every link is up until cut.
#[derive(Clone)]
pub struct Links {
    /// `(from, to)` member ids of the cut links.
    cut: Arc<watch::Sender<BTreeSet<(u64, u64)>>>,
}

impl Default for Links {
    fn default() -> Self {
        Links { cut: Arc::new(watch::Sender::new(BTreeSet::new())) }
    }
}

impl fmt::Debug for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Links").field("cut", &*self.cut.borrow()).finish()
    }
}

impl Links {
    /// Every link up.
    pub fn new() -> Self {
        Links::default()
    }

    /// Stops messages from member `from` to member `to` (the other direction is untouched).
    pub fn cut(&self, from: u64, to: u64) {
        self.cut.send_if_modified(|cut| cut.insert((from, to)));
    }

    /// Lets messages from `from` to `to` through again.
    pub fn heal(&self, from: u64, to: u64) {
        self.cut.send_if_modified(|cut| cut.remove(&(from, to)));
    }

    /// Cuts both directions between `id` and each of `others`.
    pub fn isolate(&self, id: u64, others: impl IntoIterator<Item = u64>) {
        let pairs: Vec<(u64, u64)> = others.into_iter().flat_map(|other| [(id, other), (other, id)]).collect();
        self.cut.send_if_modified(|cut| pairs.into_iter().fold(false, |changed, pair| cut.insert(pair) | changed));
    }

    /// Every link up again.
    pub fn heal_all(&self) {
        self.cut.send_if_modified(|cut| {
            let changed = !cut.is_empty();
            cut.clear();
            changed
        });
    }

    /// Whether a message from `from` reaches `to` now.
    pub fn is_up(&self, from: u64, to: u64) -> bool {
        !self.cut.borrow().contains(&(from, to))
    }

    /// Resolves once the link from `from` to `to` is cut (at once if it is).
    pub async fn wait_cut(&self, from: u64, to: u64) {
        let mut changes = self.cut.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = changes.wait_for(|cut| cut.contains(&(from, to))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_cut_and_healed_one_direction_at_a_time() {
        let links = Links::new();
        assert!(links.is_up(1, 2));
        links.cut(1, 2);
        assert!(!links.is_up(1, 2) && links.is_up(2, 1), "only 1 → 2 is cut");
        links.isolate(3, [1, 2]);
        assert!(!links.is_up(3, 1) && !links.is_up(2, 3) && links.is_up(2, 1));
        links.heal(1, 2);
        assert!(links.is_up(1, 2));
        links.heal_all();
        assert!(links.is_up(3, 1) && links.is_up(1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_cut_resolves_when_the_link_goes_down() {
        let links = Links::new();
        let waiter = tokio::spawn({
            let links = links.clone();
            async move { links.wait_cut(1, 2).await }
        });
        tokio::task::yield_now().await;
        links.cut(2, 1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the other direction does not count");
        links.cut(1, 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("resolved once 1 → 2 was cut")
            .expect("waiter task");
    }
}
