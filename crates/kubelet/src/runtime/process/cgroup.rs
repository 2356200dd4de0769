//! Resource limits through cgroup v2: one cgroup per container,
//! `<base>/<pod uid>/<container>-<attempt>`, with `cpu.max` and `memory.max`. On a machine
//! without a writable unified hierarchy limits are not enforced (and the runtime says so once).

use std::io;
use std::path::{Path, PathBuf};

use crate::runtime::Limits;

/// CFS period the CPU quota is expressed in (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup v2 subtree the runtime owns.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    base: PathBuf,
}

impl Cgroups {
    /// The subtree at `root` (default `/sys/fs/cgroup/trireme`), if this machine has a
    /// writable cgroup v2 hierarchy with the cpu and memory controllers.
    pub(crate) fn detect(root: Option<&Path>) -> Option<Cgroups> {
        let unified = Path::new("/sys/fs/cgroup");
        let base = root.map_or_else(|| unified.join("trireme"), Path::to_path_buf);
        let usable = unified.join("cgroup.controllers").exists()
            && std::fs::create_dir_all(&base).is_ok()
            && enable_controllers(&base).is_ok();
        if usable {
            Some(Cgroups { base })
        } else {
            tracing::warn!(
                cgroup = %base.display(),
                "no writable cgroup v2 hierarchy: container CPU and memory limits are not enforced"
            );
            None
        }
    }

    /// Creates the container's cgroup with its limits; returns its path.
    pub(crate) fn create(&self, pod_uid: &str, container: &str, limits: &Limits) -> io::Result<PathBuf> {
        let pod = self.base.join(pod_uid);
        std::fs::create_dir_all(&pod)?;
        enable_controllers(&pod)?;
        let cgroup = pod.join(container);
        std::fs::create_dir_all(&cgroup)?;
        if let Some(millis) = limits.cpu_millis {
            let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
            std::fs::write(cgroup.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if let Some(bytes) = limits.memory_bytes {
            std::fs::write(cgroup.join("memory.max"), bytes.to_string())?;
        }
        Ok(cgroup)
    }

    /// Removes a pod's cgroup (its containers' cgroups must be empty).
    pub(crate) fn remove_pod(&self, pod_uid: &str) {
        let pod = self.base.join(pod_uid);
        if let Ok(entries) = std::fs::read_dir(&pod) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&pod);
    }
}

/// Lets the children of `cgroup` have CPU and memory limits.
fn enable_controllers(cgroup: &Path) -> io::Result<()> {
    std::fs::write(cgroup.join("cgroup.subtree_control"), "+cpu +memory")
}

/// Moves the calling process into `cgroup` (its children are then born there).
pub(crate) fn join(cgroup: &Path) -> io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
}

/// Whether the kernel's OOM killer killed a process of `cgroup`.
pub(crate) fn oom_killed(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("memory.events")).is_ok_and(|events| {
        events.lines().any(|line| {
            line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
        })
    })
}

/// Removes a container's cgroup once its processes are gone.
pub(crate) fn remove(cgroup: &Path) {
    let _ = std::fs::remove_dir(cgroup);
}
