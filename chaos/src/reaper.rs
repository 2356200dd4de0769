//! Every process the suite starts is registered here, so that any way out of the run — the
//! end, an error, a panic in any task, Ctrl-C or SIGTERM — can kill them all with
//! [`kill_all`]. Node agents leave container processes (shims and their process groups)
//! behind when SIGKILLed, as a real kubelet does; those are found under the node root dirs.
//!
//! What is not covered: the suite itself being SIGKILLed (no `PR_SET_PDEATHSIG` without
//! unsafe code); its children then keep running until killed by hand (`pkill -f <run dir>`).

use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

struct Registry {
    pids: BTreeSet<i32>,
    /// Node root dirs, each with the `trireme` binary whose `killall` stops its containers.
    roots: BTreeSet<(PathBuf, PathBuf)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { pids: BTreeSet::new(), roots: BTreeSet::new() });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock must not stop the cleanup that follows it.
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers a child process to kill on exit.
pub fn register(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        registry().pids.insert(pid);
    }
}

/// Forgets a child that has been waited for (its pid may be reused).
pub fn forget(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        registry().pids.remove(&pid);
    }
}

/// Remembers a node agent's root dir (and the `trireme` binary that ran it): processes living
/// under it are killed on exit.
pub fn register_root(root: &Path, bin: &Path) {
    registry().roots.insert((root.to_path_buf(), bin.to_path_buf()));
}

/// SIGKILLs every registered process, then every process whose working directory or command
/// line is under a registered root dir. Safe to call more than once.
pub fn kill_all() {
    let (pids, roots) = {
        let r = registry();
        (r.pids.clone(), r.roots.clone())
    };
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for (root, bin) in &roots {
        kill_containers_under(root, bin);
        kill_under(root);
    }
}

/// Whether a command-line argument names `root` or a path inside it (`<root>.log` does not).
fn mentions(arg: &str, root: &str) -> bool {
    arg == root || arg.contains(&format!("{root}/")) || arg.ends_with(&format!("={root}"))
}

/// SIGKILLs the process group and the shim of every container recorded below `root`, as
/// `trireme killall` does (the suite knows nothing of the node agent's on-disk records).
pub fn kill_containers_under(root: &Path, bin: &Path) {
    if !root.is_dir() {
        return;
    }
    let done = std::process::Command::new(bin)
        .arg("killall")
        .arg("--root-dir")
        .arg(root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output();
    match done {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!("trireme killall --root-dir {}: {}", root.display(), String::from_utf8_lossy(&out.stderr).trim())
        }
        Err(e) => eprintln!("trireme killall --root-dir {}: {e}", root.display()),
    }
}

/// SIGKILLs (as process groups and as processes) everything running under `root`: a process
/// whose cwd is inside it or whose command line mentions it.
pub fn kill_under(root: &Path) {
    let me = std::process::id();
    let Some(root_text) = root.to_str().filter(|s| !s.is_empty()) else { return };
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid as u32 == me {
            continue;
        }
        let dir = entry.path();
        let in_cwd = std::fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
        let in_cmdline = std::fs::read(dir.join("cmdline"))
            .is_ok_and(|raw| raw.split(|b| *b == 0).any(|arg| mentions(&String::from_utf8_lossy(arg), root_text)));
        if in_cwd || in_cmdline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_arguments_inside_the_root_dir_count() {
        let root = "/runs/7/n1";
        assert!(mentions("/runs/7/n1", root));
        assert!(mentions("/runs/7/n1/containers/x/state.json", root));
        assert!(mentions("--root-dir=/runs/7/n1", root));
        assert!(!mentions("/runs/7/n1.log", root));
        assert!(!mentions("/runs/7/n10", root));
    }
}
