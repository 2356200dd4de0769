//! Kubernetes' validation rules the kinds share (object metadata, names, labels, pod specs and
//! templates, selectors, ports, quantities), with Kubernetes' field paths and messages (kubectl
//! prints them verbatim in `Invalid` errors). Each kind's own rules live in its module under
//! [`crate::kinds`]; its strategy runs them after defaulting, so fields Kubernetes defaults are
//! expected to be set. Values Kubernetes renders with Go's `%#v` (label maps, label selectors,
//! string lists) are rendered the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::field::{FieldError, Reason};
use crate::names::{dns1123_label, dns1123_subdomain};
use crate::quantity;

/// The most bytes (keys and values) all annotations of an object may hold.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// The most bytes the data of a Secret or ConfigMap may hold.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

pub(crate) const FIELD_IMMUTABLE: &str = "field is immutable";
pub(crate) const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
pub(crate) const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and \
     end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
     '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
pub(crate) const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
     '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
     '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
pub(crate) const CONFIG_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
     (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
pub(crate) const DNS1035_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start \
     with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex \
     used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const QUANTITY_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
pub(crate) const PORT_RANGE_MESSAGE: &str = "must be between 1 and 65535, inclusive";
pub(crate) const NON_NEGATIVE_MESSAGE: &str = "must be greater than or equal to 0";
pub(crate) const POD_UPDATABLE_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,\
     `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
     `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Which rule an object's name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label: a label starting with a letter (services).
    Dns1035Label,
}

impl NameRule {
    /// Kubernetes' messages for every rule `name` breaks.
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035Label => dns1035_label(name),
        }
    }
}

/// Checks a DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters).
pub fn dns1035_label(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    let b = name.as_bytes();
    let valid = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !valid {
        errors.push(DNS1035_MESSAGE.to_string());
    }
    errors
}

/// Object metadata: name present (or `generateName`) and following `rule`, namespace present
/// and a DNS-1123 label for namespaced kinds, labels and annotations.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if meta.generate_name.as_deref().is_none_or(str::is_empty) {
            errs.push(required_with(format!("{path}.name"), "name or generateName is required"));
        }
    } else {
        for msg in rule.check(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
        }
    }
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(format!("{path}.namespace")));
        } else {
            for msg in dns1123_label(namespace) {
                errs.push(FieldError::invalid(format!("{path}.namespace"), namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(format!("{path}.namespace"), "not allowed on this type"));
    }
    errs.extend(validate_labels(meta.labels.as_ref(), &format!("{path}.labels")));
    errs.extend(validate_annotations(meta.annotations.as_ref(), &format!("{path}.annotations")));
    errs
}

/// Metadata on update: name, namespace, uid and creation timestamp may not change (an unset
/// uid or timestamp in the new object counts as unchanged).
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    if text(&new.name) != text(&old.name) {
        errs.push(FieldError::invalid(format!("{path}.name"), text(&new.name), FIELD_IMMUTABLE));
    }
    if text(&new.namespace) != text(&old.namespace) {
        errs.push(FieldError::invalid(format!("{path}.namespace"), text(&new.namespace), FIELD_IMMUTABLE));
    }
    if !text(&new.uid).is_empty() && text(&new.uid) != text(&old.uid) {
        errs.push(FieldError::invalid(format!("{path}.uid"), text(&new.uid), FIELD_IMMUTABLE));
    }
    if let (Some(new_ts), Some(old_ts)) = (&new.creation_timestamp, &old.creation_timestamp)
        && new_ts != old_ts
    {
        errs.push(FieldError::invalid(format!("{path}.creationTimestamp"), new_ts, FIELD_IMMUTABLE));
    }
    errs
}

/// Label keys are qualified names, values valid label values; errors are reported at `path`
/// (`metadata.labels`) with the offending key or value, as Kubernetes does.
pub fn validate_labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        for msg in qualified_name(key) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        for msg in label_value(value) {
            errs.push(FieldError::invalid(path, value, msg));
        }
    }
    errs
}

/// Annotation keys are qualified names (case-insensitive); all annotations together hold at
/// most [`TOTAL_ANNOTATION_SIZE_LIMIT`] bytes.
pub fn validate_annotations(annotations: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Kubernetes' `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MESSAGE}"));
    }
    errs
}

