//! Checks a request must pass before it is proposed (as etcd checks before its apply).

use std::collections::BTreeSet;

use crate::error::StoreError;
use crate::types::Command;
use crate::types::CompareTarget;
use crate::types::KeyRange;
use crate::types::Request;
use crate::types::RequestOp;
use crate::types::TxnRequest;

/// Rejects requests that are too large, have too many operations, or write one key twice.
pub fn check_request(req: &Request, max_bytes: usize, max_txn_ops: usize) -> Result<(), StoreError> {
    if command_bytes(&req.command) > max_bytes {
        return Err(StoreError::RequestTooLarge);
    }
    match &req.command {
        Command::Put(p) if p.key.is_empty() => Err(StoreError::InvalidArgument("key is not provided".into())),
        Command::DeleteRange(d) if d.key.is_empty() => Err(StoreError::InvalidArgument("key is not provided".into())),
        Command::Txn(t) => check_txn(t, max_txn_ops).map(|_| ()),
        Command::LeaseGrant { ttl, .. } if *ttl > MAX_LEASE_TTL => Err(StoreError::LeaseTtlTooLarge),
        _ => Ok(()),
    }
}

/// Bytes of keys and values a command carries (what makes a request large).
fn command_bytes(command: &Command) -> usize {
    fn ops(list: &[RequestOp]) -> usize {
        list.iter()
            .map(|op| match op {
                RequestOp::Range(r) => r.key.len() + r.range_end.len(),
                RequestOp::Put(p) => p.key.len() + p.value.len(),
                RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
                RequestOp::Txn(t) => txn(t),
            })
            .sum()
    }
    fn txn(t: &TxnRequest) -> usize {
        let compares: usize = t
            .compare
            .iter()
            .map(|c| {
                c.key.len() + c.range_end.len() + if let CompareTarget::Value(v) = &c.target { v.len() } else { 0 }
            })
            .sum();
        compares + ops(&t.success) + ops(&t.failure)
    }
    match command {
        Command::Put(p) => p.key.len() + p.value.len(),
        Command::DeleteRange(d) => d.key.len() + d.range_end.len(),
        Command::Txn(t) => txn(t),
        _ => 0,
    }
}

/// etcd's largest lease TTL, seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Keys written and ranges deleted by a branch (with nested transactions).
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

fn check_txn(txn: &TxnRequest, max_ops: usize) -> Result<Writes, StoreError> {
    if txn.compare.len() > max_ops || txn.success.len() > max_ops || txn.failure.len() > max_ops {
        return Err(StoreError::TooManyOps);
    }
    let success = check_branch(&txn.success, max_ops)?;
    let failure = check_branch(&txn.failure, max_ops)?;
    // Only one branch runs, so the branches may write the same keys.
    let mut all = success;
    all.puts.extend(failure.puts);
    all.deletes.extend(failure.deletes);
    Ok(all)
}

fn check_branch(ops: &[RequestOp], max_ops: usize) -> Result<Writes, StoreError> {
    let mut writes = Writes::default();
    for op in ops {
        match op {
            RequestOp::Put(p) => {
                if p.key.is_empty() {
                    return Err(StoreError::InvalidArgument("key is not provided".into()));
                }
                if !writes.puts.insert(p.key.clone()) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            RequestOp::DeleteRange(d) => writes.deletes.push(KeyRange::new(&d.key, &d.range_end)),
            RequestOp::Range(_) => {}
            RequestOp::Txn(t) => {
                let nested = check_txn(t, max_ops)?;
                for key in nested.puts {
                    if !writes.puts.insert(key) {
                        return Err(StoreError::DuplicateKey);
                    }
                }
                writes.deletes.extend(nested.deletes);
            }
        }
    }
    if writes.puts.iter().any(|k| writes.deletes.iter().any(|d| d.contains(k))) {
        return Err(StoreError::DuplicateKey);
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeleteRangeRequest;
    use crate::types::PutRequest;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest { key: k.into(), ..PutRequest::default() })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Request {
        Request::new(Command::Txn(TxnRequest { compare: vec![], success, failure }))
    }

    #[test]
    fn a_txn_may_not_write_a_key_twice_in_one_branch() {
        assert!(matches!(
            check_request(&txn(vec![put("a"), put("a")], vec![]), 1 << 20, 128),
            Err(StoreError::DuplicateKey)
        ));
        let del = RequestOp::DeleteRange(DeleteRangeRequest { key: "a".into(), range_end: "c".into(), prev_kv: false });
        assert!(matches!(
            check_request(&txn(vec![put("b"), del], vec![]), 1 << 20, 128),
            Err(StoreError::DuplicateKey)
        ));
        assert!(check_request(&txn(vec![put("a")], vec![put("a")]), 1 << 20, 128).is_ok(), "branches are exclusive");
    }

    #[test]
    fn too_many_ops_and_too_large_requests_are_refused() {
        let many = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(check_request(&txn(many, vec![]), 1 << 20, 128), Err(StoreError::TooManyOps)));
        let big =
            Request::new(Command::Put(PutRequest { key: "k".into(), value: vec![0; 2048], ..PutRequest::default() }));
        assert!(matches!(check_request(&big, 1024, 128), Err(StoreError::RequestTooLarge)));
    }
}
