//! The columns `kubectl get` prints: Kubernetes' server-side printers
//! (`pkg/printers/internalversion`) redone over JSON objects.
//!
//! [`columns`] gives a resource's `columnDefinitions` and [`cells`] one row's cells, in the same
//! order. Column names are Kubernetes' own (`Name`, `Nominated Node`); kubectl upper-cases them.
//! Like the real API server, the cells always include the priority-1 columns that kubectl shows
//! only with `-o wide`, and counts are JSON integers where Kubernetes prints integers. Every row
//! also needs its [`row_object`] so kubectl can print the NAMESPACE column and `--show-labels`.
//! Ages are [`human_duration`]s, exactly as `kubectl get` shows them.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::resource::ResourceType;

/// One column of a Table: serialises to Kubernetes' `TableColumnDefinition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Human-readable name (`Nominated Node`); kubectl prints it upper-cased.
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `number`, `boolean` or `date`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `name` for the column holding the object's name, empty otherwise.
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0 for a normal column, 1 for one kubectl shows only with `-o wide`.
    pub priority: i32,
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
    resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
    intended for creation idempotence and configuration definition. Cannot be updated. More info: \
    https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It \
    is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It \
    is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 0 }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 1 }
}

const NAME: Column = Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 0 };
const AGE: Column = column("Age", "string", AGE_DOC);

static POD_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "string", "The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod \
         has restarted.",
    ),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

static DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by \
         this deployment.",
    ),
];

static REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
];

static SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column("Type", "string", "type determines how the Service is exposed."),
    column("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    column(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this \
         service.",
    ),
    column("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

static NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

static NAMESPACE_COLUMNS: &[Column] = &[NAME, column("Status", "string", "The status of the namespace"), AGE];

static CONFIG_MAP_COLUMNS: &[Column] = &[NAME, column("Data", "string", "Data contains the configuration data."), AGE];

static SECRET_COLUMNS: &[Column] = &[
    NAME,
    column("Type", "string", "Used to facilitate programmatic handling of secret data."),
    column("Data", "string", "Data contains the secret data."),
    AGE,
];

static SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are \
         allowed to use.",
    ),
    AGE,
];

static ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, column("Endpoints", "string", "The set of all endpoints is the union of all subsets."), AGE];

static EVENT_COLUMNS: &[Column] = &[
    column("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    column("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    column(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the \
         object's current status.",
    ),
    column("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid \
         JSON/Go field access statement.",
    ),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    column("Message", "string", "A human-readable description of the status of this operation."),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 1 },
];

static LEASE_COLUMNS: &[Column] =
    &[NAME, column("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."), AGE];

static ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
    column("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    column("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

static DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

/// Which of Kubernetes' printers serves a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    Node,
    Namespace,
    ConfigMap,
    Secret,
    ServiceAccount,
    Endpoints,
    Event,
    EventsV1Event,
    Lease,
    EndpointSlice,
    Default,
}

fn printer(resource: &ResourceType) -> Printer {
    match (resource.group, resource.plural) {
        ("", "pods") => Printer::Pod,
        ("apps", "deployments") => Printer::Deployment,
        ("apps", "replicasets") => Printer::ReplicaSet,
        ("", "services") => Printer::Service,
        ("", "nodes") => Printer::Node,
        ("", "namespaces") => Printer::Namespace,
        ("", "configmaps") => Printer::ConfigMap,
        ("", "secrets") => Printer::Secret,
        ("", "serviceaccounts") => Printer::ServiceAccount,
        ("", "endpoints") => Printer::Endpoints,
        ("", "events") => Printer::Event,
        ("events.k8s.io", "events") => Printer::EventsV1Event,
        ("coordination.k8s.io", "leases") => Printer::Lease,
        ("discovery.k8s.io", "endpointslices") => Printer::EndpointSlice,
        _ => Printer::Default,
    }
}

/// The `columnDefinitions` of a Table of `resource`, wide columns included.
pub fn columns(resource: &ResourceType) -> &'static [Column] {
    match printer(resource) {
        Printer::Pod => POD_COLUMNS,
        Printer::Deployment => DEPLOYMENT_COLUMNS,
        Printer::ReplicaSet => REPLICA_SET_COLUMNS,
        Printer::Service => SERVICE_COLUMNS,
        Printer::Node => NODE_COLUMNS,
        Printer::Namespace => NAMESPACE_COLUMNS,
        Printer::ConfigMap => CONFIG_MAP_COLUMNS,
        Printer::Secret => SECRET_COLUMNS,
        Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
        Printer::Endpoints => ENDPOINTS_COLUMNS,
        Printer::Event | Printer::EventsV1Event => EVENT_COLUMNS,
        Printer::Lease => LEASE_COLUMNS,
        Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
        Printer::Default => DEFAULT_COLUMNS,
    }
}

