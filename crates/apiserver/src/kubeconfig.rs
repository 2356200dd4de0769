//! The admin kubeconfig: the cluster CA, the admin token and one cluster + context per master,
//! so `kubectl --context <master>` picks a master and the current context works on its own.

use base64::Engine;
use serde_json::json;

use crate::pki::ClusterCredentials;

/// A kubeconfig (YAML) for `servers` — `(name, https URL)` pairs, the first one current.
pub fn admin_kubeconfig(credentials: &ClusterCredentials, servers: &[(String, String)]) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(credentials.ca_cert_pem.as_bytes());
    render(&ca, &credentials.admin_token, servers)
}

/// Why a kubeconfig could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("not a kubeconfig: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("the kubeconfig has no {0}")]
    Missing(&'static str),
}

/// The same credentials as the admin kubeconfig `existing` (one master's
/// `admin.kubeconfig`), for the masters `servers`.
pub fn for_servers(existing: &str, servers: &[(String, String)]) -> Result<String, KubeconfigError> {
    let doc: serde_json::Value = serde_yaml_ng::from_str(existing)?;
    let ca = doc
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .ok_or(KubeconfigError::Missing("certificate-authority-data"))?;
    let token = doc
        .pointer("/users/0/user/token")
        .and_then(serde_json::Value::as_str)
        .ok_or(KubeconfigError::Missing("token"))?;
    Ok(render(ca, token, servers))
}

/// The CA certificates (PEM) a kubeconfig trusts: its first cluster's
/// `certificate-authority-data`, decoded.
pub fn ca_pem(existing: &str) -> Result<Vec<u8>, KubeconfigError> {
    let doc: serde_json::Value = serde_yaml_ng::from_str(existing)?;
    let ca = doc
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .ok_or(KubeconfigError::Missing("certificate-authority-data"))?;
    base64::engine::general_purpose::STANDARD
        .decode(ca)
        .map_err(|_| KubeconfigError::Missing("certificate-authority-data in base64"))
}

fn render(ca: &str, token: &str, servers: &[(String, String)]) -> String {
    let clusters: Vec<_> = servers
        .iter()
        .map(|(name, url)| json!({"name": name, "cluster": {"server": url, "certificate-authority-data": ca}}))
        .collect();
    let contexts: Vec<_> = servers
        .iter()
        .map(|(name, _)| json!({"name": name, "context": {"cluster": name, "user": "admin", "namespace": "default"}}))
        .collect();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "contexts": contexts,
        "current-context": servers.first().map(|(n, _)| n.as_str()).unwrap_or_default(),
        "users": [{"name": "admin", "user": {"token": token}}],
    });
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

/// A kubeconfig for `user` authenticating with a client certificate (a node's own identity),
/// for the cluster whose CA is `ca_pem` at `server`.
pub fn with_client_certificate(ca_pem: &str, server: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "cluster", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "contexts": [{"name": "default", "context": {"cluster": "cluster", "user": user}}],
        "current-context": "default",
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
    });
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_every_master_and_carries_the_token() {
        let creds = ClusterCredentials::generate().expect("credentials");
        let servers = vec![
            ("m1".to_string(), "https://127.0.0.1:6443".to_string()),
            ("m2".into(), "https://127.0.0.2:6443".into()),
        ];
        let text = admin_kubeconfig(&creds, &servers);
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        assert_eq!(doc["current-context"], "m1");
        assert_eq!(doc["clusters"][1]["cluster"]["server"], "https://127.0.0.2:6443");
        assert_eq!(doc["users"][0]["user"]["token"], creds.admin_token.as_str());
        let merged = for_servers(&text, &servers[1..]).expect("rewritten");
        let doc: serde_json::Value = serde_yaml_ng::from_str(&merged).expect("yaml");
        assert_eq!(doc["current-context"], "m2");
        assert_eq!(doc["users"][0]["user"]["token"], creds.admin_token.as_str());
        assert!(for_servers("a: 1", &servers).is_err());
        assert_eq!(ca_pem(&text).expect("the CA"), creds.ca_cert_pem.as_bytes());
        assert!(ca_pem("a: 1").is_err());
    }
}
