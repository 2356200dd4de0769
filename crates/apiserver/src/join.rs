//! Hosts joining the cluster with a token, as k3s and kubeadm let them.
//!
//! A join token reads `K10<sha256 of the cluster CA>::<id>.<secret>`. The joining host fetches
//! the CA from `GET /cacerts` without trusting the connection, checks its hash against the
//! token — so a man in the middle cannot pose as the cluster — and then, over TLS verified with
//! that CA, presents `<id>.<secret>` to `POST /trireme/v1/join`. The master checks the token
//! (known, not expired, allowed for this role) and issues the host's certificates:
//!
//! - a **master** gets a peer certificate (server and client authentication, for its
//!   addresses), a serving certificate for its etcd API and a client certificate, all from the
//!   etcd CA, and the etcd CA itself (masters issue certificates for later joiners and renew
//!   their own); it is added to the Raft membership as a learner and promoted to a voter by the
//!   leader once it has caught up ([`promote_joined`]);
//! - a **node** gets a client certificate `CN=system:node:<name>, O=system:nodes` and a
//!   serving certificate for its kubelet, from the cluster CA: its own identity, never the
//!   admin's.
//!
//! Tokens live in the store under [`TOKENS_PREFIX`], their secret only as a SHA-256.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use serde::Serialize;
use sha2::Digest;
use tokio_util::sync::CancellationToken;
use trireme_store::Store;
use trireme_store::types::Command;
use trireme_store::types::DeleteRangeRequest;
use trireme_store::types::Member;
use trireme_store::types::PutRequest;
use trireme_store::types::RangeRequest;
use trireme_store::types::Request;
use trireme_tls::pki::Authority;
use trireme_tls::pki::LeafSpec;

use crate::ApiState;
use crate::pki::CaPair;

/// Where join tokens are kept: `TOKENS_PREFIX<id>`.
pub const TOKENS_PREFIX: &str = "/trireme/join-tokens/";
/// Where the ids of joined masters wait for promotion: `PROMOTE_PREFIX<hex id>`.
pub const PROMOTE_PREFIX: &str = "/trireme/join-promote/";
/// How every join token starts (as k3s' secure tokens: a version, then the CA hash).
pub const TOKEN_PREFIX: &str = "K10";
/// The path joining hosts fetch the cluster CA from.
pub const CACERTS_PATH: &str = "/cacerts";
/// The path joining hosts present their token to.
pub const JOIN_PATH: &str = "/trireme/v1/join";

/// What a joining host will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinRole {
    Master,
    Node,
}

impl std::fmt::Display for JoinRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinRole::Master => "master",
            JoinRole::Node => "node",
        })
    }
}

impl std::str::FromStr for JoinRole {
    type Err = String;

    fn from_str(s: &str) -> Result<JoinRole, String> {
        match s {
            "master" => Ok(JoinRole::Master),
            "node" => Ok(JoinRole::Node),
            other => Err(format!("{other:?} is not a role: use master or node")),
        }
    }
}

/// A join token: the CA it pins and the credential it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate's DER, lower-case hex.
    pub ca_hash: String,
    /// Public part: names the token (`trireme token list`, `delete`).
    pub id: String,
    /// Secret part.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken {{ id: {}, .. }}", self.id)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl JoinToken {
    /// A new token pinning the CA whose hash is `ca_hash` (id of 6, secret of 16 characters
    /// from `[a-z0-9]`, as kubeadm's bootstrap tokens).
    pub fn generate(ca_hash: &str) -> JoinToken {
        JoinToken { ca_hash: ca_hash.to_string(), id: random_text(6), secret: random_text(16) }
    }

    /// Reads `K10<64 hex>::<id>.<secret>`.
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let bad =
            || "not a join token: expected K10<CA hash>::<id>.<secret>, as `trireme token create` prints".to_string();
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (hash, credential) = rest.split_once("::").ok_or_else(bad)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let (id, secret) = credential.split_once('.').ok_or_else(bad)?;
        if !is_token_part(id, 6) || !is_token_part(secret, 16) {
            return Err(bad());
        }
        Ok(JoinToken { ca_hash: hash.to_ascii_lowercase(), id: id.into(), secret: secret.into() })
    }

    /// What the joiner presents: `<id>.<secret>`.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// SHA-256 of the first certificate in `pem` (its DER), lower-case hex: what tokens pin.