/// Kubernetes' `IsValidLabelValue`: empty, or at most 63 characters of the qualified-name
/// charset.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(LABEL_VALUE_MESSAGE.to_string());
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub(crate) fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Kubernetes' `IsConfigMapKey`: at most 253 characters of `[-._a-zA-Z0-9]`, not `.` or `..`
/// and not starting with `..`.
pub fn config_map_key(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')) {
        errs.push(CONFIG_KEY_MESSAGE.to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Kubernetes' `IsValidPortNum`.
pub(crate) fn port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) { Vec::new() } else { vec![PORT_RANGE_MESSAGE.to_string()] }
}

/// Kubernetes' `IsValidPortName` (IANA service names).
pub fn port_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// A port given as a number (1-65535) or an IANA name.
pub(crate) fn validate_port_num_or_name(port: &IntOrString, path: &str, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => {
            for msg in port_num(i64::from(*n)) {
                errs.push(FieldError::invalid(path, n, msg));
            }
        }
        IntOrString::String(s) => {
            for msg in port_name(s) {
                errs.push(FieldError::invalid(path, s, msg));
            }
        }
    }
}

/// `Required value: <detail>`.
pub(crate) fn required_with(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError { reason: Reason::FieldValueRequired, field: field.into(), message: format!("Required value: {detail}") }
}

/// `Invalid value: <rendered>: <detail>`, the value already rendered (Go's `%#v`).
pub(crate) fn invalid_rendered(field: impl Into<String>, rendered: String, detail: &str) -> FieldError {
    FieldError {
        reason: Reason::FieldValueInvalid,
        field: field.into(),
        message: format!("Invalid value: {rendered}: {detail}"),
    }
}

/// A string as Go's `%q`/`%#v` shows it.
pub(crate) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A label map as Go's `%#v` shows it: `map[string]string{"app":"web"}`.
pub fn go_string_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".to_string(),
        Some(map) => {
            let entries: Vec<String> = map.iter().map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v))).collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
    }
}

/// A string list as Go's `%#v` shows it: `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(items: Option<&[String]>) -> String {
    match items {
        None => "[]string(nil)".to_string(),
        Some(items) => format!("[]string{{{}}}", items.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(", ")),
    }
}

/// A label selector as Go's `%#v` shows it (`v1.LabelSelector{MatchLabels:..., MatchExpressions:...}`).
pub fn go_label_selector(selector: &LabelSelector) -> String {
    let expressions = match &selector.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|r| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(&r.key),
                        go_quote(&r.operator),
                        go_string_slice(r.values.as_deref())
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_string_map(selector.match_labels.as_ref())
    )
}

/// `field` is a non-negative number.
pub(crate) fn non_negative(value: Option<impl Into<i64> + Copy + Serialize>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = value
        && v.into() < 0
    {
        errs.push(FieldError::invalid(field, v, NON_NEGATIVE_MESSAGE));
    }
}

/// `field` is set and one of `supported`.
pub(crate) fn one_of(value: Option<&str>, field: &str, supported: &[&str], errs: &mut Vec<FieldError>) {
    match value {
        None | Some("") => errs.push(FieldError::required(field)),
        Some(v) if supported.contains(&v) => {}
        Some(v) => errs.push(FieldError::not_supported(field, v, supported)),
    }
}

/// `field`, when set, is one of `supported`.
pub(crate) fn optional_one_of(value: Option<&str>, field: &str, supported: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| !v.is_empty())
        && !supported.contains(&v)
    {
        errs.push(FieldError::not_supported(field, v, supported));
    }
}

/// A pod spec at `path` (`spec`, `spec.template.spec`): volumes, containers (at least one;
/// names DNS-1123 labels and unique; image; ports; resources; probes), restart and DNS
/// policy, deadlines, node selector, service account, hostname, tolerations.
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut volume_names = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        validate_volume(volume, &format!("{path}.volumes[{i}]"), &mut volume_names, &mut errs);
    }
    let mut names = BTreeSet::new();
    let init = spec.init_containers.as_deref().unwrap_or_default();
    validate_containers(init, &format!("{path}.initContainers"), &mut names, &mut errs);
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers")));
    } else {
        validate_containers(&spec.containers, &format!("{path}.containers"), &mut names, &mut errs);
    }
    one_of(
        spec.restart_policy.as_deref(),
        &format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        &mut errs,
    );
    one_of(
        spec.dns_policy.as_deref(),
        &format!("{path}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        &mut errs,
    );
    if let Some(deadline) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            deadline,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    errs.extend(validate_labels(spec.node_selector.as_ref(), &format!("{path}.nodeSelector")));
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        for msg in dns1123_subdomain(sa) {
            errs.push(FieldError::invalid(format!("{path}.serviceAccountName"), sa, msg));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value.as_deref().filter(|s| !s.is_empty()) {
            for msg in dns1123_label(value) {
                errs.push(FieldError::invalid(format!("{path}.{field}"), value, msg));
            }
        }
    }
    for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
        validate_toleration(toleration, &format!("{path}.tolerations[{i}]"), &mut errs);
    }
    errs
}

