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
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::ContainerPort;
use k8s_openapi::api::core::v1::EndpointAddress;
use k8s_openapi::api::core::v1::EndpointPort;
use k8s_openapi::api::core::v1::EndpointSubset;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::Digest;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::EndpointSlices;
use trireme_model::kinds::EndpointsKind;
use trireme_model::kinds::Services;
use trireme_model::selector::LabelSelector;
use trireme_model::strategy::Kind;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::Preconditions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::controller::Controller;
use trireme_registry::informer::Event;
use trireme_registry::informer::Informer;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;
use crate::util;

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

/// A string field that is set and not empty (Kubernetes treats `""` as unset).
fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str).filter(|s| !s.is_empty())
}

fn name_of(meta: &meta::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn namespace_of(meta: &meta::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// The labels `service` selects its pods by, or `None` when this controller does not manage its
/// endpoints: no (or an empty) selector, or type `ExternalName`.
pub fn service_selector(service: &Service) -> Option<BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.clone().filter(|selector| !selector.is_empty())
}

/// Whether `service` selects `pod`: same namespace, and every selector label matches.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service_selector(service) else { return false };
    if namespace_of(&service.metadata) != namespace_of(&pod.metadata) {
        return false;
    }
    let labels = util::labels(&pod.metadata);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Each container's ports and restart policy (the policy makes an init container a sidecar,
/// whose ports a named target may resolve to).
type ContainerPorts<'a> = Vec<(Option<&'a [ContainerPort]>, Option<&'a str>)>;

/// What of a pod its endpoints depend on: a pod change that leaves this equal changes no
/// Endpoints or slice, so it queues nothing.
#[derive(Debug, PartialEq)]
struct EndpointFields<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    uid: Option<&'a str>,
    deletion_timestamp: Option<&'a meta::Time>,
    node_name: Option<&'a str>,
    hostname: Option<&'a str>,
    subdomain: Option<&'a str>,
    containers: ContainerPorts<'a>,
    init_containers: ContainerPorts<'a>,
    pod_ip: Option<&'a str>,
    phase: Option<&'a str>,
    ready: bool,
}

fn endpoint_fields(pod: &Pod) -> EndpointFields<'_> {
    fn ports(containers: &[Container]) -> ContainerPorts<'_> {
        containers.iter().map(|c| (c.ports.as_deref(), c.restart_policy.as_deref())).collect()
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    EndpointFields {
        labels: pod.metadata.labels.as_ref(),
        uid: pod.metadata.uid.as_deref(),
        deletion_timestamp: pod.metadata.deletion_timestamp.as_ref(),
        node_name: spec.and_then(|s| s.node_name.as_deref()),
        hostname: spec.and_then(|s| s.hostname.as_deref()),
        subdomain: spec.and_then(|s| s.subdomain.as_deref()),
        containers: spec.map(|s| ports(&s.containers)).unwrap_or_default(),
        init_containers: spec.and_then(|s| s.init_containers.as_deref()).map(ports).unwrap_or_default(),
        pod_ip: status.and_then(|s| s.pod_ip.as_deref()),
        phase: status.and_then(|s| s.phase.as_deref()),
        ready: util::pod_ready(pod),
    }
}

/// Whether a pod event can change an Endpoints object or a slice: every creation and deletion
/// does, an update only when it changes what they show.
fn pod_change_matters(kind: ChangeType, pod: &Pod, old: Option<&Pod>) -> bool {
    kind != ChangeType::Modified || old.is_none_or(|old| endpoint_fields(old) != endpoint_fields(pod))
}

/// A service port with its target resolved in one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResolvedPort {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl ResolvedPort {
    /// As an Endpoints port (an empty name is left out).
    fn endpoints_port(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()).filter(|name| !name.is_empty()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    /// As an EndpointSlice port (the name is always there, `""` when the service port has none).
    fn slice_port(&self) -> discovery::EndpointPort {
        discovery::EndpointPort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// The container port named `name` with `protocol` in `pod` (regular containers, then sidecars),
/// as Kubernetes' `FindPort` looks it up.
fn named_container_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| p.container_port)
}

/// `service_port` with its target in `pod`; `None` when a named target is not in the pod.
fn resolve_port(service_port: &ServicePort, pod: &Pod) -> Option<ResolvedPort> {
    let protocol = non_empty(service_port.protocol.as_ref()).unwrap_or("TCP");
    let port = match &service_port.target_port {
        Some(IntOrString::Int(port)) => *port,
        Some(IntOrString::String(name)) if !name.is_empty() => named_container_port(pod, name, protocol)?,
        _ => service_port.port,
    };
    Some(ResolvedPort {
        name: service_port.name.clone().unwrap_or_default(),
        port,
        protocol: protocol.to_string(),
        app_protocol: non_empty(service_port.app_protocol.as_ref()).map(str::to_string),
    })
}