pub fn ca_hash(pem: &str) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    Some(sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect())
}

/// A token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Which roles may join with it.
    pub roles: Vec<JoinRole>,
    /// Unix seconds after which it is refused; `None`: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(default)]
    pub description: String,
    /// Unix seconds.
    pub created: i64,
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenRecord {
    /// The record of `token`, valid for `roles` until `ttl` from `now` (Unix seconds).
    pub fn new(token: &JoinToken, roles: Vec<JoinRole>, ttl: Option<Duration>, description: &str, now: i64) -> Self {
        TokenRecord {
            id: token.id.clone(),
            secret_sha256: sha256_hex(&token.secret),
            roles,
            expires: ttl.map(|t| now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))),
            description: description.to_string(),
            created: now,
        }
    }

    /// The store key of token `id`.
    pub fn key(id: &str) -> String {
        format!("{TOKENS_PREFIX}{id}")
    }

    /// Whether `secret` opens this token for `role` at `now`; the refusal says why.
    pub fn admits(&self, secret: &str, role: JoinRole, now: i64) -> Result<(), String> {
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(sha256_hex(secret).as_bytes(), self.secret_sha256.as_bytes()).into();
        if !matches {
            return Err(format!("join token {}: wrong secret", self.id));
        }
        if self.expires.is_some_and(|e| now >= e) {
            return Err(format!("join token {} has expired; create another with `trireme token create`", self.id));
        }
        if !self.roles.contains(&role) {
            let roles: Vec<String> = self.roles.iter().map(ToString::to_string).collect();
            return Err(format!("join token {} is for {}, not for a {role}", self.id, roles.join(" and ")));
        }
        Ok(())
    }
}

/// What a joining host asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub role: JoinRole,
    /// The master's `--name`, or the node's name.
    pub name: String,
    /// DNS names and IP addresses its certificates cover.
    pub hosts: Vec<String>,
    /// A master's peer URLs.
    #[serde(default)]
    pub peer_urls: Vec<String>,
    /// A master's etcd API URLs.
    #[serde(default)]
    pub client_urls: Vec<String>,
}

/// A certificate and its key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertPair { .. }")
    }
}

/// What a joining host receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The cluster CA (the Kubernetes API's), PEM.
    pub ca_cert: String,
    /// A master's: the etcd CA and its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<CaPair>,
    /// Issued certificates by use: a master's `peer`, `server`, `etcd-client`; a node's
    /// `node-client`, `kubelet`.
    pub certificates: BTreeMap<String, CertPair>,
    /// A master's `--initial-cluster`: every member's name and peer URL, itself included.
    #[serde(default)]
    pub initial_cluster: String,
    /// A master's member id, hex.
    #[serde(default)]
    pub member_id: String,
}

/// Why a join was refused: the status code and the message the joiner shows.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.1, "code": self.0.as_u16(),
        });
        (self.0, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn now_unix() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
        .unwrap_or(i64::MAX)
}

/// `GET /cacerts`: the cluster CA, to anyone (a joiner checks its hash before trusting it).
pub async fn cacerts(State(state): State<Arc<ApiState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], state.credentials.ca_cert_pem.clone()).into_response()
}

/// `POST /trireme/v1/join`.
pub async fn join(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    match serve_join(&state, &headers, &body).await {
        Ok(answer) => {
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(refusal) => {
            tracing::warn!(status = refusal.0.as_u16(), reason = %refusal.1, "join refused");
            refusal.into_response()
        }
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

async fn serve_join(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<JoinResponse, Refusal> {
    let unauthorized = |m: String| Refusal(StatusCode::UNAUTHORIZED, m);
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a join token is needed (Authorization: Bearer <id>.<secret>)".into()))?;
    let (id, secret) = credential.trim().split_once('.').ok_or_else(|| unauthorized("malformed join token".into()))?;
    let request: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("malformed join request: {e}")))?;
    let store = state.registry.store();
    let read = store
        .range(RangeRequest { key: TokenRecord::key(id).into_bytes(), ..Default::default() })
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("reading join tokens: {e}")))?
        .0;
    let record: TokenRecord = match read.kvs.first() {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("join token {id} is unreadable: {e}")))?,
        None => return Err(unauthorized(format!("unknown join token {id} (deleted, or never created)"))),
    };
    record.admits(secret, request.role, now_unix()).map_err(unauthorized)?;
    if !is_name(&request.name) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("name {:?}: use lower-case letters, digits, '-' and '.'", request.name),
        ));
    }
    if request.hosts.is_empty() {
        return Err(Refusal(StatusCode::BAD_REQUEST, "the join request names no address for its certificates".into()));
    }
    match request.role {
        JoinRole::Master => join_master(state, store, &request).await,
        JoinRole::Node => join_node(state, &request),
    }
}

