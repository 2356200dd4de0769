//! The process runtime: every container is a process group on this machine, every pod a
//! loopback IP of its own (allocated from `--pod-cidr` inside 127.0.0.0/8, which Linux routes
//! to `lo` without any setup), given to its containers as `$POD_IP` by the kubelet.
//!
//! Layout under the root directory (all of the runtime's state; a restarted kubelet finds its
//! pods and containers there):
//!
//! ```text
//! pods/<uid>/sandbox.json                                 the pod and its IP
//! pods/<uid>/containers/<name>-<attempt>/config.json      what was started (env, image, ...)
//! pods/<uid>/containers/<name>-<attempt>/state.json       pid, start, exit (from the shim)
//! pods/<uid>/containers/<name>-<attempt>/log              stdout and stderr
//! pods/<uid>/containers/<name>-<attempt>/shim.log         the shim's own complaints
//! pods/<uid>/containers/<name>-<attempt>/root/            the default working dir and HOME
//! ```
//!
//! A container is started by a shim (`shim`, `<helper> shim ...`) running detached in a
//! process group of its own, which outlives the kubelet and records the container's exit. A
//! container id is `<pod uid>_<name>_<attempt>`.
//!
//! Images are programs of this machine: `--image NAME=PATH` mappings, the built-in demo images
//! (`builtin`) and the host's own commands for `busybox`, `alpine`, `debian` and `ubuntu`.
//!
//! Limitations, as a process is not isolated the way a container is:
//! - There are no namespaces: a container sees the host's file system, processes and users.
//! - Mounts cannot be remapped to absolute paths: each mount is a symlink at
//!   `<container dir>/root/<container path>` (the default working directory), so a program
//!   finds it only through a relative path; `read_only` is not enforced.
//! - CPU and memory limits need a writable cgroup v2 hierarchy; without one they are not
//!   enforced (the runtime warns once).
//! - Pods share the host's ports on their own IPs only if their programs bind `$POD_IP`.
//! - Log timestamps are approximate (see `logs`).
//! - One runtime (one kubelet) per root directory at a time.

mod cgroup;
mod config;
mod image;
mod logs;
mod state;

pub(crate) mod builtin;
pub(crate) mod shim;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};

use self::cgroup::Cgroups;
use self::config::PodCidr;
pub use self::config::ProcessConfig;
use self::image::DEFAULT_PATH;
pub use self::state::kill_recorded_under;
use self::state::{
    CONFIG_FILE, ContainerConfig, LOG_FILE, PodRecord, STATE_FILE, SandboxRecord, ShimState, observe, read_json,
    write_json,
};
use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ExecOutput, LogOptions, PodRef, Result,
    RuntimeError, Sandbox,
};

/// How long the shim may take to start a container.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed container may take to be recorded as exited.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a container's state file is read while waiting for it.
const POLL: Duration = Duration::from_millis(100);
/// How often while stopping or starting one (short: those are waited for by a caller).
const FAST_POLL: Duration = Duration::from_millis(20);
/// At most this much of an exec's output is kept.
const EXEC_OUTPUT_LIMIT: usize = 10 * 1024;
const SANDBOX_FILE: &str = "sandbox.json";
const SHIM_LOG_FILE: &str = "shim.log";

/// The process runtime (see the module documentation).
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessConfig,
    cidr: PodCidr,
    cgroups: Option<Cgroups>,
    /// Serializes IP allocation (which reads every sandbox and writes one). It guards no data,
    /// so a panic while holding it leaves nothing inconsistent: a poisoned lock is taken anyway.
    allocation: Mutex<()>,
}

