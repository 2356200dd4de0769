//! The run's settings: flags of `trireme-chaos`, their defaults and the checks across them.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::ValueEnum;
use serde::Serialize;
use trireme_util::duration;

/// Which fault schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// About three minutes: 10 leader kills, 5 partitions, 5 pauses, a random master kill and
    /// a node agent restart (`--duration` is ignored).
    Short,
    /// The short mix plus slow links, repeated until `--duration` is used up.
    Long,
}

/// Flags of `trireme-chaos`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Seed of every random choice (faults, workloads) [default: random, printed first].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault schedule.
    #[arg(long, value_enum, default_value_t = Profile::Short)]
    pub profile: Profile,
    /// How long the long profile injects faults: e.g. 90s, 10m, 4h.
    #[arg(long, default_value = "4h", value_parser = parse_duration)]
    pub duration: Duration,
    /// Number of masters: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Number of node agents.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Run dir for logs, data dirs and the report [default: target/chaos/SEED-UNIXTIME].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The trireme binary [default: $TRIREME_BIN, else `trireme` next to this binary].
    #[arg(long)]
    pub trireme_bin: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: None,
            profile: Profile::Short,
            duration: Duration::from_secs(4 * 3600),
            masters: 3,
            nodes: 2,
            out: None,
            trireme_bin: None,
        }
    }
}

impl Config {
    /// Checks the rules across flags.
    pub fn validate(&self) -> Result<()> {
        if self.masters != 3 && self.masters != 5 {
            bail!("--masters must be 3 or 5, not {}", self.masters);
        }
        if self.nodes == 0 || self.nodes > 9 {
            bail!("--nodes must be between 1 and 9, not {}", self.nodes);
        }
        if self.profile == Profile::Long && self.duration < Duration::from_secs(30) {
            bail!("--duration must be at least 30s for --profile long");
        }
        Ok(())
    }

    /// `--duration` as it would be written on the command line.
    pub fn duration_text(&self) -> String {
        duration::format(self.duration)
    }
}

/// `--duration`: a Go-style duration (`90s`, `10m`, `1h30m`), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    duration::parse(text).map_err(|e| format!("{text:?} is not a duration like 90s, 10m or 4h: {e}"))
}

/// The `trireme` binary: `flag`, else `$TRIREME_BIN`, else `trireme` next to this executable
/// (or one directory up, when this runs from `target/debug/deps`).
pub fn find_trireme(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        if !path.is_file() {
            bail!("--trireme-bin {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("TRIREME_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("TRIREME_BIN={}: no such file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let mut candidates = vec![dir.join("trireme")];
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(up) = dir.parent()
    {
        candidates.push(up.join("trireme"));
    }
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "no trireme binary at {}; build it (cargo build -p trireme) or give --trireme-bin PATH or TRIREME_BIN",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_the_way_make_passes_them() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        for (seconds, text) in [(600, "10m"), (14_400, "4h"), (95, "95s")] {
            let config = Config { duration: Duration::from_secs(seconds), ..Config::default() };
            assert_eq!(config.duration_text(), text);
            assert_eq!(parse_duration(text), Ok(config.duration), "{text} reads back");
        }
    }

    #[test]
    fn validation_names_the_flag() {
        let c = Config { masters: 4, ..Config::default() };
        assert!(c.validate().expect_err("4 masters").to_string().contains("--masters"));
        let c = Config { profile: Profile::Long, duration: Duration::from_secs(5), ..Config::default() };
        assert!(c.validate().expect_err("5 s").to_string().contains("--duration"));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn a_missing_trireme_binary_is_a_clear_error() {
        let err = find_trireme(Some(Path::new("/nonexistent/trireme"))).expect_err("no such file");
        assert!(err.to_string().contains("--trireme-bin"), "{err}");
    }
}
