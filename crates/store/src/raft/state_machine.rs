//! openraft's state machine over the MVCC store.
//!
//! `apply` runs each batch on a blocking thread: every entry becomes one RocksDB `WriteBatch`
//! holding its changes, its log id as last-applied and, for membership entries, the membership —
//! so applied data and the applied log id are never apart. The state DB is written without
//! fsync: the Raft log is the durable record, and openraft re-applies from it (the committed
//! index is saved) what a crash took from the state DB. After the write, watchers, lease clocks
//! and waiters for the applied index are told, and the proposer gets its response.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use rocksdb::DB;
use rocksdb::WriteBatch;
use tokio::sync::watch;

use super::Entry;
use super::LogId;
use super::SnapshotMeta;
use super::StoredMembership;
use super::TypeConfig;
use super::snapshot::SnapshotDir;
use super::snapshot::SnapshotStore;
use super::snapshot::materialize;
use crate::db;
use crate::lease::Lessor;
use crate::mvcc::Counters;
use crate::mvcc::LeaseChange;
use crate::mvcc::apply::Pending;
use crate::mvcc::apply::apply_command;
use crate::mvcc::apply::must_apply_alone;
use crate::mvcc::apply::put_counters;
use crate::mvcc::read;
use crate::schema::CF_SM_META;
use crate::schema::SM_APPLIED;
use crate::schema::SM_MEMBERSHIP;
use crate::state::StateDb;
use crate::types::ApplyError;
use crate::types::Command;
use crate::types::Event;
use crate::types::Outcome;
use crate::types::Response;
use crate::watch::WatchHub;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// State the state machine shares with readers: the DB, the watch hub, the lease clocks, and
/// the applied log index.
pub struct Shared {
    pub state: Arc<StateDb>,
    pub hub: Arc<WatchHub>,
    pub lessor: Lessor,
    pub snapshots: SnapshotStore,
    /// Index of the last applied log entry (0 before any).
    pub applied: watch::Sender<u64>,
    /// The replicated cluster id, 0 until recorded.
    pub cluster_id: std::sync::atomic::AtomicU64,
    /// The compaction point of the applied state.
    pub compacted: std::sync::atomic::AtomicI64,
}

impl Shared {
    /// Opens the state DB and snapshot store of the member at `data_dir`.
    pub fn open(data_dir: &std::path::Path, ring_events: usize) -> io::Result<Arc<Shared>> {
        let state = Arc::new(StateDb::open(data_dir)?);
        let db = state.get();
        let counters = read::counters(&db)?;
        let lessor = Lessor::default();
        lessor.reset(read::leases(&db)?, Instant::now());
        let applied = read_applied(&db)?.map_or(0, |id| id.index);
        Ok(Arc::new(Shared {
            state,
            hub: Arc::new(WatchHub::new(counters.revision, ring_events)),
            lessor,
            snapshots: SnapshotStore::open(data_dir.join("snapshots"))?,
            applied: watch::Sender::new(applied),
            cluster_id: std::sync::atomic::AtomicU64::new(read::cluster_id(&db)?),
            compacted: std::sync::atomic::AtomicI64::new(counters.compacted),
        }))
    }
}

pub(crate) fn read_applied(db: &DB) -> io::Result<Option<LogId>> {
    let cf = db::cf(db, CF_SM_META)?;
    match db.get_pinned_cf(cf, SM_APPLIED).map_err(db::io)? {
        Some(raw) => db::decode(&raw),
        None => Ok(None),
    }
}

pub(crate) fn read_membership(db: &DB) -> io::Result<StoredMembership> {
    let cf = db::cf(db, CF_SM_META)?;
    match db.get_pinned_cf(cf, SM_MEMBERSHIP).map_err(db::io)? {
        Some(raw) => db::decode(&raw),
        None => Ok(StoredMembership::default()),
    }
}

/// openraft's view of the MVCC store.
pub struct StateMachine {
    shared: Arc<Shared>,
    counters: Counters,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachine {
    /// The state machine over `shared`'s live DB.
    pub fn new(shared: Arc<Shared>) -> io::Result<Self> {
        let db = shared.state.get();
        Ok(StateMachine {
            counters: read::counters(&db)?,
            last_applied: read_applied(&db)?,
            membership: read_membership(&db)?,
            shared,
        })
    }
}

/// What one applied entry produced, handed from the blocking thread back to the async side.
pub(crate) struct AppliedEntry {
    index: u64,
    response: Response,
    revision_events: Option<(i64, Vec<Event>)>,
    lease_change: Option<LeaseChange>,
}

/// Writes of applied entries not yet in RocksDB, with the live keys they changed.
struct Batch {
    batch: WriteBatch,
    pending: Pending,
    /// Last entry whose writes are in `batch`.
    last: Option<LogId>,
    membership_changed: bool,
}

impl Batch {
    fn new() -> Self {
        Batch { batch: WriteBatch::default(), pending: Pending::new(), last: None, membership_changed: false }
    }

