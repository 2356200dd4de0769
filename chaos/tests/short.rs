//! The short chaos profile with seed 1 against the real `trireme` binary (built next to this
//! one under `cargo test --workspace`, or given by `TRIREME_BIN`): it must find nothing.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The short profile takes about three minutes of faults plus start-up, convergence and
/// checking; beyond this the run is stuck.
const HARD_TIMEOUT: Duration = Duration::from_secs(8 * 60);

#[tokio::test(flavor = "multi_thread")]
async fn the_short_profile_with_seed_1_finds_no_violation() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-short-1-{now}"));
    std::fs::create_dir_all(&out).expect("creating the run dir");
    // The suite's progress log goes next to its report rather than into the test output.
    let log = std::fs::File::create(out.join("chaos.log")).expect("creating chaos.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trireme-chaos"))
        .args(["--profile", "short", "--seed", "1", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("starting trireme-chaos");
    let status = match tokio::time::timeout(HARD_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("waiting for trireme-chaos"),
        Err(_) => {
            // SIGTERM: the suite kills every process it started before it exits.
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            panic!("the short chaos profile did not finish within {HARD_TIMEOUT:?}; logs in {}", out.display());
        }
    };
    println!("report: {}", out.join("report.md").display());
    assert!(
        status.success(),
        "trireme-chaos exited with {status}; see {} and {}",
        out.join("report.md").display(),
        out.join("chaos.log").display()
    );
}
