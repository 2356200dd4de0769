//! The container shim and built-in images on their own (`trireme-shim shim|image ...`), for
//! the kubelet crate's tests, which cannot run the trireme binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    trireme_kubelet::helper::run_helper(&args).unwrap_or_else(|| {
        eprintln!("usage: trireme-shim shim|image ...");
        ExitCode::from(2)
    })
}