impl ProcessRuntime {
    /// Checks `config`, creates the root directory and detects cgroup v2.
    pub fn new(config: ProcessConfig) -> Result<ProcessRuntime> {
        config.validate().map_err(RuntimeError::Config)?;
        let cidr = PodCidr::parse(&config.pod_cidr).map_err(RuntimeError::Config)?;
        let pods = config.root_dir.join("pods");
        std::fs::create_dir_all(&pods).map_err(RuntimeError::io("creating", &pods))?;
        let cgroups = Cgroups::detect(config.cgroup_root.as_deref());
        Ok(ProcessRuntime { inner: Arc::new(Inner { config, cidr, cgroups, allocation: Mutex::new(()) }) })
    }

    /// Runs file-system work on a blocking thread.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner)).await.map_err(RuntimeError::Blocking)?
    }

    /// The directory of an existing container.
    async fn existing_container(&self, id: &str) -> Result<PathBuf> {
        let dir = self.inner.container_dir_of(id)?;
        let config = dir.join(CONFIG_FILE);
        match tokio::fs::try_exists(&config).await {
            Ok(true) => Ok(dir),
            Ok(false) => Err(RuntimeError::NotFound(format!("container {id}"))),
            Err(e) => Err(RuntimeError::io("reading", config)(e)),
        }
    }

    async fn observe(&self, dir: &Path) -> Result<ContainerState> {
        let dir = dir.to_path_buf();
        self.blocking(move |_| observe(&dir).map_err(RuntimeError::io("reading", &dir))).await
    }

    /// Waits until the shim has started the container, failed to, or taken too long.
    async fn await_start(
        &self,
        dir: &Path,
        mut shim_exit: tokio::sync::oneshot::Receiver<io::Result<std::process::ExitStatus>>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let shim_exited = !matches!(shim_exit.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty));
            let state: ShimState = read_json(&dir.join(STATE_FILE))
                .map_err(RuntimeError::io("reading the shim's state", dir.join(STATE_FILE)))?
                .unwrap_or_default();
            if let Some(error) = state.error {
                return Err(RuntimeError::StartFailed(error));
            }
            if state.pid.is_some() {
                return Ok(());
            }
            if shim_exited {
                let complaint = std::fs::read_to_string(dir.join(SHIM_LOG_FILE)).unwrap_or_default();
                return Err(RuntimeError::StartFailed(format!("the shim exited: {}", complaint.trim())));
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(pid) = state.shim_pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
                return Err(RuntimeError::StartFailed(format!(
                    "the shim did not start the container within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(FAST_POLL).await;
        }
    }

    /// SIGTERM to the container's process group, SIGKILL once `grace` has passed; returns
    /// when the container is recorded as exited.
    async fn stop(&self, id: &str, dir: &Path, grace: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut terminated = false;
        loop {
            if let ContainerState::Exited { .. } = self.observe(dir).await? {
                return Ok(());
            }
            let state: ShimState = read_json(&dir.join(STATE_FILE))
                .map_err(RuntimeError::io("reading the shim's state", dir.join(STATE_FILE)))?
                .unwrap_or_default();
            let elapsed = started.elapsed();
            if let Some(group) = state.live_group() {
                if elapsed >= grace {
                    tracing::debug!(container = id, "grace period over: SIGKILL");
                    let _ = killpg(group, Signal::SIGKILL);
                } else if !terminated {
                    tracing::debug!(container = id, grace = ?grace, "SIGTERM");
                    let _ = killpg(group, Signal::SIGTERM);
                    terminated = true;
                }
            }
            if elapsed >= grace + KILL_TIMEOUT {
                return Err(RuntimeError::StopTimedOut { id: id.to_string(), waited: KILL_TIMEOUT });
            }
            tokio::time::sleep(FAST_POLL).await;
        }
    }
}

impl Inner {
    fn pods_dir(&self) -> PathBuf {
        self.config.root_dir.join("pods")
    }

    fn pod_dir(&self, uid: &str) -> Result<PathBuf> {
        check_name("pod uid", uid)?;
        Ok(self.pods_dir().join(uid))
    }

    fn container_dir(&self, uid: &str, name: &str, attempt: u32) -> Result<PathBuf> {
        check_name("container name", name)?;
        Ok(self.pod_dir(uid)?.join("containers").join(format!("{name}-{attempt}")))
    }

    fn container_dir_of(&self, id: &str) -> Result<PathBuf> {
        let not_found = || RuntimeError::NotFound(format!("container {id}"));
        let mut parts = id.split('_');
        let (Some(uid), Some(name), Some(attempt), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(not_found());
        };
        let attempt = attempt.parse().map_err(|_| not_found())?;
        self.container_dir(uid, name, attempt).map_err(|_| not_found())
    }

    fn create_sandbox(&self, pod: &PodRef) -> Result<Sandbox> {
        let dir = self.pod_dir(&pod.uid)?;
        let _allocating = self.allocation.lock().unwrap_or_else(PoisonError::into_inner);
        let file = dir.join(SANDBOX_FILE);
        if let Some(record) = read_json::<SandboxRecord>(&file).map_err(RuntimeError::io("reading", &file))? {
            return Ok(sandbox_of(record));
        }
        let used: BTreeSet<Ipv4Addr> = self.sandboxes()?.into_iter().map(|record| record.ip).collect();
        let ip = self.cidr.pod_ips().find(|ip| !used.contains(ip)).ok_or_else(|| {
            RuntimeError::StartFailed(format!("no free pod IP left in --pod-cidr {}", self.config.pod_cidr))
        })?;
        std::fs::create_dir_all(dir.join("containers")).map_err(RuntimeError::io("creating", &dir))?;
        let record = SandboxRecord { pod: PodRecord::from(pod), ip, created_at: Timestamp::now() };
        write_json(&file, &record, false).map_err(RuntimeError::io("writing", &file))?;
        tracing::info!(pod.uid = %pod.uid, pod.name = %pod.name, %ip, "sandbox created");
        Ok(sandbox_of(record))
    }

    fn sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        let mut records = Vec::new();
        for pod in subdirs(&self.pods_dir())? {
            match read_json::<SandboxRecord>(&pod.join(SANDBOX_FILE)) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => tracing::warn!(dir = %pod.display(), error = %e, "unreadable sandbox"),
            }
        }
        Ok(records)
    }

    /// Every container directory with its config, in a pod or on the whole node.
    fn containers(&self, pod_uid: Option<&str>) -> Result<Vec<(PathBuf, ContainerConfig)>> {
        let pods = match pod_uid {
            Some(uid) => vec![self.pod_dir(uid)?],
            None => subdirs(&self.pods_dir())?,
        };
        let mut containers = Vec::new();
        for pod in pods {
            for dir in subdirs(&pod.join("containers"))? {
                match read_json::<ContainerConfig>(&dir.join(CONFIG_FILE)) {
                    Ok(Some(config)) => containers.push((dir, config)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "unreadable container"),
                }
            }
        }
        Ok(containers)
    }

    /// Resolves the image and lays out the container's directory; returns what the shim runs.
    fn prepare(&self, sandbox: &Sandbox, spec: &ContainerSpec) -> Result<Prepared> {
        let dir = self.container_dir(&sandbox.pod.uid, &spec.name, spec.attempt)?;
        let id = format!("{}_{}_{}", sandbox.pod.uid, spec.name, spec.attempt);
        if !self.pod_dir(&sandbox.pod.uid)?.join(SANDBOX_FILE).exists() {
            return Err(RuntimeError::NotFound(format!("sandbox {}", sandbox.pod.uid)));
        }
        if dir.exists() {
            // Only a start that a crashed kubelet left half-done may be started again.
            if observe(&dir).map_err(RuntimeError::io("reading", &dir))? != ContainerState::Created
                || read_json::<ShimState>(&dir.join(STATE_FILE)).ok().flatten().is_some()
            {
                return Err(RuntimeError::StartFailed(format!("container {id} already exists")));
            }
            std::fs::remove_dir_all(&dir).map_err(RuntimeError::io("removing", &dir))?;
        }
        let root = dir.join("root");
        let mut env = spec.env.clone();
        env.entry("PATH".to_string()).or_insert_with(|| DEFAULT_PATH.to_string());
        env.entry("HOME".to_string()).or_insert_with(|| root.display().to_string());
        let resolved = image::resolve(&self.config.images, &self.config.helper, spec, &env["PATH"])?;
        let working_dir = match (&spec.working_dir, &resolved.image_dir) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(image_dir)) => image_dir.clone(),
            (None, None) => root.clone(),
        };

        std::fs::create_dir_all(&root).map_err(RuntimeError::io("creating", &root))?;
        let laid_out = (|| -> Result<Option<PathBuf>> {
            for mount in &spec.mounts {
                link_mount(&root, &mount.host_path, &mount.container_path)?;
            }
            std::fs::File::create(dir.join(LOG_FILE)).map_err(RuntimeError::io("creating", dir.join(LOG_FILE)))?;
            let cgroup = match &self.cgroups {
                Some(cgroups) => Some(
                    cgroups
                        .create(&sandbox.pod.uid, &format!("{}-{}", spec.name, spec.attempt), &spec.limits)
                        .map_err(|e| RuntimeError::StartFailed(format!("creating the container's cgroup: {e}")))?,
                ),
                None => None,
            };
            let config = ContainerConfig {
                pod: PodRecord::from(&sandbox.pod),
                name: spec.name.clone(),
                attempt: spec.attempt,
                image: spec.image.clone(),
                image_id: resolved.image_id.clone(),
                env: env.clone(),
                working_dir: working_dir.clone(),
                cgroup: cgroup.clone(),
                created_at: Timestamp::now(),
            };
            write_json(&dir.join(CONFIG_FILE), &config, true)
                .map_err(RuntimeError::io("writing", dir.join(CONFIG_FILE)))?;
            Ok(cgroup)
        })();
        let cgroup = match laid_out {
            Ok(cgroup) => cgroup,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Prepared { id, dir, env, working_dir, cgroup, program: resolved.program, args: resolved.args })
    }

    /// Forgets a container: kills it if it still runs (callers stop containers first), then
    /// deletes its directory and cgroup.
    fn remove_container_dir(&self, dir: &Path) -> Result<()> {
        let config: Option<ContainerConfig> = read_json(&dir.join(CONFIG_FILE)).ok().flatten();
        if !matches!(observe(dir), Ok(ContainerState::Exited { .. })) {
            let state: Option<ShimState> = read_json(&dir.join(STATE_FILE)).ok().flatten();
            if let Some(group) = state.as_ref().and_then(ShimState::live_group) {
                tracing::warn!(dir = %dir.display(), "removing a running container: SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                // Let the shim record the exit before the directory goes, so that it does not
                // write into a directory being deleted.
                let deadline = std::time::Instant::now() + KILL_TIMEOUT;
                while !matches!(observe(dir), Ok(ContainerState::Exited { .. })) && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(FAST_POLL);
                }
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("removing", dir)(e)),
        }
        if let Some(cgroup) = config.and_then(|config| config.cgroup) {
            cgroup::remove(&cgroup);
        }
        Ok(())
    }
}