fn issue(
    ca: &CaPair,
    common_name: &str,
    orgs: &[&str],
    hosts: &[String],
    server: bool,
    client: bool,
) -> Result<CertPair, Refusal> {
    let fail =
        |e: trireme_tls::TlsError| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("issuing a certificate: {e}"));
    let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).map_err(fail)?;
    let spec = LeafSpec {
        common_name: common_name.to_string(),
        organizations: orgs.iter().map(|o| o.to_string()).collect(),
        hosts: hosts.to_vec(),
        server,
        client,
        valid_for: None,
    };
    let issued = authority.issue(&spec).map_err(fail)?;
    Ok(CertPair { cert_pem: issued.cert_pem, key_pem: issued.key_pem })
}

async fn join_master(state: &ApiState, store: &Store, request: &JoinRequest) -> Result<JoinResponse, Refusal> {
    let Some(etcd_ca) = state.credentials.etcd_ca.clone() else {
        return Err(Refusal(
            StatusCode::CONFLICT,
            "this cluster's masters do not use mutual TLS between them (started without `trireme init`); add masters with `trireme member add`".into(),
        ));
    };
    if request.peer_urls.is_empty() || request.peer_urls.iter().any(|u| !u.starts_with("https://")) {
        return Err(Refusal(StatusCode::BAD_REQUEST, "a master joins with https:// peer URLs".into()));
    }
    let members = store.members();
    let same_urls = members.iter().find(|m| m.member.peer_urls == request.peer_urls);
    let same_name = members.iter().find(|m| m.member.name == request.name);
    let id = match (same_urls, same_name) {
        // Joining again (its first attempt ended before it started, say): the same member.
        (Some(m), _) if m.member.name.is_empty() || m.member.name == request.name => m.id,
        (Some(m), _) => {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("peer URLs {:?} belong to member {:?}", request.peer_urls, m.member.name),
            ));
        }
        (None, Some(m)) => {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!(
                    "a member named {:?} already exists at {:?}; remove it first (`trireme member remove {}`) to replace it",
                    request.name, m.member.peer_urls, request.name
                ),
            ));
        }
        (None, None) => {
            let id = loop {
                let id = rand::random::<u64>();
                if id != 0 && !members.iter().any(|m| m.id == id) {
                    break id;
                }
            };
            let member = Member {
                name: request.name.clone(),
                peer_urls: request.peer_urls.clone(),
                client_urls: request.client_urls.clone(),
            };
            let marker = PutRequest {
                key: format!("{PROMOTE_PREFIX}{id:x}").into_bytes(),
                value: b"joined".to_vec(),
                ..Default::default()
            };
            store
                .write(Request::new(Command::Put(marker)))
                .await
                .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("recording the join: {e}")))?;
            store
                .add_learner(id, member)
                .await
                .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("adding the member: {e}")))?;
            tracing::info!(name = %request.name, id = format!("{id:x}"), "master joined as a learner");
            id
        }
    };
    let mut certificates = BTreeMap::new();
    certificates.insert("peer".into(), issue(&etcd_ca, &request.name, &[], &request.hosts, true, true)?);
    certificates.insert("server".into(), issue(&etcd_ca, &request.name, &[], &request.hosts, true, false)?);
    certificates.insert("etcd-client".into(), issue(&etcd_ca, "root", &[], &[], false, true)?);
    let initial_cluster = store
        .members()
        .iter()
        .filter_map(|m| {
            let name = if m.id == id {
                request.name.clone()
            } else if m.member.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.member.name.clone()
            };
            Some(format!("{name}={}", m.member.peer_urls.first()?))
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(JoinResponse {
        ca_cert: state.credentials.ca_cert_pem.clone(),
        etcd_ca: Some(etcd_ca),
        certificates,
        initial_cluster,
        member_id: format!("{id:x}"),
    })
}