    /// Writes everything collected, with the applied log id, counters and membership, in one
    /// `WriteBatch`.
    fn flush(&mut self, db: &DB, counters: Counters, membership: &StoredMembership) -> io::Result<()> {
        let Some(last) = self.last.take() else { return Ok(()) };
        let meta = db::cf(db, CF_SM_META)?;
        let mut batch = std::mem::take(&mut self.batch);
        batch.put_cf(meta, SM_APPLIED, db::encode(&Some(last))?);
        put_counters(db, &mut batch, counters)?;
        if std::mem::take(&mut self.membership_changed) {
            batch.put_cf(meta, SM_MEMBERSHIP, db::encode(membership)?);
        }
        db.write(batch).map_err(db::io)?;
        self.pending.clear();
        Ok(())
    }
}

/// Applies `entries` in order. Their writes, applied log id and membership go to RocksDB in one
/// `WriteBatch` — several when a command must see everything written before it (compaction,
/// leases, reads of history), which gets a batch of its own. Every member thus reaches the same
/// state whatever batches openraft hands it.
pub(crate) fn apply_entries(
    db: &DB,
    mut counters: Counters,
    mut membership: StoredMembership,
    entries: Vec<Entry>,
) -> io::Result<(Vec<AppliedEntry>, Counters, StoredMembership)> {
    let mut out = Vec::with_capacity(entries.len());
    let mut batch = Batch::new();
    for entry in entries {
        let log_id = entry.log_id;
        let (outcome, events, lease_change) = match entry.payload {
            EntryPayload::Blank => (Outcome::Noop, Vec::new(), None),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(log_id), m);
                batch.membership_changed = true;
                (Outcome::Noop, Vec::new(), None)
            }
            EntryPayload::Normal(request) => {
                let term = log_id.leader_id.term;
                match request.fence {
                    Some(fence) if fence != term => {
                        (Outcome::Rejected(ApplyError::Fenced { fence, term }), Vec::new(), None)
                    }
                    _ => {
                        let alone = must_apply_alone(&request.command);
                        if alone {
                            batch.flush(db, counters, &membership)?;
                        }
                        let applied = apply_command(db, &batch.pending, counters, &request.command)?;
                        counters = applied.counters;
                        for write in applied.writes {
                            write.add_to(db, &mut batch.batch)?;
                        }
                        batch.pending.extend(applied.changed);
                        batch.last = Some(log_id);
                        if alone {
                            batch.flush(db, counters, &membership)?;
                        }
                        (applied.outcome, applied.events, applied.lease_change)
                    }
                }
            }
        };
        batch.last = Some(log_id);
        out.push(AppliedEntry {
            index: log_id.index,
            response: Response { revision: counters.revision, outcome },
            revision_events: (!events.is_empty()).then_some((counters.revision, events)),
            lease_change,
        });
    }
    batch.flush(db, counters, &membership)?;
    Ok((out, counters, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotDir;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        let Some(last) = batch.last().map(|e| e.log_id) else { return Ok(()) };
        let records_cluster_id = batch.iter().any(
            |e| matches!(&e.payload, EntryPayload::Normal(r) if matches!(r.command, Command::SetClusterId { .. })),
        );
        let db = self.shared.state.get();
        let (counters, membership) = (self.counters, self.membership.clone());
        let (applied, counters, membership) =
            tokio::task::spawn_blocking(move || apply_entries(&db, counters, membership, batch))
                .await
                .map_err(|e| io::Error::other(format!("apply task failed: {e}")))??;
        self.counters = counters;
        self.shared.compacted.store(counters.compacted, std::sync::atomic::Ordering::Relaxed);
        self.membership = membership;
        self.last_applied = Some(last);
        if records_cluster_id {
            let id = read::cluster_id(&self.shared.state.get())?;
            self.shared.cluster_id.store(id, std::sync::atomic::Ordering::Relaxed);
        }
        let now = Instant::now();
        for (done, responder) in applied.into_iter().zip(responders) {
            if let Some((revision, events)) = done.revision_events {
                self.shared.hub.publish(revision, events);
            }
            match done.lease_change {
                Some(LeaseChange::Granted { id, ttl }) => self.shared.lessor.granted(id, ttl, now),
                Some(LeaseChange::Revoked { id }) => self.shared.lessor.revoked(id),
                None => {}
            }
            self.shared.applied.send_replace(done.index);
            if let Some(responder) = responder {
                responder.send(done.response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotDir) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let meta_owned = meta.clone();
        let db = tokio::task::spawn_blocking(move || -> io::Result<Arc<DB>> {
            let adopted = shared.snapshots.adopt(&snapshot.path, &meta_owned)?;
            materialize(&adopted, &shared.state.next_dir())?;
            shared.state.replace()
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot install task failed: {e}")))??;
        self.counters = read::counters(&db)?;
        self.shared.compacted.store(self.counters.compacted, std::sync::atomic::Ordering::Relaxed);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.shared.lessor.reset(read::leases(&db)?, Instant::now());
        self.shared.cluster_id.store(read::cluster_id(&db)?, std::sync::atomic::Ordering::Relaxed);
        self.shared.hub.reset(self.counters.revision);
        self.shared.applied.send_replace(meta.last_log_id.as_ref().map_or(0, |id| id.index));
        tracing::info!(last_log_id = ?meta.last_log_id, revision = self.counters.revision, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.shared.snapshots.clone();
        let current = tokio::task::spawn_blocking(move || snapshots.current())
            .await
            .map_err(|e| io::Error::other(format!("snapshot lookup failed: {e}")))??;
        Ok(current.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Builds a snapshot by checkpointing the live state DB.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let (meta, snapshot) = tokio::task::spawn_blocking(move || shared.snapshots.build(&shared.state.get()))
            .await
            .map_err(|e| io::Error::other(format!("snapshot build task failed: {e}")))??;
        tracing::info!(last_log_id = ?meta.last_log_id, "built snapshot");
        Ok(Snapshot { meta, snapshot })
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::types::Command;
    use crate::types::Compare;
    use crate::types::CompareOp;
    use crate::types::CompareTarget;
    use crate::types::DeleteRangeRequest;
    use crate::types::PutRequest;
    use crate::types::Request;
    use crate::types::RequestOp;
    use crate::types::TxnRequest;

    fn put(key: &str, value: &str, lease: i64) -> Command {
        Command::Put(PutRequest { key: key.into(), value: value.into(), lease, ..PutRequest::default() })
    }

    fn commands() -> Vec<Command> {
        vec![
            put("a", "1", 0),
            put("a", "2", 0),
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(2),
                    key: "a".into(),
                    range_end: vec![],
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: "b".into(),
                    value: "seen a twice".into(),
                    ..PutRequest::default()
                })],
                failure: vec![RequestOp::Put(PutRequest {
                    key: "b".into(),
                    value: "missed a".into(),
                    ..PutRequest::default()
                })],
            }),
            Command::LeaseGrant { id: 7, ttl: 60 },
            put("c", "leased", 7),
            put("d", "leased too", 7),
            Command::LeaseRevoke { id: 7 },
            Command::DeleteRange(DeleteRangeRequest { key: "a".into(), ..DeleteRangeRequest::default() }),
            put("e", "after", 0),
            Command::Compact { revision: 4 },
            put("a", "again", 0),
        ]
    }

    fn entries() -> Vec<Entry> {
        commands()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Entry::new_normal(
                    LogId::new(openraft::vote::leader_id_adv::LeaderId { term: 1, node_id: 1 }, i as u64 + 1),
                    Request::new(c),
                )
            })
            .collect()
    }

    /// Live keys with values and mod revisions, the history hash, and the counters.
    type State = (Vec<(Vec<u8>, Vec<u8>, i64)>, u32, Counters);

    fn state_of(db: &DB) -> State {
        let all = crate::types::RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let (resp, _) = read::range(db, &all).expect("range");
        let (hash, counters) = read::hash_kv(db, 0).expect("hash");
        (resp.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect(), hash, counters)
    }

    #[test]
    fn applying_entries_in_one_batch_or_one_by_one_gives_the_same_state() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for sub in ["together", "one-by-one"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        let together = StateDb::open(&dir.path().join("together"))?;
        let one_by_one = StateDb::open(&dir.path().join("one-by-one"))?;
        let start = Counters { revision: 1, compacted: 0 };

        let (results, _, _) = apply_entries(&together.get(), start, StoredMembership::default(), entries())?;
        let mut counters = start;
        let mut single = Vec::new();
        for entry in entries() {
            let (mut done, c, _) =
                apply_entries(&one_by_one.get(), counters, StoredMembership::default(), vec![entry])?;
            counters = c;
            single.append(&mut done);
        }
        let outcomes = |r: &[AppliedEntry]| r.iter().map(|a| a.response.clone()).collect::<Vec<_>>();
        assert_eq!(outcomes(&results), outcomes(&single));
        assert_eq!(state_of(&together.get()), state_of(&one_by_one.get()));
        let (kvs, _, counters) = state_of(&together.get());
        let keys: Vec<&[u8]> = kvs.iter().map(|(k, _, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"e"], "c and d went with their lease, a came back");
        assert_eq!(kvs[1].1, b"seen a twice", "the txn saw both puts of the same batch");
        assert_eq!(counters.compacted, 4);
        Ok(())
    }
}
