//! The Docker runtime: pods as containers on a Docker network of the node's own, through the
//! Docker Engine API (`bollard`, the API version negotiated with the daemon).
//!
//! Like Kubernetes' dockershim, a pod's sandbox is a pause container ([`PAUSE_IMAGE`], built
//! locally the first time it is needed): its address on the node's bridge network is the pod
//! IP, and the pod's containers join its network namespace (`network_mode:
//! container:<pause id>`). Everything the runtime creates carries `trireme.*` labels naming
//! the node, the pod and the container, and that is all it needs to find its containers again
//! after a kubelet restart; two nodes can share one daemon.
//!
//! There is no registry: images must be present on the daemon (`docker load`, `docker
//! build`); a missing one is [`RuntimeError::ImageNotFound`], never a pull.

mod config;
mod pause;

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use jiff::Timestamp;

pub use config::DockerConfig;
pub use pause::PAUSE_IMAGE;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ExecOutput, LogOptions, PodRef, Result,
    RuntimeError, Sandbox,
};

/// The labels on everything this runtime creates.
const LABEL_NODE: &str = "trireme.node";
/// "sandbox" (a pause container) or "container".
const LABEL_KIND: &str = "trireme.kind";
const LABEL_POD_UID: &str = "trireme.pod.uid";
const LABEL_POD_NAMESPACE: &str = "trireme.pod.namespace";
const LABEL_POD_NAME: &str = "trireme.pod.name";
const LABEL_CONTAINER_NAME: &str = "trireme.container.name";
const LABEL_CONTAINER_ATTEMPT: &str = "trireme.container.attempt";
const KIND_SANDBOX: &str = "sandbox";
const KIND_CONTAINER: &str = "container";

/// An exec probe's output is cut to this many bytes.
const EXEC_OUTPUT_CAP: usize = 10 * 1024;
/// The exit code of an exec that ran out of time (as `timeout(1)` reports it).
const EXEC_TIMED_OUT: i32 = 124;
/// How long a request may wait for the daemon's response headers. Requests that legitimately
/// wait longer (stop with a long grace, wait, followed logs) use their own client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The client timeout of requests that last as long as a container does.
const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Containers on a Docker daemon, as a [`ContainerRuntime`].
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    network: String,
    /// Set once [`PAUSE_IMAGE`] is known to exist; building it twice at once is avoided.
    pause_image: tokio::sync::OnceCell<()>,
}

