//! `trireme`: one binary for every role — `master`, `node`, `up`, `lb` — and the operator tools
//! (`snapshot`, `member`, `certs`, `killall`). It parses flags, wires the crates together and handles shutdown; the logic lives in
//! the library crates.

mod bootstrap;
mod certs;
mod client;
mod init;
mod killall;
mod lb;
mod master;
mod member;
mod node;
mod pki;
mod snapshot;
mod systemd;
mod token;
mod up;

use clap::Parser;

/// mimalloc: a request allocates and frees many small buffers (gRPC frames, entries, keys),
/// and glibc's malloc showed as a tenth of a master's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Subcommand;

/// Trireme: a Kubernetes-compatible control plane that stays up when masters die.
#[derive(Debug, Parser)]
#[command(name = "trireme", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run one master replica: Raft member, MVCC store, the etcd v3 API and the Kubernetes API.
    Master(Box<master::MasterArgs>),
    /// Run one worker: the kubelet (pods through a container runtime) and the service proxy.
    Node(Box<node::NodeArgs>),
    /// Start the first master of a new cluster on this host (mutual TLS on every port); prints
    /// the commands that join more hosts. Again with the same data dir: starts it.
    Init(Box<init::InitArgs>),
    /// Join this host to a cluster as a master or a node, with a join token that pins the
    /// cluster's CA. Again with the same data dir: starts it.
    Join(Box<init::JoinArgs>),
    /// Create, list and delete join tokens (on a master's host).
    Token(token::TokenArgs),
    /// Run a whole cluster on this machine (child processes on loopback) until Ctrl-C.
    Up(up::UpArgs),
    /// Save, inspect, verify and restore snapshots of the cluster's data.
    Snapshot(snapshot::SnapshotArgs),
    /// List, add, remove and promote masters.
    Member(member::MemberArgs),
    /// Stop every container a node agent left running under its root dir.
    Killall(killall::KillallArgs),
    /// Certificates of this host: their expiry, and renewing them now.
    Certs(certs::CertsArgs),
    /// Serve the cluster's stable address on a host of its own: a health-checked balancer in
    /// front of the masters' Kubernetes and etcd APIs.
    Lb(lb::LbArgs),
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    // `trireme shim ...` and `trireme image ...` are the process runtime's container shim and
    // built-in images, started by `trireme node`; they are not for people to type.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = trireme_kubelet::helper::run_helper(&args) {
        return Ok(code);
    }
    let cli = Cli::parse();
    // Operator tools print their results on stdout; their logs (a verification's store, say)
    // are only for when something is wrong.
    let default_filter = match cli.command {
        Commands::Snapshot(_)
        | Commands::Member(_)
        | Commands::Killall(_)
        | Commands::Certs(_)
        | Commands::Token(_) => "warn,openraft=error",
        _ => "info,openraft=warn,h2=warn,tonic=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        match cli.command {
            Commands::Master(args) => master::run(*args).await,
            Commands::Node(args) => node::run(*args).await,
            Commands::Up(args) => up::run(args).await,
            Commands::Snapshot(args) => snapshot::run(args).await,
            Commands::Member(args) => member::run(args).await,
            Commands::Killall(args) => killall::run(&args),
            Commands::Lb(args) => lb::run(args).await,
            Commands::Certs(args) => certs::run(args),
            Commands::Init(args) => init::init(*args).await,
            Commands::Join(args) => init::join(*args).await,
            Commands::Token(args) => token::run(args).await,
        }
    });
    // The error and its causes on one line, never a backtrace: these are messages for people.
    if let Err(e) = outcome {
        eprintln!("Error: {e:#}");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
