//! The container runtime interface: what the kubelet's pod workers need from whatever runs
//! containers. Two implementations: [`process`] (the default: every container is a process
//! group on this machine, every pod a loopback IP of its own) and [`docker`] (containers on a
//! Docker network of the node's own, through the Docker Engine API).
//!
//! The kubelet owns the decisions (what should run, restarts, back-off, probes, status); a
//! runtime only does what it is told and reports what exists, so that a restarted kubelet can
//! find the containers that kept running without it.

pub mod docker;
#[cfg(test)]
pub(crate) mod fake;
pub mod process;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use jiff::Timestamp;

/// Errors a runtime reports; the message is what `kubectl describe pod` shows and what the
/// kubelet logs, so it names the object, the file or the flag concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not known to this runtime (process runtime: not mapped; Docker: not
    /// present locally, and there is no registry to pull from).
    #[error("image {image:?} not found: {reason}")]
    ImageNotFound { image: String, reason: String },
    /// The container could not be created or started (bad command, no such executable, no free
    /// pod IP, ...).
    #[error("{0}")]
    StartFailed(String),
    /// No container or sandbox with that id; the string names which (`"container <id>"`).
    #[error("{0} not found")]
    NotFound(String),
    /// An exec that cannot run: the container is not running, the command is empty, ...
    #[error("exec in container {id}: {reason}")]
    ExecFailed { id: String, reason: String },
    /// An exec's pipes or its wait failed on this machine (process runtime).
    #[error("exec in container {id}: {action}: {source}")]
    ExecIo {
        id: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A container was still there `waited` after SIGKILL (process runtime).
    #[error("container {id} did not exit {waited:?} after SIGKILL")]
    StopTimedOut { id: String, waited: Duration },
    /// The runtime's configuration is refused; the message names the flag.
    #[error("{0}")]
    Config(String),
    /// Reading or writing the runtime's own files failed: `action` ("reading", "creating",
    /// ...) on `path`.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Docker daemon refused a request or did not answer; `what` names the object or the
    /// request (`"container <id>"`, `"creating network <name>"`, ...). A 404 is [`Self::NotFound`]
    /// instead.
    #[error("{what}: {}", docker::daemon_message(.source))]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The pause image is not on the Docker daemon and cannot be built here.
    #[error("the pause image {image} cannot be built: {reason}")]
    PauseImage { image: &'static str, reason: String },
    /// The pause container of a new sandbox got no address on the node's network.
    #[error("the pause container {sandbox} got no address on network {network}")]
    NoPodAddress { sandbox: String, network: String },
    /// File-system work on the blocking thread pool panicked or was cancelled.
    #[error("a blocking task of the runtime failed: {0}")]
    Blocking(#[source] tokio::task::JoinError),
}

impl RuntimeError {
    /// The error of an I/O `action` ("reading", "creating", ...) on `path`, for `map_err`.
    pub(crate) fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let (action, path) = (action.into(), path.into());
        move |source| RuntimeError::Io { action, path, source }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The pod a sandbox or container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A pod's sandbox: the network identity its containers share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub pod: PodRef,
    /// The runtime's id for the sandbox (process runtime: the pod uid; Docker: the pause
    /// container's id).
    pub id: String,
    /// The pod IP every container of the pod listens on.
    pub ip: IpAddr,
}

/// A file or directory the kubelet prepared on this machine, to be seen inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Resource limits of one container; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// One container to start, with everything already resolved by the kubelet: the environment
/// (including the downward-API values and `TRIREME_SERVICE_ACCOUNT_TOKEN`), limits and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's name in the pod spec.
    pub name: String,
    pub image: String,
    /// The pod spec's `command` (replaces the image's entrypoint when not empty).
    pub command: Vec<String>,
    /// The pod spec's `args` (replace the image's default arguments when not empty).
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub limits: Limits,
    pub mounts: Vec<Mount>,
    /// Which start of this container this is (0 for the first): becomes `restartCount`, and
    /// `kubectl logs --previous` reads attempt - 1.
    pub attempt: u32,
}

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but not started (Docker), or being started.
    Created,
    Running {
        started_at: Timestamp,
    },
    /// Exited. `exit_code` is the process's status (128 + signal number when killed by a
    /// signal); `reason` is "Completed", "Error" or "OOMKilled" as Kubernetes reports it.
    Exited {
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
        exit_code: i32,
        reason: String,
    },
}

/// A container the runtime knows, running or exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's id, unique on this node.
    pub id: String,
    pub pod: PodRef,
    /// The container's name in the pod spec.
    pub name: String,
    pub attempt: u32,
    pub image: String,
    /// The image id `kubectl describe` shows (process runtime: the resolved executable or
    /// directory; Docker: the image's sha256 id).
    pub image_id: String,
    pub state: ContainerState,
}

/// Options of a log request (`kubectl logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new output as it is written, until the container exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only output written at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with an RFC 3339 timestamp.
    pub timestamps: bool,
    /// At most this many bytes.
    pub limit_bytes: Option<u64>,
}

/// What an exec (a probe) printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr, interleaved, at most 10 KiB.
    pub output: Vec<u8>,
}

/// The runtime interface. Every method is idempotent where that makes sense (creating a
/// sandbox that exists returns it; stopping an exited container succeeds).
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// "process" or "docker".
    fn name(&self) -> &'static str;

    /// Creates the pod's sandbox, or returns the existing one (after a kubelet restart).
    async fn create_sandbox(&self, pod: &PodRef) -> Result<Sandbox>;

    /// Removes the sandbox and everything left of the pod's containers (logs included). Its
    /// containers must have been stopped.
    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()>;

    /// The sandboxes that exist on this node (after a kubelet restart: to adopt or clean up).
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>>;

    /// Creates and starts one container in the sandbox; returns its id. Fails with
    /// [`RuntimeError::ImageNotFound`] or [`RuntimeError::StartFailed`] without leaving a
    /// running process behind.
    async fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec) -> Result<String>;

    /// Stops a container: SIGTERM to all of its processes, then SIGKILL once `grace` has
    /// passed. Returns once it has exited; succeeds if it already had.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;

    /// Forgets an exited container and deletes its logs.
    async fn remove_container(&self, id: &str) -> Result<()>;

    /// Every container of this node (all pods, running and exited), with its state.
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>>;

    /// One container's current state.
    async fn container(&self, id: &str) -> Result<ContainerInfo>;

    /// Resolves when the container has exited (at once if it has), with its final state.
    /// Cancel-safe: a pod worker drops it to do something else and calls it again.
    async fn wait_container(&self, id: &str) -> Result<ContainerState>;

    /// Runs `command` inside the container (an exec probe) with the container's environment,
    /// killing it after `timeout` (then the exit code is 124 and the output says "timed out").
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput>;

    /// The container's output (stdout and stderr interleaved as written).
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<'static, std::io::Result<Bytes>>>;
}
