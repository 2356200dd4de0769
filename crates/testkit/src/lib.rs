//! What starts Trireme's processes on one machine: the end-to-end tests, the chaos suite, the
//! benchmark and `trireme up` (the one product user: a local cluster of child processes).
//!
//! - [`ports`]: loopback ports for processes about to be started, handed out so that no
//!   outgoing connection can take one first.
//!
//! It depends on no other crate.

pub mod ports;
