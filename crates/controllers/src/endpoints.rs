//! The endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name and EndpointSlices (`discovery.k8s.io/v1`) listing the pods it selects — ready ones to
//! route to, not-ready ones to know about — with each service port's `targetPort` resolved in
//! each pod (a number, or a named container port).
//!
//! Decisions are pure: [`desired_endpoints`] and [`desired_slices`] turn a service and the pods
//! of its namespace into the objects that should exist; [`apply_endpoints`] and
//! [`apply_slice`] lay the managed fields of those over a stored object, so a write happens only
//! when they change something; [`plan_slices`] says which slices to create, update and delete.
//! [`run`] feeds one work queue of service keys from the informers (a pod change queues the
//! services selecting it, before and after the change) and does the writes.
//!
//! What the controller writes carries a controller ownerReference to its Service, and the
//! controller deletes it when the Service goes (the garbage collector would too). Services
//! without a selector and `ExternalName` services are left alone: their Endpoints are the
//! user's. As in Kubernetes, a terminating pod is left out of Endpoints (unless the service
//! publishes not-ready addresses) but stays in its slice with `terminating: true`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::Value;
use serde_json::json;
use sha2::Digest;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use trireme_model::resource;
use trireme_model::resource::ResourceType;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::Preconditions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::informer::Action;
use trireme_registry::informer::Event;
use trireme_registry::informer::ObjectKey;
use trireme_registry::informer::WorkQueue;
use trireme_registry::informer::run_workers;
use trireme_registry::labels_of;
use trireme_registry::object_name;

use crate::Context;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (Kubernetes' own, so tools recognise it).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// At most this many endpoints go in one EndpointSlice (Kubernetes' default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// At most this many addresses go in one Endpoints object; beyond, it is truncated and
/// annotated, as in Kubernetes (the slices still list every pod).
pub const MAX_ENDPOINT_ADDRESSES: usize = 1000;

/// Marks a service's objects as headless (`clusterIP: None`).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Tells the endpointslice mirroring controller that these Endpoints are not the user's.
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Set on Endpoints truncated to [`MAX_ENDPOINT_ADDRESSES`].
const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// The `fieldManager` of this controller's writes.
const FIELD_MANAGER: &str = "endpoint-controller";
/// Services reconciled at once.
const WORKERS: usize = 2;

// ---- pure decisions ---------------------------------------------------------------------

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn namespace_of(object: &Value) -> &str {
    str_at(object, "/metadata/namespace").unwrap_or_default()
}

/// The labels `service` selects its pods by, or `None` when this controller does not manage its
/// endpoints: no (or an empty) selector, or type `ExternalName`.
pub fn service_selector(service: &Value) -> Option<BTreeMap<String, String>> {
    if str_at(service, "/spec/type") == Some("ExternalName") {
        return None;
    }
    let selector = service.pointer("/spec/selector")?.as_object()?;
    if selector.is_empty() {
        return None;
    }
    Some(selector.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
}

/// Whether `service` selects `pod`: same namespace, and every selector label matches.
pub fn selects(service: &Value, pod: &Value) -> bool {
    let Some(selector) = service_selector(service) else { return false };
    if namespace_of(service) != namespace_of(pod) {
        return false;
    }
    let labels = labels_of(pod);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// What of a pod its endpoints depend on: a pod change that leaves this equal changes no
/// Endpoints or slice, so it queues nothing.
fn endpoint_fields(pod: &Value) -> Value {
    let ports = |list: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(|cs| cs.iter().map(|c| json!([c["ports"], c["restartPolicy"]])).collect())
            .unwrap_or_default()
    };
    json!([
        pod["metadata"]["labels"],
        pod["metadata"]["uid"],
        pod["metadata"]["deletionTimestamp"],
        pod["spec"]["nodeName"],
        pod["spec"]["hostname"],
        pod["spec"]["subdomain"],
        ports("containers"),
        ports("initContainers"),
        pod["status"]["podIP"],
        pod["status"]["phase"],
        pod_ready(pod),
    ])
}

/// Whether a pod event can change an Endpoints object or a slice: every creation and deletion
/// does, an update only when it changes what they show.
fn pod_change_matters(kind: ChangeType, pod: &Value, old: Option<&Value>) -> bool {
    kind != ChangeType::Modified || old.is_none_or(|old| endpoint_fields(old) != endpoint_fields(pod))
}

/// A service port with its target resolved in one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResolvedPort {
    name: String,
    port: i64,
    protocol: String,
    app_protocol: Option<String>,
}

impl ResolvedPort {
    /// As an Endpoints port (an empty name is left out).
    fn endpoints_json(&self) -> Value {
        let mut port = json!({"port": self.port, "protocol": self.protocol});
        if !self.name.is_empty() {
            port["name"] = json!(self.name);
        }
        if let Some(app) = &self.app_protocol {
            port["appProtocol"] = json!(app);
        }
        port
    }

    /// As an EndpointSlice port (the name is always there, `""` when the service port has none).
    fn slice_json(&self) -> Value {
        let mut port = json!({"name": self.name, "port": self.port, "protocol": self.protocol});
        if let Some(app) = &self.app_protocol {
            port["appProtocol"] = json!(app);
        }
        port
    }
}

/// The container port named `name` with `protocol` in `pod` (regular containers, then sidecars),
/// as Kubernetes' `FindPort` looks it up.
fn named_container_port(pod: &Value, name: &str, protocol: &str) -> Option<i64> {
    let regular = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten();
    let sidecars = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always");
    regular
        .chain(sidecars)
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        .and_then(|p| p["containerPort"].as_i64())
}

/// `service_port` with its target in `pod`; `None` when a named target is not in the pod.
fn resolve_port(service_port: &Value, pod: &Value) -> Option<ResolvedPort> {
    let protocol = str_at(service_port, "/protocol").unwrap_or("TCP");
    let port = match service_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64()?,
        Some(Value::String(name)) if !name.is_empty() => named_container_port(pod, name, protocol)?,
        _ => service_port.get("port")?.as_i64()?,
    };
    Some(ResolvedPort {
        name: str_at(service_port, "/name").unwrap_or_default().to_string(),
        port,
        protocol: protocol.to_string(),
        app_protocol: str_at(service_port, "/appProtocol").map(str::to_string),
    })
}

