//! `trireme-chaos`: runs the chaos suite once and exits non-zero on any violation.

use clap::Parser;
use rand::Rng;
use trireme_chaos::config::Config;
use trireme_chaos::reaper;

/// Kill, pause and partition a Trireme cluster under load; check what the clients saw.
#[derive(Debug, Parser)]
#[command(name = "trireme-chaos", version)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Start nothing: check a saved register history (a run dir's history.jsonl) again.
    #[arg(long, value_name = "HISTORY")]
    recheck: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.recheck {
        return recheck(&path);
    }
    let config = cli.config;
    let seed = config.seed.unwrap_or_else(|| rand::rng().random_range(1..1_000_000_000));
    println!("seed: {seed}");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off,kube_runtime=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic anywhere (any task) ends the run: kill what was started, say how to reproduce.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        reaper::kill_all();
        eprintln!("chaos run with seed {seed} panicked; everything it started was killed");
        std::process::exit(101);
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            report = trireme_chaos::run::run(&config, seed) => report.map(Some),
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); Ok(None) }
            _ = term.recv() => { eprintln!("terminated"); Ok(None) }
        }
    });
    reaper::kill_all();
    match outcome {
        Ok(Some(report)) => {
            println!("report: {}/report.md", report.run_dir);
            let failed = report.failed();
            if failed.is_empty() {
                println!("seed {seed}: all {} checks passed", report.checks.len());
                return std::process::ExitCode::SUCCESS;
            }
            for check in failed {
                println!("VIOLATION: {}", check.name);
                for v in &check.violations {
                    println!("  {v}");
                }
            }
            println!("{}", report.reproduce());
            std::process::ExitCode::FAILURE
        }
        Ok(None) => std::process::ExitCode::from(130),
        Err(e) => {
            eprintln!("chaos run with seed {seed} could not complete: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn recheck(path: &std::path::Path) -> std::process::ExitCode {
    let checked = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(trireme_chaos::run::recheck(path)));
    match checked {
        Ok(check) => {
            println!("{}: {} ({})", check.name, if check.passed { "pass" } else { "FAIL" }, check.summary);
            for v in &check.violations {
                println!("  {v}");
            }
            if check.passed { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