impl DockerRuntime {
    /// Connects to the daemon (the socket of `config`, else `DOCKER_HOST`, else
    /// `/var/run/docker.sock`), negotiates the API version and creates the node's network if
    /// it is missing.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime> {
        config.validate().map_err(RuntimeError::Config)?;
        let docker = match &config.socket {
            Some(socket) => {
                let path = socket
                    .to_str()
                    .ok_or_else(|| RuntimeError::Config(format!("--docker-socket {}: not UTF-8", socket.display())))?;
                Docker::connect_with_unix(path, REQUEST_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
            }
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(docker_error("connecting to the Docker daemon"))?
        .with_timeout(REQUEST_TIMEOUT);
        let docker = docker.negotiate_version().await.map_err(docker_error("the Docker daemon does not answer"))?;
        let runtime =
            DockerRuntime { docker, network: config.network_name(), config, pause_image: tokio::sync::OnceCell::new() };
        runtime.ensure_network().await?;
        Ok(runtime)
    }

    /// The Docker network pods get their IPs on.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Removes the node's network if no container of this node is left on the daemon;
    /// returns whether it did (or it was already gone). For a node leaving the cluster.
    pub async fn remove_network_if_unused(&self) -> Result<bool> {
        if !self.list_labelled(&[]).await?.is_empty() {
            return Ok(false);
        }
        match self.docker.remove_network(&self.network).await {
            Ok(()) => Ok(true),
            Err(err) if status(&err) == Some(404) => Ok(true),
            Err(err) => Err(daemon_error(err, format!("network {}", self.network))),
        }
    }

    /// Creates the node's bridge network unless it exists (an existing one is used as it is).
    async fn ensure_network(&self) -> Result<()> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(_) => return Ok(()),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) => return Err(daemon_error(err, format!("network {}", self.network))),
        }
        let ipam = self.config.subnet.as_ref().map(|subnet| Ipam {
            config: Some(vec![IpamConfig { subnet: Some(subnet.clone()), ..IpamConfig::default() }]),
            ..Ipam::default()
        });
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".to_string()),
            ipam,
            labels: Some(HashMap::from([(LABEL_NODE.to_string(), self.config.node_name.clone())])),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %self.network, subnet = ?self.config.subnet, "created the pod network");
                Ok(())
            }
            // Another runtime of this node created it meanwhile.
            Err(err) if status(&err) == Some(409) => Ok(()),
            Err(err) => Err(docker_error(format!(
                "creating network {} (--docker-network, --docker-subnet {:?})",
                self.network, self.config.subnet
            ))(err)),
        }
    }

    /// Builds [`PAUSE_IMAGE`] unless the daemon has it.
    async fn ensure_pause_image(&self) -> Result<()> {
        self.pause_image
            .get_or_try_init(|| async {
                match self.docker.inspect_image(PAUSE_IMAGE).await {
                    Ok(_) => return Ok(()),
                    Err(err) if status(&err) == Some(404) => {}
                    Err(err) => return Err(daemon_error(err, format!("image {PAUSE_IMAGE}"))),
                }
                let version =
                    self.docker.version().await.map_err(docker_error("asking the Docker daemon its version"))?;
                let arch = version.arch.unwrap_or_default();
                if arch != pause::PAUSE_ARCH {
                    return Err(RuntimeError::PauseImage {
                        image: PAUSE_IMAGE,
                        reason: format!(
                            "it can only be built for {} and this Docker daemon runs on {arch:?}: \
                             build or load an image tagged {PAUSE_IMAGE} whose entrypoint waits for SIGTERM",
                            pause::PAUSE_ARCH
                        ),
                    });
                }
                let context = pause::build_context().map_err(|e| RuntimeError::PauseImage {
                    image: PAUSE_IMAGE,
                    reason: format!("writing its build context: {e}"),
                })?;
                let options = BuildImageOptionsBuilder::default().t(PAUSE_IMAGE).rm(true).forcerm(true).build();
                let mut build = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
                while let Some(step) = build.next().await {
                    step.map_err(docker_error(format!("building the pause image {PAUSE_IMAGE}")))?;
                }
                tracing::info!(image = PAUSE_IMAGE, "built the pause image");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The containers of this node carrying all of `labels` (running or not).
    async fn list_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let mut selector = vec![format!("{LABEL_NODE}={}", self.config.node_name)];
        selector.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        let filters = HashMap::from([("label".to_string(), selector)]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        self.docker.list_containers(Some(options)).await.map_err(docker_error("listing containers"))
    }

    /// A sandbox as found in a container listing; `None` if it does not carry our labels.
    fn sandbox_of(&self, summary: &ContainerSummary) -> Option<Sandbox> {
        let labels = summary.labels.as_ref()?;
        let running = summary.state == Some(ContainerSummaryStateEnum::RUNNING);
        let ip = summary
            .network_settings
            .as_ref()
            .and_then(|settings| settings.networks.as_ref()?.get(&self.network)?.ip_address.as_deref()?.parse().ok())
            .filter(|_| running)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Some(Sandbox { pod: pod_of(labels)?, id: summary.id.clone()?, ip })
    }

    /// Inspects a container of this node.
    async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|err| daemon_error(err, format!("container {id}")))?;
        let labels = inspect.config.as_ref().and_then(|config| config.labels.as_ref());
        if labels.and_then(|labels| labels.get(LABEL_NODE)) != Some(&self.config.node_name) {
            return Err(RuntimeError::NotFound(format!("container {id}")));
        }
        Ok(inspect)
    }

    /// Removes a container whatever its state; one that is already gone is fine.
    async fn force_remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status(&err) == Some(404) => Ok(()),
            Err(err) => Err(daemon_error(err, format!("container {id}"))),
        }
    }

    /// Creates a container named `name`; if one by that name is left from an earlier try,
    /// a running one is returned as it is and any other replaced.
    async fn create_named(&self, name: &str, body: ContainerCreateBody) -> Result<Created, DockerError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(options.clone()), body.clone()).await {
            Ok(created) => Ok(Created::New(created.id)),
            Err(err) if status(&err) == Some(409) => {
                let existing = self.docker.inspect_container(name, None).await?;
                let running = existing.state.as_ref().and_then(|state| state.running) == Some(true);
                match existing.id {
                    Some(id) if running => Ok(Created::AlreadyRunning(id)),
                    _ => {
                        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
                        self.docker.remove_container(name, Some(remove)).await?;
                        let created = self.docker.create_container(Some(options), body).await?;
                        Ok(Created::New(created.id))
                    }
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Starts a container just created; on failure removes it, so that nothing is left.
    async fn start_or_remove(&self, id: &str) -> Result<()> {
        if let Err(err) = self.docker.start_container(id, None).await {
            self.force_remove(id).await?;
            return Err(RuntimeError::StartFailed(daemon_message(&err)));
        }
        Ok(())
    }

    /// A client for a request that lasts `duration` or more.
    fn client_for(&self, duration: Duration) -> Docker {
        self.docker.clone().with_timeout(duration)
    }

    /// Kills the process of an exec that outlived its timeout. The Engine API cannot, so this
    /// signals the host PID the daemon reports; that works when the daemon runs on this
    /// machine and the kubelet may signal its processes, and is skipped otherwise.
    async fn kill_exec(&self, exec_id: &str) {
        let Ok(inspect) = self.docker.inspect_exec(exec_id).await else { return };
        let pid = inspect.pid.and_then(|pid| i32::try_from(pid).ok()).filter(|pid| *pid > 0);
        if let (Some(true), Some(pid)) = (inspect.running, pid) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if let Err(err) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                tracing::debug!(exec = exec_id, %pid, %err, "could not kill a timed-out exec");
            }
        }
    }

    /// Names and labels of the pod's objects.
    fn labels(&self, pod: &PodRef, kind: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_NODE.to_string(), self.config.node_name.clone()),
            (LABEL_KIND.to_string(), kind.to_string()),
            (LABEL_POD_UID.to_string(), pod.uid.clone()),
            (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
            (LABEL_POD_NAME.to_string(), pod.name.clone()),
        ])
    }

    /// `trireme_<node>_<ns>_<pod>_<container>_<attempt>_<uid prefix>`: readable in `docker
    /// ps`, and unique even when a pod is recreated under the same name before the old one is
    /// gone. The sandbox's container name is `POD` and it has no attempt.
    fn container_name(&self, pod: &PodRef, container: &str, attempt: Option<u32>) -> String {
        let uid: String = pod.uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
        let attempt = attempt.map(|n| format!("_{n}")).unwrap_or_default();
        let name =
            format!("trireme_{}_{}_{}_{}{attempt}_{uid}", self.config.node_name, pod.namespace, pod.name, container);
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect()
    }

    async fn find_sandbox(&self, pod: &PodRef) -> Result<Option<Sandbox>> {
        let found = self.list_labelled(&[(LABEL_KIND, KIND_SANDBOX), (LABEL_POD_UID, &pod.uid)]).await?;
        Ok(found.iter().find_map(|summary| self.sandbox_of(summary)))
    }
}

