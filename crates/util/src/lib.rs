//! Small helpers that several Trireme crates need and none owns, so that each exists once.
//!
//! - [`fs`]: [`fs::write_atomic`], a whole-file write that readers see complete or not at all,
//!   durable (fsync of the file and its directory) unless asked otherwise.
//! - [`duration`]: [`duration::parse`] of Go-style durations as Kubernetes and etcd flags take
//!   them (`500ms`, `1m30s`, `1.5h`), and [`duration::format`], its inverse.
//!
//! It depends on std only and never on another Trireme crate, so that any crate can use it.

pub mod duration;
pub mod fs;
