//! Where Kubernetes objects live in the store: `/registry/<resource>/<namespace>/<name>` for
//! namespaced resources, `/registry/<resource>/<name>` for cluster-scoped ones, so that
//! `etcdctl get --prefix /registry/pods` lists pods.

/// Root of every object key.
pub const ROOT: &str = "/registry/";

/// The key of one object.
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ROOT}{resource}/{ns}/{name}"),
        None => format!("{ROOT}{resource}/{name}"),
    }
}

/// The key prefix of a list: every object of `resource`, or of one namespace.
pub fn list_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{ROOT}{resource}/{ns}/"),
        None => format!("{ROOT}{resource}/"),
    }
}

/// The exclusive end of the range of keys starting with `prefix` (etcd's `--prefix`): the prefix
/// with its last byte incremented, dropping trailing 0xFF bytes; `[0]` (every key from `prefix`
/// on) if the prefix is all 0xFF.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_kubernetes_layout() {
        assert_eq!(object_key("pods", Some("default"), "web-1"), "/registry/pods/default/web-1");
        assert_eq!(object_key("nodes", None, "n1"), "/registry/nodes/n1");
        assert_eq!(list_prefix("pods", Some("kube-system")), "/registry/pods/kube-system/");
        assert_eq!(list_prefix("pods", None), "/registry/pods/");
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