fn service_ports(service: &Value) -> &[Value] {
    service.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn publishes_not_ready(service: &Value) -> bool {
    service.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool) == Some(true)
}

fn is_headless(service: &Value) -> bool {
    str_at(service, "/spec/clusterIP") == Some("None")
}

/// One pod as an endpoint of one service.
#[derive(Debug, Clone)]
struct PodEndpoint {
    ip: String,
    uid: String,
    node_name: Option<String>,
    hostname: Option<String>,
    target_ref: Value,
    /// Routable: ready and not terminating, or the service publishes not-ready addresses.
    ready: bool,
    /// The pod's Ready condition holds, terminating or not.
    serving: bool,
    /// The pod is being deleted.
    terminating: bool,
    ports: Vec<ResolvedPort>,
}

/// `pod` as an endpoint of `service`, if it is one at all: selected, with an IP, not finished.
fn pod_endpoint(service: &Value, pod: &Value) -> Option<PodEndpoint> {
    if !selects(service, pod) {
        return None;
    }
    let ip = str_at(pod, "/status/podIP")?;
    if matches!(str_at(pod, "/status/phase"), Some("Succeeded" | "Failed")) {
        return None;
    }
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let serving = pod_ready(pod);
    let mut target_ref = json!({"kind": "Pod"});
    for field in ["namespace", "name", "uid"] {
        if let Some(value) = str_at(pod, &format!("/metadata/{field}")) {
            target_ref[field] = json!(value);
        }
    }
    let hostname = match (str_at(pod, "/spec/hostname"), str_at(pod, "/spec/subdomain")) {
        (Some(hostname), Some(subdomain)) if subdomain == object_name(service) => Some(hostname.to_string()),
        _ => None,
    };
    let mut ports: Vec<ResolvedPort> = service_ports(service).iter().filter_map(|p| resolve_port(p, pod)).collect();
    ports.sort();
    ports.dedup();
    Some(PodEndpoint {
        ip: ip.to_string(),
        uid: str_at(pod, "/metadata/uid").unwrap_or_default().to_string(),
        node_name: str_at(pod, "/spec/nodeName").map(str::to_string),
        hostname,
        target_ref,
        ready: publishes_not_ready(service) || (serving && !terminating),
        serving,
        terminating,
        ports,
    })
}

/// The endpoints of `service` among `pods`, in a stable order (by IP, then pod uid).
fn pod_endpoints(service: &Value, pods: &[Arc<Value>]) -> Vec<PodEndpoint> {
    let mut endpoints: Vec<PodEndpoint> = pods.iter().filter_map(|pod| pod_endpoint(service, pod)).collect();
    endpoints.sort_by(|a, b| (&a.ip, &a.uid).cmp(&(&b.ip, &b.uid)));
    endpoints
}

