//! The MVCC key-value state with etcd's semantics, over the `state-N/` RocksDB instance.
//!
//! - [`apply`]: one command → one `WriteBatch`, its watch events and its response.
//! - [`read`]: ranges at the current or a past revision, history for watches, leases.

pub mod apply;
pub mod read;
#[cfg(test)]
mod testing;

pub use apply::Counters;
pub use apply::LeaseChange;
pub use read::ReadError;
