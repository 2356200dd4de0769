//! `trireme init` and `trireme join`: one command per host, as `k3s server --cluster-init` and
//! `k3s server --server … --token …`.
//!
//! `init` makes the etcd PKI of a new cluster in `DATA-DIR/pki`, writes the master's
//! configuration to `DATA-DIR/master.yaml` (etcd's flags: mutual TLS on the peer and client
//! ports), starts the master and, once its Kubernetes API serves, creates a join token kept in
//! `DATA-DIR/token` and prints the commands that join more hosts. `join` fetches the cluster CA,
//! checks it against the token's pin, asks a master for its certificates and starts a master
//! (added as a learner, promoted by the leader once caught up) or a node agent with its own
//! identity. Run again with the same data dir, either command just starts what it set up.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::Parser;
use trireme_apiserver::join::JoinRequest;
use trireme_apiserver::join::JoinRole;
use trireme_apiserver::join::JoinToken;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::bootstrap;
use crate::master::MasterArgs;
use crate::pki::EtcdPki;

/// The master's configuration in its data dir (`trireme master --config-file`).
pub const MASTER_CONFIG: &str = "master.yaml";
/// A node's command line in its data dir (what `join` starts it with again).
pub const NODE_ARGS: &str = "node.args.json";
/// The token `init` created, in the first master's data dir.
pub const TOKEN_FILE: &str = "token";

/// Where a master listens and what it advertises.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// This master's or node's name.
    #[arg(long)]
    pub name: String,
    /// The address other hosts reach this one at; its certificates are issued for it.
    #[arg(long)]
    pub advertise_address: IpAddr,
    /// Where this host keeps its data, certificates and configuration.
    #[arg(long, default_value = "/var/lib/trireme")]
    pub data_dir: PathBuf,
    /// Address to listen on [default: --advertise-address].
    #[arg(long)]
    pub bind_address: Option<IpAddr>,
    /// The Kubernetes API's port.
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// The etcd API's port.
    #[arg(long, default_value_t = 2379)]
    pub client_port: u16,
    /// The peer port.
    #[arg(long, default_value_t = 2380)]
    pub peer_port: u16,
    /// More names or addresses the Kubernetes API's certificate covers (a balancer, a virtual
    /// IP, a DNS name), comma-separated.
    #[arg(long)]
    pub tls_san: Option<String>,
    /// Flags passed on to `trireme master` or `trireme node` (after `--`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Flags of `trireme init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Where the join token is kept [default: DATA-DIR/token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Start the new cluster from this snapshot (`trireme snapshot save`, or etcdctl's) of a
    /// lost one: its objects, its cluster CA and its join tokens; the other masters join again.
    #[arg(long)]
    pub restore: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Flags of `trireme join`.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// A master's Kubernetes API (or the cluster's stable address): https://HOST:6443.
    #[arg(long)]
    pub server: String,
    /// The join token (`trireme token create`, or the one `init` printed); needed the first
    /// time only.
    #[arg(long, env = "TRIREME_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// What this host becomes.
    #[arg(long)]
    pub role: JoinRole,
    #[command(flatten)]
    pub host: HostArgs,
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

fn write(path: &Path, text: &str, options: FileOptions) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(path, text.as_bytes(), options).with_context(|| format!("writing {}", path.display()))
}

