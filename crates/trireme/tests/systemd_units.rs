//! The systemd units in deploy/systemd pass `systemd-analyze verify` (syntax, directives, the
//! binary they start), with this build's trireme in place of /usr/local/bin/trireme.

use std::path::Path;

use anyhow::Context;
use anyhow::Result;

#[test]
fn the_units_pass_systemd_analyze_verify() -> Result<()> {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for name in ["trireme-master.service", "trireme-node.service"] {
        let text = std::fs::read_to_string(units.join(name)).with_context(|| format!("reading {name}"))?;
        assert!(text.contains("Type=notify") && text.contains("Restart=always"), "{name}");
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/trireme", env!("CARGO_BIN_EXE_trireme")))?;
        paths.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .context("running systemd-analyze (install systemd)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    Ok(())
}