fn service_ports(service: &Service) -> &[ServicePort] {
    service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default()
}

fn publishes_not_ready(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses) == Some(true)
}

fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// One pod as an endpoint of one service.
#[derive(Debug, Clone)]
struct PodEndpoint {
    ip: String,
    uid: String,
    node_name: Option<String>,
    hostname: Option<String>,
    target_ref: ObjectReference,
    /// Routable: ready and not terminating, or the service publishes not-ready addresses.
    ready: bool,
    /// The pod's Ready condition holds, terminating or not.
    serving: bool,
    /// The pod is being deleted.
    terminating: bool,
    ports: Vec<ResolvedPort>,
}

/// `pod` as an endpoint of `service`, if it is one at all: selected, with an IP, not finished.
fn pod_endpoint(service: &Service, pod: &Pod) -> Option<PodEndpoint> {
    if !selects(service, pod) {
        return None;
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let ip = non_empty(status.and_then(|s| s.pod_ip.as_ref()))?;
    if matches!(non_empty(status.and_then(|s| s.phase.as_ref())), Some("Succeeded" | "Failed")) {
        return None;
    }
    let terminating = util::terminating(&pod.metadata);
    let serving = util::pod_ready(pod);
    let field = |value: &Option<String>| non_empty(value.as_ref()).map(str::to_string);
    let target_ref = ObjectReference {
        kind: Some("Pod".into()),
        namespace: field(&pod.metadata.namespace),
        name: field(&pod.metadata.name),
        uid: field(&pod.metadata.uid),
        ..Default::default()
    };
    let hostname = non_empty(spec.and_then(|s| s.hostname.as_ref()));
    let subdomain = non_empty(spec.and_then(|s| s.subdomain.as_ref()));
    let hostname = match (hostname, subdomain) {
        (Some(hostname), Some(subdomain)) if subdomain == name_of(&service.metadata) => Some(hostname.to_string()),
        _ => None,
    };
    let mut ports: Vec<ResolvedPort> = service_ports(service).iter().filter_map(|p| resolve_port(p, pod)).collect();
    ports.sort();
    ports.dedup();
    Some(PodEndpoint {
        ip: ip.to_string(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node_name: non_empty(spec.and_then(|s| s.node_name.as_ref())).map(str::to_string),
        hostname,
        target_ref,
        ready: publishes_not_ready(service) || (serving && !terminating),
        serving,
        terminating,
        ports,
    })
}

/// The endpoints of `service` among `pods`, in a stable order (by IP, then pod uid).
fn pod_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Vec<PodEndpoint> {
    let mut endpoints: Vec<PodEndpoint> = pods.iter().filter_map(|pod| pod_endpoint(service, pod)).collect();
    endpoints.sort_by(|a, b| (&a.ip, &a.uid).cmp(&(&b.ip, &b.uid)));
    endpoints
}

/// The ownerReference naming `service` as the controller of what this controller writes.
fn owner_reference(service: &Service) -> meta::OwnerReference {
    util::controller_ref("v1", "Service", &service.metadata)
}

/// `service`'s labels plus the headless marker when it is headless (and never a stale one).
fn copied_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = util::labels(&service.metadata);
    labels.remove(HEADLESS_LABEL);
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The ready and not-ready addresses of the endpoints resolving to one set of ports.
type Subsets = BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)>;

/// The Endpoints `service` should have, given the pods of its namespace.
///
/// Addresses are grouped into subsets by the ports they resolve to (Kubernetes' repacking);
/// a pod none of whose ports resolve is left out, except for a headless service without ports,
/// whose addresses have no ports at all.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let no_ports = service_ports(service).is_empty();
    let mut subsets = Subsets::new();
    for ep in pod_endpoints(service, pods) {
        if ep.terminating && !publishes_not_ready(service) {
            continue;
        }
        if (no_ports && !is_headless(service)) || (!no_ports && ep.ports.is_empty()) {
            continue;
        }
        let address = EndpointAddress {
            ip: ep.ip,
            target_ref: Some(ep.target_ref),
            node_name: ep.node_name,
            hostname: ep.hostname,
        };
        let (ready, not_ready) = subsets.entry(ep.ports).or_default();
        if ep.ready { ready } else { not_ready }.push(address);
    }
    let truncated = truncate(&mut subsets, MAX_ENDPOINT_ADDRESSES);
    // Kubernetes leaves empty lists out: no `subsets: []`, no `addresses: []`.
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .filter(|(_, (ready, not_ready))| !ready.is_empty() || !not_ready.is_empty())
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(ports.iter().map(ResolvedPort::endpoints_port).collect()).filter(|p: &Vec<_>| !p.is_empty()),
        })
        .collect();
    let mut labels = copied_labels(service);
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    Endpoints {
        metadata: meta::ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: truncated
                .then(|| BTreeMap::from([(OVER_CAPACITY_ANNOTATION.to_string(), "truncated".to_string())])),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// Cuts the subsets down to `max` addresses in all, ready ones kept first. Returns whether it
/// cut anything.
fn truncate(subsets: &mut Subsets, max: usize) -> bool {
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
pub fn apply_endpoints(current: &Endpoints, desired: &Endpoints) -> Endpoints {
    let mut next = current.clone();
    next.subsets = desired.subsets.clone();
    apply_metadata(&mut next.metadata, &desired.metadata);
    let wanted = desired.metadata.annotations.as_ref().and_then(|a| a.get(OVER_CAPACITY_ANNOTATION));
    match wanted {
        Some(value) => {
            let annotations = next.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(OVER_CAPACITY_ANNOTATION.into(), value.clone());
        }
        None => {
            // Other annotations are the user's: an emptied map stays, as it was written.
            if let Some(annotations) = next.metadata.annotations.as_mut() {
                annotations.remove(OVER_CAPACITY_ANNOTATION);
            }
        }
    }
    next
}

/// Labels wholesale, and the Service ownerReference in place of any other Service's.
fn apply_metadata(next: &mut meta::ObjectMeta, desired: &meta::ObjectMeta) {
    next.labels = desired.labels.clone();
    let others = next.owner_references.iter().flatten().filter(|r| !(r.kind == "Service" && r.api_version == "v1"));
    let owners: Vec<meta::OwnerReference> = others.chain(desired.owner_references.iter().flatten()).cloned().collect();
    next.owner_references = Some(owners).filter(|o| !o.is_empty());
}

/// The name of the `chunk`th slice of `service`'s endpoints with `ports`: `<service>-<suffix>`,
/// the suffix derived from the service's uid, the ports and the chunk, so the same slice keeps
/// its name from one reconcile (and one leader) to the next, and a create that raced with
/// another finds the name taken instead of making a duplicate.
fn slice_name(service: &Service, ports: &[ResolvedPort], chunk: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = Sha256::new();
    hasher.update(service.metadata.uid.as_deref().unwrap_or_default().as_bytes());
    for port in ports {
        hasher.update(format!("\0{}\0{}\0{}\0{:?}", port.name, port.port, port.protocol, port.app_protocol).as_bytes());
    }
    hasher.update(chunk.to_le_bytes());
    let digest = hasher.finalize();
    let suffix: String =
        digest.iter().take(5).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    format!("{}-{suffix}", name_of(&service.metadata))
}

/// The EndpointSlices `service` should have, given the pods of its namespace: IPv4 endpoints
/// grouped by the ports they resolve to, at most [`MAX_ENDPOINTS_PER_SLICE`] per slice, and one
/// empty slice when there are none (as Kubernetes keeps a placeholder).
pub fn desired_slices(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
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

fn slice(service: &Service, ports: &[ResolvedPort], endpoints: &[PodEndpoint], chunk: usize) -> EndpointSlice {
    let mut labels = copied_labels(service);
    labels.insert(SERVICE_NAME_LABEL.into(), name_of(&service.metadata).to_string());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    let endpoints = endpoints
        .iter()
        .map(|ep| discovery::Endpoint {
            addresses: vec![ep.ip.clone()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(ep.ready),
                serving: Some(ep.serving),
                terminating: Some(ep.terminating),
            }),
            target_ref: Some(ep.target_ref.clone()),
            node_name: ep.node_name.clone(),
            hostname: ep.hostname.clone(),
            ..Default::default()
        })
        .collect();
    EndpointSlice {
        metadata: meta::ObjectMeta {
            name: Some(slice_name(service, ports, chunk)),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: (!ports.is_empty()).then(|| ports.iter().map(ResolvedPort::slice_port).collect()),
    }
}

/// The stored `current` slice with the fields this controller manages taken from `desired`:
/// endpoints, ports, labels and the Service ownerReference. Equal to `current` when nothing
/// needs writing.
pub fn apply_slice(current: &EndpointSlice, desired: &EndpointSlice) -> EndpointSlice {
    let mut next = current.clone();
    next.endpoints = desired.endpoints.clone();
    next.ports = desired.ports.clone();
    apply_metadata(&mut next.metadata, &desired.metadata);
    next
}

/// Whether `slice` is one this controller manages for the service named `service`.
pub fn is_managed_slice(slice: &EndpointSlice, service: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(SERVICE_NAME_LABEL) == Some(service) && label(MANAGED_BY_LABEL) == Some(CONTROLLER_NAME)
}

/// A write to bring one service's slices to what they should be.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAction {
    /// Create this slice.
    Create(EndpointSlice),
    /// Lay this slice's managed fields over the stored one.
    Update(EndpointSlice),
    /// Delete the slice of this name (and uid, as a precondition).
    Delete { name: String, uid: Option<String> },
}

/// What to do to turn `existing` (the managed slices of one service) into `desired`; nothing
/// for slices already as they should be.
pub fn plan_slices(existing: &[Arc<EndpointSlice>], desired: Vec<EndpointSlice>) -> Vec<SliceAction> {
    let mut actions = Vec::new();
    for slice in existing {
        let name = name_of(&slice.metadata);
        if !desired.iter().any(|d| name_of(&d.metadata) == name) {
            let uid = non_empty(slice.metadata.uid.as_ref()).map(str::to_string);
            actions.push(SliceAction::Delete { name: name.to_string(), uid });
        }
    }
    for slice in desired {
        match existing.iter().find(|e| name_of(&e.metadata) == name_of(&slice.metadata)) {
            Some(current) if apply_slice(current, &slice) == **current => {}
            Some(_) => actions.push(SliceAction::Update(slice)),
            None => actions.push(SliceAction::Create(slice)),
        }
    }
    actions
}

/// Whether `endpoints` were written by this controller for the service named `service` (they
/// carry its ownerReference), so may be deleted when that service is gone.
pub fn is_managed_endpoints(endpoints: &Endpoints, service: &str) -> bool {
    endpoints
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Service" && r.api_version == "v1" && r.name == service)
}

// ---- the runner -------------------------------------------------------------------------

/// Runs until `stop`: reconciles services as they, their pods, their Endpoints or their slices
/// change. The controller subscribes to the informers here, before they start; its reconciles
/// wait for every cache's first list, as reconciling before every cache is full would write
/// Endpoints without pods not yet seen: a blip that proxies would route by.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let informers = &ctx.informers;
    let services = informers.services.clone();
    let controller = Controller::new("endpoint-controller")
        .workers(WORKERS)
        .primary(&informers.services)
        .watches(&informers.pods, move |event| services_of_pod(&services, event))
        .watches(&informers.endpoints, |event| [event.key()])
        .watches(&informers.endpoint_slices, |event| {
            let slices = std::iter::once(&event.object).chain(&event.old);
            slices.filter_map(|slice| service_of_slice(slice)).collect::<Vec<_>>()
        });
    controller.run(stop, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key).await }
    })
}