fn join_node(state: &ApiState, request: &JoinRequest) -> Result<JoinResponse, Refusal> {
    let ca = CaPair { cert_pem: state.credentials.ca_cert_pem.clone(), key_pem: state.credentials.ca_key_pem.clone() };
    let user = format!("system:node:{}", request.name);
    let mut certificates = BTreeMap::new();
    certificates.insert("node-client".into(), issue(&ca, &user, &["system:nodes"], &[], false, true)?);
    certificates.insert("kubelet".into(), issue(&ca, &user, &["system:nodes"], &request.hosts, true, false)?);
    tracing::info!(name = %request.name, "node joined");
    Ok(JoinResponse {
        ca_cert: state.credentials.ca_cert_pem.clone(),
        etcd_ca: None,
        certificates,
        initial_cluster: String::new(),
        member_id: String::new(),
    })
}

/// On the leader, promotes every master that joined as a learner once it has caught up
/// (the store refuses a promotion before), until `stop`.
pub async fn promote_joined(store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let status = store.status();
        if status.leader != Some(store.id()) {
            continue;
        }
        let prefix = PROMOTE_PREFIX.as_bytes().to_vec();
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let Ok((waiting, _)) = store.range(RangeRequest { key: prefix, range_end: end, ..Default::default() }).await
        else {
            continue;
        };
        for kv in waiting.kvs {
            let key = String::from_utf8_lossy(&kv.key).to_string();
            let Some(id) = key.strip_prefix(PROMOTE_PREFIX).and_then(|h| u64::from_str_radix(h, 16).ok()) else {
                continue;
            };
            let learner = store.members().into_iter().find(|m| m.id == id).map(|m| m.is_learner);
            let done = match learner {
                Some(true) => match store.promote(id).await {
                    Ok(()) => {
                        tracing::info!(id = format!("{id:x}"), "promoted a joined master to voter");
                        true
                    }
                    Err(e) => {
                        tracing::debug!(id = format!("{id:x}"), error = %e, "joined master not promoted yet");
                        false
                    }
                },
                // Promoted already, or removed: nothing left to do.
                Some(false) | None => true,
            };
            if done {
                let delete = DeleteRangeRequest { key: kv.key.clone(), ..Default::default() };
                let _ = store.write(Request::new(Command::DeleteRange(delete))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_and_malformed_ones_are_refused() {
        let token = JoinToken::generate(&"ab".repeat(32));
        let parsed = JoinToken::parse(&token.to_string()).expect("parse");
        assert_eq!(parsed, token);
        assert_eq!(parsed.credential(), format!("{}.{}", token.id, token.secret));
        for bad in
            ["", "K10abc::x.y", &token.to_string().replace("K10", "K11"), &format!("K10{}::abc.def", "a".repeat(64))]
        {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_admits_its_secret_for_its_roles_until_it_expires() {
        let token = JoinToken::generate(&"0".repeat(64));
        let record = TokenRecord::new(&token, vec![JoinRole::Node], Some(Duration::from_secs(60)), "", 1000);
        assert!(record.admits(&token.secret, JoinRole::Node, 1059).is_ok());
        let expired = record.admits(&token.secret, JoinRole::Node, 1060).expect_err("expired");
        assert!(expired.contains("has expired"), "{expired}");
        let wrong_role = record.admits(&token.secret, JoinRole::Master, 1000).expect_err("role");
        assert!(wrong_role.contains("not for a master"), "{wrong_role}");
        let wrong = record.admits("0123456789abcdef", JoinRole::Node, 1000).expect_err("secret");
        assert!(wrong.contains("wrong secret"), "{wrong}");
        assert!(!serde_json::to_string(&record).expect("json").contains(&token.secret), "the secret is not stored");
    }
}
