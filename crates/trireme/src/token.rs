//! `trireme token`: the join tokens hosts join with (kubeadm's `token create/list/delete`). Run
//! on a master's host: they go through its etcd API with the host's client certificate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::Subcommand;
use trireme_apiserver::join::JoinRole;
use trireme_apiserver::join::JoinToken;
use trireme_apiserver::join::TOKENS_PREFIX;
use trireme_apiserver::join::TokenRecord;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::bootstrap::EtcdAccess;

/// `trireme token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The data dir of the master on this host (set up by `trireme init` or `join`).
    #[arg(long, global = true, default_value = "/var/lib/trireme")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (with the join command that uses it).
    Create {
        /// How long it is valid, e.g. 1h or 30m; 0 for until deleted.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Who may join with it: node, master, or master,node.
        #[arg(long, value_delimiter = ',', default_value = "node")]
        role: Vec<JoinRole>,
        /// A note shown by `trireme token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens: id, roles, time left.
    List,
    /// Delete a token by id: hosts can no longer join with it.
    Delete { id: String },
}

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
        .unwrap_or(i64::MAX)
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Runs a `trireme token` command.
pub async fn run(args: TokenArgs) -> Result<()> {
    let access = EtcdAccess::of_data_dir(&args.data_dir)?;
    let mut kv = KvClient::new(access.channel().await?);
    match args.command {
        TokenCommand::Create { ttl, role, description } => {
            let ttl = crate::master::parse_duration("ttl", &ttl)?;
            let token = create(&mut kv, role, (!ttl.is_zero()).then_some(ttl), &description).await?;
            println!("{token}");
            Ok(())
        }
        TokenCommand::List => list(&mut kv).await,
        TokenCommand::Delete { id } => {
            let deleted = kv
                .delete_range(pb::DeleteRangeRequest {
                    key: TokenRecord::key(&id).into_bytes().into(),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!("deleting token {id}: {}", s.message()))?
                .into_inner()
                .deleted;
            if deleted == 0 {
                bail!("there is no token {id:?} (see `trireme token list`)");
            }
            println!("token {id} deleted");
            Ok(())
        }
    }
}

/// The hash of the cluster CA, which every token pins.
pub async fn cluster_ca_hash(kv: &mut KvClient<tonic::transport::Channel>) -> Result<String> {
    let key = trireme_apiserver::pki::CREDENTIALS_KEY.as_bytes().to_vec();
    let read = kv
        .range(pb::RangeRequest { key: key.into(), ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("reading the cluster CA: {}", s.message()))?
        .into_inner();
    let kv = read.kvs.first().context("the cluster has no CA yet: wait for its first master's Kubernetes API")?;
    let credentials: trireme_apiserver::ClusterCredentials = serde_json::from_slice(&kv.value)?;
    trireme_apiserver::join::ca_hash(&credentials.ca_cert_pem).context("the cluster CA is unreadable")
}

/// Creates a token for `roles`, valid for `ttl` (`None`: until deleted).
pub async fn create(
    kv: &mut KvClient<tonic::transport::Channel>,
    roles: Vec<JoinRole>,
    ttl: Option<Duration>,
    description: &str,
) -> Result<JoinToken> {
    if roles.is_empty() {
        bail!("--role: give node, master, or both");
    }
    let token = JoinToken::generate(&cluster_ca_hash(kv).await?);
    let record = TokenRecord::new(&token, roles, ttl, description, now());
    kv.put(pb::PutRequest {
        key: TokenRecord::key(&token.id).into_bytes().into(),
        value: serde_json::to_vec(&record)?.into(),
        ..Default::default()
    })
    .await
    .map_err(|s| anyhow::anyhow!("storing the token: {}", s.message()))?;
    Ok(token)
}

async fn list(kv: &mut KvClient<tonic::transport::Channel>) -> Result<()> {
    let prefix = TOKENS_PREFIX.as_bytes().to_vec();
    let read = kv
        .range(pb::RangeRequest { range_end: prefix_end(&prefix).into(), key: prefix.into(), ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("listing tokens: {}", s.message()))?
        .into_inner();
    println!("{:<8} {:<13} {:<10} DESCRIPTION", "ID", "ROLES", "TTL");
    let now = now();
    for kv in read.kvs {
        let Ok(record) = serde_json::from_slice::<TokenRecord>(&kv.value) else { continue };
        let roles: Vec<String> = record.roles.iter().map(ToString::to_string).collect();
        let ttl = match record.expires {
            None => "<forever>".to_string(),
            Some(e) if e <= now => "expired".to_string(),
            Some(e) => {
                let left = e - now;
                if left >= 3600 { format!("{}h", left / 3600) } else { format!("{}m", (left + 59) / 60) }
            }
        };
        println!("{:<8} {:<13} {:<10} {}", record.id, roles.join(","), ttl, record.description);
    }
    Ok(())
}
