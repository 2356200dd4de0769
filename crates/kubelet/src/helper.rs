//! The programs the trireme binary runs besides the control plane and the node agent: the
//! process runtime's container shim (`trireme shim ...`) and its built-in demo images
//! (`trireme image NAME ...`). The binary calls [`run_helper`] before anything else.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::runtime::process::{builtin, shim};

/// Runs the helper named by `args[0]` (the arguments after the program's name): `shim` or
/// `image`. Returns `None` when `args[0]` is neither, for the caller to go on as itself.
pub fn run_helper(args: &[OsString]) -> Option<ExitCode> {
    let (which, rest) = args.split_first()?;
    match which.to_str()? {
        "shim" => Some(shim::main(rest)),
        "image" => Some(builtin::main(rest)),
        _ => None,
    }
}