/// A volume: name required, a DNS-1123 label, unique.
pub(crate) fn validate_volume<'a>(
    volume: &'a Volume,
    path: &str,
    names: &mut BTreeSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    if volume.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
        return;
    }
    for msg in dns1123_label(&volume.name) {
        errs.push(FieldError::invalid(format!("{path}.name"), &volume.name, msg));
    }
    if !names.insert(&volume.name) {
        errs.push(FieldError::duplicate(format!("{path}.name"), &volume.name));
    }
}

/// Containers at `path`; `names` collects names across init and regular containers.
pub(crate) fn validate_containers<'a>(
    containers: &'a [Container],
    path: &str,
    names: &mut BTreeSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    for (i, c) in containers.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name")));
        } else {
            for msg in dns1123_label(&c.name) {
                errs.push(FieldError::invalid(format!("{p}.name"), &c.name, msg));
            }
            if !names.insert(&c.name) {
                errs.push(FieldError::duplicate(format!("{p}.name"), &c.name));
            }
        }
        match c.image.as_deref() {
            None | Some("") => errs.push(FieldError::required(format!("{p}.image"))),
            Some(image) if image.trim() != image => errs.push(FieldError::invalid(
                format!("{p}.image"),
                image,
                "must not have leading or trailing whitespace",
            )),
            Some(_) => {}
        }
        one_of(
            c.image_pull_policy.as_deref(),
            &format!("{p}.imagePullPolicy"),
            &["Always", "IfNotPresent", "Never"],
            errs,
        );
        match c.termination_message_policy.as_deref() {
            Some("File" | "FallbackToLogsOnError") => {}
            None | Some("") => errs.push(required_with(
                format!("{p}.terminationMessagePolicy"),
                "must be 'File' or 'FallbackToLogsOnError'",
            )),
            Some(other) => errs.push(FieldError::invalid(
                format!("{p}.terminationMessagePolicy"),
                other,
                "must be 'File' or 'FallbackToLogsOnError'",
            )),
        }
        validate_container_ports(c.ports.as_deref().unwrap_or_default(), &format!("{p}.ports"), errs);
        for (j, env) in c.env.iter().flatten().enumerate() {
            if env.name.is_empty() {
                errs.push(FieldError::required(format!("{p}.env[{j}].name")));
            } else if !env.name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
                errs.push(FieldError::invalid(
                    format!("{p}.env[{j}].name"),
                    &env.name,
                    "a valid environment variable name must consist only of printable ASCII characters other \
                     than '='",
                ));
            }
        }
        for (j, mount) in c.volume_mounts.iter().flatten().enumerate() {
            if mount.name.is_empty() {
                errs.push(FieldError::required(format!("{p}.volumeMounts[{j}].name")));
            }
            if mount.mount_path.is_empty() {
                errs.push(FieldError::required(format!("{p}.volumeMounts[{j}].mountPath")));
            }
        }
        if let Some(resources) = &c.resources {
            validate_resources(resources, &format!("{p}.resources"), errs);
        }
        let probes = [
            ("livenessProbe", &c.liveness_probe, true),
            ("readinessProbe", &c.readiness_probe, false),
            ("startupProbe", &c.startup_probe, true),
        ];
        for (field, probe, once) in probes {
            if let Some(probe) = probe {
                validate_probe(probe, &format!("{p}.{field}"), once, errs);
            }
        }
    }
}