/// The ownerReference naming `service` as the controller of what this controller writes.
fn owner_reference(service: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "name": object_name(service),
        "uid": str_at(service, "/metadata/uid").unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// `service`'s labels plus the headless marker when it is headless (and never a stale one).
fn copied_labels(service: &Value) -> serde_json::Map<String, Value> {
    let mut labels = service.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    labels
}

/// The Endpoints `service` should have, given the pods of its namespace.
///
/// Addresses are grouped into subsets by the ports they resolve to (Kubernetes' repacking);
/// a pod none of whose ports resolve is left out, except for a headless service without ports,
/// whose addresses have no ports at all.
pub fn desired_endpoints(service: &Value, pods: &[Arc<Value>]) -> Value {
    let no_ports = service_ports(service).is_empty();
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for ep in pod_endpoints(service, pods) {
        if ep.terminating && !publishes_not_ready(service) {
            continue;
        }
        if (no_ports && !is_headless(service)) || (!no_ports && ep.ports.is_empty()) {
            continue;
        }
        let mut address = json!({"ip": ep.ip, "targetRef": ep.target_ref});
        if let Some(node) = &ep.node_name {
            address["nodeName"] = json!(node);
        }
        if let Some(hostname) = &ep.hostname {
            address["hostname"] = json!(hostname);
        }
        let (ready, not_ready) = subsets.entry(ep.ports.clone()).or_default();
        if ep.ready { ready } else { not_ready }.push(address);
    }
    let truncated = truncate(&mut subsets, MAX_ENDPOINT_ADDRESSES);
    let subsets: Vec<Value> = subsets
        .into_iter()
        .filter(|(_, (ready, not_ready))| !ready.is_empty() || !not_ready.is_empty())
        .map(|(ports, (ready, not_ready))| {
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = Value::Array(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = Value::Array(not_ready);
            }
            if !ports.is_empty() {
                subset["ports"] = ports.iter().map(ResolvedPort::endpoints_json).collect();
            }
            subset
        })
        .collect();
    let mut labels = copied_labels(service);
    labels.insert(SKIP_MIRROR_LABEL.into(), json!("true"));
    let mut endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": object_name(service),
            "namespace": namespace_of(service),
            "labels": labels,
            "ownerReferences": [owner_reference(service)],
        },
    });
    if truncated {
        endpoints["metadata"]["annotations"] = json!({OVER_CAPACITY_ANNOTATION: "truncated"});
    }
    if !subsets.is_empty() {
        endpoints["subsets"] = Value::Array(subsets);
    }
    endpoints
}

/// Cuts the subsets down to `max` addresses in all, ready ones kept first. Returns whether it
/// cut anything.
fn truncate(subsets: &mut BTreeMap<Vec<ResolvedPort>, (Vec<Value>, Vec<Value>)>, max: usize) -> bool {
    let total: usize = subsets.values().map(|(r, n)| r.len() + n.len()).sum();
    if total <= max {
        return false;
    }
    let mut budget = max;
    for (ready, _) in subsets.values_mut() {
        ready.truncate(budget);
        budget -= ready.len();
    }
    for (_, not_ready) in subsets.values_mut() {
        not_ready.truncate(budget);
        budget -= not_ready.len();
    }
    true
}

/// The stored `current` Endpoints with the fields this controller manages taken from
/// `desired`: subsets, labels, the Service ownerReference and the over-capacity annotation.
/// Equal to `current` when nothing needs writing.
pub fn apply_endpoints(current: &Value, desired: &Value) -> Value {
    let mut next = current.clone();
    set_or_remove(&mut next, "subsets", desired.get("subsets"));
    apply_metadata(&mut next, desired);
    let wanted = desired.pointer("/metadata/annotations").and_then(|a| a.get(OVER_CAPACITY_ANNOTATION));
    if let Some(meta) = next["metadata"].as_object_mut() {
        match wanted {
            Some(value) => {
                let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
                if !annotations.is_object() {
                    *annotations = json!({});
                }
                annotations[OVER_CAPACITY_ANNOTATION] = value.clone();
            }
            None => {
                if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                    annotations.remove(OVER_CAPACITY_ANNOTATION);
                }
            }
        }
    }
    next
}

/// Labels wholesale, and the Service ownerReference in place of any other Service's.
fn apply_metadata(next: &mut Value, desired: &Value) {
    if !next["metadata"].is_object() {
        next["metadata"] = json!({});
    }
    set_or_remove(&mut next["metadata"], "labels", desired.pointer("/metadata/labels"));
    let mut owners: Vec<Value> = next
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter(|r| !(r["kind"] == "Service" && r["apiVersion"] == "v1")).cloned().collect())
        .unwrap_or_default();
    owners
        .extend(desired.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().cloned());
    set_or_remove(&mut next["metadata"], "ownerReferences", Some(&Value::Array(owners)).filter(|o| o != &&json!([])));
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<&Value>) {
    let Some(map) = object.as_object_mut() else { return };
    match value {
        Some(value) => map.insert(field.to_string(), value.clone()),
        None => map.remove(field),
    };
}

