//! One command per host: `trireme init` on the first master, `trireme join` on the others and
//! on a node — with a token that pins the cluster CA — as real processes on loopback (each
//! "host" its own data dir and ports). Joined masters become voters by themselves, the node
//! runs with its own identity, bad tokens are refused, and every host restarts from its data dir
//! with the same command, also all at once.

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use common::free_port;
use common::ok;
use common::trireme;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::process::Command;

/// One host: its data dir, ports and running process.
struct Host {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Host {
    fn master(root: &Path, name: &str) -> Result<Host> {
        let dir = root.join(name);
        let args = vec![
            "--name".into(),
            name.into(),
            "--advertise-address".into(),
            "127.0.0.1".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--api-port".into(),
            free_port()?.to_string(),
            "--client-port".into(),
            free_port()?.to_string(),
            "--peer-port".into(),
            free_port()?.to_string(),
        ];
        Ok(Host { name: name.into(), dir, args, child: None })
    }

    fn api_url(&self) -> String {
        let port = self.args.iter().skip_while(|a| *a != "--api-port").nth(1).cloned().unwrap_or_default();
        format!("https://127.0.0.1:{port}")
    }

    /// Starts `trireme <command> <join flags> <host flags>`, logging to DIR.log.
    fn start(&mut self, command: &[&str]) -> Result<()> {
        std::fs::create_dir_all(self.dir.parent().context("parent")?)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_trireme"))
            .args(command)
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn stop(&mut self, signal: Signal) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id().context("pid")?)?);
            kill(pid, signal)?;
            tokio::time::timeout(common::WAIT, child.wait()).await.context("did not stop")??;
        }
        Ok(())
    }

    fn log(&self) -> String {
        common::tail_of(&self.name, &self.dir.with_extension("log"), 40)
    }
}

