//! `trireme member list|add|remove|promote`: the cluster's membership, through the etcd API's
//! Cluster service (so `etcdctl member ...` does the same things).

use std::time::Duration;
use std::time::Instant;

use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::Subcommand;
use serde::Serialize;
use tonic::transport::Channel;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::cluster_client::ClusterClient;

use crate::client;

/// `trireme member`.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// Masters' etcd API URLs; the first that answers is asked.
    #[arg(long, global = true, env = "TRIREME_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    #[command(flatten)]
    tls: client::ClientTlsArgs,
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// List the members: id, name, URLs, learner or voter, started or not.
    List {
        /// Output format: table or json.
        #[arg(short = 'w', long = "write-out", default_value = "table")]
        write_out: String,
    },
    /// Add a member (as a learner with --learner: it receives the log but does not vote until
    /// promoted); prints how to start it.
    Add {
        /// The new member's name (its --name).
        name: String,
        /// Its peer URLs (its --initial-advertise-peer-urls).
        #[arg(long)]
        peer_urls: String,
        /// Add it as a learner; promote it once it caught up.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member, by hex id or name.
    Remove { member: String },
    /// Make a learner a voter once it has caught up with the leader, by hex id or name
    /// (a name once it has started).
    Promote {
        member: String,
        /// Keep retrying this long while the learner is still catching up (0: try once).
        #[arg(long, default_value = "60s")]
        wait: String,
    },
}

/// Runs a `trireme member` command.
pub async fn run(args: MemberArgs) -> Result<()> {
    let urls = client::endpoints(&args.endpoints)?;
    let (url, channel) = client::connect(&urls, args.tls.config(&urls)?, Some(client::REQUEST_TIMEOUT)).await?;
    let mut cluster = ClusterClient::new(channel);
    match args.command {
        MemberCommand::List { write_out } => list(&mut cluster, &url, &write_out).await,
        MemberCommand::Add { name, peer_urls, learner } => add(&mut cluster, &name, &peer_urls, learner).await,
        MemberCommand::Remove { member } => {
            let id = resolve(&mut cluster, &member).await?;
            let members = call(cluster.member_remove(pb::MemberRemoveRequest { id }).await)?.members;
            println!("Member {id:x} removed; {} members remain", members.len());
            Ok(())
        }
        MemberCommand::Promote { member, wait } => {
            let wait = crate::master::parse_duration("wait", &wait)?;
            promote(&mut cluster, &member, wait).await
        }
    }
}

fn call<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    result.map(tonic::Response::into_inner).map_err(|s| anyhow::anyhow!("{}", s.message()))
}

async fn members(cluster: &mut ClusterClient<Channel>) -> Result<pb::MemberListResponse> {
    call(cluster.member_list(pb::MemberListRequest { linearizable: true }).await)
}

/// A member by hex id or by name.
async fn resolve(cluster: &mut ClusterClient<Channel>, member: &str) -> Result<u64> {
    let list = members(cluster).await?.members;
    if let Some(m) = list.iter().find(|m| m.name == member) {
        return Ok(m.id);
    }
    match u64::from_str_radix(member, 16) {
        Ok(id) if list.iter().any(|m| m.id == id) => Ok(id),
        _ => bail!(
            "no member has the name or hex id {member:?} (see `trireme member list`; a member added with `member add` has a name only once it has started, use its hex id until then)"
        ),
    }
}

#[derive(Serialize)]
struct Row {
    id: String,
    status: &'static str,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    is_learner: bool,
}

async fn list(cluster: &mut ClusterClient<Channel>, url: &str, write_out: &str) -> Result<()> {
    let resp = members(cluster).await?;
    let rows: Vec<Row> = resp
        .members
        .into_iter()
        .map(|m| Row {
            id: format!("{:x}", m.id),
            // A member added with `member add` is known by its peer URLs only until it starts.
            status: if m.name.is_empty() { "unstarted" } else { "started" },
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        })
        .collect();
    match write_out {
        "json" => {
            let header = resp.header.unwrap_or_default();
            let out = serde_json::json!({
                "cluster_id": format!("{:x}", header.cluster_id),
                "answered_by": url,
                "members": rows,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        "table" => {
            let table: Vec<[String; 6]> = rows
                .iter()
                .map(|r| {
                    [
                        r.id.clone(),
                        r.status.to_string(),
                        r.name.clone(),
                        r.peer_urls.join(","),
                        r.client_urls.join(","),
                        if r.is_learner { "learner".into() } else { "voter".into() },
                    ]
                })
                .collect();
            print_table(&["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "ROLE"], &table);
        }
        other => bail!("--write-out must be table or json, not {other:?}"),
    }
    Ok(())
}

fn print_table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn add(cluster: &mut ClusterClient<Channel>, name: &str, peer_urls: &str, learner: bool) -> Result<()> {
    let urls: Vec<String> = peer_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
    if urls.is_empty() || urls.iter().any(|u| !u.starts_with("http://")) {
        bail!("--peer-urls must list http:// URLs, such as http://10.0.0.4:2380");
    }
    if members(cluster).await?.members.iter().any(|m| m.name == name) {
        bail!("a member named {name:?} exists already");
    }
    let resp = call(cluster.member_add(pb::MemberAddRequest { peer_ur_ls: urls.clone(), is_learner: learner }).await)?;
    let added = resp.member.unwrap_or_default();
    let cluster_id = resp.header.unwrap_or_default().cluster_id;
    let initial: Vec<String> = resp
        .members
        .iter()
        .flat_map(|m| {
            let who = if m.id == added.id || m.name.is_empty() { name.to_string() } else { m.name.clone() };
            m.peer_ur_ls.iter().map(move |u| format!("{who}={u}")).collect::<Vec<_>>()
        })
        .collect();
    let role = if learner { "a learner" } else { "a voter" };
    println!("Member {:x} added to cluster {cluster_id:x} as {role}", added.id);
    println!();
    println!("Start it with an empty data dir:");
    println!(
        "trireme master --name {name} --initial-cluster-state existing --initial-cluster {} --initial-advertise-peer-urls {} --listen-peer-urls {} --data-dir {name}.trireme",
        initial.join(","),
        urls.join(","),
        urls.join(",")
    );
    if learner {
        println!();
        println!("Then, once it has caught up: trireme member promote {name}");
    }
    Ok(())
}

/// Promotes `member`, retrying for up to `wait` while it has not started (a learner is known
/// by name once it started) or is still catching up.
async fn promote(cluster: &mut ClusterClient<Channel>, member: &str, wait: Duration) -> Result<()> {
    let started = Instant::now();
    let id = loop {
        match resolve(cluster, member).await {
            Ok(id) => break id,
            Err(_) if started.elapsed() < wait => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => return Err(e),
        }
    };
    let mut told = false;
    loop {
        match cluster.member_promote(pb::MemberPromoteRequest { id }).await {
            Ok(resp) => {
                let voters = resp.into_inner().members.iter().filter(|m| !m.is_learner).count();
                println!(
                    "Member {id:x} promoted to a voter in {:.1}s; {voters} voters now",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(s) if s.message().contains("in sync") && started.elapsed() < wait => {
                if !told {
                    eprintln!("member {id:x} is still catching up with the leader; waiting up to {wait:?}");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => bail!("{}", s.message()),
        }
    }
}
