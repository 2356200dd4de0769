//! `v1` ConfigMap: key and size validation, immutability, the printer.
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::prelude::*;

/// How configmaps are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "configmaps",
};

/// The configmaps kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigMaps;

impl Kind for ConfigMaps {
    type Object = ConfigMap;
    const RESOURCE: &'static ResourceType = RES;

    fn validate(new: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
        validate_config_map(new, old)
    }

    fn columns() -> &'static [Column] {
        CONFIG_MAP_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        let count = len(&object["data"]) + len(&object["binaryData"]);
        vec![name(object), count.into(), age(object, now)]
    }
}

/// ConfigMap: data and binaryData keys valid and disjoint, size limit; when the stored one is
/// `immutable`, nothing may change.
pub fn validate_config_map(cm: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0;
    validate_data_keys(cm.data.iter().flatten(), "data", |v: &String| v.len(), &mut total, &mut errs);
    validate_data_keys(
        cm.binary_data.iter().flatten(),
        "binaryData",
        |v: &ByteString| v.0.len(),
        &mut total,
        &mut errs,
    );
    if let (Some(data), Some(binary)) = (&cm.data, &cm.binary_data) {
        for key in data.keys().filter(|k| binary.contains_key(*k)) {
            errs.push(FieldError::invalid(format!("data[{key}]"), key, "duplicate of key present in binaryData"));
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    if let Some(old) = old
        && old.immutable == Some(true)
    {
        if cm.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
        }
        if cm.data.clone().unwrap_or_default() != old.data.clone().unwrap_or_default() {
            errs.push(FieldError::forbidden("data", IMMUTABLE_WHEN_SET));
        }
        if cm.binary_data.clone().unwrap_or_default() != old.binary_data.clone().unwrap_or_default() {
            errs.push(FieldError::forbidden("binaryData", IMMUTABLE_WHEN_SET));
        }
    }
    errs
}

pub(crate) static CONFIG_MAP_COLUMNS: &[Column] =
    &[NAME, column("Data", "string", "Data contains the configuration data."), AGE];

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn config_map_keys_must_be_valid() {
            let cm = ConfigMap {
                metadata: meta("c"),
                data: labels(&[("good.key_1", "v"), ("bad key", "v"), ("..hidden", "v")]),
                ..ConfigMap::default()
            };
            let errs = messages(&validate_config_map(&cm, None));
            assert_eq!(errs.len(), 2, "{errs:?}");
            assert_eq!(errs[0], "data[..hidden]: Invalid value: \"..hidden\": must not start with '..'");
            assert_eq!(errs[1], format!("data[bad key]: Invalid value: \"bad key\": {CONFIG_KEY_MESSAGE}"));
        }

        #[test]
        fn an_immutable_config_map_cannot_change_its_data() {
            let old = ConfigMap {
                metadata: meta("c"),
                data: labels(&[("a", "1")]),
                immutable: Some(true),
                ..ConfigMap::default()
            };
            assert!(validate_config_map(&old, Some(&old)).is_empty());
            let new = ConfigMap { data: labels(&[("a", "2")]), ..old.clone() };
            assert_eq!(
                messages(&validate_config_map(&new, Some(&old))),
                ["data: Forbidden: field is immutable when `immutable` is set"]
            );
            let mutable = ConfigMap { immutable: Some(false), ..old.clone() };
            assert_eq!(
                messages(&validate_config_map(&mutable, Some(&old))),
                ["immutable: Forbidden: field is immutable when `immutable` is set"]
            );
        }
    }
}
