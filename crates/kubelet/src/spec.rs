//! From a pod's spec to what a runtime is told to start: the environment (values, field refs,
//! config maps and secrets, the downward-API values every container gets), limits and mounts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::Client;
use trireme_model::quantity;

use crate::runtime::ContainerSpec;
use crate::runtime::Limits;
use crate::runtime::Mount;

/// Where Kubernetes mounts the service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The values a container's environment may refer to.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub pod_ip: IpAddr,
    pub node_ip: IpAddr,
    pub node_name: &'a str,
    /// The directory holding `token`, `ca.crt` and `namespace`, when the pod mounts a token.
    pub service_account_dir: Option<&'a Path>,
}

/// Why a container's configuration could not be built (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Builds the runtime's view of `container` (attempt `attempt`).
pub async fn container_spec(
    client: &Client,
    ctx: &PodContext<'_>,
    container: &Container,
    attempt: u32,
) -> Result<ContainerSpec, ConfigError> {
    let namespace = ctx.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut env = BTreeMap::new();
    // Trireme hands every container its downward-API basics, with or without env entries.
    env.insert("POD_NAME".to_string(), ctx.pod.metadata.name.clone().unwrap_or_default());
    env.insert("POD_NAMESPACE".to_string(), namespace.clone());
    env.insert("POD_IP".to_string(), ctx.pod_ip.to_string());
    env.insert("NODE_NAME".to_string(), ctx.node_name.to_string());
    env.insert("HOSTNAME".to_string(), ctx.pod.metadata.name.clone().unwrap_or_default());
    if let Some(dir) = ctx.service_account_dir {
        let token_file = dir.join("token");
        env.insert("TRIREME_SERVICE_ACCOUNT_DIR".to_string(), dir.display().to_string());
        if let Ok(token) = std::fs::read_to_string(&token_file) {
            env.insert("TRIREME_SERVICE_ACCOUNT_TOKEN".to_string(), token.trim().to_string());
        }
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &namespace, &r.name).await {
                Ok(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
                Err(e) if r.optional == Some(true) => tracing::debug!(error = %e, "optional configmap missing"),
                Err(e) => return Err(e),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &namespace, &r.name).await {
                Ok(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                Err(e) if r.optional == Some(true) => tracing::debug!(error = %e, "optional secret missing"),
                Err(e) => return Err(e),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            expand(v, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_value(ctx, &f.field_path)?
            } else if let Some(r) = &from.config_map_key_ref {
                match config_map(client, &namespace, &r.name).await {
                    Ok(cm) => match cm.data.unwrap_or_default().remove(&r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    Err(_) if r.optional == Some(true) => continue,
                    Err(e) => return Err(e),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match secret(client, &namespace, &r.name).await {
                    Ok(s) => match s.data.unwrap_or_default().remove(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    Err(_) if r.optional == Some(true) => continue,
                    Err(e) => return Err(e),
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(container, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), value);
    }
    let mut mounts = Vec::new();
    if let Some(dir) = ctx.service_account_dir {
        mounts.push(Mount {
            host_path: dir.to_path_buf(),
            container_path: SERVICE_ACCOUNT_MOUNT.into(),
            read_only: true,
        });
    }
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    Ok(ContainerSpec {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        command: container.command.clone().unwrap_or_default().iter().map(|c| expand(c, &env)).collect(),
        args: container.args.clone().unwrap_or_default().iter().map(|a| expand(a, &env)).collect(),
        env,
        working_dir: container.working_dir.clone(),
        limits: Limits {
            cpu_millis: limits.and_then(|l| l.get("cpu")).and_then(|q| cpu_millis(&q.0)),
            memory_bytes: limits.and_then(|l| l.get("memory")).and_then(|q| bytes(&q.0)),
        },
        mounts,
        attempt,
    })
}

async fn config_map(client: &Client, namespace: &str, name: &str) -> Result<ConfigMap, ConfigError> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| ConfigError(format!("configmap \"{name}\" not found: {e}")))
}

async fn secret(client: &Client, namespace: &str, name: &str) -> Result<Secret, ConfigError> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| ConfigError(format!("secret \"{name}\" not found: {e}")))
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them; `$$` escapes.
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_value(ctx: &PodContext<'_>, path: &str) -> Result<String, ConfigError> {
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => ctx.node_name.to_string(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.node_ip.to_string(),
        other => {
            let map_key =
                |prefix: &str| other.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(|k| k.to_string());
            if let Some(key) = map_key("metadata.labels['") {
                meta.labels.as_ref().and_then(|l| l.get(&key).cloned()).unwrap_or_default()
            } else if let Some(key) = map_key("metadata.annotations['") {
                meta.annotations.as_ref().and_then(|l| l.get(&key).cloned()).unwrap_or_default()
            } else {
                return Err(ConfigError(format!("unsupported fieldPath {other:?}")));
            }
        }
    };
    Ok(value)
}

fn resource_value(container: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = container
        .resources
        .as_ref()
        .and_then(|r| if kind == "requests" { r.requests.as_ref() } else { r.limits.as_ref() });
    match (name, map.and_then(|m| m.get(name))) {
        ("cpu", Some(q)) => cpu_millis(&q.0).map(|m| m.div_ceil(1000).to_string()).unwrap_or_default(),
        ("memory", Some(q)) => bytes(&q.0).map(|b| b.to_string()).unwrap_or_default(),
        (_, Some(q)) => q.0.clone(),
        _ => "0".into(),
    }
}

/// CPU in millicores, rounded up as Kubernetes does ("500m" → 500, "2" → 2000, "1u" → 1);
/// `None` when it is not a quantity or is negative.
pub fn cpu_millis(q: &str) -> Option<u64> {
    quantity::milli_value(q).and_then(|millis| u64::try_from(millis).ok())
}

/// Bytes, rounded up as Kubernetes does ("128Mi" → 134217728, "1G" → 10^9); `None` when it is
/// not a quantity or is negative.
pub fn bytes(q: &str) -> Option<u64> {
    quantity::value(q).and_then(|bytes| u64::try_from(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_references_expand_like_kubernetes() {
        let env: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(bytes("64Mi"), Some(64 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1000"), Some(1000));
        assert_eq!(cpu_millis("0.3"), Some(300), "exact, not 0.3 × 1000 in floating point");
        assert_eq!(cpu_millis("1u"), Some(1));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("1e3k"), None, "one suffix only");
        assert_eq!(bytes("-1"), None);
    }
}