/// The services a pod change concerns: those selecting the pod before and after the change, if
/// the change shows in their Endpoints or slices at all.
fn services_of_pod(services: &Informer<Services>, event: &Event<Pod>) -> Vec<ObjectKey> {
    let old = event.old.as_deref();
    if !pod_change_matters(event.kind, &event.object, old) {
        return Vec::new();
    }
    let mut keys = Vec::new();
    for pod in std::iter::once(&*event.object).chain(old) {
        for service in services.list_namespace(namespace_of(&pod.metadata)) {
            if selects(&service, pod) {
                keys.push(ObjectKey::of_meta(&service.metadata));
            }
        }
    }
    keys
}

/// The key of the service a slice is labeled for.
fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectKey> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(Some(namespace_of(&slice.metadata)), service))
}

/// The label selector of exactly these labels, for an indexed lookup in a cache.
fn selector_of(labels: BTreeMap<String, String>) -> Option<LabelSelector> {
    util::selector_of(&meta::LabelSelector { match_labels: Some(labels), match_expressions: None })
}

/// Brings the Endpoints and slices of the service at `key` to what they should be.
async fn reconcile(ctx: &Context, key: &ObjectKey) -> Result<Action, RegistryError> {
    let Some(namespace) = key.namespace.as_deref() else { return Ok(Action::Await) };
    let informers = &ctx.informers;
    let managed = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), key.name.clone()),
        (MANAGED_BY_LABEL.to_string(), CONTROLLER_NAME.to_string()),
    ]);
    let slices: Vec<Arc<EndpointSlice>> = selector_of(managed)
        .map(|selector| informers.endpoint_slices.select(Some(namespace), &selector))
        .unwrap_or_default()
        .into_iter()
        .filter(|s| is_managed_slice(s, &key.name))
        .collect();
    let Some(service) = informers.services.get(key) else {
        // The service is gone: so go its Endpoints and slices.
        if let Some(endpoints) = informers.endpoints.get(key)
            && is_managed_endpoints(&endpoints, &key.name)
        {
            let uid = non_empty(endpoints.metadata.uid.as_ref());
            delete::<EndpointsKind>(ctx, namespace, &key.name, uid).await?;
            tracing::info!(service = %key, "service gone: deleted its endpoints");
        }
        sync_slices(ctx, key, &slices, Vec::new()).await?;
        return Ok(Action::Await);
    };
    let Some(selector) = service_selector(&service) else { return Ok(Action::Await) };
    // The pods the selector's labels index; `desired_*` still check each one.
    let pods =
        selector_of(selector).map(|selector| informers.pods.select(Some(namespace), &selector)).unwrap_or_default();
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
    current: Option<Arc<Endpoints>>,
    desired: Endpoints,
) -> Result<(), RegistryError> {
    if current.as_ref().is_some_and(|current| apply_endpoints(current, &desired) == **current) {
        return Ok(());
    }
    let update =
        || update_managed::<EndpointsKind>(ctx, key.namespace.as_deref(), &key.name, &desired, apply_endpoints);
    // The cache may lag the store either way: a create that finds the name taken updates, an
    // update that finds nothing creates.
    match current {
        Some(_) => match update().await {
            Err(RegistryError::NotFound { .. }) => create::<EndpointsKind>(ctx, key, &desired).await?,
            other => other?,
        },
        None => match create::<EndpointsKind>(ctx, key, &desired).await {
            Err(RegistryError::AlreadyExists { .. }) => update().await?,
            other => other?,
        },
    }
    tracing::debug!(service = %key, "endpoints written");
    Ok(())
}