/// A container's ports: names valid and unique, containerPort required and in range,
/// hostPort in range, protocol one of SCTP/TCP/UDP.
pub(crate) fn validate_container_ports(ports: &[ContainerPort], path: &str, errs: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name(name);
            if msgs.is_empty() && !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{p}.name"), name));
            }
            for msg in msgs {
                errs.push(FieldError::invalid(format!("{p}.name"), name, msg));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(format!("{p}.containerPort")));
        } else {
            for msg in port_num(i64::from(port.container_port)) {
                errs.push(FieldError::invalid(format!("{p}.containerPort"), port.container_port, msg));
            }
        }
        if let Some(host_port) = port.host_port.filter(|h| *h != 0) {
            for msg in port_num(i64::from(host_port)) {
                errs.push(FieldError::invalid(format!("{p}.hostPort"), host_port, msg));
            }
        }
        one_of(port.protocol.as_deref(), &format!("{p}.protocol"), &["SCTP", "TCP", "UDP"], errs);
    }
}

/// Requests and limits: valid, non-negative quantities, and no request above its limit.
pub(crate) fn validate_resources(resources: &ResourceRequirements, path: &str, errs: &mut Vec<FieldError>) {
    fn parse_all<'a>(
        list: Option<&'a BTreeMap<String, Quantity>>,
        path: &str,
        errs: &mut Vec<FieldError>,
    ) -> BTreeMap<&'a str, (i128, &'a str)> {
        let mut parsed = BTreeMap::new();
        for (name, given) in list.into_iter().flatten() {
            match quantity::parse(&given.0) {
                None => errs.push(FieldError::invalid(format!("{path}[{name}]"), &given.0, QUANTITY_MESSAGE)),
                Some(v) if v < 0 => {
                    errs.push(FieldError::invalid(format!("{path}[{name}]"), &given.0, NON_NEGATIVE_MESSAGE))
                }
                Some(v) => {
                    parsed.insert(name.as_str(), (v, given.0.as_str()));
                }
            }
        }
        parsed
    }
    let limits = parse_all(resources.limits.as_ref(), &format!("{path}.limits"), errs);
    let requests = parse_all(resources.requests.as_ref(), &format!("{path}.requests"), errs);
    for (name, (request, shown)) in &requests {
        if let Some((limit, limit_shown)) = limits.get(name)
            && request > limit
        {
            errs.push(FieldError::invalid(
                format!("{path}.requests"),
                shown,
                format!("must be less than or equal to {name} limit of {limit_shown}"),
            ));
        }
    }
}

/// A probe: exactly one handler, non-negative numbers, success threshold 1 for liveness and
/// startup probes, HTTP GET and TCP ports valid.
pub(crate) fn validate_probe(probe: &Probe, path: &str, succeed_once: bool, errs: &mut Vec<FieldError>) {
    let handlers = [
        ("exec", probe.exec.is_some()),
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("grpc", probe.grpc.is_some()),
    ];
    let mut set = handlers.iter().filter(|(_, on)| *on).map(|(name, _)| *name);
    if set.next().is_none() {
        errs.push(required_with(path, "must specify a handler type"));
    }
    for extra in set {
        errs.push(FieldError::forbidden(format!("{path}.{extra}"), "may not specify more than 1 handler type"));
    }
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(value, &format!("{path}.{field}"), errs);
    }
    if succeed_once && let Some(threshold) = probe.success_threshold.filter(|t| *t != 1) {
        errs.push(FieldError::invalid(format!("{path}.successThreshold"), threshold, "must be 1"));
    }
    if let Some(http) = &probe.http_get {
        validate_port_num_or_name(&http.port, &format!("{path}.httpGet.port"), errs);
        optional_one_of(http.scheme.as_deref(), &format!("{path}.httpGet.scheme"), &["HTTP", "HTTPS"], errs);
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_port_num_or_name(&tcp.port, &format!("{path}.tcpSocket.port"), errs);
    }
}

