//! Object name rules, with the messages Kubernetes gives when a name breaks them (kubectl shows
//! them verbatim in `Invalid` errors).

const SUBDOMAIN_MAX: usize = 253;
const LABEL_MAX: usize = 63;

/// Checks a DNS-1123 subdomain (most object names: pods, configmaps, deployments...). Returns
/// Kubernetes' messages for every rule broken.
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > SUBDOMAIN_MAX {
        errors.push(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    let valid = !name.is_empty() && name.split('.').all(is_label);
    if !valid {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errors
}

/// Checks a DNS-1123 label (namespaces, services). Returns Kubernetes' messages for every rule
/// broken.
pub fn dns1123_label(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > LABEL_MAX {
        errors.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !is_label(name) {
        errors.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
             start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errors
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length rule.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum) && b.last().is_some_and(alnum) && b.iter().all(|c| alnum(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123_with_kubernetes_messages() {
        assert!(dns1123_subdomain("web-1.example").is_empty());
        assert!(dns1123_label("kube-system").is_empty());
        for bad in ["", "Web", "-web", "web-", "a..b", "under_score"] {
            assert!(!dns1123_subdomain(bad).is_empty(), "{bad:?}");
        }
        assert!(!dns1123_label("a.b").is_empty(), "labels have no dots");
        assert_eq!(dns1123_label(&"a".repeat(64)), vec!["must be no more than 63 characters".to_string()]);
        assert!(dns1123_subdomain("Bad")[0].starts_with("a lowercase RFC 1123 subdomain"));
    }
}
