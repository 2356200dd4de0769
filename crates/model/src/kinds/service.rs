//! `v1` Service: DNS-1035 names, type-dependent defaults kept across updates, validation, ClusterIP and NodePort allocation by the registry, the printer and selectable fields.
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use serde_json::{Value, json};

use super::prelude::*;

/// How services are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    namespaced: true,
    subresources: &["status"],
    categories: &["all"],
    storage: "services",
};

/// The services kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Services;

impl Kind for Services {
    type Object = Service;
    const RESOURCE: &'static ResourceType = RES;
    const NAME_RULE: NameRule = NameRule::Dns1035Label;
    const TRACKS_GENERATION: bool = true;
    const FIELD_CONVERSION: bool = true;
    const ALLOCATION: Allocation = Allocation::ServiceAddresses;

    fn default(svc: &mut Service) {
        default_service(svc);
    }

    fn default_on_update(new: &mut Service, old: &Service) {
        default_service_on_update(new, old);
    }

    fn validate(new: &Service, old: Option<&Service>) -> Vec<FieldError> {
        validate_service(new, old)
    }

    fn columns() -> &'static [Column] {
        SERVICE_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        service_cells(object, now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        match field {
            "spec.clusterIP" => Some(text(&object["spec"]["clusterIP"])),
            "spec.type" => Some(text(&object["spec"]["type"])),
            _ => fields::meta(object, field),
        }
    }

    fn status_on_create() -> Option<Value> {
        Some(json!({}))
    }
}

/// Service, on update: an unset `clusterIP` keeps the stored `clusterIP`/`clusterIPs`; a
/// changed `clusterIP` with unchanged `clusterIPs` moves `clusterIPs[0]` along (so validation
/// reports the change); an unset `nodePort` keeps the stored one of the port with the same
/// number and protocol while the service still needs node ports. When the type changes,
/// fields the new type does not use are dropped if the client left them as stored (Kubernetes'
/// `dropTypeDependentFields`), so `kubectl apply` can switch a service to ExternalName.
pub fn default_service_on_update(new: &mut Service, old: &Service) {
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else { return };
    let external_name = |t: &Option<String>| t.as_deref() == Some("ExternalName");
    if spec.type_ != old_spec.type_ {
        drop_type_dependent_fields(spec, old_spec);
    }
    if !external_name(&spec.type_) && !external_name(&old_spec.type_) {
        let ip_unset = spec.cluster_ip.as_deref().is_none_or(str::is_empty);
        let ips_kept = spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) || spec.cluster_ips == old_spec.cluster_ips;
        if ip_unset && ips_kept {
            spec.cluster_ip.clone_from(&old_spec.cluster_ip);
            spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        } else if !ip_unset
            && spec.cluster_ip != old_spec.cluster_ip
            && spec.cluster_ips == old_spec.cluster_ips
            && let (Some(ip), Some(first)) =
                (spec.cluster_ip.clone(), spec.cluster_ips.as_mut().and_then(|v| v.first_mut()))
        {
            *first = ip;
        }
    }
    let needs_node_ports = |t: &Option<String>| matches!(t.as_deref(), Some("NodePort" | "LoadBalancer"));
    if needs_node_ports(&spec.type_) && needs_node_ports(&old_spec.type_) {
        for port in spec.ports.iter_mut().flatten().filter(|p| p.node_port.is_none_or(|n| n == 0)) {
            let stored = old_spec.ports.iter().flatten().find(|o| o.port == port.port && o.protocol == port.protocol);
            if let Some(stored) = stored {
                port.node_port = stored.node_port;
            }
        }
    }
}

/// Clears what the service's new type does not use, where it still holds the stored value.
pub(crate) fn drop_type_dependent_fields(spec: &mut ServiceSpec, old: &ServiceSpec) {
    let kind = spec.type_.as_deref().unwrap_or_default();
    if kind == "ExternalName" {
        if spec.cluster_ip == old.cluster_ip {
            spec.cluster_ip = None;
        }
        if spec.cluster_ips == old.cluster_ips {
            spec.cluster_ips = None;
        }
        if spec.ip_families == old.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old.ip_family_policy {
            spec.ip_family_policy = None;
        }
        spec.internal_traffic_policy = None;
    }
    if kind != "NodePort" && kind != "LoadBalancer" {
        let node_ports = |s: &ServiceSpec| s.ports.iter().flatten().map(|p| p.node_port).collect::<Vec<_>>();
        if node_ports(spec) == node_ports(old) {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = None;
            }
        }
    }
    if kind != "LoadBalancer" {
        if spec.health_check_node_port == old.health_check_node_port {
            spec.health_check_node_port = None;
        }
        if spec.allocate_load_balancer_node_ports == old.allocate_load_balancer_node_ports {
            spec.allocate_load_balancer_node_ports = None;
        }
        if spec.load_balancer_class == old.load_balancer_class {
            spec.load_balancer_class = None;
        }
    }
    let external_ips = spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty());
    if !(kind == "NodePort" || kind == "LoadBalancer" || (kind == "ClusterIP" && external_ips)) {
        spec.external_traffic_policy = None;
    }
}