/// Creates `object`; a namespace being deleted is not an error (nothing may be created there,
/// and the namespace's deletion takes the service too).
async fn create<K: Kind>(ctx: &Context, key: &ObjectKey, object: &K::Object) -> Result<(), RegistryError> {
    match ctx.registry.create_object::<K>(object, &write_options()).await {
        Ok(_) => Ok(()),
        Err(RegistryError::Forbidden(message)) => {
            tracing::debug!(service = %key, %message, "cannot create endpoints");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Lays the managed fields of `desired` over the stored object (with `apply`), writing only
/// when that changes it.
async fn update_managed<K: Kind>(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
    desired: &K::Object,
    apply: fn(&K::Object, &K::Object) -> K::Object,
) -> Result<(), RegistryError> {
    let change = |current: &mut K::Object| *current = apply(current, desired);
    ctx.registry.update_object::<K>(namespace, name, Scope::Main, &write_options(), change, None).await.map(|_| ())
}

/// Deletes an object if it is still the one with `uid`; gone already is fine.
async fn delete<K: Kind>(ctx: &Context, namespace: &str, name: &str, uid: Option<&str>) -> Result<(), RegistryError> {
    let options = DeleteOptions {
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    match ctx.registry.delete(K::RESOURCE, Some(namespace), name, &options).await {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Brings the managed slices of the service at `key` from `existing` to `desired`.
async fn sync_slices(
    ctx: &Context,
    key: &ObjectKey,
    existing: &[Arc<EndpointSlice>],
    desired: Vec<EndpointSlice>,
) -> Result<(), RegistryError> {
    let actions = plan_slices(existing, desired);
    if actions.is_empty() {
        return Ok(());
    }
    let namespace = key.namespace.as_deref().unwrap_or_default();
    for action in actions {
        match action {
            SliceAction::Create(slice) => {
                let name = name_of(&slice.metadata).to_string();
                match create::<EndpointSlices>(ctx, key, &slice).await {
                    Err(RegistryError::AlreadyExists { .. }) => update_slice(ctx, namespace, &slice).await?,
                    other => other?,
                }
                tracing::debug!(service = %key, slice = name, "endpoint slice created");
            }
            SliceAction::Update(slice) => {
                let name = name_of(&slice.metadata).to_string();
                match update_slice(ctx, namespace, &slice).await {
                    Err(RegistryError::NotFound { .. }) => create::<EndpointSlices>(ctx, key, &slice).await?,
                    other => other?,
                }
                tracing::debug!(service = %key, slice = name, "endpoint slice updated");
            }
            SliceAction::Delete { name, uid } => {
                delete::<EndpointSlices>(ctx, namespace, &name, uid.as_deref()).await?;
                tracing::debug!(service = %key, slice = name, "endpoint slice deleted");
            }
        }
    }
    Ok(())
}

/// Lays the managed fields of `desired` over the stored slice of its name.
async fn update_slice(ctx: &Context, namespace: &str, desired: &EndpointSlice) -> Result<(), RegistryError> {
    update_managed::<EndpointSlices>(ctx, Some(namespace), name_of(&desired.metadata), desired, apply_slice).await
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ContainerStatus;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use serde::Serialize;
    use serde_json::Value;
    use serde_json::json;
    use trireme_model::kinds;
    use trireme_registry::from_value;
    use trireme_registry::to_value;

    use super::*;

    fn service(ports: Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "svc-uid", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": ports, "clusterIP": "10.96.0.10"},
        }))
        .expect("a service")
    }

    fn http_service() -> Service {
        service(json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]))
    }

    fn spec(service: &mut Service) -> &mut ServiceSpec {
        service.spec.get_or_insert_with(ServiceSpec::default)
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Arc<Pod> {
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
        Arc::new(serde_json::from_value(pod).expect("a pod"))
    }

    /// `pod` changed by `change`.
    fn with(pod: &Arc<Pod>, change: impl FnOnce(&mut Pod)) -> Arc<Pod> {
        let mut pod = (**pod).clone();
        change(&mut pod);
        Arc::new(pod)
    }

    fn pod_spec(pod: &mut Pod) -> &mut k8s_openapi::api::core::v1::PodSpec {
        pod.spec.as_mut().expect("a pod spec")
    }

    fn pod_status(pod: &mut Pod) -> &mut k8s_openapi::api::core::v1::PodStatus {
        pod.status.as_mut().expect("a pod status")
    }

    /// The first port of the pod's first container.
    fn container_port(pod: &mut Pod) -> &mut ContainerPort {
        let container = pod_spec(pod).containers.first_mut().expect("a container");
        container.ports.as_mut().and_then(|ports| ports.first_mut()).expect("a port")
    }

    /// As written: what an API client sees of the object (absent fields absent).
    fn json_of(object: &impl Serialize) -> Value {
        serde_json::to_value(object).expect("encodes")
    }

    fn ips(addresses: Option<&[EndpointAddress]>) -> Vec<&str> {
        addresses.into_iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    fn label<'a>(meta: &'a meta::ObjectMeta, key: &str) -> Option<&'a str> {
        meta.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
    }

    /// `object` as the registry stores it: after k8s-openapi decoding, defaulting and validation.
    fn stored<K: Kind>(object: &K::Object) -> K::Object {
        let value = to_value(object).expect("encodes");
        let stored = kinds::normalize(K::RESOURCE, value, None, true).expect("valid").object;
        from_value::<K>(stored).expect("decodes")
    }

    #[test]
    fn ready_pods_are_addresses_and_not_ready_ones_not_ready_addresses() {
        let pods = vec![pod("b", Some("10.0.0.2"), false), pod("a", Some("10.0.0.1"), true)];
        let ep = desired_endpoints(&http_service(), &pods);
        let subsets = ep.subsets.as_deref().expect("subsets");
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(subsets[0].addresses.as_deref()), ["10.0.0.1"]);
        assert_eq!(ips(subsets[0].not_ready_addresses.as_deref()), ["10.0.0.2"]);
        assert_eq!(json_of(&subsets[0].ports), json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        let address = &subsets[0].addresses.as_deref().expect("addresses")[0];
        assert_eq!(address.node_name.as_deref(), Some("n1"));
        assert_eq!(
            json_of(&address.target_ref),
            json!({"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"})
        );
        assert_eq!(ep.metadata.owner_references.as_deref().expect("owners")[0].uid, "svc-uid");
        assert_eq!(label(&ep.metadata, "tier"), Some("front"));
    }

    #[test]
    fn pods_without_an_ip_finished_unselected_or_elsewhere_are_left_out() {
        let other_ns = with(&pod("d", Some("10.0.0.4"), true), |p| p.metadata.namespace = Some("other".into()));
        let unselected = with(&pod("e", Some("10.0.0.5"), true), |p| {
            p.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        });
        let pods = vec![
            pod("a", None, true),
            with(&pod("b", Some("10.0.0.2"), true), |p| pod_status(p).phase = Some("Succeeded".into())),
            with(&pod("c", Some("10.0.0.3"), true), |p| pod_status(p).phase = Some("Failed".into())),
            other_ns,
            unselected,
        ];
        let ep = desired_endpoints(&http_service(), &pods);
        assert_eq!(ep.subsets, None, "{ep:?}");
        assert_eq!(json_of(&ep).get("subsets"), None, "no empty subsets written");
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(slices.len(), 1, "one placeholder slice");
        assert_eq!(json_of(&slices[0])["endpoints"], json!([]));
    }

    #[test]
    fn a_terminating_pod_leaves_endpoints_but_stays_in_its_slice_as_terminating() {
        let deleted: k8s_openapi::jiff::Timestamp = "2025-01-01T00:00:00Z".parse().expect("a time");
        let pods = vec![with(&pod("a", Some("10.0.0.1"), true), |p| {
            p.metadata.deletion_timestamp = Some(meta::Time(deleted))
        })];
        assert_eq!(desired_endpoints(&http_service(), &pods).subsets, None);
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(
            json_of(&slices[0].endpoints[0].conditions),
            json!({"ready": false, "serving": true, "terminating": true})
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_pod_ready() {
        let mut svc = http_service();
        spec(&mut svc).publish_not_ready_addresses = Some(true);
        let ep = desired_endpoints(&svc, &[pod("a", Some("10.0.0.1"), false)]);
        assert_eq!(ips(ep.subsets.as_deref().expect("subsets")[0].addresses.as_deref()), ["10.0.0.1"]);
    }

    #[test]
    fn a_named_target_port_resolves_in_each_pod_and_splits_subsets_by_port() {
        let svc = service(json!([{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"}]));
        let other_port = with(&pod("b", Some("10.0.0.2"), true), |p| container_port(p).container_port = 9090);
        let no_such_port = with(&pod("c", Some("10.0.0.3"), true), |p| container_port(p).name = Some("grpc".into()));
        let pods = vec![pod("a", Some("10.0.0.1"), true), other_port, no_such_port];
        let ep = desired_endpoints(&svc, &pods);
        let subsets = ep.subsets.as_deref().expect("subsets");
        let by_port: Vec<(i32, Vec<&str>)> = subsets
            .iter()
            .map(|s| {
                let port = s.ports.iter().flatten().next().map_or(0, |p| p.port);
                (port, ips(s.addresses.as_deref()))
            })
            .collect();
        assert_eq!(by_port, [(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])], "a pod without the port is left out");
        let slices = desired_slices(&svc, &pods);
        let ports: Vec<Value> = slices.iter().map(|s| json_of(&s.ports)).collect();
        assert_eq!(slices.len(), 3, "a slice per port set, the pod without the port in one without ports");
        assert!(ports.contains(&json!([{"name": "web", "port": 8080, "protocol": "TCP"}])));
        assert!(ports.contains(&json!([{"name": "web", "port": 9090, "protocol": "TCP"}])));
        assert!(ports.contains(&Value::Null));
    }

    #[test]
    fn a_named_port_matches_the_service_ports_protocol() {
        let svc = service(json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "http"}]));
        let ep = desired_endpoints(&svc, &[pod("a", Some("10.0.0.1"), true)]);
        assert_eq!(ep.subsets, None, "the pod's http port is TCP");
    }

    #[test]
    fn a_headless_service_without_ports_lists_bare_addresses_and_a_plain_one_none() {
        let mut svc = service(json!([]));
        let pods = vec![pod("a", Some("10.0.0.1"), true)];
        assert_eq!(desired_endpoints(&svc, &pods).subsets, None);
        spec(&mut svc).cluster_ip = Some("None".into());
        let ep = desired_endpoints(&svc, &pods);
        assert_eq!(
            json_of(&ep.subsets),
            json!([{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1",
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}}]}])
        );
        assert_eq!(label(&ep.metadata, HEADLESS_LABEL), Some(""));
    }

    #[test]
    fn a_slice_lists_each_pod_with_its_conditions_and_is_labeled_for_its_service() {
        let pods = vec![pod("a", Some("10.0.0.1"), true), pod("b", Some("10.0.0.2"), false)];
        let slices = desired_slices(&http_service(), &pods);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        let name = name_of(&slice.metadata);
        assert!(name.starts_with("web-") && name.len() == "web-".len() + 5);
        assert_eq!(label(&slice.metadata, SERVICE_NAME_LABEL), Some("web"));
        assert_eq!(label(&slice.metadata, MANAGED_BY_LABEL), Some(CONTROLLER_NAME));
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(json_of(&slice.ports), json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(
            json_of(&slice.endpoints[0]),
            json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}})
        );
        assert_eq!(slice.endpoints[1].conditions.as_ref().and_then(|c| c.ready), Some(false));
        assert_eq!(desired_slices(&http_service(), &pods)[0].metadata.name, slice.metadata.name, "stable");
    }

    #[test]
    fn a_service_port_without_a_name_is_nameless_in_endpoints_and_named_empty_in_slices() {
        let svc = service(json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}]));
        let pods = vec![pod("a", Some("10.0.0.1"), true)];
        let ep = desired_endpoints(&svc, &pods);
        assert_eq!(
            json_of(&ep.subsets.as_deref().expect("subsets")[0].ports),
            json!([{"port": 8080, "protocol": "TCP"}])
        );
        let slices = desired_slices(&svc, &pods);
        assert_eq!(json_of(&slices[0].ports), json!([{"name": "", "port": 8080, "protocol": "TCP"}]));
    }

    #[test]
    fn large_services_are_split_into_slices_of_at_most_a_hundred() {
        let pods: Vec<Arc<Pod>> =
            (0..250).map(|i| pod(&format!("p{i}"), Some(&format!("10.0.{}.{}", i / 200, i % 200)), true)).collect();
        let slices = desired_slices(&http_service(), &pods);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let names: std::collections::BTreeSet<&str> = slices.iter().map(|s| name_of(&s.metadata)).collect();
        assert_eq!(names.len(), 3, "distinct names");
    }

    #[test]
    fn endpoints_beyond_capacity_are_truncated_ready_first_and_annotated() {
        let pods: Vec<Arc<Pod>> = (0..1100)
            .map(|i| pod(&format!("p{i}"), Some(&format!("10.1.{}.{}", i / 200, i % 200)), i % 2 == 0))
            .collect();
        let ep = desired_endpoints(&http_service(), &pods);
        let subset = &ep.subsets.as_deref().expect("subsets")[0];
        assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(550));
        assert_eq!(subset.not_ready_addresses.as_ref().map(Vec::len), Some(450));
        let annotations = ep.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.get(OVER_CAPACITY_ANNOTATION).map(String::as_str), Some("truncated"));
    }

    #[test]
    fn services_without_selector_or_of_type_external_name_are_not_managed() {
        let mut svc = http_service();
        spec(&mut svc).selector = Some(BTreeMap::new());
        assert_eq!(service_selector(&svc), None);
        let mut svc = http_service();
        spec(&mut svc).type_ = Some("ExternalName".into());
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
        spec(&mut svc).cluster_ip = Some("None".into());
        let hosted = with(&pod("c", Some("10.0.0.3"), true), |p| {
            pod_spec(p).hostname = Some("c".into());
            pod_spec(p).subdomain = Some("web".into());
        });
        let pods = vec![pod("a", Some("10.0.0.1"), true), pod("b", Some("10.0.0.2"), false), hosted];
        let ep = desired_endpoints(&svc, &pods);
        let stored_ep = stored::<EndpointsKind>(&ep);
        assert_eq!(apply_endpoints(&stored_ep, &ep), stored_ep);
        for slice in desired_slices(&svc, &pods).into_iter().chain(desired_slices(&svc, &[])) {
            let stored_slice = stored::<EndpointSlices>(&slice);
            assert_eq!(apply_slice(&stored_slice, &slice), stored_slice);
            assert!(plan_slices(&[Arc::new(stored_slice)], vec![slice]).is_empty());
        }
    }

    #[test]
    fn applying_keeps_what_others_wrote_and_replaces_the_managed_fields() {
        let desired = desired_endpoints(&http_service(), &[pod("a", Some("10.0.0.1"), true)]);
        let current: Endpoints = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "shop", "uid": "ep-uid", "annotations": {"note": "mine"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "old-uid"},
                    {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "t-uid"}]},
            "subsets": [{"addresses": [{"ip": "10.9.9.9"}]}],
        }))
        .expect("endpoints");
        let next = apply_endpoints(&current, &desired);
        assert_eq!(next.subsets, desired.subsets);
        assert_eq!(next.metadata.uid.as_deref(), Some("ep-uid"));
        assert_eq!(json_of(&next.metadata.annotations), json!({"note": "mine"}));
        let owners: Vec<&str> = next.metadata.owner_references.iter().flatten().map(|r| r.uid.as_str()).collect();
        assert_eq!(owners, ["t-uid", "svc-uid"]);
    }

    #[test]
    fn slices_no_longer_wanted_are_deleted_and_new_ones_created() {
        let stale = Arc::new(EndpointSlice {
            metadata: meta::ObjectMeta {
                name: Some("web-old".into()),
                uid: Some("u-old".into()),
                ..Default::default()
            },
            ..Default::default()
        });
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
        let restarted = with(&a, |p| {
            pod_status(p).container_statuses =
                Some(vec![ContainerStatus { name: "c".into(), restart_count: 3, ..Default::default() }]);
        });
        assert!(!pod_change_matters(ChangeType::Modified, &restarted, Some(&a)));
        let unready = pod("a", Some("10.0.0.1"), false);
        assert!(pod_change_matters(ChangeType::Modified, &unready, Some(&a)));
        assert!(pod_change_matters(ChangeType::Deleted, &a, Some(&a)), "a delete event carries the last state");
        assert!(pod_change_matters(ChangeType::Added, &a, None));
    }
}
