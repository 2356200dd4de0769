//! The container shim (`<helper> shim --dir DIR [--cgroup CGROUP] -- PROGRAM ARGS...`), the
//! process runtime's containerd-shim: the runtime starts it detached, in a process group of
//! its own, with the container's environment and working directory; it starts the container,
//! waits for it and records how it ended, so that containers outlive a kubelet restart and
//! their exit is known to the next one.
//!
//! `state.json` records the shim's pid first, then the container's pid (which is also its
//! process group) and start time, then its exit code, finish time and reason. When the
//! container's first process exits, whatever is left of its process group is SIGKILLed, as a
//! container's processes die with its PID namespace's init.
//!
//! With a cgroup, the container is started through `<helper> shim --join-cgroup CGROUP --
//! PROGRAM ARGS...`, which moves itself into the cgroup and then execs the program (same pid,
//! same process group), so that every process of the container is born inside its cgroup.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use jiff::Timestamp;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::cgroup;
use super::state::{LOG_FILE, STATE_FILE, ShimState, reason_for, start_ticks, write_json};

/// What the shim was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Start the container and supervise it.
    Supervise { dir: PathBuf, cgroup: Option<PathBuf>, program: OsString, args: Vec<OsString> },
    /// Join a cgroup, then become the container's program.
    Join { cgroup: PathBuf, program: OsString, args: Vec<OsString> },
}

const USAGE: &str = "usage: shim --dir DIR [--cgroup CGROUP] -- PROGRAM [ARGS...]\n       \
                     shim --join-cgroup CGROUP -- PROGRAM [ARGS...]";

/// Runs the shim with the arguments after `shim`.
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    match parse(args) {
        Ok(Mode::Supervise { dir, cgroup, program, args }) => supervise(&dir, cgroup.as_deref(), &program, &args),
        Ok(Mode::Join { cgroup, program, args }) => join_and_exec(&cgroup, &program, &args),
        Err(message) => {
            eprintln!("trireme shim: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[OsString]) -> Result<Mode, String> {
    let (mut dir, mut cgroup, mut join) = (None, None, None);
    let mut rest = args.iter();
    loop {
        let Some(flag) = rest.next() else { return Err("missing `--` before the program".to_string()) };
        let mut value = || rest.next().cloned().map(PathBuf::from).ok_or_else(|| format!("{flag:?} needs a value"));
        match flag.to_str() {
            Some("--dir") => dir = Some(value()?),
            Some("--cgroup") => cgroup = Some(value()?),
            Some("--join-cgroup") => join = Some(value()?),
            Some("--") => break,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let program = rest.next().cloned().ok_or("no program to run")?;
    let args = rest.cloned().collect();
    match (dir, join) {
        (Some(dir), None) => Ok(Mode::Supervise { dir, cgroup, program, args }),
        (None, Some(cgroup)) => Ok(Mode::Join { cgroup, program, args }),
        _ => Err("exactly one of --dir and --join-cgroup is required".to_string()),
    }
}

fn supervise(dir: &Path, cgroup: Option<&Path>, program: &OsString, args: &[OsString]) -> ExitCode {
    let state_path = dir.join(STATE_FILE);
    let me = std::process::id() as i32;
    let mut state = ShimState { shim_pid: Some(me), shim_start: start_ticks(me), ..ShimState::default() };
    if let Err(e) = write_json(&state_path, &state, false) {
        eprintln!("trireme shim: writing {}: {e}", state_path.display());
        return ExitCode::FAILURE;
    }
    let child = open_log(dir).and_then(|(stdout, stderr)| {
        let mut command = match cgroup {
            Some(cgroup) => {
                let mut command = Command::new(std::env::current_exe()?);
                command.arg("shim").arg("--join-cgroup").arg(cgroup).arg("--").arg(program);
                command
            }
            None => Command::new(program),
        };
        command.args(args).process_group(0).stdin(Stdio::null()).stdout(stdout).stderr(stderr).spawn()
    });
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            let error = format!("starting {:?}: {e}", program.to_string_lossy());
            eprintln!("trireme shim: {error}");
            state.error = Some(error);
            state.exit_code = Some(128);
            state.reason = Some("StartError".to_string());
            state.finished_at = Some(Timestamp::now());
            if let Err(e) = write_json(&state_path, &state, false) {
                eprintln!("trireme shim: writing {}: {e}", state_path.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id() as i32;
    state.pid = Some(pid);
    state.pid_start = start_ticks(pid);
    state.started_at = Some(Timestamp::now());
    if let Err(e) = write_json(&state_path, &state, false) {
        eprintln!("trireme shim: writing {}: {e}", state_path.display());
    }

    let exit_code = wait_and_reap(child);
    state.exit_code = Some(exit_code);
    state.reason = Some(match cgroup {
        Some(cgroup) if exit_code != 0 && cgroup::oom_killed(cgroup) => "OOMKilled".to_string(),
        _ => reason_for(exit_code).to_string(),
    });
    state.finished_at = Some(Timestamp::now());
    if let Some(cgroup) = cgroup {
        cgroup::remove(cgroup);
    }
    match write_json(&state_path, &state, false) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trireme shim: writing {}: {e}", state_path.display());
            ExitCode::FAILURE
        }
    }
}

/// The container's stdout and stderr: both append to its log.
fn open_log(dir: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let log = OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;
    let second = log.try_clone()?;
    Ok((log, second))
}

/// Waits for the container's first process to exit, kills what is left of its process group
/// (before reaping it, so that the group id cannot have been reused) and returns its exit code
/// (128 + the signal number when a signal killed it).
fn wait_and_reap(mut child: std::process::Child) -> i32 {
    let pid = Pid::from_raw(child.id() as i32);
    while let Err(Errno::EINTR) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {}
    let _ = killpg(pid, Signal::SIGKILL);
    match child.wait() {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("trireme shim: waiting for the container: {e}");
            128
        }
    }
}

fn join_and_exec(cgroup_path: &Path, program: &OsString, args: &[OsString]) -> ExitCode {
    if let Err(e) = cgroup::join(cgroup_path) {
        eprintln!("trireme shim: joining cgroup {}: {e}", cgroup_path.display());
        return ExitCode::from(126);
    }
    let e = Command::new(program).args(args).exec();
    eprintln!("trireme shim: exec {:?}: {e}", program.to_string_lossy());
    ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_program_and_its_arguments_follow_the_double_dash() {
        let mode = parse(&os(&["--dir", "/d", "--", "sh", "-c", "--dir"]));
        assert_eq!(
            mode,
            Ok(Mode::Supervise {
                dir: PathBuf::from("/d"),
                cgroup: None,
                program: "sh".into(),
                args: os(&["-c", "--dir"])
            })
        );
        assert!(parse(&os(&["--dir", "/d"])).is_err());
        assert!(parse(&os(&["--", "sh"])).is_err());
    }
}