/// What the shim is started with.
struct Prepared {
    id: String,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    working_dir: PathBuf,
    cgroup: Option<PathBuf>,
    program: PathBuf,
    args: Vec<OsString>,
}

fn sandbox_of(record: SandboxRecord) -> Sandbox {
    Sandbox { id: record.pod.uid.clone(), ip: IpAddr::V4(record.ip), pod: record.pod.into() }
}

/// Pod uids and container names become path components and parts of container ids.
fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty() || name.starts_with('.') || name.contains(['/', '_', '\0']);
    if bad {
        return Err(RuntimeError::StartFailed(format!("{what} {name:?} cannot name a directory")));
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(RuntimeError::io("reading", dir)(e)),
    };
    let mut dirs: Vec<PathBuf> =
        entries.flatten().filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    dirs.sort();
    Ok(dirs)
}

/// Makes `host_path` visible at `<root><container_path>` (a symlink: see the module doc).
fn link_mount(root: &Path, host_path: &Path, container_path: &str) -> Result<()> {
    let relative = Path::new(container_path.trim_start_matches('/'));
    if relative.as_os_str().is_empty() || relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(RuntimeError::StartFailed(format!("mount path {container_path:?} is not a plain absolute path")));
    }
    let link = root.join(relative);
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(RuntimeError::io("creating", parent))?;
    }
    std::os::unix::fs::symlink(host_path, &link)
        .map_err(RuntimeError::io(format!("linking {} at", host_path.display()), &link))?;
    Ok(())
}

