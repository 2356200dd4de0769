//! Opening the RocksDB instances and the small helpers every RocksDB call site shares.

use std::io;
use std::path::Path;

use rocksdb::ColumnFamily;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema;

/// Opens (creating if missing) a RocksDB instance with the given column families.
pub fn open(path: &Path, cfs: &[&str]) -> io::Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Our fsyncs are explicit (vote, flusher); background flushes need not sync each file.
    opts.set_max_background_jobs(2);
    let descriptors = cfs.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&opts, path, descriptors)
        .map_err(|e| io::Error::other(format!("opening RocksDB at {}: {e}", path.display())))
}

/// Opens a RocksDB instance read-only (a checkpoint being inspected).
pub fn open_read_only(path: &Path, cfs: &[&str]) -> io::Result<DB> {
    let opts = Options::default();
    DB::open_cf_for_read_only(&opts, path, cfs, false)
        .map_err(|e| io::Error::other(format!("opening RocksDB read-only at {}: {e}", path.display())))
}

/// Looks up a column family that [`open`] created.
pub fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| io::Error::other(format!("column family {name} is missing")))
}

/// A RocksDB error as an I/O error.
pub fn io(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}

/// Corrupt data on disk.
pub fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}"))
}

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    schema::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> io::Result<T> {
    schema::decode(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub use trireme_util::fs::sync_dir;
