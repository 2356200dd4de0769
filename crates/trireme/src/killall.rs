//! `trireme killall`: stops every container a node agent left running (k3s' `k3s-killall.sh`).
//!
//! Containers outlive their node agent on purpose: a restarted `trireme node` with the same
//! `--root-dir` adopts them. To really stop a node (before deleting its root dir, or after its
//! agent was SIGKILLed and will not come back) this kills the process group and the shim of
//! every container of the process runtime recorded under the root dir, if they are still the
//! recorded processes. Docker-runtime containers are Docker's to stop.

use std::path::PathBuf;

use anyhow::Result;
use anyhow::bail;
use clap::Args;

/// Flags of `trireme killall`.
#[derive(Debug, Args)]
pub struct KillallArgs {
    /// The node's root dir (`trireme node --root-dir`).
    #[arg(long)]
    pub root_dir: PathBuf,
}

/// Kills what is recorded under the root dir.
pub fn run(args: &KillallArgs) -> Result<()> {
    if !args.root_dir.is_dir() {
        bail!("--root-dir {}: no such directory", args.root_dir.display());
    }
    trireme_kubelet::runtime::process::kill_recorded_under(&args.root_dir);
    Ok(())
}
