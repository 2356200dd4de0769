//! What a running member does about its own membership, beside serving: publishing its name
//! and client URLs, and noticing that it was removed.
//!
//! Both are long-running tasks a master starts next to its servers, running in the member's
//! span; they stop at `shutdown`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Store;
use crate::types::Member;

/// How often [`watch_removal`] asks the peers.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Returns once a leader's membership, at least as new as this member's own, no longer lists
/// it (as etcd does: a removed member stops receiving the log before it could apply its own
/// removal, so it asks its peers), or at `shutdown`. Returns whether the member was removed.
pub async fn watch_removal(store: Store, shutdown: CancellationToken) -> bool {
    let span = store.span().clone();
    check_removal(store, shutdown).instrument(span).await
}

async fn check_removal(store: Store, shutdown: CancellationToken) -> bool {
    loop {
        tokio::select! {
            () = tokio::time::sleep(REMOVAL_CHECK_INTERVAL) => {}
            () = shutdown.cancelled() => return false,
        }
        let members = store.members();
        if !members.iter().any(|m| m.id == store.id()) {
            continue;
        }
        let peers: Vec<String> =
            members.iter().filter(|m| m.id != store.id()).filter_map(|m| m.member.peer_urls.first().cloned()).collect();
        for peer in peers {
            let Ok(found) =
                Store::discover(&peer, store.config().peer_client_tls.clone(), REMOVAL_CHECK_INTERVAL).await
            else {
                continue;
            };
            // A leader with an older membership (cut off since) may not know this member yet.
            let newer = found.membership_index >= store.membership_index();
            if found.from_leader && newer && !found.members.iter().any(|m| m.id == store.id()) {
                tracing::error!(leader = %peer, "this member was removed from the cluster; stopping");
                return true;
            }
        }
    }
}

/// Makes the membership show this member's name and client URLs (`me`): a member added with
/// `member add` is known by its peer URLs only until it starts. Returns once published, or at
/// `shutdown`.
pub async fn publish_self(store: Store, me: Member, shutdown: CancellationToken) {
    let span = store.span().clone();
    publish(store, me, shutdown).instrument(span).await
}

async fn publish(store: Store, me: Member, shutdown: CancellationToken) {
    loop {
        let known = store.members().into_iter().find(|m| m.id == store.id());
        match known {
            Some(m) if m.member == me => return,
            Some(_) => match store.update_member(store.id(), me.clone()).await {
                Ok(()) => tracing::info!("published name and client URLs"),
                Err(e) => tracing::debug!(error = %e, "publishing member attributes; will retry"),
            },
            None => {}
        }
        // Jittered, so that members starting together do not keep colliding on the one
        // membership change Raft allows at a time.
        let pause = Duration::from_millis(200 + rand::random_range(0..400));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
