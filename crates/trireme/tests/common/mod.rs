//! Real `trireme master` processes on loopback, driven by the real `etcdctl` and `kubectl`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::Child;
use tokio::process::Command;

/// Longest any single step may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// One master process and where it lives.
pub struct Master {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    pub api_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    initial_cluster: String,
    state: &'static str,
}

/// A cluster of master processes; every process is killed when this is dropped.
pub struct Cluster {
    pub masters: Vec<Master>,
    pub dir: TempDir,
    token: String,
    /// Extra flags for every master.
    extra: Vec<String>,
    /// The etcd PKI of a cluster with mutual TLS on its peer and client ports.
    pub pki: Option<TestPki>,
}

/// Certificates for a cluster with mutual TLS, as an operator makes them: one CA, a peer and
/// a serving certificate per master, a client certificate for tools.
pub struct TestPki {
    pub dir: PathBuf,
    ca: trireme_tls::pki::Authority,
}

impl TestPki {
    fn new(dir: &std::path::Path) -> Result<TestPki> {
        let dir = dir.join("pki");
        let ca = trireme_tls::pki::Authority::generate("test-etcd-ca")?;
        ca.write(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        let client = trireme_tls::pki::LeafSpec { common_name: "root".into(), client: true, ..Default::default() };
        ca.issue(&client)?.write(&dir.join("client.crt"), &dir.join("client.key"))?;
        Ok(TestPki { dir, ca })
    }

    /// Issues master `name`'s certificates.
    fn issue(&self, name: &str) -> Result<()> {
        let hosts = vec!["127.0.0.1".to_string()];
        let peer = trireme_tls::pki::LeafSpec {
            common_name: name.into(),
            hosts: hosts.clone(),
            server: true,
            client: true,
            ..Default::default()
        };
        self.ca
            .issue(&peer)?
            .write(&self.dir.join(format!("{name}-peer.crt")), &self.dir.join(format!("{name}-peer.key")))?;
        let server = trireme_tls::pki::LeafSpec { common_name: name.into(), hosts, server: true, ..Default::default() };
        self.ca.issue(&server)?.write(&self.dir.join(format!("{name}.crt")), &self.dir.join(format!("{name}.key")))?;
        Ok(())
    }

    /// The CA, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Master `name`'s flags (etcd's).
    fn master_flags(&self, name: &str) -> Vec<String> {
        let path = |file: String| self.dir.join(file).display().to_string();
        vec![
            "--cert-file".into(),
            path(format!("{name}.crt")),
            "--key-file".into(),
            path(format!("{name}.key")),
            "--trusted-ca-file".into(),
            path("ca.crt".into()),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            path(format!("{name}-peer.crt")),
            "--peer-key-file".into(),
            path(format!("{name}-peer.key")),
            "--peer-trusted-ca-file".into(),
            path("ca.crt".into()),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// etcdctl's (and `trireme snapshot`'s) flags for a client with the tools' certificate.
    pub fn client_flags(&self) -> Vec<String> {
        let path = |file: &str| self.dir.join(file).display().to_string();
        vec![
            format!("--cacert={}", path("ca.crt")),
            format!("--cert={}", path("client.crt")),
            format!("--key={}", path("client.key")),
        ]
    }

    /// The TLS the tools' certificate dials with.
    pub fn client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        let files = trireme_tls::config::TlsFiles {
            cert: Some(self.dir.join("client.crt")),
            key: Some(self.dir.join("client.key")),
            trusted_ca: Some(self.dir.join("ca.crt")),
            client_cert_auth: false,
        };
        Ok(files.client_config()?)
    }
}

pub mod kube;
pub mod nodes;

/// A loopback port for a process about to start (see `trireme_testkit::ports` for why not
/// port 0).
pub fn free_port() -> Result<u16> {
    Ok(trireme_testkit::ports::reserve()?)
}

impl Cluster {
    /// Starts `n` founding masters and waits for a leader.
    pub async fn start(n: usize) -> Result<Cluster> {
        Self::start_with(n, &[]).await
    }

    /// Starts `n` founding masters with `extra` flags each and waits for a leader.
    pub async fn start_with(n: usize, extra: &[&str]) -> Result<Cluster> {
        Self::start_inner(n, extra, false).await
    }

    /// Starts `n` founding masters with mutual TLS on their peer and client ports (https://
    /// URLs, etcd's TLS flags) and waits for a leader.
    pub async fn start_tls(n: usize) -> Result<Cluster> {
        Self::start_inner(n, &[], true).await
    }

    async fn start_inner(n: usize, extra: &[&str], tls: bool) -> Result<Cluster> {
        let mut dir = TempDir::new()?;
        if std::env::var_os("TRIREME_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping logs and data in {}", dir.path().display());
        }
        let pki = if tls { Some(TestPki::new(dir.path())?) } else { None };
        let mut masters = Vec::new();
        for i in 1..=n {
            let mut m = Master::plan(dir.path(), &format!("m{i}"))?;
            if let Some(pki) = &pki {
                pki.issue(&m.name)?;
                m.peer_url = m.peer_url.replace("http://", "https://");
                m.client_url = m.client_url.replace("http://", "https://");
            }
            masters.push(m);
        }
        let initial = masters.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        for m in &mut masters {
            m.initial_cluster = initial.clone();
        }
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster { masters, dir, token: format!("test-{}", std::process::id()), extra, pki };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_leader().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        self.spawn_with(i, &[])
    }

    /// Starts master `i` with `once` added to its flags for this start only.
    fn spawn_with(&mut self, i: usize, once: &[&str]) -> Result<()> {
        let token = self.token.clone();
        let tls = self.pki.as_ref().map(|p| p.master_flags(&self.masters[i].name)).unwrap_or_default();
        let m = &mut self.masters[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_trireme"))
            .arg("master")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--initial-cluster", &m.initial_cluster, "--initial-cluster-token", &token])
            .args(["--initial-cluster-state", m.state])
            .args(["--listen-api-urls", &m.api_url])
            .args(&self.extra)
            .args(&tls)
            .args(once)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        m.child = Some(child);
        Ok(())
    }

    /// Plans and starts a new master that joins (after `etcdctl member add`).
    pub fn join(&mut self, name: &str, peer_url: &str, initial_cluster: &str) -> Result<usize> {
        let mut m = Master::plan(self.dir.path(), name)?;
        m.peer_url = peer_url.to_string();
        m.initial_cluster = initial_cluster.to_string();
        m.state = "existing";
        self.masters.push(m);
        let i = self.masters.len() - 1;
        self.spawn(i)?;
        Ok(i)
    }

    /// Sends `signal` to master `i` and, for SIGKILL and SIGTERM, waits for it to exit.
    pub async fn signal(&mut self, i: usize, signal: Signal) -> Result<()> {
        let child = self.masters[i].child.as_mut().context("master not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id().context("no pid")?)?);
        kill(pid, signal)?;
        if matches!(signal, Signal::SIGKILL | Signal::SIGTERM) {
            tokio::time::timeout(WAIT, child.wait()).await.context("master did not exit")??;
            self.masters[i].child = None;
        }
        Ok(())
    }

    /// Starts a stopped master again from its data dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)
    }

    /// Starts a stopped master again with `once` added to its flags for this start only.
    pub fn restart_with(&mut self, i: usize, once: &[&str]) -> Result<()> {
        self.spawn_with(i, once)
    }

    /// The `--initial-cluster-token` of this cluster.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `--initial-cluster` the founders were started with.
    pub fn initial_cluster(&self) -> &str {
        &self.masters[0].initial_cluster
    }

    /// The last lines of master `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.masters[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Client URLs of running masters, comma-separated.
    pub fn endpoints(&self) -> String {
        self.masters.iter().filter(|m| m.child.is_some()).map(|m| m.client_url.clone()).collect::<Vec<_>>().join(",")
    }

    /// Runs `etcdctl` against all running masters.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<Output> {
        let tls = self.pki.as_ref().map(TestPki::client_flags).unwrap_or_default();
        let args: Vec<&str> = tls.iter().map(String::as_str).chain(args.iter().copied()).collect();
        etcdctl(&self.endpoints(), &args, None).await
    }

    /// Writes `<dir>/kubeconfig` (a context per master, `m1` current) once every master's
    /// Kubernetes API is up, and returns its path.
    pub async fn kubeconfig(&self) -> Result<PathBuf> {
        let deadline = Instant::now() + WAIT;
        let admin = loop {
            let ready: Vec<Option<String>> = self
                .masters
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| std::fs::read_to_string(m.data_dir.join("admin.kubeconfig")).ok())
                .collect();
            if ready.iter().all(Option::is_some) {
                break ready.into_iter().flatten().next().context("no master running")?;
            }
            if Instant::now() > deadline {
                bail!(
                    "the Kubernetes API did not come up; logs in {}\n{}",
                    self.dir.path().display(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let servers: Vec<(String, String)> = self.masters.iter().map(|m| (m.name.clone(), m.api_url.clone())).collect();
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(&path, trireme_apiserver::kubeconfig::for_servers(&admin, &servers)?)?;
        Ok(path)
    }

    /// Runs the real `kubectl` against this cluster (current context `m1`, or `--context`
    /// in `args`), with a cache dir of this cluster's own.
    pub async fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_with_input(args, None).await
    }

    /// [`Cluster::kubectl`] with `stdin` fed to it (`-f -`).
    pub async fn kubectl_with_input(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let kubeconfig = self.dir.path().join("kubeconfig");
        if !kubeconfig.exists() {
            self.kubeconfig().await?;
        }
        // Without an explicit context, talk to a running master.
        let mut args: Vec<&str> = args.to_vec();
        let context;
        if !args.iter().any(|a| a.starts_with("--context"))
            && let Some(m) = self.masters.iter().find(|m| m.child.is_some())
        {
            context = format!("--context={}", m.name);
            args.insert(0, &context);
        }
        kubectl(&kubeconfig, &self.dir.path().join("kubecache"), &args, stdin).await
    }

    /// Index of the master that every running master names as leader.
    pub async fn wait_leader(&self) -> Result<usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader within {WAIT:?}; logs in {}\n{}", self.dir.path().display(), self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines each master logged, for a failure message.
    pub fn log_tails(&self) -> String {
        self.masters.iter().map(|m| tail_of(&m.name, &m.log, 15)).collect()
    }

    /// The TLS to dial this cluster's etcd API with, if it has TLS.
    pub fn client_tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        self.pki.as_ref().map(TestPki::client_config).transpose()
    }

    async fn leader(&self) -> Result<usize> {
        let mut leader = None;
        let tls = self.client_tls()?;
        for m in self.masters.iter().filter(|m| m.child.is_some()) {
            let status = trireme_etcd::client::status(&m.client_url, tls.clone()).await?;
            if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
                bail!("no agreed leader");
            }
            leader = Some(status.leader);
        }
        let leader = leader.context("no master running")?;
        for (i, m) in self.masters.iter().enumerate().filter(|(_, m)| m.child.is_some()) {
            let status = trireme_etcd::client::status(&m.client_url, tls.clone()).await?;
            if status.header.is_some_and(|h| h.member_id == leader) {
                return Ok(i);
            }
        }
        bail!("the leader is not a running master")
    }
}

impl Master {
    fn plan(dir: &std::path::Path, name: &str) -> Result<Master> {
        Ok(Master {
            name: name.to_string(),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            api_url: format!("https://127.0.0.1:{}", free_port()?),
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            child: None,
            initial_cluster: String::new(),
            state: "new",
        })
    }
}

/// Runs this build's `trireme` (an operator command such as `snapshot` or `member`) with a
/// deadline.
pub async fn trireme(args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trireme"));
    cmd.args(args)
        .env_remove("TRIREME_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().context("running trireme")?;
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .context("trireme timed out")?
        .map_err(Into::into)
}

/// Runs the real `etcdctl` (API v3) with a deadline; `stdin` is fed if given.
pub async fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=3s", "--command-timeout=10s"])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("running etcdctl (install etcd-client)")?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        input.write_all(text.as_bytes()).await?;
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.context("etcdctl timed out")??;
    Ok(out)
}

/// Runs the real `kubectl` with a deadline, a given kubeconfig and cache dir.
pub async fn kubectl(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output> {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=20s")
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("running kubectl")?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        input.write_all(text.as_bytes()).await?;
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.context("kubectl timed out")??;
    Ok(out)
}

/// The last `n` lines of a process's log file, headed by its name and path.
pub fn tail_of(name: &str, log: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("--- {name} ({})\n", log.display());
    for line in &lines[lines.len().saturating_sub(n)..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// stdout of a successful run, or an error with stderr.
pub fn ok(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "command failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// For a `trireme up` in the dir: on the way out (a failed step included), SIGKILLs every process
/// `cluster.json` lists and every container under the dir (`up` itself is killed on drop and
/// cannot stop them then).
pub struct UpGuard(pub std::path::PathBuf);

impl Drop for UpGuard {
    fn drop(&mut self) {
        let listed = std::fs::read(self.0.join("cluster.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
        for p in listed.iter().flat_map(|c| c["processes"].as_array().cloned().unwrap_or_default()) {
            if let Some(pid) = p["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok()).filter(|pid| *pid > 0) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        nodes::kill_containers_under(&self.0);
    }
}