/// Service: `type` `ClusterIP`, `sessionAffinity` `None` (with a 10800s timeout for
/// `ClientIP`), ports' `protocol` `TCP` and `targetPort` = `port` when unset,
/// `internalTrafficPolicy` `Cluster`, `externalTrafficPolicy` `Cluster` for externally
/// reachable services, `allocateLoadBalancerNodePorts` for load balancers, `ipFamilyPolicy`
/// `SingleStack` and `ipFamilies` `[IPv4]` (not for ExternalName), `clusterIP`/`clusterIPs`
/// kept in step, and `status.loadBalancer` `{}`. ClusterIP and nodePort allocation is done
/// elsewhere.
pub fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    set_if_empty(&mut spec.type_, "ClusterIP");
    set_if_empty(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let config = spec.session_affinity_config.get_or_insert_with(SessionAffinityConfig::default);
        config.client_ip.get_or_insert_with(ClientIPConfig::default).timeout_seconds.get_or_insert(10800);
    }
    for port in spec.ports.iter_mut().flatten() {
        set_if_empty(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(n)) => *n == 0,
            Some(IntOrString::String(s)) => s.is_empty(),
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let kind = spec.type_.clone().unwrap_or_default();
    let external_ips = spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty());
    let externally_accessible = kind == "NodePort" || kind == "LoadBalancer" || (kind == "ClusterIP" && external_ips);
    if externally_accessible {
        set_if_empty(&mut spec.external_traffic_policy, "Cluster");
    }
    if kind != "ExternalName" {
        set_if_empty(&mut spec.internal_traffic_policy, "Cluster");
        set_if_empty(&mut spec.ip_family_policy, "SingleStack");
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families = Some(vec!["IPv4".into()]);
        }
    }
    if kind == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    match (spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()), spec.cluster_ips.as_deref().unwrap_or_default()) {
        (Some(ip), []) => spec.cluster_ips = Some(vec![ip.to_string()]),
        (None, [first, ..]) => spec.cluster_ip = Some(first.clone()),
        _ => {}
    }
    let status = svc.status.get_or_insert_with(ServiceStatus::default);
    status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
}

/// Service: type, ports (required unless headless or ExternalName; numbers, protocols,
/// names unique and required when several), nodePorts only for NodePort/LoadBalancer,
/// externalName, clusterIP, selector and policies; on update a set clusterIP may not change.
pub fn validate_service(svc: &Service, old: Option<&Service>) -> Vec<FieldError> {
    let empty = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&empty);
    let mut errs = Vec::new();
    let kind = spec.type_.as_deref().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let headless = cluster_ip == "None";
    let ports = spec.ports.as_deref().unwrap_or_default();
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => errs.push(FieldError::not_supported(
            "spec.type",
            other,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if kind == "ExternalName" {
        if !cluster_ip.is_empty() || spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
            errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
        }
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.externalName")),
            Some(name) => {
                for msg in dns1123_subdomain(name.strip_suffix('.').unwrap_or(name)) {
                    errs.push(FieldError::invalid("spec.externalName", name, msg));
                }
            }
        }
    }
    if ports.is_empty() && !headless && kind != "ExternalName" {
        errs.push(FieldError::required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_service_port(port, ports.len() > 1, &mut names, &format!("spec.ports[{i}]"), &mut errs);
        if let Some(node_port) = port.node_port.filter(|n| *n != 0) {
            if kind == "ClusterIP" || kind == "ExternalName" {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    format!("may not be used when `type` is '{kind}'"),
                ));
            } else {
                for msg in port_num(i64::from(node_port)) {
                    errs.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), node_port, msg));
                }
            }
        }
    }
    errs.extend(validate_labels(spec.selector.as_ref(), "spec.selector"));
    optional_one_of(spec.session_affinity.as_deref(), "spec.sessionAffinity", &["ClientIP", "None"], &mut errs);
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            cluster_ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let (false, Some(first)) = (cluster_ip.is_empty(), spec.cluster_ips.as_ref().and_then(|ips| ips.first()))
        && first != cluster_ip
    {
        errs.push(invalid_rendered(
            "spec.clusterIPs[0]",
            go_string_slice(spec.cluster_ips.as_deref()),
            "first value must match `clusterIP`",
        ));
    }
    if headless && (kind == "NodePort" || kind == "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {kind} services"),
        ));
    }
    optional_one_of(
        spec.internal_traffic_policy.as_deref(),
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
        &mut errs,
    );
    optional_one_of(
        spec.external_traffic_policy.as_deref(),
        "spec.externalTrafficPolicy",
        &["Cluster", "Local"],
        &mut errs,
    );
    optional_one_of(
        spec.ip_family_policy.as_deref(),
        "spec.ipFamilyPolicy",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        &mut errs,
    );
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        optional_one_of(Some(family), &format!("spec.ipFamilies[{i}]"), &["IPv4", "IPv6"], &mut errs);
    }
    if let Some(old) = old {
        let old_spec = old.spec.as_ref().unwrap_or(&empty);
        let old_kind = old_spec.type_.as_deref().unwrap_or_default();
        let old_ip = old_spec.cluster_ip.as_deref().unwrap_or_default();
        if old_kind != "ExternalName"
            && kind != "ExternalName"
            && !old_ip.is_empty()
            && !cluster_ip.is_empty()
            && old_ip != cluster_ip
        {
            let shown = match spec.cluster_ips.as_deref() {
                Some(ips) if !ips.is_empty() => go_string_slice(Some(ips)),
                _ => go_string_slice(Some(&[cluster_ip.to_string()])),
            };
            errs.push(invalid_rendered("spec.clusterIPs[0]", shown, "may not change once set"));
        }
    }
    errs
}