/// A toleration: operator Equal/Exists (Exists when the key is empty, no value with Exists),
/// key a label name, value a label value, effect a taint effect.
pub(crate) fn validate_toleration(t: &Toleration, path: &str, errs: &mut Vec<FieldError>) {
    let key = t.key.as_deref().unwrap_or_default();
    let operator = t.operator.as_deref().unwrap_or_default();
    let value = t.value.as_deref().unwrap_or_default();
    if !key.is_empty() {
        for msg in qualified_name(key) {
            errs.push(FieldError::invalid(format!("{path}.key"), key, msg));
        }
    } else if operator != "Exists" {
        errs.push(FieldError::invalid(
            format!("{path}.operator"),
            operator,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    match operator {
        "" | "Equal" => {
            let msgs = label_value(value);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(format!("{path}.value"), value, msgs.join(";")));
            }
        }
        "Exists" if !value.is_empty() => errs.push(FieldError::invalid(
            format!("{path}.operator"),
            t,
            "value must be empty when `operator` is 'Exists'",
        )),
        "Exists" => {}
        other => errs.push(FieldError::not_supported(format!("{path}.operator"), other, &["Equal", "Exists"])),
    }
    optional_one_of(
        t.effect.as_deref(),
        &format!("{path}.effect"),
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        errs,
    );
}

/// What a pod update may change: container and init container images, a lowered or added
/// `activeDeadlineSeconds`, added tolerations, and `terminationGracePeriodSeconds` from a
/// negative value to 1. Anything else is `spec: Forbidden: pod updates may not change fields
/// other than ...`, followed by the fields that changed.
pub fn validate_pod_spec_update(new: &PodSpec, old: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let deadline_path = format!("{path}.activeDeadlineSeconds");
    match (new.active_deadline_seconds, old.active_deadline_seconds) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldError::invalid(deadline_path, n, "must be between 0 and 2147483647, inclusive"));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(deadline_path, n, "must be less than or equal to previous value"));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            deadline_path,
            None::<i64>,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let new_tolerations = new.tolerations.as_deref().unwrap_or_default();
    for old_toleration in old.tolerations.iter().flatten() {
        let kept = new_tolerations.iter().any(|n| {
            let mut o = old_toleration.clone();
            o.toleration_seconds = n.toleration_seconds;
            o == *n
        });
        if !kept {
            errs.push(FieldError::forbidden(
                format!("{path}.tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    let mut munged = new.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old.containers) {
        c.image.clone_from(&o.image);
    }
    if let (Some(new_init), Some(old_init)) = (munged.init_containers.as_mut(), old.init_containers.as_ref()) {
        for (c, o) in new_init.iter_mut().zip(old_init) {
            c.image.clone_from(&o.image);
        }
    }
    munged.active_deadline_seconds = old.active_deadline_seconds;
    munged.tolerations.clone_from(&old.tolerations);
    if old.termination_grace_period_seconds.is_some_and(|t| t < 0) && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old.termination_grace_period_seconds;
    }
    if munged != *old {
        let mut diff = Vec::new();
        let (old_json, new_json) = (serde_json::to_value(old), serde_json::to_value(&munged));
        if let (Ok(old_json), Ok(new_json)) = (old_json, new_json) {
            json_diff(&old_json, &new_json, &mut path.to_string(), &mut diff);
        }
        errs.push(FieldError::forbidden(
            path,
            format!("pod updates may not change fields other than {POD_UPDATABLE_FIELDS}\n{}", diff.join("\n")),
        ));
    }
    errs
}

/// Lines `- path: old` / `+ path: new` for each differing leaf (at most 20 lines).
pub(crate) fn json_diff(old: &serde_json::Value, new: &serde_json::Value, path: &mut String, out: &mut Vec<String>) {
    use serde_json::Value;
    if out.len() >= 20 || old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let len = path.len();
                let _ = write!(path, ".{key}");
                json_diff(a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), path, out);
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                json_diff(x, y, path, out);
                path.truncate(len);
            }
        }
        _ => {
            if !old.is_null() {
                out.push(format!("- {path}: {old}"));
            }
            if !new.is_null() {
                out.push(format!("+ {path}: {new}"));
            }
        }
    }
}

/// Whether `labels` satisfy `selector` (match labels and expressions). An expression with an
/// unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A label selector: expressions with a valid operator and the values it needs, keys label
/// names, match labels valid labels.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, r) in selector.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
        match r.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                errs.push(required_with(format!("{p}.values"), "must be specified when `operator` is 'In' or 'NotIn'"))
            }
            "Exists" | "DoesNotExist" if has_values => errs.push(FieldError::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::invalid(format!("{p}.operator"), other, "not a valid selector operator")),
        }
        for msg in qualified_name(&r.key) {
            errs.push(FieldError::invalid(format!("{p}.key"), &r.key, msg));
        }
    }
    errs.extend(validate_labels(selector.match_labels.as_ref(), &format!("{path}.matchLabels")));
    errs
}

/// The selector of a deployment or replica set: required, valid, not empty.
pub(crate) fn validate_workload_selector(selector: &LabelSelector, path: &str, errs: &mut Vec<FieldError>) {
    if selector.match_labels.is_none() && selector.match_expressions.is_none() {
        errs.push(FieldError::required(path));
        return;
    }
    errs.extend(validate_label_selector(selector, path));
    let count = selector.match_labels.as_ref().map_or(0, BTreeMap::len)
        + selector.match_expressions.as_ref().map_or(0, Vec::len);
    if count == 0 {
        errs.push(invalid_rendered(path, go_label_selector(selector), "empty selector is invalid for deployment"));
    }
}