/// What [`DockerRuntime::create_named`] did.
enum Created {
    New(String),
    AlreadyRunning(String),
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// A sandbox whose pause container stopped (the daemon restarted) is replaced by a new one
    /// with a new IP; the pod's containers must then be restarted, as in Kubernetes.
    async fn create_sandbox(&self, pod: &PodRef) -> Result<Sandbox> {
        if let Some(existing) = self.find_sandbox(pod).await? {
            if !existing.ip.is_unspecified() {
                return Ok(existing);
            }
            tracing::info!(pod.uid = %pod.uid, sandbox = %existing.id, "replacing a sandbox that is not running");
            self.force_remove(&existing.id).await?;
        }
        self.ensure_pause_image().await?;
        self.ensure_network().await?;
        let hostname: String = pod.name.chars().take(63).collect();
        let body = ContainerCreateBody {
            image: Some(PAUSE_IMAGE.to_string()),
            hostname: Some(hostname.trim_end_matches(['-', '.']).to_string()),
            labels: Some(self.labels(pod, KIND_SANDBOX)),
            host_config: Some(HostConfig { network_mode: Some(self.network.clone()), ..HostConfig::default() }),
            ..ContainerCreateBody::default()
        };
        let name = self.container_name(pod, "POD", None);
        let id = match self.create_named(&name, body).await {
            Ok(Created::New(id)) => {
                self.start_or_remove(&id).await?;
                id
            }
            Ok(Created::AlreadyRunning(id)) => id,
            Err(err) => return Err(daemon_error(err, format!("sandbox {name}"))),
        };
        let inspect = self.inspect(&id).await?;
        let ip = inspect
            .network_settings
            .as_ref()
            .and_then(|settings| settings.networks.as_ref()?.get(&self.network)?.ip_address.as_deref()?.parse().ok())
            .ok_or_else(|| RuntimeError::NoPodAddress { sandbox: id.clone(), network: self.network.clone() })?;
        tracing::info!(pod.uid = %pod.uid, sandbox = %id, %ip, "sandbox created");
        Ok(Sandbox { pod: pod.clone(), id, ip })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        let objects = self.list_labelled(&[(LABEL_POD_UID, &pod.uid)]).await?;
        let kind =
            |summary: &ContainerSummary| summary.labels.as_ref().and_then(|labels| labels.get(LABEL_KIND).cloned());
        // The containers first: they are in the pause container's network namespace.
        let (sandboxes, containers): (Vec<_>, Vec<_>) =
            objects.iter().partition(|summary| kind(summary).as_deref() == Some(KIND_SANDBOX));
        for summary in containers.into_iter().chain(sandboxes) {
            if let Some(id) = &summary.id {
                self.force_remove(id).await?;
            }
        }
        Ok(())
    }