/// The master configuration of `host` (etcd's flags with mutual TLS) for `initial_cluster`.
fn master_config(host: &HostArgs, pki: &EtcdPki, initial_cluster: &str, state: &str) -> Result<String> {
    let bind = host.bind_address.unwrap_or(host.advertise_address);
    let (peer_cert, peer_key) = pki.peer(&host.name);
    let (cert, key) = pki.server(&host.name);
    let path = |p: PathBuf| p.display().to_string();
    let mut sans = vec![host.advertise_address.to_string()];
    sans.extend(
        host.tls_san.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(String::from),
    );
    let config = serde_json::json!({
        "name": host.name,
        "data-dir": path(host.data_dir.clone()),
        "listen-peer-urls": url(bind, host.peer_port),
        "initial-advertise-peer-urls": url(host.advertise_address, host.peer_port),
        "listen-client-urls": url(bind, host.client_port),
        "advertise-client-urls": url(host.advertise_address, host.client_port),
        "listen-api-urls": url(bind, host.api_port),
        "advertise-api-urls": url(host.advertise_address, host.api_port),
        "tls-san": sans.join(","),
        "initial-cluster": initial_cluster,
        "initial-cluster-state": state,
        "cert-file": path(cert),
        "key-file": path(key),
        "trusted-ca-file": path(pki.ca_cert()),
        "client-cert-auth": true,
        "peer-cert-file": path(peer_cert),
        "peer-key-file": path(peer_key),
        "peer-trusted-ca-file": path(pki.ca_cert()),
        "peer-client-cert-auth": true,
        "etcd-ca-key-file": path(pki.ca_key()),
    });
    Ok(format!(
        "# Written by `trireme {}` for master {}; `trireme master --config-file` this file starts it.\n{}",
        if state == "new" { "init" } else { "join" },
        host.name,
        serde_yaml_ng::to_string(&config)?
    ))
}

/// Restores `snapshot` into the (new) data dir of `host`, as the one member of a new cluster.
async fn restore(host: &HostArgs, snapshot: &Path) -> Result<()> {
    let peer_url = url(host.advertise_address, host.peer_port);
    // The ids derive from the default --initial-cluster-token, which master.yaml keeps.
    let token = "trireme-cluster".to_string();
    let member = trireme_store::types::Member {
        name: host.name.clone(),
        peer_urls: vec![peer_url.clone()],
        client_urls: Vec::new(),
    };
    let opts = trireme_store::restore::RestoreOptions {
        name: host.name.clone(),
        founders: [(trireme_store::identity::member_id(std::slice::from_ref(&peer_url), &token), member)].into(),
        token,
        bump_revision: trireme_store::restore::DEFAULT_BUMP_REVISION,
        mark_compacted: true,
        skip_hash_check: false,
    };
    let (file, dir) = (snapshot.to_path_buf(), host.data_dir.clone());
    let restored = tokio::task::spawn_blocking(move || trireme_store::restore::restore(&file, &dir, &opts, &|_| {}))
        .await?
        .with_context(|| format!("--restore {} into {}", snapshot.display(), host.data_dir.display()))?;
    println!(
        "Restored {} (revision {}, {} keys) as the first master of a new cluster; the others join again.",
        snapshot.display(),
        restored.archive.header.revision,
        restored.archive.header.keys
    );
    Ok(())
}

/// `trireme master --config-file DATA-DIR/master.yaml` plus the extra flags, parsed.
fn master_args(host: &HostArgs) -> Result<MasterArgs> {
    #[derive(Parser)]
    struct Master {
        #[command(flatten)]
        args: MasterArgs,
    }
    let mut argv: Vec<OsString> = vec!["master".into(), "--config-file".into()];
    argv.push(host.data_dir.join(MASTER_CONFIG).into_os_string());
    argv.extend(host.extra.iter().map(OsString::from));
    Ok(Master::try_parse_from(argv).context("the flags after --")?.args)
}