/// The pod template of a deployment or replica set: labels matched by the selector, valid
/// metadata and pod spec, `restartPolicy` `Always`, no `activeDeadlineSeconds`.
pub(crate) fn validate_workload_template(
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let meta = template.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.as_ref());
    let unset = selector.match_labels.is_none() && selector.match_expressions.is_none();
    let empty = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if unset || (!empty && !selector_matches(selector, labels)) {
        errs.push(invalid_rendered(
            format!("{path}.metadata.labels"),
            go_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validate_labels(labels, &format!("{path}.metadata.labels")));
    errs.extend(validate_annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        &format!("{path}.metadata.annotations"),
    ));
    let empty_spec = PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&empty_spec);
    errs.extend(validate_pod_spec(spec, &format!("{path}.spec")));
    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| *p != "Always") {
        errs.push(FieldError::not_supported(format!("{path}.spec.restartPolicy"), policy, &["Always"]));
    }
    if spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.spec.activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

/// `spec.selector` may not change (apps/v1).
pub(crate) fn selector_immutable(new: &LabelSelector, old: &LabelSelector, errs: &mut Vec<FieldError>) {
    let normal = |s: &LabelSelector| {
        (s.match_labels.clone().unwrap_or_default(), s.match_expressions.clone().unwrap_or_default())
    };
    if normal(new) != normal(old) {
        errs.push(invalid_rendered("spec.selector", go_label_selector(new), FIELD_IMMUTABLE));
    }
}

/// A non-negative integer or a `[0-9]+%` percentage.
pub(crate) fn validate_int_or_percent(value: &IntOrString, path: &str, errs: &mut Vec<FieldError>) {
    match value {
        IntOrString::Int(n) => non_negative(Some(*n), path, errs),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or_default();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                errs.push(FieldError::invalid(
                    path,
                    value,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or \
                     '93%', regex used for validation is '[0-9]+%')",
                ));
            }
        }
    }
}

/// The number an int-or-percent holds (0 when it does not parse).
pub(crate) fn int_or_percent_value(value: &IntOrString) -> i64 {
    match value {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => s.strip_suffix('%').unwrap_or(s).parse().unwrap_or(0),
    }
}

