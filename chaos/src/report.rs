//! The run's report: `report.json` (everything, for tools) and `report.md` (for people).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::config::Profile;
use crate::deployments::Mutation;
use crate::deployments::Planned;
use crate::faults::FaultRecord;
use crate::stats::Summary;
use crate::watchers::WatcherLog;

/// Operations by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Answered.
    pub ok: usize,
    /// Certainly not applied.
    pub fail: usize,
    /// Outcome unknown.
    pub unknown: usize,
}

/// What the workloads did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Operations {
    /// Register gets.
    pub register_gets: Counts,
    /// Register puts.
    pub register_puts: Counts,
    /// Register compare-and-swaps (ok counts both swapped and not).
    pub register_cas: Counts,
    /// Compare-and-swaps that swapped.
    pub register_cas_swapped: usize,
    /// Unique-key puts of the no-lost-writes workload.
    pub acked_puts: Counts,
    /// Puts of the write-gap probe (not acknowledged within 10 s: unknown).
    pub probe_puts: Counts,
    /// Events the watchers received, all together.
    pub watch_events: usize,
    /// Events in the canonical history.
    pub canonical_events: usize,
    /// Watch streams the watchers opened (resumes = streams − watchers).
    pub watch_streams: usize,
    /// Deployment scales and rolls that succeeded.
    pub kube_mutations_ok: usize,
    /// ... and failed.
    pub kube_mutations_failed: usize,
    /// Object versions the Kubernetes watches delivered.
    pub kube_versions_seen: usize,
    /// Times a Kubernetes watch listed again (1 per watch at start).
    pub kube_relists: usize,
    /// Kubernetes watch errors (retried).
    pub kube_watch_errors: usize,
}

/// One check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// One line: what was covered.
    pub summary: String,
    /// Every violation found (at most 50 listed).
    pub violations: Vec<String>,
}

impl Check {
    /// A check that passed when `violations` is empty.
    pub fn new(name: &str, summary: String, mut violations: Vec<String>) -> Check {
        let total = violations.len();
        if total > 50 {
            violations.truncate(50);
            violations.push(format!("... and {} more", total - 50));
        }
        Check { name: name.into(), passed: total == 0, summary, violations }
    }
}

/// The write gap after one leader loss.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// The fault's index.
    pub fault: usize,
    /// Milliseconds from the fault to the first acknowledged write invoked after it; `None`
    /// when none was.
    pub ms: Option<f64>,
}

/// Everything about one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The profile.
    pub profile: Profile,
    /// `--duration` (what `make chaos DURATION=` takes).
    pub duration: String,
    /// When the run started (UTC).
    pub started: String,
    /// Seconds the run took.
    pub elapsed_s: f64,
    /// The run dir.
    pub run_dir: String,
    /// The trireme binary.
    pub trireme_bin: String,
    /// Masters.
    pub masters: usize,
    /// Node agents.
    pub nodes: usize,
    /// Whether the masters had `--peer-source-address` (partitions need it).
    pub peer_source_address: bool,
    /// The Deployments of the Kubernetes workload.
    pub deployments: Vec<Planned>,
    /// Every fault, in order.
    pub faults: Vec<FaultRecord>,
    /// What the workloads did.
    pub operations: Operations,
    /// Every check.
    pub checks: Vec<Check>,
    /// Write gap after leader losses, milliseconds.
    pub write_gap_ms: Summary,
    /// Write gap per leader loss.
    pub write_gaps: Vec<Gap>,
    /// Seconds the Deployments took to roll out before the faults.
    pub initial_convergence_s: Option<f64>,
    /// Seconds the Kubernetes objects took to converge after the faults.
    pub convergence_s: Option<f64>,
    /// The watchers.
    pub watchers: Vec<WatcherLog>,
    /// Every scale and roll.
    pub mutations: Vec<Mutation>,
    /// What the suite does not do.
    pub not_done: Vec<String>,
}