/// The name of the `chunk`th slice of `service`'s endpoints with `ports`: `<service>-<suffix>`,
/// the suffix derived from the service's uid, the ports and the chunk, so the same slice keeps
/// its name from one reconcile (and one leader) to the next, and a create that raced with
/// another finds the name taken instead of making a duplicate.
fn slice_name(service: &Value, ports: &[ResolvedPort], chunk: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = Sha256::new();
    hasher.update(str_at(service, "/metadata/uid").unwrap_or_default().as_bytes());
    for port in ports {
        hasher.update(format!("\0{}\0{}\0{}\0{:?}", port.name, port.port, port.protocol, port.app_protocol).as_bytes());
    }
    hasher.update(chunk.to_le_bytes());
    let digest = hasher.finalize();
    let suffix: String =
        digest.iter().take(5).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    format!("{}-{suffix}", object_name(service))
}

/// The EndpointSlices `service` should have, given the pods of its namespace: IPv4 endpoints
/// grouped by the ports they resolve to, at most [`MAX_ENDPOINTS_PER_SLICE`] per slice, and one
/// empty slice when there are none (as Kubernetes keeps a placeholder).
pub fn desired_slices(service: &Value, pods: &[Arc<Value>]) -> Vec<Value> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<PodEndpoint>> = BTreeMap::new();
    for ep in pod_endpoints(service, pods) {
        if ep.ip.parse::<Ipv4Addr>().is_ok() {
            groups.entry(ep.ports.clone()).or_default().push(ep);
        }
    }
    if groups.is_empty() {
        return vec![slice(service, &[], &[], 0)];
    }
    let mut slices = Vec::new();
    for (ports, endpoints) in &groups {
        for (chunk, endpoints) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            slices.push(slice(service, ports, endpoints, chunk));
        }
    }
    slices
}

fn slice(service: &Value, ports: &[ResolvedPort], endpoints: &[PodEndpoint], chunk: usize) -> Value {
    let mut labels = copied_labels(service);
    labels.insert(SERVICE_NAME_LABEL.into(), json!(object_name(service)));
    labels.insert(MANAGED_BY_LABEL.into(), json!(CONTROLLER_NAME));
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ep| {
            let mut endpoint = json!({
                "addresses": [ep.ip],
                "conditions": {"ready": ep.ready, "serving": ep.serving, "terminating": ep.terminating},
                "targetRef": ep.target_ref,
            });
            if let Some(node) = &ep.node_name {
                endpoint["nodeName"] = json!(node);
            }
            if let Some(hostname) = &ep.hostname {
                endpoint["hostname"] = json!(hostname);
            }
            endpoint
        })
        .collect();
    let mut slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(service, ports, chunk),
            "namespace": namespace_of(service),
            "labels": labels,
            "ownerReferences": [owner_reference(service)],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    });
    if !ports.is_empty() {
        slice["ports"] = ports.iter().map(ResolvedPort::slice_json).collect();
    }
    slice
}

/// The stored `current` slice with the fields this controller manages taken from `desired`:
/// endpoints, ports, labels and the Service ownerReference. Equal to `current` when nothing
/// needs writing.
pub fn apply_slice(current: &Value, desired: &Value) -> Value {
    let mut next = current.clone();
    set_or_remove(&mut next, "endpoints", desired.get("endpoints"));
    set_or_remove(&mut next, "ports", desired.get("ports"));
    apply_metadata(&mut next, desired);
    next
}

/// Whether `slice` is one this controller manages for the service named `service`.
pub fn is_managed_slice(slice: &Value, service: &str) -> bool {
    let labels = labels_of(slice);
    labels.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
}

/// A write to bring one service's slices to what they should be.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAction {
    /// Create this slice.
    Create(Value),
    /// Lay this slice's managed fields over the stored one.
    Update(Value),
    /// Delete the slice of this name (and uid, as a precondition).
    Delete { name: String, uid: Option<String> },
}

/// What to do to turn `existing` (the managed slices of one service) into `desired`; nothing
/// for slices already as they should be.
pub fn plan_slices(existing: &[Arc<Value>], desired: Vec<Value>) -> Vec<SliceAction> {
    let mut actions = Vec::new();
    for slice in existing {
        let name = object_name(slice);
        if !desired.iter().any(|d| object_name(d) == name) {
            let uid = str_at(slice, "/metadata/uid").map(str::to_string);
            actions.push(SliceAction::Delete { name: name.to_string(), uid });
        }
    }
    for slice in desired {
        match existing.iter().find(|e| object_name(e) == object_name(&slice)) {
            Some(current) if apply_slice(current, &slice) == **current => {}
            Some(_) => actions.push(SliceAction::Update(slice)),
            None => actions.push(SliceAction::Create(slice)),
        }
    }
    actions
}

/// Whether `endpoints` were written by this controller for the service named `service` (they
/// carry its ownerReference), so may be deleted when that service is gone.
pub fn is_managed_endpoints(endpoints: &Value, service: &str) -> bool {
    endpoints.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| r["kind"] == "Service" && r["apiVersion"] == "v1" && r["name"] == service)
    })
}