/// Waits until `check` holds, up to `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, hosts: &[&Host], check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(false) => bail!("{what}: not within {limit:?}\n{}", hosts.iter().map(|h| h.log()).collect::<String>()),
            Err(e) => bail!("{what}: {e:#}\n{}", hosts.iter().map(|h| h.log()).collect::<String>()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// etcdctl with a master host's client certificate, against its etcd API.
async fn etcdctl(host: &Host, args: &[&str]) -> Result<std::process::Output> {
    let pki = host.dir.join("pki");
    let port = host.args.iter().skip_while(|a| *a != "--client-port").nth(1).cloned().unwrap_or_default();
    let flags = [
        format!("--cacert={}", pki.join("etcd-ca.crt").display()),
        format!("--cert={}", pki.join("etcd-client.crt").display()),
        format!("--key={}", pki.join("etcd-client.key").display()),
    ];
    let all: Vec<&str> = flags.iter().map(String::as_str).chain(args.iter().copied()).collect();
    common::etcdctl(&format!("https://127.0.0.1:{port}"), &all, None).await
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Result<String> {
    ok(common::kubectl(kubeconfig, cache, args, None).await?)
}

/// The members that are voters, by name, as `etcdctl member list` shows them.
async fn voters(host: &Host) -> Result<Vec<String>> {
    let out = ok(etcdctl(host, &["member", "list", "-w", "json"]).await?)?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    Ok(list["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| !m["isLearner"].as_bool().unwrap_or(false))
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_join_make_a_cluster_of_three_masters_and_a_node_that_restarts_by_itself() -> Result<()> {
    let root = tempfile::tempdir()?;
    let cache = root.path().join("kubecache");
    let mut m1 = Host::master(root.path(), "m1")?;
    m1.start(&["init"])?;
    let token_file = m1.dir.join("token");
    eventually(Duration::from_secs(60), "init made its token", &[&m1], || async { Ok(token_file.exists()) }).await?;
    let token = std::fs::read_to_string(&token_file)?.trim().to_string();
    assert!(token.starts_with("K10") && token.contains("::"), "{token}");
    let printed = std::fs::read_to_string(m1.dir.with_extension("log"))?;
    assert!(
        printed.contains(&format!("trireme join --server {} --token {token} --role master", m1.api_url())),
        "{printed}"
    );
    let admin = m1.dir.join("admin.kubeconfig");

    // Bad tokens are refused before anything is issued.
    let server = m1.api_url();
    let join = |token: String, name: &str| {
        let server = server.clone();
        let dir = root.path().join(name);
        let name = name.to_string();
        async move {
            trireme(&[
                "join",
                "--server",
                &server,
                "--token",
                &token,
                "--role",
                "node",
                "--name",
                &name,
                "--advertise-address",
                "127.0.0.1",
                "--data-dir",
                &dir.display().to_string(),
            ])
            .await
        }
    };
    let hash = token.trim_start_matches("K10").split("::").next().context("hash")?.to_string();
    let forged = join(format!("K10{hash}::abcdef.0123456789abcdef"), "forged").await?;
    let forged_err = String::from_utf8_lossy(&forged.stderr);
    assert!(!forged.status.success() && forged_err.contains("unknown join token abcdef"), "{forged_err}");
    let other_ca = join(token.replacen(&hash, &"0".repeat(64), 1), "pinned").await?;
    let other_ca_err = String::from_utf8_lossy(&other_ca.stderr);
    assert!(!other_ca.status.success() && other_ca_err.contains("refusing to trust it"), "{other_ca_err}");
    let data_dir = format!("--data-dir={}", m1.dir.display());
    let short = ok(trireme(&["token", "create", "--ttl", "1s", &data_dir]).await?)?.trim().to_string();
    let deleted = ok(trireme(&["token", "create", "--ttl", "1h", "--description", "to delete", &data_dir]).await?)?;
    let deleted = deleted.trim().to_string();
    let deleted_id = deleted.split("::").nth(1).and_then(|c| c.split('.').next()).context("id")?.to_string();
    let listed = ok(trireme(&["token", "list", &data_dir]).await?)?;
    assert!(listed.contains(&deleted_id) && listed.contains("to delete") && listed.contains("<forever>"), "{listed}");
    ok(trireme(&["token", "delete", &deleted_id, &data_dir]).await?)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = join(short, "expired").await?;
    let expired_err = String::from_utf8_lossy(&expired.stderr);
    assert!(!expired.status.success() && expired_err.contains("has expired"), "{expired_err}");
    let gone = join(deleted, "deleted").await?;
    let gone_err = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success() && gone_err.contains(&format!("unknown join token {deleted_id}")), "{gone_err}");
    let node_only = ok(trireme(&["token", "create", "--role", "node", &data_dir]).await?)?.trim().to_string();
    let mut wrong_role = Host::master(root.path(), "m9")?;
    let out = trireme(
        &["join", "--server", &server, "--token", &node_only, "--role", "master"]
            .into_iter()
            .chain(wrong_role.args.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    )
    .await?;
    let wrong_role_err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && wrong_role_err.contains("not for a master"), "{wrong_role_err}");
    wrong_role.child = None;

    // Two more masters join; the leader promotes them once they have caught up.
    let mut m2 = Host::master(root.path(), "m2")?;
    let mut m3 = Host::master(root.path(), "m3")?;
    for m in [&mut m2, &mut m3] {
        m.start(&["join", "--server", &server, "--token", &token, "--role", "master"])?;
    }
    eventually(Duration::from_secs(60), "three voters", &[&m1, &m2, &m3], || async {
        let mut names = voters(&m1).await?;
        names.sort();
        Ok(names == ["m1", "m2", "m3"])
    })
    .await?;
    ok(etcdctl(&m3, &["put", "joined", "yes"]).await?)?;
    assert_eq!(ok(etcdctl(&m2, &["get", "joined", "--print-value-only"]).await?)?.trim(), "yes");
    // Every master serves the Kubernetes API with the one cluster CA.
    for m in [&m1, &m2, &m3] {
        let url = m.api_url();
        kubectl(&admin, &cache, &["--server", &url, "get", "namespaces"]).await?;
    }

    // A node joins with its own identity and registers.
    let mut node = Host { name: "node-1".into(), dir: root.path().join("node-1"), args: vec![], child: None };
    node.args = vec![
        "--name".into(),
        "node-1".into(),
        "--advertise-address".into(),
        "127.0.0.1".into(),
        "--data-dir".into(),
        node.dir.display().to_string(),
        "--".into(),
        "--kubelet-port".into(),
        "0".into(),
        "--no-cluster-ips".into(),
        "--stop-pods-on-exit".into(),
    ];
    node.start(&["join", "--server", &m2.api_url(), "--token", &token, "--role", "node"])?;
    let admin_ref = &admin;
    let cache_ref = &cache;
    eventually(Duration::from_secs(60), "node-1 Ready", &[&m1, &node], || async {
        let out = kubectl(
            admin_ref,
            cache_ref,
            &["get", "node", "node-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        )
        .await?;
        Ok(out.trim() == "True")
    })
    .await?;
    let node_kubeconfig = std::fs::read_to_string(node.dir.join("kubelet.kubeconfig"))?;
    assert!(
        node_kubeconfig.contains("client-certificate-data") && !node_kubeconfig.contains("token"),
        "{node_kubeconfig}"
    );
    let node_cert = trireme_tls::pki::inspect(&node.dir.join("pki/node-client.crt"))?;
    assert!(node_cert.subject.contains("CN=system:node:node-1") && node_cert.subject.contains("O=system:nodes"));
    kubectl(&node.dir.join("kubelet.kubeconfig"), &cache, &["get", "node", "node-1"]).await?;

    // The masters' certificates are listed with their expiry.
    let listed =
        ok(trireme(&["certs", "check-expiration", &format!("--pki-dir={}", m2.dir.join("pki").display())]).await?)?;
    assert!(listed.contains("m2-peer") && listed.contains("364d") && listed.contains("etcd-ca"), "{listed}");

    // Every host stopped at once and started again with the same command: the cluster comes back
    // with its data.
    for h in [&mut m1, &mut m2, &mut m3, &mut node] {
        h.stop(Signal::SIGKILL).await?;
    }
    m1.start(&["init"])?;
    for m in [&mut m2, &mut m3] {
        m.start(&["join", "--server", &server, "--token", &token, "--role", "master"])?;
    }
    node.start(&["join", "--server", &server, "--token", &token, "--role", "node"])?;
    eventually(Duration::from_secs(60), "the data after a restart of every host", &[&m1, &m2, &m3], || async {
        Ok(ok(etcdctl(&m1, &["get", "joined", "--print-value-only"]).await?)?.trim() == "yes")
    })
    .await?;
    let mut names = voters(&m2).await?;
    names.sort();
    ensure!(names == ["m1", "m2", "m3"], "{names:?}");
    eventually(Duration::from_secs(60), "node-1 Ready again", &[&m1, &node], || async {
        let out = kubectl(
            admin_ref,
            cache_ref,
            &["get", "node", "node-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        )
        .await?;
        Ok(out.trim() == "True")
    })
    .await?;
    for h in [&mut node, &mut m3, &mut m2, &mut m1] {
        h.stop(Signal::SIGTERM).await?;
    }
    Ok(())
}