    /// A sandbox whose pause container is not running has the unspecified address.
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let found = self.list_labelled(&[(LABEL_KIND, KIND_SANDBOX)]).await?;
        Ok(found.iter().filter_map(|summary| self.sandbox_of(summary)).collect())
    }

    async fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec) -> Result<String> {
        if let Err(err) = self.docker.inspect_image(&spec.image).await {
            return Err(match status(&err) {
                Some(404) => RuntimeError::ImageNotFound {
                    image: spec.image.clone(),
                    reason: "not present on the Docker daemon, and there is no registry to pull from: \
                             load it with `docker load` or build it with `docker build`"
                        .to_string(),
                },
                _ => daemon_error(err, format!("image {}", spec.image)),
            });
        }
        let body = create_body(&self.labels(&sandbox.pod, KIND_CONTAINER), sandbox, spec)?;
        let name = self.container_name(&sandbox.pod, &spec.name, Some(spec.attempt));
        let id = match self.create_named(&name, body).await {
            Ok(Created::New(id)) => {
                self.start_or_remove(&id).await?;
                id
            }
            Ok(Created::AlreadyRunning(id)) => id,
            Err(err) => return Err(RuntimeError::StartFailed(daemon_message(&err))),
        };
        tracing::info!(pod.uid = %sandbox.pod.uid, container = %spec.name, attempt = spec.attempt, %id, "container started");
        Ok(id)
    }

    /// `docker stop` with the grace rounded up to whole seconds.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.inspect(id).await?;
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::default().t(i32::try_from(seconds).unwrap_or(i32::MAX)).build();
        let client = self.client_for(REQUEST_TIMEOUT + Duration::from_secs(seconds));
        client.stop_container(id, Some(options)).await.map_err(|err| daemon_error(err, format!("container {id}")))
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        match self.inspect(id).await {
            Ok(_) => self.force_remove(id).await,
            Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let found = self.list_labelled(&[(LABEL_KIND, KIND_CONTAINER)]).await?;
        let infos: Vec<Result<ContainerInfo>> =
            futures::stream::iter(found.into_iter().filter_map(|summary| summary.id))
                .map(|id| async move { self.container(&id).await })
                .buffer_unordered(8)
                .collect()
                .await;
        let mut containers = Vec::with_capacity(infos.len());
        for info in infos {
            match info {
                Ok(info) => containers.push(info),
                // Removed between the listing and the inspection.
                Err(RuntimeError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        containers.sort_by(|a, b| (&a.pod.uid, &a.name, a.attempt).cmp(&(&b.pod.uid, &b.name, b.attempt)));
        Ok(containers)
    }

    async fn container(&self, id: &str) -> Result<ContainerInfo> {
        let inspect = self.inspect(id).await?;
        info_of(id, &inspect).ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    async fn wait_container(&self, id: &str) -> Result<ContainerState> {
        let client = self.client_for(LONG_REQUEST_TIMEOUT);
        loop {
            match self.container(id).await?.state {
                exited @ ContainerState::Exited { .. } => return Ok(exited),
                // Not started yet: "not-running" would answer at once.
                ContainerState::Created => tokio::time::sleep(Duration::from_millis(200)).await,
                ContainerState::Running { .. } => {
                    let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
                    let mut waiting = Box::pin(client.wait_container(id, Some(options)));
                    match waiting.next().await {
                        // A non-zero exit code comes as an error; the inspection tells it all.
                        None | Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
                        Some(Err(err)) if status(&err) == Some(404) => {
                            return Err(RuntimeError::NotFound(format!("container {id}")));
                        }
                        Some(Err(err)) => {
                            tracing::debug!(container = id, %err, "waiting for a container failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.inspect(id).await?;
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..CreateExecOptions::default()
        };
        let exec_id = match self.docker.create_exec(id, options).await {
            Ok(created) => created.id,
            Err(err) if status(&err) == Some(404) => return Err(RuntimeError::NotFound(format!("container {id}"))),
            Err(err) => return Err(docker_error(format!("exec in container {id}"))(err)),
        };
        let mut output = Vec::new();
        let failed = docker_error(format!("exec in container {id}"));
        let run = async {
            let StartExecResults::Attached { output: mut stream, .. } = self.docker.start_exec(&exec_id, None).await?
            else {
                return Ok::<_, DockerError>(None);
            };
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?.into_bytes();
                let room = EXEC_OUTPUT_CAP.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            // The output ends as the process does; the daemon records its status just after.
            loop {
                let inspect = self.docker.inspect_exec(&exec_id).await?;
                if inspect.running != Some(true) {
                    let code = inspect.exit_code.unwrap_or(-1);
                    return Ok(Some(i32::try_from(code).unwrap_or(-1)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(Some(exit_code))) => Ok(ExecOutput { exit_code, output }),
            Ok(Ok(None)) => Err(RuntimeError::ExecFailed {
                id: id.to_string(),
                reason: "the daemon started the exec detached".to_string(),
            }),
            Ok(Err(err)) => Err(failed(err)),
            Err(_) => {
                self.kill_exec(&exec_id).await;
                let note = format!("command {command:?} timed out after {}s", timeout.as_secs_f64());
                let room = EXEC_OUTPUT_CAP.saturating_sub(output.len());
                output.extend_from_slice(&note.as_bytes()[..note.len().min(room)]);
                Ok(ExecOutput { exit_code: EXEC_TIMED_OUT, output })
            }
        }
    }

    /// Docker's `since` is in whole seconds: the runtime asks for timestamps, drops the lines
    /// written before `since` and removes the timestamps unless they were asked for.
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        self.inspect(id).await?;
        let mut request =
            LogsOptionsBuilder::default().follow(options.follow).stdout(true).stderr(true).timestamps(true);
        if let Some(lines) = options.tail_lines {
            request = request.tail(&lines.to_string());
        }
        if let Some(since) = options.since {
            request = request.since(i32::try_from(since.as_second()).unwrap_or(0).max(0));
        }
        let client = if options.follow { self.client_for(LONG_REQUEST_TIMEOUT) } else { self.docker.clone() };
        let (since, timestamps) = (options.since, options.timestamps);
        let lines = client
            .logs(id, Some(request.build()))
            .map_err(std::io::Error::other)
            .try_filter_map(move |output| futures::future::ready(Ok(log_line(output.into_bytes(), since, timestamps))));
        Ok(match options.limit_bytes {
            Some(limit) => limit_bytes(lines.boxed(), limit),
            None => lines.boxed(),
        })
    }
}

/// The create request of an app container, with Kubernetes' command/args semantics.
fn create_body(
    labels: &HashMap<String, String>,
    sandbox: &Sandbox,
    spec: &ContainerSpec,
) -> Result<ContainerCreateBody> {
    let mut labels = labels.clone();
    labels.insert(LABEL_CONTAINER_NAME.to_string(), spec.name.clone());
    labels.insert(LABEL_CONTAINER_ATTEMPT.to_string(), spec.attempt.to_string());
    // `command` replaces the entrypoint and then `args` are all the arguments (the image's
    // CMD is dropped even when `args` is empty); `args` alone replace only the CMD.
    let (entrypoint, cmd) = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => (Some(spec.command.clone()), Some(spec.args.clone())),
        (true, false) => (None, Some(spec.args.clone())),
        (true, true) => (None, None),
    };
    let mut binds = Vec::with_capacity(spec.mounts.len());
    for mount in &spec.mounts {
        let host = mount.host_path.to_str().ok_or_else(|| {
            RuntimeError::StartFailed(format!("mount {}: the host path is not UTF-8", mount.host_path.display()))
        })?;
        binds.push(format!("{host}:{}{}", mount.container_path, if mount.read_only { ":ro" } else { "" }));
    }
    let memory = spec.limits.memory_bytes.map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    let host_config = HostConfig {
        network_mode: Some(format!("container:{}", sandbox.id)),
        binds: Some(binds),
        nano_cpus: spec
            .limits
            .cpu_millis
            .map(|millis| i64::try_from(millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
        memory,
        // No swap: the memory limit is the limit, and exceeding it is an OOM kill.
        memory_swap: memory,
        // The logs API reads the json-file driver's files, whatever the daemon's default.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "2".to_string()),
            ])),
        }),
        ..HostConfig::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: Some(spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect()),
        working_dir: spec.working_dir.clone(),
        labels: Some(labels),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    })
}

/// The pod named by a container's labels.
fn pod_of(labels: &HashMap<String, String>) -> Option<PodRef> {
    Some(PodRef {
        uid: labels.get(LABEL_POD_UID)?.clone(),
        namespace: labels.get(LABEL_POD_NAMESPACE)?.clone(),
        name: labels.get(LABEL_POD_NAME)?.clone(),
    })
}

/// A container as the kubelet sees it; `None` if it is not one of ours.
fn info_of(id: &str, inspect: &ContainerInspectResponse) -> Option<ContainerInfo> {
    let config = inspect.config.as_ref()?;
    let labels = config.labels.as_ref()?;
    if labels.get(LABEL_KIND).map(String::as_str) != Some(KIND_CONTAINER) {
        return None;
    }
    Some(ContainerInfo {
        id: inspect.id.clone().unwrap_or_else(|| id.to_string()),
        pod: pod_of(labels)?,
        name: labels.get(LABEL_CONTAINER_NAME)?.clone(),
        attempt: labels.get(LABEL_CONTAINER_ATTEMPT)?.parse().ok()?,
        image: config.image.clone().unwrap_or_default(),
        image_id: inspect.image.clone().unwrap_or_default(),
        state: state_of(inspect.state.as_ref()?),
    })
}

/// Docker's container state as Kubernetes reports it.
fn state_of(state: &bollard::models::ContainerState) -> ContainerState {
    let started_at = state.started_at.as_deref().and_then(docker_time);
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) | None | Some(ContainerStateStatusEnum::EMPTY) => {
            ContainerState::Created
        }
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            let exit_code = state.exit_code.and_then(|code| i32::try_from(code).ok()).unwrap_or(-1);
            let reason = if state.oom_killed == Some(true) {
                "OOMKilled"
            } else if exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            ContainerState::Exited {
                started_at,
                finished_at: state
                    .finished_at
                    .as_deref()
                    .and_then(docker_time)
                    .or(started_at)
                    .unwrap_or_else(Timestamp::now),
                exit_code,
                reason: reason.to_string(),
            }
        }
        // Running, paused, restarting or being removed: its process is (still) there.
        Some(_) => ContainerState::Running { started_at: started_at.unwrap_or_else(Timestamp::now) },
    }
}

/// A Docker time; Docker's zero time (`0001-01-01T00:00:00Z`) is "never".
fn docker_time(text: &str) -> Option<Timestamp> {
    if text.starts_with("0001-01-01") {
        return None;
    }
    text.parse().ok()
}

/// One log line as the caller asked for it: `None` if it was written before `since`, without
/// its timestamp unless `timestamps`.
fn log_line(line: Bytes, since: Option<Timestamp>, timestamps: bool) -> Option<Bytes> {
    let space = line.iter().position(|&b| b == b' ');
    let written: Option<Timestamp> =
        space.and_then(|at| std::str::from_utf8(&line[..at]).ok()).and_then(|text| text.parse().ok());
    if let (Some(since), Some(written)) = (since, written)
        && written < since
    {
        return None;
    }
    match (timestamps, space, written) {
        (false, Some(at), Some(_)) => Some(line.slice(at + 1..)),
        _ => Some(line),
    }
}

/// Ends `stream` after `limit` bytes, without waiting for more output once they are sent.
fn limit_bytes(
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    limit: u64,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    futures::stream::unfold((stream, limit), |(mut stream, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let item = stream.next().await?;
        let (item, remaining) = match item {
            Ok(bytes) => {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(bytes.len());
                (Ok(bytes.slice(..take)), remaining - take as u64)
            }
            Err(err) => (Err(err), 0),
        };
        Some((item, (stream, remaining)))
    })
    .boxed()
}

/// The HTTP status of a daemon error, if it is one.
fn status(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// What the daemon said, for an error the user reads.
pub(super) fn daemon_message(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The one translation of daemon errors about an object: 404 is [`RuntimeError::NotFound`] of
/// `what`, the rest is [`RuntimeError::Docker`] with the daemon's message.
fn daemon_error(err: DockerError, what: impl Display) -> RuntimeError {
    match status(&err) {
        Some(404) => RuntimeError::NotFound(what.to_string()),
        _ => RuntimeError::Docker { what: what.to_string(), source: err },
    }
}

/// A daemon error of a request that is not about one object (connecting, listing, building),
/// for `map_err`: always [`RuntimeError::Docker`].
fn docker_error(what: impl Into<String>) -> impl FnOnce(DockerError) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Docker { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_command_and_args_map_to_entrypoint_and_cmd() {
        let pod = PodRef { uid: "u".into(), namespace: "ns".into(), name: "p".into() };
        let sandbox = Sandbox { pod, id: "pause".into(), ip: IpAddr::V4(Ipv4Addr::LOCALHOST) };
        let spec = |command: &[&str], args: &[&str]| ContainerSpec {
            name: "c".into(),
            image: "i".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            working_dir: None,
            limits: Default::default(),
            mounts: vec![],
            attempt: 0,
        };
        let run = |command: &[&str], args: &[&str]| {
            let body = create_body(&HashMap::new(), &sandbox, &spec(command, args)).ok()?;
            Some((body.entrypoint, body.cmd))
        };
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(run(&["sh"], &["-c", "x"]), Some((strings(&["sh"]), strings(&["-c", "x"]))));
        assert_eq!(run(&["sh"], &[]), Some((strings(&["sh"]), strings(&[]))));
        assert_eq!(run(&[], &["-c", "x"]), Some((None, strings(&["-c", "x"]))));
        assert_eq!(run(&[], &[]), Some((None, None)));
    }

    #[test]
    fn log_lines_before_since_are_dropped_and_timestamps_removed_unless_asked() {
        let line = Bytes::from_static(b"2024-05-01T10:00:01.500000000Z hello\n");
        let at = |text: &str| text.parse::<Timestamp>().ok();
        assert_eq!(log_line(line.clone(), None, false), Some(Bytes::from_static(b"hello\n")));
        assert_eq!(log_line(line.clone(), None, true), Some(line.clone()));
        assert_eq!(log_line(line.clone(), at("2024-05-01T10:00:01.6Z"), false), None);
        assert_eq!(log_line(line, at("2024-05-01T10:00:01.5Z"), false), Some(Bytes::from_static(b"hello\n")));
    }

    #[test]
    fn docker_states_map_to_kubernetes_reasons() {
        let exited = |code: i64, oom: bool| bollard::models::ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom),
            started_at: Some("2024-05-01T10:00:00Z".into()),
            finished_at: Some("2024-05-01T10:00:05Z".into()),
            ..Default::default()
        };
        let reason = |state: ContainerState| match state {
            ContainerState::Exited { reason, exit_code, .. } => Some((reason, exit_code)),
            _ => None,
        };
        assert_eq!(reason(state_of(&exited(0, false))), Some(("Completed".into(), 0)));
        assert_eq!(reason(state_of(&exited(137, true))), Some(("OOMKilled".into(), 137)));
        assert_eq!(reason(state_of(&exited(1, false))), Some(("Error".into(), 1)));
        let created = bollard::models::ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            started_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(state_of(&created), ContainerState::Created);
    }
}