/// The cells of `object`'s row, one per [`columns`] entry, as of `now` (for ages).
pub fn cells(resource: &ResourceType, object: &Value, now: SystemTime) -> Vec<Value> {
    let now = unix_nanos(now);
    match printer(resource) {
        Printer::Pod => pod_cells(object, now),
        Printer::Deployment => deployment_cells(object, now),
        Printer::ReplicaSet => replica_set_cells(object, now),
        Printer::Service => service_cells(object, now),
        Printer::Node => node_cells(object, now),
        Printer::Namespace => vec![name(object), text(&object["status"]["phase"]).into(), age(object, now)],
        Printer::ConfigMap => {
            let count = len(&object["data"]) + len(&object["binaryData"]);
            vec![name(object), count.into(), age(object, now)]
        }
        Printer::Secret => secret_cells(object, now),
        Printer::ServiceAccount => vec![name(object), len(&object["secrets"]).into(), age(object, now)],
        Printer::Endpoints => vec![name(object), format_endpoints(&object["subsets"]).into(), age(object, now)],
        Printer::Event => event_cells(&EventView::core(object), now),
        Printer::EventsV1Event => event_cells(&EventView::events_v1(object), now),
        Printer::Lease => vec![name(object), text(&object["spec"]["holderIdentity"]).into(), age(object, now)],
        Printer::EndpointSlice => vec![
            name(object),
            text(&object["addressType"]).into(),
            format_slice_ports(&object["ports"]).into(),
            format_slice_endpoints(&object["endpoints"]).into(),
            age(object, now),
        ],
        Printer::Default => vec![name(object), age(object, now)],
    }
}

/// The `object` of a Table row: the PartialObjectMetadata kubectl reads the namespace and labels
/// from, i.e. the object's metadata without `managedFields`.
pub fn row_object(object: &Value) -> Value {
    let mut metadata = object.get("metadata").filter(|m| m.is_object()).cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut() {
        map.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

/// One complete Table row: `{"cells": [...], "object": <PartialObjectMetadata>}`.
pub fn row(resource: &ResourceType, object: &Value, now: SystemTime) -> Value {
    json!({"cells": cells(resource, object, now), "object": row_object(object)})
}

/// Kubernetes' `duration.HumanDuration`: a succinct age with 2–3 significant figures, as
/// `kubectl get` prints in its AGE column (`45s`, `2m30s`, `3h`, `5d2h`, `2y30d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------------------------
// JSON and time helpers.

/// `now` as nanoseconds since the Unix epoch.
fn unix_nanos(now: SystemTime) -> i128 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i128::MIN),
    }
}

/// An RFC 3339 timestamp (`metav1.Time` or `MicroTime`) as nanoseconds since the epoch; `None`
/// when absent, null or unparseable (Go's zero time).
fn timestamp(value: &Value) -> Option<i128> {
    value.as_str().and_then(|s| s.parse::<Timestamp>().ok()).map(|t| t.as_nanosecond())
}

/// `translateTimestampSince`: the human age of a timestamp, `<unknown>` without one.
fn since(value: &Value, now: i128) -> String {
    match timestamp(value) {
        Some(t) => since_nanos(t, now),
        None => "<unknown>".to_string(),
    }
}

fn since_nanos(t: i128, now: i128) -> String {
    // Truncated towards zero, like Go's int(d.Seconds()).
    let seconds = (now - t) / 1_000_000_000;
    human_duration(i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX }))
}

