//! `v1` Secret: `stringData` folded into `data`, type-specific validation, the printer and the `type` field.
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use super::prelude::*;

/// How secrets are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "secrets",
};

/// The secrets kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Secrets;

impl Kind for Secrets {
    type Object = Secret;
    const RESOURCE: &'static ResourceType = RES;
    const FIELD_CONVERSION: bool = true;

    fn default(secret: &mut Secret) {
        default_secret(secret);
    }

    fn validate(new: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
        validate_secret(new, old)
    }

    fn columns() -> &'static [Column] {
        SECRET_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        secret_cells(object, now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        match field {
            "type" => Some(text(&object["type"])),
            _ => fields::meta(object, field),
        }
    }
}

/// Secret: `type` `Opaque`; `stringData` is merged into `data` (winning over it) and cleared,
/// as Kubernetes does when it decodes a secret.
pub fn default_secret(secret: &mut Secret) {
    set_if_empty(&mut secret.type_, "Opaque");
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

/// Secret: data keys valid, size limit, the keys its type requires; on update the type may
/// not change, and when the stored one is `immutable`, neither may the data.
pub fn validate_secret(secret: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0;
    let data = secret.data.clone().unwrap_or_default();
    validate_data_keys(data.iter(), "data", |v: &ByteString| v.0.len(), &mut total, &mut errs);
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let kind = secret.type_.as_deref().unwrap_or_default();
    match kind {
        "kubernetes.io/service-account-token" => {
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errs.push(FieldError::required("metadata.annotations[kubernetes.io/service-account.name]"));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if kind == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            match data.get(key) {
                None => errs.push(FieldError::required(format!("data[{key}]"))),
                Some(bytes) => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes.0) {
                        errs.push(FieldError::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            errs.push(FieldError::required("data[username]"));
            errs.push(FieldError::required("data[password]"));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(FieldError::required("data[ssh-privatekey]"));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    errs.push(FieldError::required(format!("data[{key}]")));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_kind = old.type_.as_deref().unwrap_or_default();
        if kind != old_kind {
            errs.push(FieldError::invalid("type", kind, FIELD_IMMUTABLE));
        }
        if old.immutable == Some(true) {
            if secret.immutable != Some(true) {
                errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
            }
            if data != old.data.clone().unwrap_or_default() {
                errs.push(FieldError::forbidden("data", IMMUTABLE_WHEN_SET));
            }
        }
    }
    errs
}

pub(crate) static SECRET_COLUMNS: &[Column] = &[
    NAME,
    column("Type", "string", "Used to facilitate programmatic handling of secret data."),
    column("Data", "string", "Data contains the secret data."),
    AGE,
];

pub(crate) fn secret_cells(secret: &Value, now: i128) -> Vec<Value> {
    // stringData is merged into data when a Secret is decoded.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(map) = secret[field].as_object() {
            keys.extend(map.keys().map(String::as_str));
        }
    }
    let data = i64::try_from(keys.len()).unwrap_or(i64::MAX);
    vec![name(secret), text(&secret["type"]).into(), data.into(), age(secret, now)]
}

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn secret_keys_must_be_valid_and_types_need_their_keys() {
            let mut secret = Secret {
                metadata: meta("s"),
                data: Some(BTreeMap::from([("bad/key".to_string(), ByteString(b"x".to_vec()))])),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            let errs = messages(&validate_secret(&secret, None));
            assert_eq!(errs, [format!("data[bad/key]: Invalid value: \"bad/key\": {CONFIG_KEY_MESSAGE}")]);
            secret.data = None;
            secret.type_ = Some("kubernetes.io/tls".into());
            assert_eq!(
                messages(&validate_secret(&secret, None)),
                ["data[tls.crt]: Required value", "data[tls.key]: Required value"]
            );
        }

        #[test]
        fn an_immutable_secret_cannot_change_its_data_or_any_secret_its_type() {
            let old = Secret {
                metadata: meta("s"),
                data: Some(BTreeMap::from([("a".to_string(), ByteString(b"1".to_vec()))])),
                type_: Some("Opaque".into()),
                immutable: Some(true),
                ..Secret::default()
            };
            let new = Secret {
                data: Some(BTreeMap::from([("a".to_string(), ByteString(b"2".to_vec()))])),
                type_: Some("example.com/custom".into()),
                ..old.clone()
            };
            assert_eq!(
                messages(&validate_secret(&new, Some(&old))),
                [
                    "type: Invalid value: \"example.com/custom\": field is immutable",
                    "data: Forbidden: field is immutable when `immutable` is set",
                ]
            );
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn secret_type_defaults_to_opaque_and_string_data_moves_to_data() {
            let mut secret = Secret {
                data: Some(BTreeMap::from([("a".to_string(), ByteString(b"old".to_vec()))])),
                string_data: Some(BTreeMap::from([("a".to_string(), "new".to_string())])),
                ..Secret::default()
            };
            default_secret(&mut secret);
            assert_eq!(secret.type_.as_deref(), Some("Opaque"));
            assert_eq!(secret.string_data, None);
            assert_eq!(secret.data.expect("data")["a"], ByteString(b"new".to_vec()));
        }
    }
}