/// The exit code of a finished process (128 + the signal number when a signal killed it).
fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Reads at most [`EXEC_OUTPUT_LIMIT`] bytes and discards the rest until end of file.
fn read_limited(mut pipe: impl io::Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn create_sandbox(&self, pod: &PodRef) -> Result<Sandbox> {
        let pod = pod.clone();
        self.blocking(move |inner| inner.create_sandbox(&pod)).await
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        let uid = pod.uid.clone();
        self.blocking(move |inner| {
            for (dir, _) in inner.containers(Some(&uid))? {
                inner.remove_container_dir(&dir)?;
            }
            let dir = inner.pod_dir(&uid)?;
            let _allocating = inner.allocation.lock().unwrap_or_else(PoisonError::into_inner);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(pod.uid = %uid, "sandbox removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io("removing", dir)(e)),
            }
            if let Some(cgroups) = &inner.cgroups {
                cgroups.remove_pod(&uid);
            }
            Ok(())
        })
        .await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        self.blocking(|inner| Ok(inner.sandboxes()?.into_iter().map(sandbox_of).collect())).await
    }

    async fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec) -> Result<String> {
        let (sandbox, spec) = (sandbox.clone(), spec.clone());
        let prepared = self.blocking(move |inner| inner.prepare(&sandbox, &spec)).await?;
        let Prepared { id, dir, env, working_dir, cgroup, program, args } = prepared;

        let helper = &self.inner.config.helper;
        let mut command = tokio::process::Command::new(&helper[0]);
        command.args(&helper[1..]).arg("shim").arg("--dir").arg(&dir);
        if let Some(cgroup) = &cgroup {
            command.arg("--cgroup").arg(cgroup);
        }
        command.arg("--").arg(&program).args(&args);
        command.env_clear().envs(&env).current_dir(&working_dir).process_group(0).stdin(std::process::Stdio::null());
        let spawned = std::fs::File::create(dir.join(SHIM_LOG_FILE))
            .and_then(|shim_log| command.stdout(std::process::Stdio::null()).stderr(shim_log).spawn());
        let mut shim = match spawned {
            Ok(shim) => shim,
            Err(e) => {
                let inner = Arc::clone(&self.inner);
                let _ = tokio::task::spawn_blocking(move || inner.remove_container_dir(&dir)).await;
                return Err(RuntimeError::StartFailed(format!("starting the shim in {}: {e}", working_dir.display())));
            }
        };
        // The shim is our child until this kubelet exits: reap it when it does.
        let (exited, shim_exit) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = exited.send(shim.wait().await);
        });
        match self.await_start(&dir, shim_exit).await {
            Ok(()) => {
                tracing::info!(container = %id, program = %program.display(), "container started");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "container failed to start");
                let inner = Arc::clone(&self.inner);
                let _ = tokio::task::spawn_blocking(move || inner.remove_container_dir(&dir)).await;
                Err(e)
            }
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let dir = self.existing_container(id).await?;
        self.stop(id, &dir, grace).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let dir = match self.existing_container(id).await {
            Ok(dir) => dir,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.blocking(move |inner| inner.remove_container_dir(&dir)).await
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        self.blocking(|inner| {
            inner
                .containers(None)?
                .into_iter()
                .map(|(dir, config)| {
                    let state = observe(&dir).map_err(RuntimeError::io("reading", &dir))?;
                    Ok(info(config, state))
                })
                .collect()
        })
        .await
    }

    async fn container(&self, id: &str) -> Result<ContainerInfo> {
        let dir = self.existing_container(id).await?;
        let id = id.to_string();
        self.blocking(move |_| {
            let config: ContainerConfig = read_json(&dir.join(CONFIG_FILE))
                .map_err(RuntimeError::io("reading", dir.join(CONFIG_FILE)))?
                .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
            let state = observe(&dir).map_err(RuntimeError::io("reading", &dir))?;
            Ok(info(config, state))
        })
        .await
    }

    async fn wait_container(&self, id: &str) -> Result<ContainerState> {
        loop {
            // Looked up each time: a container removed meanwhile is NotFound, not waited for.
            let dir = self.existing_container(id).await?;
            let state = self.observe(&dir).await?;
            if let ContainerState::Exited { .. } = state {
                return Ok(state);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let dir = self.existing_container(id).await?;
        let (config, state) = self
            .blocking(move |_| {
                let config: Option<ContainerConfig> =
                    read_json(&dir.join(CONFIG_FILE)).map_err(RuntimeError::io("reading", dir.join(CONFIG_FILE)))?;
                Ok((config, observe(&dir).map_err(RuntimeError::io("reading", &dir))?))
            })
            .await?;
        let config = config.ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let refused = |reason: &str| RuntimeError::ExecFailed { id: id.to_string(), reason: reason.to_string() };
        if !matches!(state, ContainerState::Running { .. }) {
            return Err(refused("the container is not running"));
        }
        let Some((program, args)) = command.split_first() else {
            return Err(refused("empty command"));
        };
        let exec_io = |action: &'static str| move |source| RuntimeError::ExecIo { id: id.to_string(), action, source };
        let (reader, writer) = io::pipe().map_err(exec_io("creating a pipe"))?;
        let mut process = tokio::process::Command::new(program);
        process
            .args(args)
            .env_clear()
            .envs(&config.env)
            .current_dir(&config.working_dir)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(writer.try_clone().map_err(exec_io("duplicating a pipe"))?)
            .stderr(writer);
        let spawned = process.spawn();
        // The command holds the pipe's write end: drop it, or the output never ends.
        drop(process);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let exit_code = if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
                return Ok(ExecOutput { exit_code, output: format!("exec {program:?}: {e}\n").into_bytes() });
            }
        };
        let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
        let mut output = tokio::task::spawn_blocking(move || read_limited(reader));
        let exit_code = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => exit_code_of(status.map_err(exec_io("waiting for the command"))?),
            Err(_) => {
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                124
            }
        };
        // Processes the command left behind may hold the pipe open: give them a moment.
        let mut kept = match tokio::time::timeout(Duration::from_secs(1), &mut output).await {
            Ok(kept) => kept.unwrap_or_default(),
            Err(_) => {
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                tokio::time::timeout(Duration::from_secs(1), output).await.ok().and_then(|r| r.ok()).unwrap_or_default()
            }
        };
        if exit_code == 124 {
            kept.extend_from_slice(format!("command timed out after {timeout:?}\n").as_bytes());
        }
        Ok(ExecOutput { exit_code, output: kept })
    }

    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<'static, io::Result<Bytes>>> {
        let dir = self.existing_container(id).await?;
        let log = dir.join(LOG_FILE);
        logs::stream(dir, options).await.map_err(RuntimeError::io(format!("reading the log of {id} at"), log))
    }
}

fn info(config: ContainerConfig, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: format!("{}_{}_{}", config.pod.uid, config.name, config.attempt),
        pod: config.pod.into(),
        name: config.name,
        attempt: config.attempt,
        image: config.image,
        image_id: config.image_id,
        state,
    }
}