/// Runs `trireme init`.
pub async fn init(args: InitArgs) -> Result<()> {
    let host = args.host;
    let token_file = args.token_file.clone().unwrap_or_else(|| host.data_dir.join(TOKEN_FILE));
    let config = host.data_dir.join(MASTER_CONFIG);
    if config.exists() {
        println!("{} is set up already: starting master {} from it.", config.display(), host.name);
    } else {
        if let Some(snapshot) = &args.restore {
            restore(&host, snapshot).await?;
        }
        let hosts = vec![host.advertise_address.to_string()];
        let pki = EtcdPki::ensure(&host.data_dir.join("pki"), &[(host.name.clone(), hosts)])
            .context("making the cluster's certificates")?;
        let initial = format!("{}={}", host.name, url(host.advertise_address, host.peer_port));
        write(&config, &master_config(&host, &pki, &initial, "new")?, FileOptions::PRIVATE)?;
        println!("Initialized a new cluster in {}: starting master {}.", host.data_dir.display(), host.name);
    }
    let master = master_args(&host)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let announce = tokio::spawn(announce(host.clone(), token_file, stop.clone()));
    let outcome = crate::master::run(master).await;
    stop.cancel();
    let _ = announce.await;
    outcome
}

/// Once the master serves: the join token (made once, kept in `DATA-DIR/token`) and the
/// commands that join more hosts.
async fn announce(host: HostArgs, token_file: PathBuf, stop: tokio_util::sync::CancellationToken) {
    let attempt = async {
        loop {
            match init_token(&host, &token_file).await {
                Ok(token) => return token,
                Err(e) => tracing::debug!(error = format!("{e:#}"), "join token not made yet"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let token = tokio::select! {
        () = stop.cancelled() => return,
        token = attempt => token,
    };
    let server = url(host.advertise_address, host.api_port);
    let kubeconfig = host.data_dir.join("admin.kubeconfig");
    println!();
    println!("Master {} is serving the Kubernetes API at {server}.", host.name);
    println!("Use it with kubectl:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    println!();
    println!("Join more masters, each on its own host (three or five in all):");
    println!(
        "  trireme join --server {server} --token {token} --role master --name m2 --advertise-address <ITS ADDRESS>"
    );
    println!("Join worker nodes:");
    println!(
        "  trireme join --server {server} --token {token} --role node --name node-1 --advertise-address <ITS ADDRESS>"
    );
    println!();
    println!("The token is kept in {}; make others with `trireme token create`.", token_file.display());
}

/// The token in `path`, created (for masters and nodes, until deleted) the first time.
async fn init_token(host: &HostArgs, path: &Path) -> Result<JoinToken> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return JoinToken::parse(&text).map_err(anyhow::Error::msg).with_context(|| format!("{}", path.display()));
    }
    if !host.data_dir.join("admin.kubeconfig").exists() {
        bail!("the Kubernetes API is not serving yet");
    }
    let access = bootstrap::EtcdAccess::of_data_dir(&host.data_dir)?;
    let mut kv = trireme_proto::etcdserverpb::kv_client::KvClient::new(access.channel().await?);
    let token =
        crate::token::create(&mut kv, vec![JoinRole::Master, JoinRole::Node], None, "made by trireme init").await?;
    write(path, &format!("{token}\n"), FileOptions::PRIVATE)?;
    Ok(token)
}

/// Runs `trireme join`.
pub async fn join(args: JoinArgs) -> Result<()> {
    let host = args.host.clone();
    match args.role {
        JoinRole::Master => {
            let config = host.data_dir.join(MASTER_CONFIG);
            if config.exists() {
                println!("{} is set up already: starting master {} from it.", config.display(), host.name);
            } else {
                join_master(&args).await?;
            }
            crate::master::run(master_args(&host)?).await
        }
        JoinRole::Node => {
            let saved = host.data_dir.join(NODE_ARGS);
            let argv: Vec<String> = match std::fs::read(&saved) {
                Ok(raw) => {
                    println!("{} is set up already: starting node {} from it.", saved.display(), host.name);
                    serde_json::from_slice(&raw).with_context(|| format!("reading {}", saved.display()))?
                }
                Err(_) => join_node(&args).await?,
            };
            #[derive(Parser)]
            struct Node {
                #[command(flatten)]
                args: crate::node::NodeArgs,
            }
            let node = Node::try_parse_from(std::iter::once("node".to_string()).chain(argv)).context("node flags")?;
            crate::node::run(node.args).await
        }
    }
}

/// The token, and the cluster CA it pins, fetched from `--server`.
async fn pinned(args: &JoinArgs) -> Result<(JoinToken, String)> {
    let text = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("--token-file {}", path.display()))?
        }
        (None, None) => bail!("joining needs --token (or --token-file): the token `trireme init` printed"),
    };
    let token = JoinToken::parse(&text).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let ca = bootstrap::fetch_pinned_ca(&args.server, &token).await?;
    Ok((token, ca))
}

