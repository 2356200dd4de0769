//! `make bench`: a 3-master Trireme and a 3-member etcd 3.4 on this machine, driven by the same
//! load generator in the same run, side by side. Prints a table; never fails on a number.
//!
//! Both are spoken to over etcd's v3 gRPC API with one generated client, so the client costs the
//! same for both. Workloads: puts of 256-byte values at 1, 16, 64 and 256 concurrent clients,
//! linearizable gets at 64 clients, watch delivery latency with 1,000 watchers, and the write
//! gap after the leader is SIGKILLed.

mod compose;
mod stable;
mod tls;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Parser;
use futures::StreamExt;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::process::Command;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use trireme_proto::etcdserverpb::watch_client::WatchClient;

/// Trireme and etcd side by side.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds each throughput workload runs.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// The trireme binary [default: next to this one].
    #[arg(long)]
    trireme: Option<PathBuf>,
    /// The etcd binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Run only one system: trireme or etcd.
    #[arg(long)]
    only: Option<String>,
    /// Send every request to this member only (0, 1 or 2) instead of spreading them.
    #[arg(long)]
    endpoint: Option<usize>,
    /// Drive an already running cluster at these client URLs (comma-separated) with 64
    /// clients putting, instead of starting clusters (for profiling).
    #[arg(long)]
    endpoints: Option<String>,
    /// Clients for `--endpoints`.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Pods the Kubernetes API workload creates (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    api_pods: usize,
    /// Fake nodes the scheduling workload registers.
    #[arg(long, default_value_t = 1_000)]
    fake_nodes: usize,
    /// Replicas of the pod-startup workload (a `trireme up` cluster with 2 real nodes; 0
    /// skips it).
    #[arg(long, default_value_t = 100)]
    pod_startup: usize,
    /// Megabytes of values for the backup workload: `trireme snapshot save` and `restore` of a
    /// store holding them, next to `cp` of the same file (0 skips it).
    #[arg(long, default_value_t = 1024)]
    backup_mb: usize,
    /// Kills of the leader behind the stable address (the balancer of `trireme up`) while two
    /// clients poll through it (0 skips it).
    #[arg(long, default_value_t = 10)]
    stable_kills: usize,
    /// Extra flags for every trireme master (e.g. "--snapshot-count=100000").
    #[arg(long, allow_hyphen_values = true)]
    trireme_flags: Vec<String>,
    /// Also measure what mutual TLS on the peer and client ports costs: put throughput of a
    /// plain and a TLS cluster, each system (--tls-only: nothing else).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls: bool,
    /// Only the TLS cost workload.
    #[arg(long)]
    tls_only: bool,
    /// Kills of the leader's container in the compose deployment (Docker; 0 skips it).
    #[arg(long, default_value_t = 10)]
    compose_kills: usize,
    /// Only the compose workload.
    #[arg(long)]
    compose_only: bool,
}

/// One workload's result.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

struct Cluster {
    name: &'static str,
    /// How clients dial a TLS cluster (its CA and a client certificate); `None`: plain.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pinned: Option<usize>,
    endpoints: Vec<String>,
    /// Kubernetes API URLs (Trireme only).
    api_urls: Vec<String>,
    children: Vec<Child>,
    /// How each member was started (program, arguments, log), to restart it.
    commands: Vec<(std::ffi::OsString, Vec<std::ffi::OsString>, PathBuf)>,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(trireme_testkit::ports::reserve()?)
}

impl Cluster {
    async fn start(name: &'static str, bin: &PathBuf, extra: &[String]) -> Result<Cluster> {
        Self::start_with(name, bin, extra, false).await
    }

    /// A cluster with mutual TLS on its peer and client ports (etcd's flags, which both
    /// systems take), with certificates made here.
    async fn start_tls(name: &'static str, bin: &PathBuf, extra: &[String]) -> Result<Cluster> {
        Self::start_with(name, bin, extra, true).await
    }