// ---- the runner -------------------------------------------------------------------------

fn resource_type(group: &str, plural: &str) -> Result<&'static ResourceType, RegistryError> {
    resource::find(group, "v1", plural).ok_or_else(|| RegistryError::Internal(format!("{plural} is not served")))
}

/// Runs until `stop`. Subscribes to the informers first (they start after this is spawned),
/// waits for their first lists, then reconciles services as they, their pods, their Endpoints
/// or their slices change.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let queue: Arc<WorkQueue<ObjectKey>> = Arc::default();
    let informers = &ctx.informers;
    {
        let queue = queue.clone();
        informers.services.subscribe(move |event: &Event| queue.add(ObjectKey::of(&event.object)));
    }
    {
        let (queue, services) = (queue.clone(), informers.services.clone());
        informers.pods.subscribe(move |event: &Event| {
            let old = event.old.as_deref();
            if !pod_change_matters(event.kind, &event.object, old) {
                return;
            }
            for pod in std::iter::once(&*event.object).chain(old) {
                for service in services.list_namespace(namespace_of(pod)) {
                    if selects(&service, pod) {
                        queue.add(ObjectKey::of(&service));
                    }
                }
            }
        });
    }
    {
        let queue = queue.clone();
        informers.endpoints.subscribe(move |event: &Event| queue.add(ObjectKey::of(&event.object)));
    }
    {
        let queue = queue.clone();
        informers.endpoint_slices.subscribe(move |event: &Event| {
            for slice in std::iter::once(&*event.object).chain(event.old.as_deref()) {
                if let Some(service) = labels_of(slice).get(SERVICE_NAME_LABEL) {
                    queue.add(ObjectKey::new(Some(namespace_of(slice)), service));
                }
            }
        });
    }
    // Reconciling before every cache is full would write Endpoints without pods not yet seen:
    // a blip that proxies would route by.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = async {
            informers.services.synced().await;
            informers.pods.synced().await;
            informers.endpoints.synced().await;
            informers.endpoint_slices.synced().await;
        } => {}
    }
    tracing::debug!("endpoints controller synced");
    run_workers(queue, WORKERS, stop, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key).await }
    })
    .await;
}

/// Brings the Endpoints and slices of the service at `key` to what they should be.
async fn reconcile(ctx: &Context, key: &ObjectKey) -> Result<Action, RegistryError> {
    let Some(namespace) = key.namespace.as_deref() else { return Ok(Action::Await) };
    let informers = &ctx.informers;
    let slices: Vec<Arc<Value>> = informers
        .endpoint_slices
        .list_namespace(namespace)
        .into_iter()
        .filter(|s| is_managed_slice(s, &key.name))
        .collect();
    let Some(service) = informers.services.get(key) else {
        // The service is gone: so go its Endpoints and slices.
        if let Some(endpoints) = informers.endpoints.get(key)
            && is_managed_endpoints(&endpoints, &key.name)
        {
            delete(ctx, resource_type("", "endpoints")?, namespace, &key.name, str_at(&endpoints, "/metadata/uid"))
                .await?;
            tracing::info!(service = %key, "service gone: deleted its endpoints");
        }
        sync_slices(ctx, key, &slices, Vec::new()).await?;
        return Ok(Action::Await);
    };
    if service_selector(&service).is_none() {
        return Ok(Action::Await);
    }
    let pods = informers.pods.list_namespace(namespace);
    sync_endpoints(ctx, key, informers.endpoints.get(key), desired_endpoints(&service, &pods)).await?;
    sync_slices(ctx, key, &slices, desired_slices(&service, &pods)).await?;
    Ok(Action::Await)
}