/// A string field, `""` when absent; numbers and booleans in their JSON spelling.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_default()
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The number of entries of a map or list, 0 when absent.
fn len(value: &Value) -> i64 {
    let n = match value {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn name(object: &Value) -> Value {
    text(&object["metadata"]["name"]).into()
}

fn age(object: &Value, now: i128) -> Value {
    since(&object["metadata"]["creationTimestamp"], now).into()
}

/// `layoutContainerCells`: container names and images, comma-joined.
fn container_cells(pod_spec: &Value) -> (Value, Value) {
    let containers = items(&pod_spec["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_of(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_of(&c["image"])).collect();
    (names.join(",").into(), images.join(",").into())
}

/// `labels.FormatLabels`: `k=v` sorted by key, comma-joined, `<none>` when empty.
fn format_labels(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, text(v))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key; `""` for a nil
/// or empty selector; `Err` for an invalid operator or value list.
fn label_selector_string(selector: &Value) -> Result<String, ()> {
    let Some(selector) = selector.as_object() else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", text(v))));
        }
    }
    for expr in items(selector.get("matchExpressions").unwrap_or(&Value::Null)) {
        let key = str_of(&expr["key"]);
        let mut values: Vec<String> = items(&expr["values"]).iter().map(text).collect();
        values.sort();
        let rendered = match str_of(&expr["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// `listWithMoreString`: at most `max` entries, then ` + N more...`; `<unset>` when empty.
fn list_with_more(list: &[String], total: usize, max: usize) -> String {
    let shown = list.iter().take(max).cloned().collect::<Vec<_>>().join(",");
    if total > max {
        format!("{shown} + {} more...", total - max)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

/// `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

// ---------------------------------------------------------------------------------------------
// Pods.

fn pod_cells(pod: &Value, now: i128) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let conditions = items(&status["conditions"]);
    let init_specs = items(&spec["initContainers"]);
    let restartable =
        |name: &str| init_specs.iter().any(|c| str_of(&c["name"]) == name && str_of(&c["restartPolicy"]) == "Always");

    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let total = items(&spec["containers"]).len() + init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0usize;
    let mut last_restart: Option<i128> = None;
    let mut last_restartable_restart: Option<i128> = None;
    let later = |last: &mut Option<i128>, finished: Option<i128>| {
        if let Some(f) = finished
            && last.is_none_or(|l| l < f)
        {
            *last = Some(f);
        }
    };

    let phase = match str_of(&status["phase"]) {
        "" => "Pending",
        p => p,
    };
    let mut reason = match str_of(&status["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, container) in items(&status["initContainerStatuses"]).iter().enumerate() {
        let count = int(&container["restartCount"]);
        let finished = timestamp(&container["lastState"]["terminated"]["finishedAt"]);
        restarts += count;
        later(&mut last_restart, finished);
        let is_restartable = restartable(str_of(&container["name"]));
        if is_restartable {
            restartable_restarts += count;
            later(&mut last_restartable_restart, finished);
        }
        let terminated = &container["state"]["terminated"];
        let waiting = &container["state"]["waiting"];
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if is_restartable && container["started"] == true {
            if container["ready"] == true {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.is_object() {
            match str_of(&terminated["reason"]) {
                "" if int(&terminated["signal"]) != 0 => format!("Init:Signal:{}", int(&terminated["signal"])),
                "" => format!("Init:ExitCode:{}", int(&terminated["exitCode"])),
                r => format!("Init:{r}"),
            }
        } else if waiting.is_object() && !matches!(str_of(&waiting["reason"]), "" | "PodInitializing") {
            format!("Init:{}", str_of(&waiting["reason"]))
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions.iter().find(|c| c["type"] == "Initialized").is_some_and(|c| c["status"] == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for container in items(&status["containerStatuses"]).iter().rev() {
            restarts += int(&container["restartCount"]);
            later(&mut last_restart, timestamp(&container["lastState"]["terminated"]["finishedAt"]));
            let terminated = &container["state"]["terminated"];
            let waiting = &container["state"]["waiting"];
            if waiting.is_object() && !str_of(&waiting["reason"]).is_empty() {
                reason = str_of(&waiting["reason"]).to_string();
            } else if terminated.is_object() && !str_of(&terminated["reason"]).is_empty() {
                reason = str_of(&terminated["reason"]).to_string();
            } else if terminated.is_object() {
                reason = match int(&terminated["signal"]) {
                    0 => format!("ExitCode:{}", int(&terminated["exitCode"])),
                    signal => format!("Signal:{signal}"),
                };
            } else if container["ready"] == true && container["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && str_of(&status["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(last) if restarts != 0 => format!("{restarts} ({} ago)", since_nanos(last, now)),
        _ => restarts.to_string(),
    };

    let pod_ip = items(&status["podIPs"])
        .first()
        .map(|ip| str_of(&ip["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_of(&status["podIP"]));
    let or_none = |s: &str| if s.is_empty() { "<none>".to_string() } else { s.to_string() };
    let gates = items(&spec["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|gate| {
                conditions.iter().find(|c| c["type"] == gate["conditionType"]).is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(pod, now),
        or_none(pod_ip).into(),
        or_none(str_of(&spec["nodeName"])).into(),
        or_none(str_of(&status["nominatedNodeName"])).into(),
        readiness_gates.into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn deployment_cells(deployment: &Value, now: i128) -> Vec<Value> {
    let spec = &deployment["spec"];
    let status = &deployment["status"];
    let desired = spec["replicas"].as_i64().unwrap_or(1);
    let (containers, images) = container_cells(&spec["template"]["spec"]);
    let selector = label_selector_string(&spec["selector"]).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(deployment),
        format!("{}/{desired}", int(&status["readyReplicas"])).into(),
        int(&status["updatedReplicas"]).into(),
        int(&status["availableReplicas"]).into(),
        age(deployment, now),
        containers,
        images,
        selector.into(),
    ]
}

fn replica_set_cells(replica_set: &Value, now: i128) -> Vec<Value> {
    let spec = &replica_set["spec"];
    let status = &replica_set["status"];
    let (containers, images) = container_cells(&spec["template"]["spec"]);
    // metav1.FormatLabelSelector
    let selector = match label_selector_string(&spec["selector"]) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    };
    vec![
        name(replica_set),
        spec["replicas"].as_i64().unwrap_or(1).into(),
        int(&status["replicas"]).into(),
        int(&status["readyReplicas"]).into(),
        age(replica_set, now),
        containers,
        images,
        selector.into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints.

fn service_cells(service: &Value, now: i128) -> Vec<Value> {
    let spec = &service["spec"];
    let service_type = match str_of(&spec["type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = items(&spec["clusterIPs"])
        .first()
        .map(str_of)
        .filter(|ip| !ip.is_empty())
        .or_else(|| Some(str_of(&spec["clusterIP"])).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let external_ips: Vec<String> = items(&spec["externalIPs"]).iter().map(text).collect();
    let external = match service_type {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let ingress: BTreeSet<String> = items(&service["status"]["loadBalancer"]["ingress"])
                .iter()
                .map(|i| if str_of(&i["ip"]).is_empty() { text(&i["hostname"]) } else { text(&i["ip"]) })
                .filter(|s| !s.is_empty())
                .collect();
            let all: Vec<String> = ingress.into_iter().chain(external_ips).collect();
            if all.is_empty() { "<pending>".to_string() } else { all.join(",") }
        }
        "ExternalName" => text(&spec["externalName"]),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = items(&spec["ports"])
        .iter()
        .map(|p| {
            let protocol = match str_of(&p["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int(&p["nodePort"]) {
                node_port if node_port > 0 => format!("{}:{node_port}/{protocol}", int(&p["port"])),
                _ => format!("{}/{protocol}", int(&p["port"])),
            }
        })
        .collect();
    let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
    vec![
        name(service),
        service_type.into(),
        cluster_ip.into(),
        external.into(),
        ports.into(),
        age(service, now),
        format_labels(&spec["selector"]).into(),
    ]
}

/// `formatEndpoints`: up to three `ip:port` pairs, then ` + N more...`; `<none>` without subsets.
fn format_endpoints(subsets: &Value) -> String {
    let subsets = items(subsets);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = items(&subset["addresses"]);
        let ports = items(&subset["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(text(&address["ip"]));
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_of(&address["ip"]), int(&port["port"])));
            }
        }
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

/// `formatDiscoveryPorts`: port numbers (or names, or `*`) of an EndpointSlice.
fn format_slice_ports(ports: &Value) -> String {
    let ports = items(ports);
    let list: Vec<String> = ports
        .iter()
        .map(|p| match (&p["port"], &p["name"]) {
            (Value::Number(n), _) => n.to_string(),
            (_, Value::String(name)) => name.clone(),
            _ => "*".to_string(),
        })
        .collect();
    list_with_more(&list, ports.len(), 3)
}

/// `formatDiscoveryEndpoints`: the addresses of an EndpointSlice's endpoints.
fn format_slice_endpoints(endpoints: &Value) -> String {
    let list: Vec<String> = items(endpoints).iter().flat_map(|e| items(&e["addresses"]).iter().map(text)).collect();
    list_with_more(&list, list.len(), 3)
}

// ---------------------------------------------------------------------------------------------
// Nodes and secrets.

fn node_cells(node: &Value, now: i128) -> Vec<Value> {
    let status = &node["status"];
    let info = &status["nodeInfo"];
    let ready = items(&status["conditions"]).iter().rev().find(|c| c["type"] == "Ready");
    let mut state = match ready {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node["spec"]["unschedulable"] == true {
        state.push_str(",SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = node["metadata"]["labels"].as_object() {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" && !str_of(value).is_empty() {
                roles.insert(str_of(value).to_string());
            }
        }
    }
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") };
    let address = |kind: &str| {
        items(&status["addresses"])
            .iter()
            .find(|a| a["type"] == kind)
            .map_or_else(|| "<none>".to_string(), |a| text(&a["address"]))
    };
    let or_unknown = |v: &Value| match str_of(v) {
        "" => "<unknown>".to_string(),
        s => s.to_string(),
    };
    vec![
        name(node),
        state.into(),
        roles.into(),
        age(node, now),
        text(&info["kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        or_unknown(&info["osImage"]).into(),
        or_unknown(&info["kernelVersion"]).into(),
        or_unknown(&info["containerRuntimeVersion"]).into(),
    ]
}

fn secret_cells(secret: &Value, now: i128) -> Vec<Value> {
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

// ---------------------------------------------------------------------------------------------
// Events.

/// The fields of an Event the printer reads, from either core/v1 or events.k8s.io/v1.
struct EventView<'a> {
    name: &'a Value,
    last_timestamp: &'a Value,
    first_timestamp: &'a Value,
    event_time: &'a Value,
    series: &'a Value,
    count: &'a Value,
    object: &'a Value,
    kind: &'a str,
    reason: &'a Value,
    source: &'a Value,
    reporting_controller: &'a Value,
    reporting_instance: &'a Value,
    message: &'a Value,
}

impl<'a> EventView<'a> {
    fn core(event: &'a Value) -> EventView<'a> {
        EventView {
            name: &event["metadata"]["name"],
            last_timestamp: &event["lastTimestamp"],
            first_timestamp: &event["firstTimestamp"],
            event_time: &event["eventTime"],
            series: &event["series"],
            count: &event["count"],
            object: &event["involvedObject"],
            kind: str_of(&event["type"]),
            reason: &event["reason"],
            source: &event["source"],
            reporting_controller: &event["reportingComponent"],
            reporting_instance: &event["reportingInstance"],
            message: &event["message"],
        }
    }

    fn events_v1(event: &'a Value) -> EventView<'a> {
        EventView {
            name: &event["metadata"]["name"],
            last_timestamp: &event["deprecatedLastTimestamp"],
            first_timestamp: &event["deprecatedFirstTimestamp"],
            event_time: &event["eventTime"],
            series: &event["series"],
            count: &event["deprecatedCount"],
            object: &event["regarding"],
            kind: str_of(&event["type"]),
            reason: &event["reason"],
            source: &event["deprecatedSource"],
            reporting_controller: &event["reportingController"],
            reporting_instance: &event["reportingInstance"],
            message: &event["note"],
        }
    }
}

fn event_cells(event: &EventView<'_>, now: i128) -> Vec<Value> {
    let first_seen = match timestamp(event.first_timestamp) {
        Some(t) => since_nanos(t, now),
        None => since(event.event_time, now),
    };
    let mut last_seen = match timestamp(event.last_timestamp) {
        Some(t) => since_nanos(t, now),
        None => first_seen.clone(),
    };
    let mut count = int(event.count);
    if event.series.is_object() {
        last_seen = since(&event.series["lastObservedTime"], now);
        count = int(&event.series["count"]);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let kind = str_of(&event.object["kind"]).to_lowercase();
    let target = match str_of(&event.object["name"]) {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };
    // formatEventSource: component (else reportingController), then ", host" (else reportingInstance).
    let component = Some(str_of(&event.source["component"]))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| str_of(event.reporting_controller));
    let host = Some(str_of(&event.source["host"]))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| str_of(event.reporting_instance));
    let source = if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
    vec![
        last_seen.into(),
        event.kind.into(),
        text(event.reason).into(),
        target.into(),
        text(&event.object["fieldPath"]).into(),
        source.into(),
        str_of(event.message).trim().into(),
        first_seen.into(),
        count.into(),
        text(event.name).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource;
    use std::time::Duration;

    /// 2026-11-26T22:50:00Z, the "now" of every test.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_733_400)
    }

    fn res(group: &str, plural: &str) -> &'static ResourceType {
        resource::RESOURCES.iter().find(|r| r.group == group && r.plural == plural).expect("resource is served")
    }

    fn row_of(group: &str, plural: &str, object: &Value) -> Value {
        let r = res(group, plural);
        let cells = cells(r, object, now());
        assert_eq!(cells.len(), columns(r).len(), "one cell per column for {plural}");
        Value::Array(cells)
    }

    #[test]
    fn now_is_the_documented_instant() {
        let ts: Timestamp = "2026-11-26T22:50:00Z".parse().expect("timestamp");
        assert_eq!(unix_nanos(now()), ts.as_nanosecond());
    }

    #[test]
    fn human_duration_follows_kubernetes() {
        for (seconds, expected) in [
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "60s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (601, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (8 * 3600 - 1, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86400 - 1, "7d23h"),
            (8 * 86400, "8d"),
            (2 * 365 * 86400 - 1, "729d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400 + 100 * 86400, "20y"),
        ] {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn column_definitions_serialise_like_kubernetes() {
        let pods = columns(res("", "pods"));
        let json = serde_json::to_value(&pods[0]).expect("serialise");
        assert_eq!(json["name"], "Name");
        assert_eq!(json["type"], "string");
        assert_eq!(json["format"], "name");
        assert_eq!(json["priority"], 0);
        let names: Vec<&str> = pods.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(pods.iter().filter(|c| c.priority == 1).count(), 4);
        for r in resource::RESOURCES {
            let cols = columns(r);
            assert!(cols.iter().filter(|c| c.format == "name").count() == 1, "{} has one name column", r.plural);
        }
    }

    #[test]
    fn running_pod_with_one_container_not_ready() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": "2026-11-26T22:45:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}],
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0,
                     "state": {"running": {"startedAt": "2026-11-26T22:45:10Z"}}},
                    {"name": "sidecar", "ready": false, "restartCount": 0,
                     "state": {"running": {"startedAt": "2026-11-26T22:45:10Z"}}}
                ]
            }
        });
        assert_eq!(
            row_of("", "pods", &pod),
            json!(["web-0", "1/2", "Running", "0", "5m", "10.244.0.5", "node-1", "<none>", "<none>"])
        );
    }

    #[test]
    fn crash_looping_pod_shows_the_waiting_reason_and_last_restart() {
        let pod = json!({
            "metadata": {"name": "crash", "creationTimestamp": "2026-11-26T20:50:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
            "status": {
                "phase": "Running",
                "podIPs": [{"ip": "10.244.0.9"}],
                "containerStatuses": [{
                    "name": "app", "ready": false, "restartCount": 7,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                 "finishedAt": "2026-11-26T22:47:30Z"}}
                }]
            }
        });
        let cells = row_of("", "pods", &pod);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "7 (2m30s ago)");
        assert_eq!(cells[4], "120m");
    }

    #[test]
    fn pod_statuses_cover_pending_creating_init_completed_and_terminating() {
        let base = |status: Value, extra_meta: Value| {
            let mut meta = json!({"name": "p", "creationTimestamp": "2026-11-26T22:49:55Z"});
            if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
                m.extend(extra.clone());
            }
            json!({
                "metadata": meta,
                "spec": {"initContainers": [{"name": "init-a"}, {"name": "init-b"}], "containers": [{"name": "app"}]},
                "status": status
            })
        };
        let status_of = |pod: &Value| row_of("", "pods", pod)[2].clone();

        let fresh = base(json!({"phase": "Pending"}), json!({}));
        assert_eq!(status_of(&fresh), "Pending");
        assert_eq!(row_of("", "pods", &fresh)[4], "5s");
        assert_eq!(row_of("", "pods", &fresh)[5], "<none>");

        let init = base(
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "init-a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "init-b", "state": {"running": {}}}
            ]}),
            json!({}),
        );
        assert_eq!(status_of(&init), "Init:1/2");

        let init_failed = base(
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "init-a", "state": {"terminated": {"exitCode": 2}}}
            ]}),
            json!({}),
        );
        assert_eq!(status_of(&init_failed), "Init:ExitCode:2");

        let creating = base(
            json!({"phase": "Pending", "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [
                       {"name": "init-a", "state": {"terminated": {"exitCode": 0}}},
                       {"name": "init-b", "state": {"terminated": {"exitCode": 0}}}],
                   "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            json!({}),
        );
        assert_eq!(status_of(&creating), "ContainerCreating");

        let completed = base(
            json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
            json!({}),
        );
        assert_eq!(status_of(&completed), "Completed");

        let terminating = base(json!({"phase": "Running"}), json!({"deletionTimestamp": "2026-11-26T22:49:59Z"}));
        assert_eq!(status_of(&terminating), "Terminating");

        let lost = base(
            json!({"phase": "Running", "reason": "NodeLost"}),
            json!({"deletionTimestamp": "2026-11-26T22:49:59Z"}),
        );
        assert_eq!(status_of(&lost), "Unknown");

        let evicted = base(json!({"phase": "Failed", "reason": "Evicted"}), json!({}));
        assert_eq!(status_of(&evicted), "Evicted");
    }

    #[test]
    fn sidecar_init_containers_count_towards_ready_and_restarts() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-11-26T22:40:00Z"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}],
                     "readinessGates": [{"conditionType": "example.com/lb"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                               {"type": "example.com/lb", "status": "False"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                                           "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
            }
        });
        let cells = row_of("", "pods", &pod);
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "1");
        assert_eq!(cells[8], "0/1");
    }

    #[test]
    fn deployment_mid_rollout() {
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-26T22:20:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "edge"]}]},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}}
            },
            "status": {"replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3}
        });
        assert_eq!(
            row_of("apps", "deployments", &deploy),
            json!(["web", "3/3", 2, 3, "30m", "nginx,log", "nginx:1.27,busybox", "app=web,tier in (edge,front)"])
        );
        let fresh = json!({"metadata": {"name": "new"}, "spec": {"replicas": 2}});
        let cells = row_of("apps", "deployments", &fresh);
        assert_eq!(cells[1], "0/2");
        assert_eq!(cells[4], "<unknown>");
        assert_eq!(cells[7], "");
    }

    #[test]
    fn replica_set_counts_are_integers() {
        let rs = json!({
            "metadata": {"name": "web-5d8f", "creationTimestamp": "2026-11-24T22:50:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
            "status": {"replicas": 3, "readyReplicas": 1}
        });
        assert_eq!(
            row_of("apps", "replicasets", &rs),
            json!(["web-5d8f", 3, 3, 1, "2d", "nginx", "nginx", "app=web,pod-template-hash=5d8f"])
        );
        let bad = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchExpressions": [
            {"key": "a", "operator": "Bogus"}]}}});
        assert_eq!(row_of("apps", "replicasets", &bad)[7], "<error>");
        assert_eq!(row_of("apps", "replicasets", &json!({"metadata": {"name": "y"}}))[7], "<none>");
    }

    #[test]
    fn node_port_service() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-26T22:49:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "selector": {"app": "web", "tier": "front"},
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            row_of("", "services", &svc),
            json!(["web", "NodePort", "10.96.0.20", "<none>", "80:30080/TCP,53/UDP", "60s", "app=web,tier=front"])
        );
    }

    #[test]
    fn service_external_addresses() {
        let lb = |ingress: Value, external: Value| {
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.9"],
                   "externalIPs": external, "ports": [{"port": 443, "nodePort": 31443}]},
                   "status": {"loadBalancer": {"ingress": ingress}}})
        };
        assert_eq!(row_of("", "services", &lb(json!([]), json!([])))[3], "<pending>");
        assert_eq!(
            row_of(
                "",
                "services",
                &lb(json!([{"ip": "203.0.113.9"}, {"hostname": "a.example.com"}]), json!(["198.51.100.1"]))
            )[3],
            "203.0.113.9,a.example.com,198.51.100.1"
        );
        let headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                              "externalIPs": ["192.0.2.1"]}});
        let cells = row_of("", "services", &headless);
        assert_eq!(cells[1], "ClusterIP");
        assert_eq!(cells[2], "None");
        assert_eq!(cells[3], "192.0.2.1");
        assert_eq!(cells[4], "<none>");
        assert_eq!(cells[6], "<none>");
        let external_name =
            json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(row_of("", "services", &external_name)[3], "db.example.com");
        assert_eq!(row_of("", "services", &external_name)[2], "<none>");
    }

    #[test]
    fn cordoned_not_ready_node() {
        let node = json!({
            "metadata": {"name": "node-2", "creationTimestamp": "2026-11-16T22:50:00Z", "labels": {
                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
                "kubernetes.io/hostname": "node-2"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "Unknown"}],
                "addresses": [{"type": "Hostname", "address": "node-2"},
                              {"type": "InternalIP", "address": "172.18.0.3"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": ""}
            }
        });
        assert_eq!(
            row_of("", "nodes", &node),
            json!([
                "node-2",
                "NotReady,SchedulingDisabled",
                "control-plane,worker",
                "10d",
                "v1.33.1",
                "172.18.0.3",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.8.0",
                "<unknown>"
            ])
        );
        let bare = json!({"metadata": {"name": "n", "labels": {"kubernetes.io/role": "edge"}},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let cells = row_of("", "nodes", &bare);
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "edge");
        let unknown = json!({"metadata": {"name": "n"}});
        assert_eq!(row_of("", "nodes", &unknown)[1], "Unknown");
        assert_eq!(row_of("", "nodes", &unknown)[2], "<none>");
    }

    #[test]
    fn small_resources() {
        let created = "2026-11-26T21:50:00Z";
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": created}, "status": {"phase": "Active"}});
        assert_eq!(row_of("", "namespaces", &ns), json!(["default", "Active", "60m"]));
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": created}, "data": {"a": "1", "b": "2"},
                        "binaryData": {"c": "AA=="}});
        assert_eq!(row_of("", "configmaps", &cm), json!(["cfg", 3, "60m"]));
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": created}, "type": "Opaque",
                            "data": {"a": "MQ=="}});
        assert_eq!(row_of("", "secrets", &secret), json!(["s", "Opaque", 1, "60m"]));
        let sa = json!({"metadata": {"name": "default", "creationTimestamp": created}});
        assert_eq!(row_of("", "serviceaccounts", &sa), json!(["default", 0, "60m"]));
        let lease = json!({"metadata": {"name": "node-1", "creationTimestamp": created},
                           "spec": {"holderIdentity": "node-1"}});
        assert_eq!(row_of("coordination.k8s.io", "leases", &lease), json!(["node-1", "node-1", "60m"]));
    }

    #[test]
    fn endpoints_list_three_then_more() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
            "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(row_of("", "endpoints", &ep)[1], "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more...");
        let few = json!({"metadata": {"name": "db"},
                         "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"port": 5432}]}]});
        assert_eq!(row_of("", "endpoints", &few)[1], "10.0.0.7:5432");
        let headless = json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "10.0.0.8"}]}]});
        assert_eq!(row_of("", "endpoints", &headless)[1], "10.0.0.8");
        assert_eq!(row_of("", "endpoints", &json!({"metadata": {"name": "none"}}))[1], "<none>");
    }

    #[test]
    fn endpoint_slices() {
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]},
                          {"addresses": ["10.0.0.4"]}]});
        let cells = row_of("discovery.k8s.io", "endpointslices", &slice);
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "80,named,*");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...");
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        let cells = row_of("discovery.k8s.io", "endpointslices", &empty);
        assert_eq!((&cells[2], &cells[3]), (&json!("<unset>"), &json!("<unset>")));
    }

    #[test]
    fn core_events() {
        let event = json!({
            "metadata": {"name": "web-0.17f", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-26T22:30:00Z", "lastTimestamp": "2026-11-26T22:49:30Z", "count": 12
        });
        assert_eq!(
            row_of("", "events", &event),
            json!([
                "30s",
                "Warning",
                "BackOff",
                "pod/web-0",
                "spec.containers{app}",
                "kubelet, node-1",
                "Back-off restarting failed container",
                "20m",
                12,
                "web-0.17f"
            ])
        );
        let columns: Vec<&str> =
            columns(res("", "events")).iter().filter(|c| c.priority == 0).map(|c| c.name).collect();
        assert_eq!(columns, ["Last Seen", "Type", "Reason", "Object", "Message"]);

        let new_style = json!({
            "metadata": {"name": "e2"}, "eventTime": "2026-11-26T22:48:00.000000Z",
            "involvedObject": {"kind": "Node"}, "reportingComponent": "trireme-scheduler", "type": "Normal",
            "reason": "Scheduled", "message": "ok"
        });
        let cells = row_of("", "events", &new_style);
        assert_eq!(cells[0], "2m");
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "trireme-scheduler");
        assert_eq!(cells[7], "2m");
        assert_eq!(cells[8], 1);
    }

    #[test]
    fn events_k8s_io_events_print_like_core_events() {
        let event = json!({
            "metadata": {"name": "e3", "namespace": "default"},
            "eventTime": "2026-11-26T22:40:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2026-11-26T22:49:00.000000Z"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet", "type": "Normal", "note": "Scaled up replica set web-5d8f to 3",
            "reportingController": "deployment-controller", "reportingInstance": "cp-1"
        });
        assert_eq!(
            row_of("events.k8s.io", "events", &event),
            json!([
                "60s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/web",
                "",
                "deployment-controller, cp-1",
                "Scaled up replica set web-5d8f to 3",
                "10m",
                4,
                "e3"
            ])
        );
    }

    #[test]
    fn other_resources_get_name_and_age() {
        let r = ResourceType { group: "example.com", plural: "widgets", kind: "Widget", ..*res("", "configmaps") };
        let object = json!({"metadata": {"name": "w", "creationTimestamp": "2026-11-26T22:49:58Z"}});
        assert_eq!(columns(&r).iter().map(|c| c.name).collect::<Vec<_>>(), ["Name", "Age"]);
        assert_eq!(Value::Array(cells(&r, &object, now())), json!(["w", "2s"]));
    }

    #[test]
    fn row_object_is_partial_object_metadata_without_managed_fields() {
        let object = json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "x", "namespace": "default", "labels": {"app": "x"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": []}
        });
        assert_eq!(
            row_object(&object),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "x", "namespace": "default", "labels": {"app": "x"}}})
        );
        assert_eq!(row_object(&json!({}))["metadata"], json!({}));
        let row = row(res("", "pods"), &object, now());
        assert_eq!(row["cells"][0], "x");
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
    }
}