/// Keys of a data map are config keys (`data[key]`), and the total stays under
/// [`MAX_DATA_SIZE`].
pub(crate) fn validate_data_keys<'a, V: 'a>(
    data: impl Iterator<Item = (&'a String, V)>,
    path: &str,
    size: impl Fn(V) -> usize,
    total: &mut usize,
    errs: &mut Vec<FieldError>,
) {
    for (key, value) in data {
        for msg in config_map_key(key) {
            errs.push(FieldError::invalid(format!("{path}[{key}]"), key, msg));
        }
        *total += size(value);
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::validation::*;

    #[test]
    fn metadata_name_is_required_unless_generate_name_is_set() {
        let errs = validate_object_meta(&ObjectMeta::default(), false, NameRule::Subdomain, "metadata");
        assert_eq!(messages(&errs), ["metadata.name: Required value: name or generateName is required"]);
        let generated = ObjectMeta { generate_name: Some("web-".into()), ..ObjectMeta::default() };
        assert!(validate_object_meta(&generated, false, NameRule::Subdomain, "metadata").is_empty());
    }

    #[test]
    fn metadata_name_must_be_a_dns_subdomain() {
        let errs = validate_object_meta(&meta("Web_1"), true, NameRule::Subdomain, "metadata");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().starts_with("metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain")
        );
        assert!(validate_object_meta(&meta("web.v1"), true, NameRule::Subdomain, "metadata").is_empty());
    }

    #[test]
    fn namespaced_objects_need_a_namespace() {
        let mut m = meta("x");
        m.namespace = None;
        let errs = validate_object_meta(&m, true, NameRule::Subdomain, "metadata");
        assert_eq!(messages(&errs), ["metadata.namespace: Required value"]);
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_rules() {
        let good = labels(&[("app.kubernetes.io/name", "web"), ("tier", ""), ("a_b.c-d", "X.y_z-1")]);
        assert!(validate_labels(good.as_ref(), "metadata.labels").is_empty());

        let errs = validate_labels(labels(&[("-bad", "ok")]).as_ref(), "metadata.labels");
        assert_eq!(
            messages(&errs),
            [format!("metadata.labels: Invalid value: \"-bad\": name part {QUALIFIED_NAME_MESSAGE}")]
        );
        let errs = validate_labels(labels(&[("Bad.Prefix/x", "ok")]).as_ref(), "metadata.labels");
        assert!(errs[0].message.contains("prefix part a lowercase RFC 1123 subdomain"), "{}", errs[0]);
        let errs = validate_labels(labels(&[("a/b/c", "ok")]).as_ref(), "metadata.labels");
        assert!(errs[0].message.contains("a qualified name must consist of"), "{}", errs[0]);
        let long = "a".repeat(64);
        let errs = validate_labels(labels(&[(long.as_str(), "ok")]).as_ref(), "metadata.labels");
        assert!(errs[0].message.ends_with("name part must be no more than 63 characters"), "{}", errs[0]);

        let errs = validate_labels(labels(&[("app", "has space")]).as_ref(), "metadata.labels");
        assert_eq!(messages(&errs), [format!("metadata.labels: Invalid value: \"has space\": {LABEL_VALUE_MESSAGE}")]);
        let errs = validate_labels(labels(&[("app", long.as_str())]).as_ref(), "metadata.labels");
        assert!(errs[0].message.ends_with("must be no more than 63 characters"), "{}", errs[0]);
    }

    #[test]
    fn annotations_may_not_exceed_256_kib_in_total() {
        let big = labels(&[("note", &"x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT))]);
        let errs = validate_annotations(big.as_ref(), "metadata.annotations");
        assert_eq!(messages(&errs), ["metadata.annotations: Too long: may not be more than 262144 bytes"]);
        let ok = labels(&[("Example.com/Note", "any value at all, spaces too")]);
        assert!(validate_annotations(ok.as_ref(), "metadata.annotations").is_empty());
    }

    #[test]
    fn metadata_name_namespace_uid_and_creation_timestamp_are_immutable() {
        let old = ObjectMeta { uid: Some("u1".into()), ..meta("x") };
        let new = ObjectMeta { uid: Some("u2".into()), namespace: Some("other".into()), ..meta("y") };
        assert_eq!(
            messages(&validate_object_meta_update(&new, &old, "metadata")),
            [
                "metadata.name: Invalid value: \"y\": field is immutable",
                "metadata.namespace: Invalid value: \"other\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ]
        );
        let ts = |s: &str| Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().expect("timestamp")));
        let old = ObjectMeta { creation_timestamp: ts("2024-01-01T00:00:00Z"), ..meta("x") };
        let new = ObjectMeta { creation_timestamp: ts("2025-01-01T00:00:00Z"), ..meta("x") };
        assert_eq!(
            messages(&validate_object_meta_update(&new, &old, "metadata")),
            ["metadata.creationTimestamp: Invalid value: \"2025-01-01T00:00:00Z\": field is immutable"]
        );
    }

    #[test]
    fn selector_expressions_are_checked_and_matched() {
        let mut d = deployment(&[], &[("app", "web")]);
        if let Some(spec) = d.spec.as_mut() {
            spec.selector = LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![
                    LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "In".into(),
                        values: Some(vec!["web".into()]),
                    },
                    LabelSelectorRequirement { key: "tier".into(), operator: "DoesNotExist".into(), values: None },
                ]),
            };
        }
        assert!(validate_deployment(&d, None).is_empty());
        if let Some(spec) = d.spec.as_mut() {
            spec.selector.match_expressions =
                Some(vec![LabelSelectorRequirement { key: "app".into(), operator: "In".into(), values: None }]);
        }
        let errs = validate_deployment(&d, None);
        assert_eq!(
            errs[0].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
    }

    #[test]
    fn go_renderings_match_fmt_sharp_v() {
        assert_eq!(go_string_map(None), "map[string]string(nil)");
        assert_eq!(
            go_string_map(labels(&[("a", "b"), ("c", "d")]).as_ref()),
            "map[string]string{\"a\":\"b\", \"c\":\"d\"}"
        );
        let selector = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into()]),
            }]),
        };
        assert_eq!(
            go_label_selector(&selector),
            "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{\
             v1.LabelSelectorRequirement{Key:\"tier\", Operator:\"In\", Values:[]string{\"fe\"}}}}"
        );
    }
}
