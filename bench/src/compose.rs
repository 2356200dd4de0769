//! The compose deployment (deploy/compose) on this machine's Docker engine: time from
//! `docker-compose up` to both nodes Ready, and the write gap when the leader's container is
//! killed, over several kills. The image is built from the trireme binary under test; the
//! project, its volumes and the image are removed at the end.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::percentile;

struct Project {
    name: String,
    image: String,
    subnet: String,
    file: PathBuf,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("docker-compose")
            .args(["-f", &self.file.display().to_string(), "-p", &self.name])
            .args(args)
            .env("TRIREME_IMAGE", &self.image)
            .env("TRIREME_SUBNET", &self.subnet)
            .output()
            .context("running docker-compose")?;
        ensure!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]);
        let _ = Command::new("docker").args(["image", "rm", "-f", &self.image]).output();
    }
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, check: F) -> Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
}

/// Runs the compose measurements with `kills` kills of the leader's container.
pub async fn run(bin: &Path, kills: usize) -> Result<()> {
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_err() {
        println!("compose: skipped, no Docker engine answers here");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = format!("triremebench{}", std::process::id());
    let project = Project {
        image: format!("{name}:dev"),
        subnet: format!("172.31.{}", 200 + std::process::id() % 50),
        file: root.join("deploy/compose/docker-compose.yml"),
        name,
    };
    let build = Command::new(root.join("deploy/image/build.sh")).arg(bin).arg(&project.image).output()?;
    ensure!(build.status.success(), "building the image: {}", String::from_utf8_lossy(&build.stderr));

    let started = Instant::now();
    project.compose(&["up", "-d"])?;
    let dir = tempfile::tempdir()?;
    let m1 = project.container("m1");
    wait_for("m1's certificates", Duration::from_secs(120), || async {
        ["etcd-ca.crt", "etcd-client.crt", "etcd-client.key"].iter().all(|f| {
            docker(&["cp", &format!("{m1}:/var/lib/trireme/pki/{f}"), &dir.path().display().to_string()]).is_ok()
        })
    })
    .await?;
    let files = trireme_tls::config::TlsFiles {
        cert: Some(dir.path().join("etcd-client.crt")),
        key: Some(dir.path().join("etcd-client.key")),
        trusted_ca: Some(dir.path().join("etcd-ca.crt")),
        client_cert_auth: false,
    };
    let tls = files.client_config()?;
    let connector = trireme_tls::connect::Connector::new(Some(tls)).connect_timeout(Duration::from_secs(1));
    let urls: Vec<String> = (11..=13).map(|i| format!("https://{}.{i}:2379", project.subnet)).collect();
    let channel = |url: String| {
        let connector = connector.clone();
        async move {
            Endpoint::from_shared(url)?
                .timeout(Duration::from_secs(2))
                .connect_with_connector(connector)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    // Ready: three voters and both nodes registered and Ready (seen from the store).
    wait_for("three voters and both nodes Ready", Duration::from_secs(180), || async {
        let Ok(ch) = channel(urls[0].clone()).await else { return false };
        let members = pb::MemberListRequest { linearizable: false };
        let voters = trireme_proto::etcdserverpb::cluster_client::ClusterClient::new(ch.clone())
            .member_list(members)
            .await
            .map(|r| r.into_inner().members.iter().filter(|m| !m.is_learner).count())
            .unwrap_or(0);
        let leases = KvClient::new(ch)
            .range(pb::RangeRequest {
                key: b"/registry/leases/kube-node-lease/".to_vec().into(),
                range_end: b"/registry/leases/kube-node-lease0".to_vec().into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
            .unwrap_or(0);
        voters == 3 && leases == 2
    })
    .await?;
    println!("compose: docker-compose up to 3 voters and 2 node leases: {:.1} s", started.elapsed().as_secs_f64());

    let mut gaps = Vec::new();
    for kill in 0..kills {
        let mut channels: Vec<Channel> = Vec::new();
        for url in &urls {
            channels.push(channel(url.clone()).await?);
        }
        let mut leader = None;
        for (i, ch) in channels.iter().enumerate() {
            let status = MaintenanceClient::new(ch.clone()).status(pb::StatusRequest {}).await?.into_inner();
            if status.header.is_some_and(|h| h.member_id == status.leader) {
                leader = Some(i);
            }
        }
        let leader = leader.context("no leader")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut writers = Vec::new();
        for c in 0..16 {
            let (channels, stop, tx) = (channels.clone(), stop.clone(), tx.clone());
            writers.push(tokio::spawn(async move {
                let mut target = c % channels.len();
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    n += 1;
                    let put = pb::PutRequest {
                        key: format!("gap/{kill}/{c}/{n}").into_bytes().into(),
                        value: vec![b'v'; 256].into(),
                        ..Default::default()
                    };
                    match tokio::time::timeout(Duration::from_secs(2), KvClient::new(channels[target].clone()).put(put))
                        .await
                    {
                        Ok(Ok(_)) => {
                            let _ = tx.send(Instant::now());
                        }
                        _ => target = (target + 1) % channels.len(),
                    }
                }
            }));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let container = project.container(&format!("m{}", leader + 1));
        let killed_at = Instant::now();
        docker(&["kill", &container])?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        for w in writers {
            let _ = w.await;
        }
        let mut acks = Vec::new();
        while let Ok(t) = rx.try_recv() {
            acks.push(t);
        }
        acks.sort_unstable();
        let from = acks.iter().rposition(|t| *t <= killed_at).unwrap_or(0);
        let gap = acks[from..].windows(2).map(|w| w[1] - w[0]).max().context("no write after the kill")?;
        gaps.push(gap);
        docker(&["start", &container])?;
        let url = urls[leader].clone();
        wait_for("the killed master serving again", Duration::from_secs(60), || async {
            match channel(url.clone()).await {
                Ok(ch) => MaintenanceClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
                    .is_ok_and(|s| s.into_inner().leader != 0),
                Err(_) => false,
            }
        })
        .await?;
    }
    gaps.sort_unstable();
    if !gaps.is_empty() {
        println!(
            "compose: write gap after docker kill of the leader's container, {} kills, 16 writers: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            gaps.len(),
            percentile(&gaps, 0.50),
            percentile(&gaps, 0.99),
            gaps.last().map_or(0.0, |g| g.as_secs_f64() * 1000.0)
        );
    }
    Ok(())
}
