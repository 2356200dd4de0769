//! Field-by-field conversions between etcd's wire messages and the store's types.

use tonic::Status;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::mvccpb;
use trireme_store::types;

/// A wire `KeyValue`.
pub fn kv_out(kv: types::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.into(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.into(),
        lease: kv.lease,
    }
}

/// A wire watch `Event`.
pub fn event_out(e: types::Event) -> mvccpb::Event {
    let kind = match e.kind {
        types::EventType::Put => mvccpb::event::EventType::Put,
        types::EventType::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event { r#type: kind as i32, kv: Some(kv_out(e.kv)), prev_kv: e.prev_kv.map(kv_out) }
}

/// A store range request.
pub fn range_in(r: pb::RangeRequest) -> Result<types::RangeRequest, Status> {
    use pb::range_request::SortOrder as O;
    use pb::range_request::SortTarget as T;
    let sort_order = match O::try_from(r.sort_order).map_err(|_| bad("sort_order"))? {
        O::None => types::SortOrder::None,
        O::Ascend => types::SortOrder::Ascend,
        O::Descend => types::SortOrder::Descend,
    };
    let sort_target = match T::try_from(r.sort_target).map_err(|_| bad("sort_target"))? {
        T::Key => types::SortTarget::Key,
        T::Version => types::SortTarget::Version,
        T::Create => types::SortTarget::Create,
        T::Mod => types::SortTarget::Mod,
        T::Value => types::SortTarget::Value,
    };
    if r.key.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    Ok(types::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// A wire range response (without header).
pub fn range_out(r: types::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse { header: None, kvs: r.kvs.into_iter().map(kv_out).collect(), more: r.more, count: r.count }
}

/// A store put.
pub fn put_in(p: pb::PutRequest) -> types::PutRequest {
    types::PutRequest {
        key: p.key.to_vec(),
        value: p.value.to_vec(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

/// A wire put response (without header).
pub fn put_out(p: types::PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: None, prev_kv: p.prev_kv.map(kv_out) }
}

/// A store delete.
pub fn delete_in(d: pb::DeleteRangeRequest) -> types::DeleteRangeRequest {
    types::DeleteRangeRequest { key: d.key.to_vec(), range_end: d.range_end.to_vec(), prev_kv: d.prev_kv }
}

/// A wire delete response (without header).
pub fn delete_out(d: types::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse { header: None, deleted: d.deleted, prev_kvs: d.prev_kvs.into_iter().map(kv_out).collect() }
}

/// A store transaction.
pub fn txn_in(t: pb::TxnRequest) -> Result<types::TxnRequest, Status> {
    Ok(types::TxnRequest {
        compare: t.compare.into_iter().map(compare_in).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op_in).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op_in).collect::<Result<_, _>>()?,
    })
}

fn compare_in(c: pb::Compare) -> Result<types::Compare, Status> {
    use pb::compare::CompareResult as R;
    use pb::compare::CompareTarget as T;
    use pb::compare::TargetUnion as U;
    let op = match R::try_from(c.result).map_err(|_| bad("compare result"))? {
        R::Equal => types::CompareOp::Equal,
        R::Greater => types::CompareOp::Greater,
        R::Less => types::CompareOp::Less,
        R::NotEqual => types::CompareOp::NotEqual,
    };
    // The target enum says which field; the union carries the value (absent means zero).
    let target = match (T::try_from(c.target).map_err(|_| bad("compare target"))?, c.target_union) {
        (T::Version, Some(U::Version(v))) => types::CompareTarget::Version(v),
        (T::Version, None) => types::CompareTarget::Version(0),
        (T::Create, Some(U::CreateRevision(v))) => types::CompareTarget::Create(v),
        (T::Create, None) => types::CompareTarget::Create(0),
        (T::Mod, Some(U::ModRevision(v))) => types::CompareTarget::Mod(v),
        (T::Mod, None) => types::CompareTarget::Mod(0),
        (T::Value, Some(U::Value(v))) => types::CompareTarget::Value(v.to_vec()),
        (T::Value, None) => types::CompareTarget::Value(Vec::new()),
        (T::Lease, Some(U::Lease(v))) => types::CompareTarget::Lease(v),
        (T::Lease, None) => types::CompareTarget::Lease(0),
        _ => return Err(bad("compare target and value disagree")),
    };
    Ok(types::Compare { op, target, key: c.key.to_vec(), range_end: c.range_end.to_vec() })
}

fn op_in(op: pb::RequestOp) -> Result<types::RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(types::RequestOp::Range(range_in(r)?)),
        Some(R::RequestPut(p)) => Ok(types::RequestOp::Put(put_in(p))),
        Some(R::RequestDeleteRange(d)) => Ok(types::RequestOp::DeleteRange(delete_in(d))),
        Some(R::RequestTxn(t)) => Ok(types::RequestOp::Txn(txn_in(t)?)),
        None => Err(bad("empty request op")),
    }
}

/// A wire transaction response; every nested response carries `header`.
pub fn txn_out(t: types::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                types::ResponseOp::Range(r) => {
                    R::ResponseRange(pb::RangeResponse { header: Some(*header), ..range_out(r) })
                }
                types::ResponseOp::Put(p) => R::ResponsePut(pb::PutResponse { header: Some(*header), ..put_out(p) }),
                types::ResponseOp::DeleteRange(d) => {
                    R::ResponseDeleteRange(pb::DeleteRangeResponse { header: Some(*header), ..delete_out(d) })
                }
                types::ResponseOp::Txn(t) => R::ResponseTxn(txn_out(t, header)),
            }),
        })
        .collect();
    pb::TxnResponse { header: Some(*header), succeeded: t.succeeded, responses }
}

fn bad(what: &str) -> Status {
    Status::invalid_argument(format!("etcdserver: invalid {what}"))
}