impl Report {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// What `make chaos` needs to run this again.
    pub fn reproduce(&self) -> String {
        let duration = match self.profile {
            Profile::Short => "3m".to_string(),
            Profile::Long => self.duration.clone(),
        };
        let exact = match self.profile {
            Profile::Short => format!(" (this exact schedule: trireme-chaos --profile short --seed {})", self.seed),
            Profile::Long => String::new(),
        };
        format!("reproduce: make chaos SEED={} DURATION={duration}{exact}", self.seed)
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.failed().is_empty() { "PASS" } else { "FAIL" };
        let _ = writeln!(md, "# Chaos run {} — {verdict}\n", self.seed);
        let profile = match self.profile {
            Profile::Short => "short".to_string(),
            Profile::Long => format!("long, --duration {}", self.duration),
        };
        let _ = writeln!(md, "- seed: {} (profile {profile})", self.seed);
        let _ = writeln!(md, "- started: {}, took {:.0} s", self.started, self.elapsed_s);
        let _ = writeln!(
            md,
            "- cluster: {} masters, {} node agents (peer source addresses: {})",
            self.masters, self.nodes, self.peer_source_address
        );
        let _ = writeln!(md, "- trireme: `{}`; run dir: `{}`", self.trireme_bin, self.run_dir);
        if !self.failed().is_empty() {
            let _ = writeln!(md, "- {}", self.reproduce());
        }
        let _ = writeln!(md, "\n## Checks\n\n| check | result | covered |\n|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(md, "| {} | {} | {} |", c.name, if c.passed { "pass" } else { "**FAIL**" }, c.summary);
        }
        for c in self.failed() {
            let _ = writeln!(md, "\n### Violations: {}\n", c.name);
            for v in &c.violations {
                let _ = writeln!(md, "- {}", v.replace('\n', "\n  "));
            }
        }
        let g = &self.write_gap_ms;
        let _ = writeln!(md, "\n## Numbers\n");
        let _ = writeln!(
            md,
            "- write gap after {} leader losses: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            g.count, g.p50, g.p99, g.max
        );
        let secs = |s: Option<f64>| s.map_or("not within the bound".to_string(), |s| format!("{s:.1} s"));
        let _ = writeln!(md, "- initial rollout: {}", secs(self.initial_convergence_s));
        let _ = writeln!(md, "- convergence after the faults: {}", secs(self.convergence_s));
        let o = &self.operations;
        let _ = writeln!(md, "\n## Operations\n\n| workload | ok | fail | unknown |\n|---|---|---|---|");
        for (name, c) in [
            ("register get", o.register_gets),
            ("register put", o.register_puts),
            ("register cas", o.register_cas),
            ("unique-key put", o.acked_puts),
            ("write-gap probe put", o.probe_puts),
        ] {
            let _ = writeln!(md, "| {name} | {} | {} | {} |", c.ok, c.fail, c.unknown);
        }
        let _ = writeln!(
            md,
            "\nCAS swapped: {}. Watch: {} events over {} streams ({} watchers), canonical history {} events. \
             Kubernetes: {} scales/rolls ok, {} failed; {} object versions watched, {} lists, {} watch errors.",
            o.register_cas_swapped,
            o.watch_events,
            o.watch_streams,
            self.watchers.len(),
            o.canonical_events,
            o.kube_mutations_ok,
            o.kube_mutations_failed,
            o.kube_versions_seen,
            o.kube_relists,
            o.kube_watch_errors
        );
        let _ = writeln!(
            md,
            "\n## Faults\n\n| # | action | leader before | start s | end s | recovered s | leader after | write gap ms | note |\n|---|---|---|---|---|---|---|---|---|"
        );
        for f in &self.faults {
            let gap = match self.write_gaps.iter().find(|g| g.fault == f.index) {
                Some(Gap { ms: Some(ms), .. }) => format!("{ms:.0}"),
                Some(Gap { ms: None, .. }) => "**none**".to_string(),
                None => "-".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {gap} | {} |",
                f.index,
                f.action,
                f.leader_before.as_deref().unwrap_or("-"),
                f.start,
                f.end,
                f.recovered.map_or("**no**".to_string(), |r| format!("{r:.1}")),
                f.leader_after.as_deref().unwrap_or("-"),
                f.note.as_deref().unwrap_or(""),
            );
        }
        let _ = writeln!(
            md,
            "\n## Watchers\n\n| watcher | events | streams | stalls | caught up | last errors |\n|---|---|---|---|---|---|"
        );
        for w in &self.watchers {
            let errors = w.errors.iter().rev().take(2).cloned().collect::<Vec<_>>().join("; ");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                w.name,
                w.events.len(),
                w.streams,
                w.stalls,
                w.caught_up,
                errors.replace('|', "/")
            );
        }
        let _ = writeln!(md, "\n## Not done\n");
        for n in &self.not_done {
            let _ = writeln!(md, "- {n}");
        }
        md
    }
}
