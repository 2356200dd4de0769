//! The columns `kubectl get` prints: Kubernetes' server-side printers
//! (`pkg/printers/internalversion`) redone over JSON objects.
//!
//! [`columns`] gives a resource's `columnDefinitions` and [`cells`] one row's cells, in the same
//! order. Column names are Kubernetes' own (`Name`, `Nominated Node`); kubectl upper-cases them.
//! Like the real API server, the cells always include the priority-1 columns that kubectl shows
//! only with `-o wide`, and counts are JSON integers where Kubernetes prints integers. Every row
//! also needs its [`row_object`] so kubectl can print the NAMESPACE column and `--show-labels`.
//! Ages are [`human_duration`]s, exactly as `kubectl get` shows them.

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

pub(crate) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
    resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
    intended for creation idempotence and configuration definition. Cannot be updated. More info: \
    https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It \
    is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It \
    is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(crate) const CONTAINERS_DOC: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DOC: &str = "Images referenced by each container in the template.";

pub(crate) const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 0 }
}

pub(crate) const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 1 }
}

pub(crate) const NAME: Column =
    Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 0 };
pub(crate) const AGE: Column = column("Age", "string", AGE_DOC);

/// The columns of a kind without a printer of its own.
pub static DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

/// The `columnDefinitions` of a Table of `resource`, wide columns included.
pub fn columns(resource: &ResourceType) -> &'static [Column] {
    crate::kinds::strategy(resource).map_or(DEFAULT_COLUMNS, |k| k.columns())
}

/// The cells of `object`'s row, one per [`columns`] entry, as of `now` (for ages).
pub fn cells(resource: &ResourceType, object: &Value, now: SystemTime) -> Vec<Value> {
    match crate::kinds::strategy(resource) {
        Some(kind) => kind.cells(object, now),
        None => vec![name(object), age(object, unix_nanos(now))],
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
pub fn unix_nanos(now: SystemTime) -> i128 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i128::MIN),
    }
}

/// An RFC 3339 timestamp (`metav1.Time` or `MicroTime`) as nanoseconds since the epoch; `None`
/// when absent, null or unparseable (Go's zero time).
pub(crate) fn timestamp(value: &Value) -> Option<i128> {
    value.as_str().and_then(|s| s.parse::<Timestamp>().ok()).map(|t| t.as_nanosecond())
}

/// `translateTimestampSince`: the human age of a timestamp, `<unknown>` without one.
pub(crate) fn since(value: &Value, now: i128) -> String {
    match timestamp(value) {
        Some(t) => since_nanos(t, now),
        None => "<unknown>".to_string(),
    }
}

pub(crate) fn since_nanos(t: i128, now: i128) -> String {
    // Truncated towards zero, like Go's int(d.Seconds()).
    let seconds = (now - t) / 1_000_000_000;
    human_duration(i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX }))
}

/// A string field, `""` when absent; numbers and booleans in their JSON spelling.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

pub(crate) fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_default()
}

pub(crate) fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The number of entries of a map or list, 0 when absent.
pub(crate) fn len(value: &Value) -> i64 {
    let n = match value {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn name(object: &Value) -> Value {
    text(&object["metadata"]["name"]).into()
}

pub fn age(object: &Value, now: i128) -> Value {
    since(&object["metadata"]["creationTimestamp"], now).into()
}

/// `layoutContainerCells`: container names and images, comma-joined.
pub(crate) fn container_cells(pod_spec: &Value) -> (Value, Value) {
    let containers = items(&pod_spec["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_of(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_of(&c["image"])).collect();
    (names.join(",").into(), images.join(",").into())
}

/// `labels.FormatLabels`: `k=v` sorted by key, comma-joined, `<none>` when empty.
pub(crate) fn format_labels(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, text(v))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key; `""` for a nil
/// or empty selector; `Err` for an invalid operator or value list.
pub(crate) fn label_selector_string(selector: &Value) -> Result<String, ()> {
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
pub(crate) fn list_with_more(list: &[String], total: usize, max: usize) -> String {
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
pub(crate) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

// ---------------------------------------------------------------------------------------------
// Pods.

// ---------------------------------------------------------------------------------------------
// Workloads.

// ---------------------------------------------------------------------------------------------
// Services and endpoints.

// ---------------------------------------------------------------------------------------------
// Nodes and secrets.

// ---------------------------------------------------------------------------------------------
// Events.

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
        resource::all().find(|r| r.group == group && r.plural == plural).expect("resource is served")
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
        for r in resource::all() {
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