fn write_options() -> WriteOptions {
    WriteOptions { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

/// Creates or updates the Endpoints at `key` to `desired`, writing only on a difference.
async fn sync_endpoints(
    ctx: &Context,
    key: &ObjectKey,
    current: Option<Arc<Value>>,
    desired: Value,
) -> Result<(), RegistryError> {
    if current.as_ref().is_some_and(|current| apply_endpoints(current, &desired) == **current) {
        return Ok(());
    }
    let rt = resource_type("", "endpoints")?;
    let options = write_options();
    let change = |current: &Value| Ok(apply_endpoints(current, &desired));
    let update =
        || ctx.registry.update_with(rt, key.namespace.as_deref(), &key.name, Scope::Main, &options, change, None);
    // The cache may lag the store either way: a create that finds the name taken updates, an
    // update that finds nothing creates.
    match current {
        Some(_) => match update().await {
            Err(RegistryError::NotFound { .. }) => create(ctx, rt, key, desired.clone()).await?,
            other => {
                other?;
            }
        },
        None => match create(ctx, rt, key, desired.clone()).await {
            Err(RegistryError::AlreadyExists { .. }) => {
                update().await?;
            }
            other => other?,
        },
    }
    tracing::debug!(service = %key, "endpoints written");
    Ok(())
}

/// Creates `object`; a namespace being deleted is not an error (nothing may be created there,
/// and the namespace's deletion takes the service too).
async fn create(ctx: &Context, rt: &'static ResourceType, key: &ObjectKey, object: Value) -> Result<(), RegistryError> {
    match ctx.registry.create(rt, key.namespace.as_deref(), object, &write_options()).await {
        Ok(_) => Ok(()),
        Err(RegistryError::Forbidden(message)) => {
            tracing::debug!(service = %key, %message, "cannot create endpoints");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Deletes an object if it is still the one with `uid`; gone already is fine.
async fn delete(
    ctx: &Context,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<(), RegistryError> {
    let options = DeleteOptions {
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    match ctx.registry.delete(rt, Some(namespace), name, &options).await {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Brings the managed slices of the service at `key` from `existing` to `desired`.
async fn sync_slices(
    ctx: &Context,
    key: &ObjectKey,
    existing: &[Arc<Value>],
    desired: Vec<Value>,
) -> Result<(), RegistryError> {
    let actions = plan_slices(existing, desired);
    if actions.is_empty() {
        return Ok(());
    }
    let rt = resource_type("discovery.k8s.io", "endpointslices")?;
    let namespace = key.namespace.as_deref().unwrap_or_default();
    for action in actions {
        match action {
            SliceAction::Create(slice) => {
                let name = object_name(&slice).to_string();
                match create(ctx, rt, key, slice.clone()).await {
                    Err(RegistryError::AlreadyExists { .. }) => update_slice(ctx, rt, namespace, &name, &slice).await?,
                    other => other?,
                }
                tracing::debug!(service = %key, slice = name, "endpoint slice created");
            }
            SliceAction::Update(slice) => {
                let name = object_name(&slice).to_string();
                match update_slice(ctx, rt, namespace, &name, &slice).await {
                    Err(RegistryError::NotFound { .. }) => create(ctx, rt, key, slice).await?,
                    other => other?,
                }
                tracing::debug!(service = %key, slice = name, "endpoint slice updated");
            }
            SliceAction::Delete { name, uid } => {
                delete(ctx, rt, namespace, &name, uid.as_deref()).await?;
                tracing::debug!(service = %key, slice = name, "endpoint slice deleted");
            }
        }
    }
    Ok(())
}

async fn update_slice(
    ctx: &Context,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    desired: &Value,
) -> Result<(), RegistryError> {
    let change = |current: &Value| Ok(apply_slice(current, desired));
    ctx.registry.update_with(rt, Some(namespace), name, Scope::Main, &write_options(), change, None).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use trireme_model::kinds;

    use super::*;

    fn service(ports: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "svc-uid", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": ports, "clusterIP": "10.96.0.10"},
        })
    }

    fn http_service() -> Value {
        service(json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]))
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Arc<Value> {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(ip) = ip {
            pod["status"]["podIP"] = json!(ip);
        }
        Arc::new(pod)
    }

    fn with(pod: &Arc<Value>, pointer: &str, value: Value) -> Arc<Value> {
        let mut pod = (**pod).clone();
        let (parent, field) = pointer.rsplit_once('/').expect("a pointer");
        let parent = pod.pointer_mut(parent).and_then(Value::as_object_mut).expect("an object to set a field in");
        parent.insert(field.to_string(), value);
        Arc::new(pod)
    }

    fn ips(addresses: &Value) -> Vec<&str> {
        addresses.as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str()).collect()
    }

    #[test]
    fn ready_pods_are_addresses_and_not_ready_ones_not_ready_addresses() {
        let pods = vec![pod("b", Some("10.0.0.2"), false), pod("a", Some("10.0.0.1"), true)];
        let ep = desired_endpoints(&http_service(), &pods);
        let subsets = ep["subsets"].as_array().expect("subsets");
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0]["addresses"]), ["10.0.0.1"]);
        assert_eq!(ips(&subsets[0]["notReadyAddresses"]), ["10.0.0.2"]);
        assert_eq!(subsets[0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        let address = &subsets[0]["addresses"][0];
        assert_eq!(address["nodeName"], "n1");
        assert_eq!(address["targetRef"], json!({"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}));
        assert_eq!(ep["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    }

    #[test]
    fn pods_without_an_ip_finished_unselected_or_elsewhere_are_left_out() {
        let other_ns = with(&pod("d", Some("10.0.0.4"), true), "/metadata/namespace", json!("other"));
        let unselected = with(&pod("e", Some("10.0.0.5"), true), "/metadata/labels", json!({"app": "db"}));
        let pods = vec![
            pod("a", None, true),
            with(&pod("b", Some("10.0.0.2"), true), "/status/phase", json!("Succeeded")),
            with(&pod("c", Some("10.0.0.3"), true), "/status/phase", json!("Failed")),
            other_ns,
            unselected,
        ];
        let ep = desired_endpoints(&http_service(), &pods);
        assert_eq!(ep.get("subsets"), None, "{ep}");
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(slices.len(), 1, "one placeholder slice");
        assert_eq!(slices[0]["endpoints"], json!([]));
    }

    #[test]
    fn a_terminating_pod_leaves_endpoints_but_stays_in_its_slice_as_terminating() {
        let pods =
            vec![with(&pod("a", Some("10.0.0.1"), true), "/metadata/deletionTimestamp", json!("2025-01-01T00:00:00Z"))];
        assert_eq!(desired_endpoints(&http_service(), &pods).get("subsets"), None);
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(
            slices[0]["endpoints"][0]["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_pod_ready() {
        let mut svc = http_service();
        svc["spec"]["publishNotReadyAddresses"] = json!(true);
        let ep = desired_endpoints(&svc, &[pod("a", Some("10.0.0.1"), false)]);
        assert_eq!(ips(&ep["subsets"][0]["addresses"]), ["10.0.0.1"]);
    }

    #[test]
    fn a_named_target_port_resolves_in_each_pod_and_splits_subsets_by_port() {
        let svc = service(json!([{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"}]));
        let other_port =
            with(&pod("b", Some("10.0.0.2"), true), "/spec/containers/0/ports/0/containerPort", json!(9090));
        let no_such_port = with(&pod("c", Some("10.0.0.3"), true), "/spec/containers/0/ports/0/name", json!("grpc"));
        let pods = vec![pod("a", Some("10.0.0.1"), true), other_port, no_such_port];
        let ep = desired_endpoints(&svc, &pods);
        let subsets = ep["subsets"].as_array().expect("subsets");
        let by_port: Vec<(i64, Vec<&str>)> = subsets
            .iter()
            .map(|s| (s["ports"][0]["port"].as_i64().unwrap_or_default(), ips(&s["addresses"])))
            .collect();
        assert_eq!(by_port, [(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])], "a pod without the port is left out");
        let slices = desired_slices(&svc, &pods);
        let ports: Vec<&Value> = slices.iter().map(|s| &s["ports"]).collect();
        assert_eq!(slices.len(), 3, "a slice per port set, the pod without the port in one without ports");
        assert!(ports.contains(&&json!([{"name": "web", "port": 8080, "protocol": "TCP"}])));
        assert!(ports.contains(&&json!([{"name": "web", "port": 9090, "protocol": "TCP"}])));
        assert!(ports.contains(&&Value::Null));
    }

    #[test]
    fn a_named_port_matches_the_service_ports_protocol() {
        let svc = service(json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "http"}]));
        let ep = desired_endpoints(&svc, &[pod("a", Some("10.0.0.1"), true)]);
        assert_eq!(ep.get("subsets"), None, "the pod's http port is TCP");
    }

    #[test]
    fn a_headless_service_without_ports_lists_bare_addresses_and_a_plain_one_none() {
        let mut svc = service(json!([]));
        let pods = vec![pod("a", Some("10.0.0.1"), true)];
        assert_eq!(desired_endpoints(&svc, &pods).get("subsets"), None);
        svc["spec"]["clusterIP"] = json!("None");
        let ep = desired_endpoints(&svc, &pods);
        assert_eq!(
            ep["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1",
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}}]}])
        );
        assert_eq!(ep["metadata"]["labels"][HEADLESS_LABEL], "");
    }

    #[test]
    fn a_slice_lists_each_pod_with_its_conditions_and_is_labeled_for_its_service() {
        let pods = vec![pod("a", Some("10.0.0.1"), true), pod("b", Some("10.0.0.2"), false)];
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert!(object_name(slice).starts_with("web-") && object_name(slice).len() == "web-".len() + 5);
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slice["metadata"]["labels"][MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(
            slice["endpoints"][0],
            json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}})
        );
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(desired_slices(&http_service(), &pods)[0]["metadata"]["name"], slice["metadata"]["name"], "stable");
    }

    #[test]
    fn large_services_are_split_into_slices_of_at_most_a_hundred() {
        let pods: Vec<Arc<Value>> =
            (0..250).map(|i| pod(&format!("p{i}"), Some(&format!("10.0.{}.{}", i / 200, i % 200)), true)).collect();
        let slices = desired_slices(&http_service(), &pods);
        let sizes: Vec<usize> = slices.iter().map(|s| s["endpoints"].as_array().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let names: std::collections::BTreeSet<&str> = slices.iter().map(object_name).collect();
        assert_eq!(names.len(), 3, "distinct names");
    }

    #[test]
    fn endpoints_beyond_capacity_are_truncated_ready_first_and_annotated() {
        let pods: Vec<Arc<Value>> = (0..1100)
            .map(|i| pod(&format!("p{i}"), Some(&format!("10.1.{}.{}", i / 200, i % 200)), i % 2 == 0))
            .collect();
        let ep = desired_endpoints(&http_service(), &pods);
        assert_eq!(ep["subsets"][0]["addresses"].as_array().map(Vec::len), Some(550));
        assert_eq!(ep["subsets"][0]["notReadyAddresses"].as_array().map(Vec::len), Some(450));
        assert_eq!(ep["metadata"]["annotations"][OVER_CAPACITY_ANNOTATION], "truncated");
    }

    #[test]
    fn services_without_selector_or_of_type_external_name_are_not_managed() {
        let mut svc = http_service();
        svc["spec"]["selector"] = json!({});
        assert_eq!(service_selector(&svc), None);
        let mut svc = http_service();
        svc["spec"]["type"] = json!("ExternalName");
        assert_eq!(service_selector(&svc), None);
        assert!(!selects(&svc, &pod("a", Some("10.0.0.1"), true)));
    }

    /// What the registry stores is the object after k8s-openapi decoding, defaulting and
    /// validation; what the controller wants must survive that unchanged, or every reconcile
    /// would find a difference and write.
    #[test]
    fn desired_objects_are_stored_as_they_are_so_a_second_reconcile_writes_nothing() {
        let mut svc = service(json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "appProtocol": "http"},
            {"port": 81, "protocol": "TCP", "targetPort": 8081},
        ]));
        svc["spec"]["clusterIP"] = json!("None");
        let mut hosted = (*pod("c", Some("10.0.0.3"), true)).clone();
        hosted["spec"]["hostname"] = json!("c");
        hosted["spec"]["subdomain"] = json!("web");
        let pods = vec![pod("a", Some("10.0.0.1"), true), pod("b", Some("10.0.0.2"), false), Arc::new(hosted)];
        let ep = desired_endpoints(&svc, &pods);
        let rt = resource_type("", "endpoints").expect("endpoints");
        let stored = kinds::normalize(rt, ep.clone(), None, true).expect("valid endpoints").object;
        assert_eq!(apply_endpoints(&stored, &ep), stored);
        let rt = resource_type("discovery.k8s.io", "endpointslices").expect("slices");
        for slice in desired_slices(&svc, &pods).into_iter().chain(desired_slices(&svc, &[])) {
            let stored = kinds::normalize(rt, slice.clone(), None, true).expect("valid slice").object;
            assert_eq!(apply_slice(&stored, &slice), stored);
            assert!(plan_slices(&[Arc::new(stored)], vec![slice]).is_empty());
        }
    }

    #[test]
    fn applying_keeps_what_others_wrote_and_replaces_the_managed_fields() {
        let desired = desired_endpoints(&http_service(), &[pod("a", Some("10.0.0.1"), true)]);
        let current = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "shop", "uid": "ep-uid", "annotations": {"note": "mine"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "old-uid"},
                    {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "t-uid"}]},
            "subsets": [{"addresses": [{"ip": "10.9.9.9"}]}],
        });
        let next = apply_endpoints(&current, &desired);
        assert_eq!(next["subsets"], desired["subsets"]);
        assert_eq!(next["metadata"]["uid"], "ep-uid");
        assert_eq!(next["metadata"]["annotations"], json!({"note": "mine"}));
        let owners: Vec<&str> = next["metadata"]["ownerReferences"]
            .as_array()
            .expect("owners")
            .iter()
            .filter_map(|r| r["uid"].as_str())
            .collect();
        assert_eq!(owners, ["t-uid", "svc-uid"]);
    }

    #[test]
    fn slices_no_longer_wanted_are_deleted_and_new_ones_created() {
        let stale = Arc::new(json!({"metadata": {"name": "web-old", "uid": "u-old"}}));
        let desired = desired_slices(&http_service(), &[pod("a", Some("10.0.0.1"), true)]);
        let actions = plan_slices(&[stale], desired.clone());
        assert_eq!(
            actions,
            [
                SliceAction::Delete { name: "web-old".into(), uid: Some("u-old".into()) },
                SliceAction::Create(desired[0].clone())
            ]
        );
    }

    #[test]
    fn a_pod_status_change_that_endpoints_do_not_show_queues_nothing_but_a_deletion_always_does() {
        let a = pod("a", Some("10.0.0.1"), true);
        let mut restarted = (*a).clone();
        restarted["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 3}]);
        assert!(!pod_change_matters(ChangeType::Modified, &restarted, Some(&a)));
        let unready = pod("a", Some("10.0.0.1"), false);
        assert!(pod_change_matters(ChangeType::Modified, &unready, Some(&a)));
        assert!(pod_change_matters(ChangeType::Deleted, &a, Some(&a)), "a delete event carries the last state");
        assert!(pod_change_matters(ChangeType::Added, &a, None));
    }
}