/// One service port: name (required when several ports; DNS-1123 label; unique), port number,
/// protocol, targetPort.
pub(crate) fn validate_service_port<'a>(
    port: &'a ServicePort,
    require_name: bool,
    names: &mut BTreeSet<&'a str>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let name = port.name.as_deref().unwrap_or_default();
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
    } else if !name.is_empty() {
        for msg in dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    for msg in port_num(i64::from(port.port)) {
        errs.push(FieldError::invalid(format!("{path}.port"), port.port, msg));
    }
    one_of(port.protocol.as_deref(), &format!("{path}.protocol"), &["SCTP", "TCP", "UDP"], errs);
    if let Some(target) = &port.target_port {
        validate_port_num_or_name(target, &format!("{path}.targetPort"), errs);
    }
}

pub(crate) static SERVICE_COLUMNS: &[Column] = &[
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

pub(crate) fn service_cells(service: &Value, now: i128) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn service_names_must_be_dns_1035_labels() {
            let services = resource("", "services");
            let mut svc = service(vec![port(None, 80)]);
            svc.metadata.name = Some("1web".into());
            let errs = validate(services, &svc);
            assert_eq!(errs.len(), 1);
            assert!(errs[0].message.contains("a DNS-1035 label must consist of"), "{}", errs[0]);
        }

        #[test]
        fn a_valid_service_has_no_errors() {
            assert!(validate_service(&service(vec![port(None, 80)]), None).is_empty());
        }

        #[test]
        fn services_need_ports_unless_headless_or_external_name() {
            assert_eq!(messages(&validate_service(&service(vec![]), None)), ["spec.ports: Required value"]);
            let mut headless = service(vec![]);
            if let Some(spec) = headless.spec.as_mut() {
                spec.cluster_ip = Some("None".into());
                spec.cluster_ips = Some(vec!["None".into()]);
            }
            assert!(validate_service(&headless, None).is_empty());
            let mut external = Service {
                metadata: meta("db"),
                spec: Some(ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("db.example.com".into()),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            default_service(&mut external);
            assert!(validate_service(&external, None).is_empty());
        }

        #[test]
        fn service_ports_must_be_in_range() {
            let errs = validate_service(&service(vec![port(None, 0)]), None);
            assert_eq!(
                messages(&errs),
                [
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
                "targetPort defaults to the port, as in Kubernetes"
            );
        }

        #[test]
        fn several_service_ports_need_unique_names() {
            let errs = validate_service(&service(vec![port(Some("http"), 80), port(None, 443)]), None);
            assert_eq!(messages(&errs), ["spec.ports[1].name: Required value"]);
            let errs = validate_service(&service(vec![port(Some("http"), 80), port(Some("http"), 443)]), None);
            assert_eq!(messages(&errs), ["spec.ports[1].name: Duplicate value: \"http\""]);
        }

        #[test]
        fn service_type_must_be_supported() {
            let mut svc = service(vec![port(None, 80)]);
            if let Some(spec) = svc.spec.as_mut() {
                spec.type_ = Some("Magic".into());
            }
            assert_eq!(
                messages(&validate_service(&svc, None)),
                [
                    "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ]
            );
        }

        #[test]
        fn node_ports_are_only_for_node_port_and_load_balancer_services() {
            let mut svc = service(vec![ServicePort { node_port: Some(30080), ..port(None, 80) }]);
            assert_eq!(
                messages(&validate_service(&svc, None)),
                ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
            );
            if let Some(spec) = svc.spec.as_mut() {
                spec.type_ = Some("NodePort".into());
                spec.external_traffic_policy = Some("Cluster".into());
            }
            assert!(validate_service(&svc, None).is_empty());
        }

        #[test]
        fn a_set_cluster_ip_may_not_change() {
            let mut old = service(vec![port(None, 80)]);
            if let Some(spec) = old.spec.as_mut() {
                spec.cluster_ip = Some("10.96.0.10".into());
                spec.cluster_ips = Some(vec!["10.96.0.10".into()]);
            }
            let mut new = old.clone();
            if let Some(spec) = new.spec.as_mut() {
                spec.cluster_ip = Some("10.96.0.11".into());
                spec.cluster_ips = Some(vec!["10.96.0.11".into()]);
            }
            assert_eq!(
                messages(&validate_service(&new, Some(&old))),
                ["spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"]
            );
            let unallocated = service(vec![port(None, 80)]);
            assert!(validate_service(&new, Some(&unallocated)).is_empty(), "the first assignment is allowed");
        }

        #[test]
        fn a_cluster_ip_must_be_an_ip_address() {
            let mut svc = service(vec![port(None, 80)]);
            if let Some(spec) = svc.spec.as_mut() {
                spec.cluster_ip = Some("ten".into());
                spec.cluster_ips = Some(vec!["ten".into()]);
            }
            assert_eq!(
                messages(&validate_service(&svc, None)),
                [
                    "spec.clusterIPs[0]: Invalid value: \"ten\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ]
            );
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn service_defaults_match_kubernetes() {
            let mut svc = Service {
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort { port: 80, ..ServicePort::default() }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            default_service(&mut svc);
            let spec = svc.spec.as_ref().expect("spec");
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            assert_eq!(spec.session_affinity.as_deref(), Some("None"));
            assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
            assert_eq!(spec.external_traffic_policy, None);
            assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
            assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
            assert_eq!(spec.cluster_ip, None, "allocation is done elsewhere");
            let port = &spec.ports.as_ref().expect("ports")[0];
            assert_eq!(port.protocol.as_deref(), Some("TCP"));
            assert_eq!(port.target_port, Some(IntOrString::Int(80)));
            assert!(svc.status.and_then(|s| s.load_balancer).is_some());
        }

        #[test]
        fn node_port_services_get_an_external_traffic_policy() {
            let mut svc = Service {
                spec: Some(ServiceSpec { type_: Some("NodePort".into()), ..ServiceSpec::default() }),
                ..Service::default()
            };
            default_service(&mut svc);
            assert_eq!(svc.spec.expect("spec").external_traffic_policy.as_deref(), Some("Cluster"));
        }

        #[test]
        fn external_name_services_get_no_ip_families() {
            let mut svc = Service {
                spec: Some(ServiceSpec { type_: Some("ExternalName".into()), ..ServiceSpec::default() }),
                ..Service::default()
            };
            default_service(&mut svc);
            let spec = svc.spec.expect("spec");
            assert_eq!((spec.ip_families, spec.ip_family_policy, spec.internal_traffic_policy), (None, None, None));
        }

        #[test]
        fn a_service_update_keeps_the_allocated_cluster_ip_and_node_ports() {
            let mut old = Service {
                spec: Some(ServiceSpec {
                    type_: Some("NodePort".into()),
                    cluster_ip: Some("10.96.0.7".into()),
                    ports: Some(vec![ServicePort { port: 80, node_port: Some(30080), ..ServicePort::default() }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            default_service(&mut old);
            let mut new = Service {
                spec: Some(ServiceSpec {
                    type_: Some("NodePort".into()),
                    ports: Some(vec![ServicePort { port: 80, ..ServicePort::default() }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            default_service(&mut new);
            default_service_on_update(&mut new, &old);
            let spec = new.spec.expect("spec");
            assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.7"));
            assert_eq!(spec.cluster_ips, Some(vec!["10.96.0.7".to_string()]));
            assert_eq!(spec.ports.expect("ports")[0].node_port, Some(30080));
        }

        #[test]
        fn switching_a_service_to_external_name_drops_its_cluster_ip() {
            let mut old = Service {
                spec: Some(ServiceSpec {
                    cluster_ip: Some("10.96.0.7".into()),
                    ports: Some(vec![ServicePort { port: 80, ..ServicePort::default() }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            default_service(&mut old);
            let mut new = old.clone();
            if let Some(spec) = new.spec.as_mut() {
                spec.type_ = Some("ExternalName".into());
                spec.external_name = Some("db.example.com".into());
            }
            default_service(&mut new);
            default_service_on_update(&mut new, &old);
            let spec = new.spec.expect("spec");
            assert_eq!((spec.cluster_ip, spec.cluster_ips, spec.ip_families), (None, None, None));
        }
    }
}