    async fn start_with(name: &'static str, bin: &PathBuf, extra: &[String], tls: bool) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let scheme = if tls { "https" } else { "http" };
        let pki = if tls { Some(tls::Pki::new(&dir.path().join("pki"))?) } else { None };
        let mut members = Vec::new();
        let mut api_urls = Vec::new();
        for i in 1..=3 {
            members.push((
                format!("{name}{i}"),
                format!("{scheme}://127.0.0.1:{}", free_port()?),
                format!("{scheme}://127.0.0.1:{}", free_port()?),
            ));
            api_urls.push(format!("https://127.0.0.1:{}", free_port()?));
        }
        let initial = members.iter().map(|(n, peer, _)| format!("{n}={peer}")).collect::<Vec<_>>().join(",");
        let mut children = Vec::new();
        let mut commands = Vec::new();
        for ((member, peer, client), api) in members.iter().zip(&api_urls) {
            let log = std::fs::File::create(dir.path().join(format!("{member}.log")))?;
            let mut cmd = Command::new(bin);
            if name == "trireme" {
                // Fake nodes never heartbeat: keep them Ready for the whole run.
                cmd.arg("master")
                    .args(["--listen-api-urls", api, "--node-monitor-grace-period=1h"])
                    .env("RUST_LOG", "warn");
            }
            cmd.args(["--name", member])
                .arg("--data-dir")
                .arg(dir.path().join(member))
                .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
                .args(["--listen-client-urls", client, "--advertise-client-urls", client])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    "bench",
                    "--initial-cluster-state",
                    "new",
                ])
                .args(extra)
                .args(pki.as_ref().map(|p| p.member_flags(member)).transpose()?.unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            let std_cmd = cmd.as_std();
            commands.push((
                std_cmd.get_program().to_owned(),
                std_cmd.get_args().map(ToOwned::to_owned).collect(),
                dir.path().join(format!("{member}.log")),
            ));
            children.push(cmd.spawn().with_context(|| format!("starting {}", bin.display()))?);
        }
        let cluster = Cluster {
            name,
            tls: pki.as_ref().map(tls::Pki::client_config).transpose()?,
            pinned: None,
            endpoints: members.into_iter().map(|(_, _, c)| c).collect(),
            api_urls,
            children,
            commands,
            dir,
        };
        cluster.wait_leader(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Starts member `i` again from its data dir, as it was first started.
    fn restart(&mut self, i: usize) -> Result<()> {
        let (program, args, log) = &self.commands[i];
        let log = std::fs::OpenOptions::new().append(true).open(log)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        self.children[i] = cmd.spawn()?;
        Ok(())
    }

    /// Index of the leader once all live members agree.
    async fn wait_leader(&self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for (i, url) in self.endpoints.iter().enumerate() {
                if self.children[i].id().is_none() {
                    continue;
                }
                if let Ok(s) = status_with(url, self.tls.clone()).await {
                    seen.push((i, s.leader, s.header.map_or(0, |h| h.member_id)));
                }
            }
            let alive = self.children.iter().filter(|c| c.id().is_some()).count();
            let agreed = seen.len() == alive && seen.iter().all(|s| s.1 != 0 && s.1 == seen[0].1);
            if let Some((i, _, _)) = seen.iter().find(|s| agreed && s.1 == s.2) {
                return Ok(*i);
            }
            if Instant::now() > deadline {
                bail!("{} elected no leader", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn status(url: &str) -> Result<pb::StatusResponse> {
    status_with(url, None).await
}

async fn status_with(url: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Result<pb::StatusResponse> {
    let channel = Endpoint::from_shared(url.to_string())?
        .timeout(Duration::from_secs(1))
        .connect_with_connector(trireme_tls::connect::Connector::new(tls))
        .await?;
    Ok(MaintenanceClient::new(channel).status(pb::StatusRequest {}).await?.into_inner())
}

/// `n` connections spread over the endpoints.
async fn connections(cluster: &Cluster, n: usize) -> Result<Vec<Channel>> {
    let mut out = Vec::new();
    let connector = trireme_tls::connect::Connector::new(cluster.tls.clone());
    for i in 0..n {
        let url = cluster.endpoints[cluster.pinned.unwrap_or(i % cluster.endpoints.len())].clone();
        let endpoint = Endpoint::from_shared(url)?.timeout(Duration::from_secs(5));
        out.push(endpoint.connect_with_connector(connector.clone()).await?);
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1000.0
}

fn stats(mut latencies: Vec<Duration>, elapsed: Duration, errors: usize) -> Stats {
    latencies.sort_unstable();
    Stats {
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        errors,
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

/// `clients` concurrent clients doing `op` for `duration`.
async fn load(cluster: &Cluster, op: Op, clients: usize, duration: Duration) -> Result<Stats> {
    let channels = connections(cluster, clients.min(16)).await?;
    if matches!(op, Op::Get) {
        let mut kv = KvClient::new(channels[0].clone());
        kv.put(pb::PutRequest {
            key: b"bench/get".to_vec().into(),
            value: vec![b'x'; 256].into(),
            ..Default::default()
        })
        .await?;
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let t0 = Instant::now();
                let result = match op {
                    Op::Put => {
                        let key = format!("bench/{:06}", (c as u64 * 1_000_003 + n) % 100_000);
                        kv.put(pb::PutRequest { key: key.into(), value: vec![b'v'; 256].into(), ..Default::default() })
                            .await
                            .map(|_| ())
                    }
                    Op::Get => kv
                        .range(pb::RangeRequest { key: b"bench/get".to_vec().into(), ..Default::default() })
                        .await
                        .map(|_| ()),
                };
                match result {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    Ok(stats(all, start.elapsed(), errors))
}

/// 1,000 watchers on a prefix; a writer puts 50 times a second; latency from put to delivery.
async fn watch_latency(cluster: &Cluster, watchers: usize, duration: Duration) -> Result<(Stats, usize, usize)> {
    let channels = connections(cluster, 10).await?;
    let base = Instant::now();
    let streams = 50;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut created = 0;
    let mut handles = Vec::new();
    for s in 0..streams {
        let mut client = WatchClient::new(channels[s % channels.len()].clone());
        let per_stream = watchers / streams + usize::from(s < watchers % streams);
        let (req_tx, req_rx) = tokio::sync::mpsc::channel(per_stream + 1);
        for _ in 0..per_stream {
            let create = pb::WatchCreateRequest {
                key: b"wl/".to_vec().into(),
                range_end: b"wl0".to_vec().into(),
                ..Default::default()
            };
            req_tx
                .send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) })
                .await?;
        }
        let mut responses = client.watch(tokio_stream::wrappers::ReceiverStream::new(req_rx)).await?.into_inner();
        let mut ready = 0;
        while ready < per_stream {
            let resp = responses.next().await.context("watch stream ended")??;
            if resp.created {
                ready += 1;
            }
        }
        created += ready;
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let _keep = req_tx;
            while let Some(Ok(resp)) = responses.next().await {
                let now = base.elapsed();
                for e in resp.events {
                    let sent = e.kv.as_ref().and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        let _ = tx.send(now.saturating_sub(Duration::from_micros(sent)));
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut kv = KvClient::new(channels[0].clone());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut puts = 0usize;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        let sent = base.elapsed().as_micros().to_string();
        if kv
            .put(pb::PutRequest { key: b"wl/k".to_vec().into(), value: sent.into_bytes().into(), ..Default::default() })
            .await
            .is_ok()
        {
            puts += 1;
        }
    }
    // Give the last events time to arrive, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in &handles {
        h.abort();
    }
    let mut latencies = Vec::new();
    while let Ok(l) = rx.try_recv() {
        latencies.push(l);
    }
    let delivered = latencies.len();
    let mut s = stats(latencies, duration, 0);
    s.ops_per_sec = delivered as f64 / duration.as_secs_f64();
    Ok((s, delivered, puts * created))
}

/// 16 writers on all endpoints; SIGKILL the leader; the longest pause between acknowledgements.
async fn failover_gap(cluster: &mut Cluster) -> Result<Duration> {
    let channels = connections(cluster, 3).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let channels = channels.clone();
        let (stop, tx) = (stop.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut target = c % channels.len();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let mut kv = KvClient::new(channels[target].clone());
                let put = pb::PutRequest {
                    key: format!("gap/{c}/{n}").into_bytes().into(),
                    value: vec![b'v'; 256].into(),
                    ..Default::default()
                };
                match tokio::time::timeout(Duration::from_secs(2), kv.put(put)).await {
                    Ok(Ok(_)) => {
                        let _ = tx.send(Instant::now());
                    }
                    _ => target = (target + 1) % channels.len(),
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let pid = cluster.children[leader].id().context("leader pid")?;
    let killed_at = Instant::now();
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
    cluster.children[leader].wait().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let mut acks = Vec::new();
    while let Ok(t) = rx.try_recv() {
        acks.push(t);
    }
    acks.sort_unstable();
    // Replies to writes committed just before the kill still arrive after it; the gap is the
    // longest silence between acknowledgements from the kill on.
    let from = acks.iter().rposition(|t| *t <= killed_at).unwrap_or(0);
    let gap = acks[from..].windows(2).map(|w| w[1] - w[0]).max().context("no write succeeded after the kill")?;
    Ok(gap)
}

fn row(name: &str, t: Option<Stats>, e: Option<Stats>) {
    let cell = |s: Option<Stats>| match s {
        Some(s) if s.errors > 0 => {
            format!("{:>9.0} {:>7.2} {:>7.2} ({} err)", s.ops_per_sec, s.p50_ms, s.p99_ms, s.errors)
        }
        Some(s) => format!("{:>9.0} {:>7.2} {:>7.2}", s.ops_per_sec, s.p50_ms, s.p99_ms),
        None => format!("{:>9} {:>7} {:>7}", "-", "-", "-"),
    };
    let ratio = match (t, e) {
        (Some(t), Some(e)) if e.ops_per_sec > 0.0 => format!("{:.2}x", t.ops_per_sec / e.ops_per_sec),
        _ => "-".into(),
    };
    println!("| {name:<28} | {} | {} | {ratio:>6} |", cell(t), cell(e));
}

/// A `kube` client per master, with the admin token the first master wrote.
async fn kube_clients(cluster: &Cluster) -> Result<Vec<kube::Client>> {
    let admin_path = cluster.dir.path().join("trireme1").join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin_path.exists() {
        if Instant::now() > deadline {
            anyhow::bail!("the Kubernetes API did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&admin_path)?)?;
    let mut clients = Vec::new();
    for url in &cluster.api_urls {
        let mut doc = admin.clone();
        doc["clusters"][0]["cluster"]["server"] = serde_json::json!(url);
        let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(doc)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        clients.push(kube::Client::try_from(config)?);
    }
    Ok(clients)
}

/// Issue #5's workload: `nodes` fake nodes (Ready, never heartbeating: the cluster runs with a
/// long `--node-monitor-grace-period`), then `pods` pods created by 16 clients; prints how fast
/// the scheduler on the leader binds them, as a watcher on another master sees it.
async fn scheduling(cluster: &Cluster, nodes: usize, pods: usize) -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::api::PostParams;
    let clients = kube_clients(cluster).await?;
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "sched"}}))?;
    Api::<Namespace>::all(clients[0].clone()).create(&PostParams::default(), &namespace).await?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (api, next) = (Api::<Node>::all(clients[c % clients.len()].clone()), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= nodes {
                    return anyhow::Ok(());
                }
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("fake-{i:04}")},
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                        "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }))?;
                api.create(&PostParams::default(), &node).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Count bindings from a watch on the last master.
    let watched: Api<Pod> = Api::namespaced(clients[clients.len() - 1].clone(), "sched");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let counter = tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        let mut stream = std::pin::pin!(kube::runtime::watcher(watched, Default::default()));
        let mut done = Some(done_tx);
        while let Some(event) = stream.next().await {
            let pods_seen: Vec<Pod> = match event {
                Ok(kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for pod in pods_seen {
                if pod.spec.and_then(|s| s.node_name).is_some() {
                    bound.insert(pod.metadata.name.unwrap_or_default());
                }
            }
            if bound.len() >= pods
                && let Some(tx) = done.take()
            {
                let _ = tx.send(Instant::now());
                return;
            }
        }
    });
    let template: Pod = serde_json::from_value(serde_json::json!({
        "spec": {"containers": [{"name": "main", "image": "nginx:1.25", "resources": {"requests": {"cpu": "100m"}}}]},
    }))?;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let api = Api::<Pod>::namespaced(clients[c % clients.len()].clone(), "sched");
        let (next, template) = (next.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    return anyhow::Ok(());
                }
                let mut pod = template.clone();
                pod.metadata.name = Some(format!("p-{i:05}"));
                api.create(&PostParams::default(), &pod).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = started.elapsed();
    let finished = tokio::time::timeout(Duration::from_secs(300), done_rx).await??;
    counter.abort();
    let total = finished - started;
    println!();
    println!(
        "scheduling {pods} pods onto {nodes} nodes: created in {:.1} s, all bound {:.1} s after the first create: {:.0} pods/s",
        created.as_secs_f64(),
        total.as_secs_f64(),
        pods as f64 / total.as_secs_f64()
    );
    Ok(())
}

/// Issue #5's failover workload: a deployment scales up to 3,000 pods onto the fake nodes;
/// once 300 are bound the leader master is SIGKILLed; prints the longest time without a new
/// binding from the kill on, as a watcher on a surviving master sees it. The killed master is
/// started again afterwards.
async fn control_plane_failover(cluster: &mut Cluster) -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::api::PostParams;
    let clients = kube_clients(cluster).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let observer = clients[(leader + 1) % clients.len()].clone();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "burst"},
        "spec": {
            "replicas": 3000,
            "selector": {"matchLabels": {"app": "burst"}},
            "template": {
                "metadata": {"labels": {"app": "burst"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.25", "resources": {"requests": {"cpu": "10m"}}}]},
            },
        },
    }))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pods: Api<Pod> = Api::namespaced(observer.clone(), "sched");
    let counter = tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        let config = kube::runtime::watcher::Config::default().labels("app=burst");
        let mut stream = std::pin::pin!(kube::runtime::watcher(pods, config));
        while let Some(event) = stream.next().await {
            if let Ok(kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p)) = event
                && p.spec.and_then(|s| s.node_name).is_some()
                && bound.insert(p.metadata.name.unwrap_or_default())
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
    Api::<Deployment>::namespaced(observer, "sched").create(&PostParams::default(), &deployment).await?;
    let mut times = Vec::new();
    while times.len() < 300 {
        let t = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?.context("watch ended")?;
        times.push(t);
    }
    let pid = cluster.children[leader].id().context("leader pid")?;
    let killed_at = Instant::now();
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
    cluster.children[leader].wait().await?;
    let until = killed_at + Duration::from_secs(8);
    while let Ok(Some(t)) = tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await {
        times.push(t);
    }
    counter.abort();
    let from = times.iter().rposition(|t| *t <= killed_at).unwrap_or(0);
    let after: Vec<Instant> = std::iter::once(killed_at).chain(times[from + 1..].iter().copied()).collect();
    let bound_after = after.len() - 1;
    match after.windows(2).map(|w| w[1] - w[0]).max() {
        Some(gap) => println!(
            "control-plane failover (SIGKILL of the leader during a scale-up to 3,000 pods): longest time without a new binding {:.0} ms; {bound_after} pods bound in the 8 s after the kill",
            gap.as_secs_f64() * 1000.0
        ),
        None => println!("control-plane failover: no pod was bound in the 8 s after the leader was killed"),
    }
    cluster.restart(leader)?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    Ok(())
}

/// The Kubernetes API workload: `clients` clients create `pods` pods through the API servers
/// (spread over the masters), then one client lists them all.
async fn api_pods(cluster: &Cluster, pods: usize, clients: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::api::ListParams;
    use kube::api::PostParams;
    let apis: Vec<Api<Pod>> = kube_clients(cluster).await?.into_iter().map(|c| Api::namespaced(c, "default")).collect();
    let template: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "bench"}},
        // Another scheduler's pods: the API alone is measured, not the scheduler's writes.
        "spec": {
            "schedulerName": "bench-unscheduled",
            "containers": [{"name": "main", "image": "nginx:1.25", "resources": {"requests": {"cpu": "10m"}}}],
        },
    }))?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = apis[c % apis.len()].clone();
        let (next, template) = (next.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    break;
                }
                let mut pod = template.clone();
                pod.metadata.name = Some(format!("bench-{i:05}"));
                let t = Instant::now();
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, first) = t.await?;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(first);
    }
    if let Some(e) = first_error {
        eprintln!("first API error: {e}");
    }
    let s = stats(latencies, started.elapsed(), errors);
    println!();
    println!(
        "Kubernetes API, {clients} clients creating {pods} pods: {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        s.ops_per_sec, s.p50_ms, s.p99_ms, s.errors
    );
    // The server's share of a list: one GET, the body read but not decoded into typed pods.
    let raw_client = apis[0].clone().into_client();
    let t = Instant::now();
    let request = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new())?;
    let body = raw_client.request_text(request).await?;
    println!(
        "list of {pods} pods, raw JSON ({:.1} MB, not decoded): {:.0} ms",
        body.len() as f64 / 1e6,
        t.elapsed().as_secs_f64() * 1000.0
    );
    for (label, params) in [("one request", ListParams::default()), ("pages of 500", ListParams::default().limit(500))]
    {
        let t = Instant::now();
        let mut count = 0;
        let mut params = params;
        loop {
            let list = apis[0].list(&params).await?;
            count += list.items.len();
            match list.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        println!("list of {count} pods ({label}): {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let trireme_bin = match args.trireme {
        Some(p) => p,
        None => std::env::current_exe()?.parent().context("bin dir")?.join("trireme"),
    };
    if let Some(urls) = &args.endpoints {
        let dir = tempfile::tempdir()?;
        let cluster = Cluster {
            name: "external",
            tls: None,
            pinned: args.endpoint,
            endpoints: urls.split(',').map(String::from).collect(),
            api_urls: Vec::new(),
            children: Vec::new(),
            commands: Vec::new(),
            dir,
        };
        let s = load(&cluster, Op::Put, args.clients, Duration::from_secs(args.duration)).await?;
        println!(
            "put 256 B, {} clients: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
            args.clients, s.ops_per_sec, s.p50_ms, s.p99_ms
        );
        return Ok(());
    }
    let want = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let duration = Duration::from_secs(args.duration);
    if args.tls_only {
        return tls::cost(&trireme_bin, &args.etcd, want("etcd"), duration).await;
    }
    if args.compose_only {
        return compose::run(&trireme_bin, args.compose_kills).await;
    }
    eprintln!(
        "starting 3-member clusters on loopback (trireme: {}, etcd: {})",
        trireme_bin.display(),
        args.etcd.display()
    );
    let mut trireme =
        if want("trireme") { Some(Cluster::start("trireme", &trireme_bin, &args.trireme_flags).await?) } else { None };
    let mut etcd = if want("etcd") { Some(Cluster::start("etcd", &args.etcd, &[]).await?) } else { None };
    for c in [trireme.as_mut(), etcd.as_mut()].into_iter().flatten() {
        c.pinned = args.endpoint;
    }
    if let Some(e) = &etcd {
        let version = status(&e.endpoints[0]).await.map(|s| s.version).unwrap_or_default();
        eprintln!("etcd version {version}");
    }

    println!(
        "| workload                     |   trireme ops/s  p50 ms  p99 ms |      etcd ops/s  p50 ms  p99 ms |  ratio |"
    );
    println!(
        "|------------------------------|---------------------------------|---------------------------------|--------|"
    );
    let workloads: [(&str, Op, usize); 5] = [
        ("put 256 B, 1 client", Op::Put, 1),
        ("put 256 B, 16 clients", Op::Put, 16),
        ("put 256 B, 64 clients", Op::Put, 64),
        ("put 256 B, 256 clients", Op::Put, 256),
        ("linearizable get, 64 clients", Op::Get, 64),
    ];
    for (name, op, clients) in workloads {
        let t = match &trireme {
            Some(c) => Some(load(c, op, clients, duration).await?),
            None => None,
        };
        let e = match &etcd {
            Some(c) => Some(load(c, op, clients, duration).await?),
            None => None,
        };
        row(name, t, e);
    }
    for c in [trireme.as_ref(), etcd.as_ref()].into_iter().flatten() {
        if let Ok(s) = status(&c.endpoints[0]).await {
            eprintln!("{}: raft term {} after the throughput runs (1 = no election since start)", c.name, s.raft_term);
        }
    }
    let mut delivered = Vec::new();
    let mut watch = [None, None];
    for (slot, cluster) in watch.iter_mut().zip([trireme.as_ref(), etcd.as_ref()]) {
        if let Some(c) = cluster {
            let (s, got, expected) = watch_latency(c, 1000, Duration::from_secs(4)).await?;
            delivered.push(format!("{} {got}/{expected}", c.name));
            *slot = Some(s);
        }
    }
    let [t, e] = watch;
    row("watch, 1,000 watchers (ev/s)", t, e);
    println!();
    println!("watch events delivered: {}", delivered.join(", "));
    // The Kubernetes API workloads run before the failover one, which leaves a master dead.
    if let Some(t) = &trireme
        && args.api_pods > 0
    {
        api_pods(t, args.api_pods, 16).await?;
        scheduling(t, args.fake_nodes, args.api_pods).await?;
    }
    if let Some(t) = trireme.as_mut()
        && args.api_pods > 0
    {
        control_plane_failover(t).await?;
    }
    let mut gaps = Vec::new();
    for c in [trireme.as_mut(), etcd.as_mut()].into_iter().flatten() {
        let gap = failover_gap(c).await?;
        gaps.push(format!("{} {:.0} ms", c.name, gap.as_secs_f64() * 1000.0));
    }
    println!("write gap after SIGKILL of the leader (16 writers on all endpoints): {}", gaps.join(", "));
    drop(trireme);
    drop(etcd);
    if want("trireme") && args.pod_startup > 0 {
        pod_startup(&trireme_bin, args.pod_startup).await?;
    }
    if want("trireme") && args.stable_kills > 0 {
        stable::run(&trireme_bin, args.stable_kills).await?;
    }
    if want("trireme") && args.backup_mb > 0 {
        backup(&trireme_bin, args.backup_mb).await?;
    }
    if args.tls {
        tls::cost(&trireme_bin, &args.etcd, want("etcd"), duration).await?;
    }
    if want("trireme") && args.compose_kills > 0 {
        compose::run(&trireme_bin, args.compose_kills).await?;
    }
    Ok(())
}

/// Runs `bin` with `args` to completion; returns how long it took.
async fn timed(bin: &std::path::Path, args: &[&std::ffi::OsStr]) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(bin).args(args).stdin(Stdio::null()).output().await?;
    if !out.status.success() {
        bail!("{} {:?} failed: {}", bin.display(), args, String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed())
}

/// Issue #7's target: a store with `mb` MiB of values (1 MiB each, random, so compression does
/// not shrink them) is saved with `trireme snapshot save` and restored with `trireme snapshot
/// restore`; both are printed next to `cp` (and `cp` + fsync) of the saved file on the same disk.
async fn backup(bin: &std::path::Path, mb: usize) -> Result<()> {
    use rand::RngCore;
    use rand::SeedableRng;
    eprintln!("backup workload: writing {mb} MiB of values into a fresh 3-master cluster");
    let cluster = Cluster::start("trireme", &bin.to_path_buf(), &[]).await?;
    let channels = connections(&cluster, 4).await?;
    let mut tasks = Vec::new();
    for (w, channel) in channels.iter().enumerate() {
        let mut kv = KvClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut value = vec![0u8; 1 << 20];
            for i in (w..mb).step_by(4) {
                rng.fill_bytes(&mut value);
                let put = pb::PutRequest {
                    key: format!("backup/{i:06}").into_bytes().into(),
                    value: value.clone().into(),
                    ..Default::default()
                };
                kv.put(put).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let dir = cluster.dir.path();
    let file = dir.join("backup.db");
    let endpoints = cluster.endpoints.join(",");
    let save = timed(
        bin,
        &["snapshot".as_ref(), "save".as_ref(), file.as_os_str(), "--endpoints".as_ref(), endpoints.as_ref()],
    )
    .await?;
    let size = std::fs::metadata(&file)?.len();
    let copy = dir.join("copy.db");
    let cp = timed(std::path::Path::new("cp"), &[file.as_os_str(), copy.as_os_str()]).await?;
    let started = Instant::now();
    std::fs::File::open(&copy)?.sync_all()?;
    let cp_sync = cp + started.elapsed();
    std::fs::remove_file(&copy)?;
    let peer = "http://127.0.0.1:1";
    let initial = format!("r1={peer}");
    let restored = dir.join("restored");
    let restore = timed(
        bin,
        &[
            "snapshot".as_ref(),
            "restore".as_ref(),
            file.as_os_str(),
            "--name".as_ref(),
            "r1".as_ref(),
            "--initial-cluster".as_ref(),
            initial.as_ref(),
            "--initial-advertise-peer-urls".as_ref(),
            peer.as_ref(),
            "--data-dir".as_ref(),
            restored.as_os_str(),
        ],
    )
    .await?;
    let secs = |d: Duration| d.as_secs_f64();
    println!();
    println!("backup of {mb} MiB of values ({:.2} GiB file):", size as f64 / f64::from(1u32 << 30));
    println!("  cp of the file            {:>6.2} s   (cp + fsync {:.2} s)", secs(cp), secs(cp_sync));
    println!(
        "  trireme snapshot save     {:>6.2} s   {:.1}× cp + fsync (target ≤ 2×)",
        secs(save),
        secs(save) / secs(cp_sync)
    );
    println!(
        "  trireme snapshot restore  {:>6.2} s   {:.1}× cp + fsync (target ≤ 2×)",
        secs(restore),
        secs(restore) / secs(cp_sync)
    );
    Ok(())
}

/// Issue #6's workload: `trireme up` (3 masters, 2 node agents with the process runtime), then
/// one deployment of `replicas` pause pods; prints p50/p99 from a pod's creation to Running,
/// both as a watcher sees them.
async fn pod_startup(bin: &std::path::Path, replicas: usize) -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::api::PostParams;
    use kube::runtime::watcher;
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("up.log"))?;
    let mut up = Command::new(bin)
        .args(["up", "--masters", "3", "--nodes", "2", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!("trireme up did not write its kubeconfig; see {}", dir.path().join("up.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&kubeconfig)?, &Default::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    loop {
        let ready = nodes
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the nodes did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        (Instant, Option<Instant>),
    >::new()));
    let recorder = {
        let seen = seen.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let stream = watcher(pods, watcher::Config::default().labels("app=startup"));
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else { continue };
                let now = Instant::now();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if let Ok(mut seen) = seen.lock() {
                    let entry = seen.entry(name).or_insert((now, None));
                    if running && entry.1.is_none() {
                        entry.1 = Some(now);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "startup"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "startup"}},
            "template": {
                "metadata": {"labels": {"app": "startup"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}
            }
        }
    }))?;
    let started = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), "default").create(&PostParams::default(), &deployment).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let latencies = loop {
        let done: Vec<Duration> = seen
            .lock()
            .map(|s| s.values().filter_map(|(added, running)| running.map(|r| r - *added)).collect())
            .unwrap_or_default();
        if done.len() >= replicas {
            break done;
        }
        if Instant::now() > deadline {
            bail!("only {} of {replicas} pods Running after 180 s", done.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all_running = started.elapsed();
    recorder.abort();
    let mut sorted = latencies;
    sorted.sort();
    println!();
    println!(
        "pod startup, {replicas} replicas on 2 nodes (process runtime): create → Running p50 {:.0} ms, p99 {:.0} ms; all Running {:.2} s after the deployment was created",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        all_running.as_secs_f64()
    );
    if let Some(pid) = up.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), up.wait()).await;
    Ok(())
}
