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