async fn join_master(args: &JoinArgs) -> Result<()> {
    let host = &args.host;
    let (token, ca) = pinned(args).await?;
    let ask = JoinRequest {
        role: JoinRole::Master,
        name: host.name.clone(),
        hosts: vec![host.advertise_address.to_string()],
        peer_urls: vec![url(host.advertise_address, host.peer_port)],
        client_urls: vec![url(host.advertise_address, host.client_port)],
    };
    let answer = bootstrap::join(&args.server, &ca, &token, &ask).await?;
    let pki = EtcdPki::install(&host.data_dir.join("pki"), &host.name, &answer)?;
    let config = master_config(host, &pki, &answer.initial_cluster, "existing")?;
    write(&host.data_dir.join(MASTER_CONFIG), &config, FileOptions::PRIVATE)?;
    println!(
        "Joined as member {} (a learner until it has caught up; the leader then makes it a voter). Starting master {}.",
        answer.member_id, host.name
    );
    Ok(())
}

/// Asks for the node's certificates, writes its kubeconfig and returns its `trireme node`
/// flags (saved for later starts).
async fn join_node(args: &JoinArgs) -> Result<Vec<String>> {
    let host = &args.host;
    let (token, ca) = pinned(args).await?;
    let ask = JoinRequest {
        role: JoinRole::Node,
        name: host.name.clone(),
        hosts: vec![host.advertise_address.to_string()],
        peer_urls: vec![],
        client_urls: vec![],
    };
    let answer = bootstrap::join(&args.server, &ca, &token, &ask).await?;
    let pki = host.data_dir.join("pki");
    let client = answer.certificates.get("node-client").context("the join answer holds no node certificate")?;
    let serving = answer.certificates.get("kubelet").context("the join answer holds no kubelet certificate")?;
    write(&pki.join("ca.crt"), &answer.ca_cert, FileOptions::DURABLE)?;
    write(&pki.join("node-client.key"), &client.key_pem, FileOptions::PRIVATE)?;
    write(&pki.join("node-client.crt"), &client.cert_pem, FileOptions::DURABLE)?;
    write(&pki.join("kubelet.key"), &serving.key_pem, FileOptions::PRIVATE)?;
    write(&pki.join("kubelet.crt"), &serving.cert_pem, FileOptions::DURABLE)?;
    let kubeconfig = host.data_dir.join("kubelet.kubeconfig");
    write(
        &kubeconfig,
        &trireme_apiserver::kubeconfig::with_client_certificate(
            &answer.ca_cert,
            &args.server,
            &format!("system:node:{}", host.name),
            &client.cert_pem,
            &client.key_pem,
        ),
        FileOptions::PRIVATE,
    )?;
    let mut argv: Vec<String> = vec![
        "--name".into(),
        host.name.clone(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--node-ip".into(),
        host.advertise_address.to_string(),
        "--root-dir".into(),
        host.data_dir.join("node").display().to_string(),
        "--tls-cert-file".into(),
        pki.join("kubelet.crt").display().to_string(),
        "--tls-private-key-file".into(),
        pki.join("kubelet.key").display().to_string(),
    ];
    argv.extend(host.extra.iter().cloned());
    write(&host.data_dir.join(NODE_ARGS), &serde_json::to_string_pretty(&argv)?, FileOptions::PRIVATE)?;
    println!(
        "Joined as node {} with its own identity (system:node:{}). Starting the node agent.",
        host.name, host.name
    );
    Ok(argv)
}
