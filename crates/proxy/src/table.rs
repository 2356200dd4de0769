//! The pure part of the proxy: from Services and EndpointSlices to the table of addresses to
//! listen on and the backends behind each.
//!
//! [`desired_table`] does no I/O and keeps no state; the listener manager diffs what it returns
//! against the listeners it has open.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::EndpointPort;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An address the proxy listens on: `clusterIP:port` or `nodeIP:nodePort`.
pub type ListenAddr = SocketAddr;

/// Where connections to one listen address go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The service port's name (empty when unnamed).
    pub port_name: String,
    /// Ready IPv4 endpoints at the port's target, sorted and without duplicates; may be empty.
    pub backends: Vec<SocketAddr>,
}

/// Why a service port gets no listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Only TCP is proxied; this is the port's protocol.
    Protocol(String),
    /// Another service port (`namespace/name:port`) already claims this address.
    AddressTaken {
        /// The contested address.
        addr: ListenAddr,
        /// The claimant that won (services are taken in namespace/name order).
        by: String,
    },
}

/// A service port left out of the table, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skipped {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The service port's name (empty when unnamed).
    pub port_name: String,
    /// Why.
    pub reason: SkipReason,
}

/// The desired state of one node's proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// One route per address to listen on.
    pub routes: BTreeMap<ListenAddr, Route>,
    /// Service ports that were left out for a reason worth logging (once).
    pub skipped: BTreeSet<Skipped>,
}

/// The table for a node at `node_ip`.
///
/// For each TCP port of each Service: `clusterIP:port` if `bind_cluster_ips` and the service
/// has a ClusterIP (headless services, with `None`, have none), and `node_ip:nodePort` if the
/// type is NodePort or LoadBalancer and a nodePort is allocated. ExternalName services are
/// skipped whole. Backends come from the IPv4 EndpointSlices labelled with the service's name in
/// its namespace: the endpoints whose `ready` condition is not false, at the slice port named
/// like the service port (or the slice's only port when the service port is unnamed).
///
/// If two service ports claim one address (which the API's allocators prevent), the first in
/// namespace/name order keeps it and the other is reported in [`Table::skipped`].
pub fn desired_table<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_ip: IpAddr,
    bind_cluster_ips: bool,
) -> Table {
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let meta = &slice.metadata;
        let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let (Some(ns), Some(service)) = (meta.namespace.as_deref(), service) {
            slices_of.entry((ns, service.as_str())).or_default().push(slice);
        }
    }

    let mut services: Vec<(&str, &str, &Service)> = services
        .into_iter()
        .filter_map(|s| Some((s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?, s)))
        .collect();
    services.sort_by_key(|&(ns, name, _)| (ns, name));

    let mut table = Table::default();
    for (ns, name, service) in services {
        let Some(spec) = &service.spec else { continue };
        let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        if service_type == "ExternalName" {
            continue;
        }
        let cluster_ip =
            spec.cluster_ip.as_deref().filter(|_| bind_cluster_ips).and_then(|ip| ip.parse::<IpAddr>().ok());
        let node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
        let key = format!("{ns}/{name}");
        let slices = slices_of.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();

        for port in spec.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if protocol != "TCP" {
                let reason = SkipReason::Protocol(protocol.to_string());
                table.skipped.insert(Skipped { service: key.clone(), port_name, reason });
                continue;
            }
            let mut addrs = Vec::new();
            if let (Some(ip), Some(p)) = (cluster_ip, valid_port(port.port)) {
                addrs.push(SocketAddr::new(ip, p));
            }
            if let Some(p) = port.node_port.and_then(valid_port).filter(|_| node_ports) {
                addrs.push(SocketAddr::new(node_ip, p));
            }
            if addrs.is_empty() {
                continue;
            }
            let backends = backends(slices, port);
            for addr in addrs {
                if let Some(winner) = table.routes.get(&addr) {
                    let by = format!("{}:{}", winner.service, winner.port_name);
                    let reason = SkipReason::AddressTaken { addr, by };
                    table.skipped.insert(Skipped { service: key.clone(), port_name: port_name.clone(), reason });
                    continue;
                }
                let route = Route { service: key.clone(), port_name: port_name.clone(), backends: backends.clone() };
                table.routes.insert(addr, route);
            }
        }
    }
    table
}

/// The ready IPv4 endpoints of `slices` at the slice port matching `port`.
fn backends(slices: &[&EndpointSlice], port: &ServicePort) -> Vec<SocketAddr> {
    let wanted = port.name.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice_port(slice.ports.as_deref().unwrap_or_default(), wanted) else {
            continue;
        };
        if target.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let Some(target) = target.port.and_then(valid_port) else { continue };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let ips = endpoint.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok());
            out.extend(ips.map(|ip| SocketAddr::new(IpAddr::V4(ip), target)));
        }
    }
    // Sorted so that an unchanged set compares equal however the slices were listed, and
    // deduplicated because an endpoint can sit in two slices while they are rebalanced.
    out.sort();
    out.dedup();
    out
}

/// The slice port named `wanted`, or the slice's only port when the service port is unnamed.
fn slice_port<'a>(ports: &'a [EndpointPort], wanted: &str) -> Option<&'a EndpointPort> {
    let named = ports.iter().find(|p| p.name.as_deref().unwrap_or_default() == wanted);
    match (named, ports) {
        (Some(port), _) => Some(port),
        (None, [only]) if wanted.is_empty() => Some(only),
        _ => None,
    }
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use serde_json::json;

    use super::*;

    const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 2));

    fn service(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}))
            .expect("service")
    }

    fn slice(service: &str, suffix: &str, ports: Value, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": format!("{service}-{suffix}"),
                "labels": {SERVICE_NAME_LABEL: service},
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn ready(ip: &str) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": true}})
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn table(services: &[Service], slices: &[EndpointSlice], bind_cluster_ips: bool) -> Table {
        desired_table(services, slices, NODE, bind_cluster_ips)
    }

    #[test]
    fn a_cluster_ip_service_listens_on_its_cluster_ip_with_the_ready_endpoints() {
        let services =
            [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}))];
        let slices = [slice("web", "a", json!([{"port": 8080}]), json!([ready("10.1.0.5"), ready("10.1.0.4")]))];

        let table = table(&services, &slices, true);

        let expected = Route {
            service: "default/web".into(),
            port_name: String::new(),
            backends: vec![addr("10.1.0.4:8080"), addr("10.1.0.5:8080")],
        };
        assert_eq!(table.routes, BTreeMap::from([(addr("10.96.0.10:80"), expected)]));
        assert!(table.skipped.is_empty());
    }

    #[test]
    fn cluster_ips_are_not_listened_on_unless_asked() {
        let services = [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))];
        assert!(table(&services, &[], false).routes.is_empty());
    }

    #[test]
    fn a_node_port_service_listens_on_the_node_ip_and_its_cluster_ip() {
        let services = [service(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
        )];
        let slices = [slice("web", "a", json!([{"port": 8080}]), json!([ready("10.1.0.4")]))];

        let with_cluster_ips = table(&services, &slices, true);
        let addrs: Vec<_> = with_cluster_ips.routes.keys().copied().collect();
        assert_eq!(addrs, [addr("10.96.0.10:80"), addr("192.168.7.2:30080")]);
        for route in with_cluster_ips.routes.values() {
            assert_eq!(route.backends, [addr("10.1.0.4:8080")]);
        }

        let node_only = table(&services, &slices, false);
        assert_eq!(node_only.routes.keys().copied().collect::<Vec<_>>(), [addr("192.168.7.2:30080")]);
    }

    #[test]
    fn a_load_balancer_listens_on_its_node_port_and_a_cluster_ip_service_ignores_a_stray_one() {
        let services = [
            service(
                "lb",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11", "ports": [{"port": 443, "nodePort": 31443}]}),
            ),
            service(
                "plain",
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.12", "ports": [{"port": 80, "nodePort": 31080}]}),
            ),
            service("unallocated", json!({"type": "LoadBalancer", "clusterIP": "10.96.0.13", "ports": [{"port": 80}]})),
        ];
        let addrs: Vec<_> = table(&services, &[], false).routes.keys().copied().collect();
        assert_eq!(addrs, [addr("192.168.7.2:31443")]);
    }

    #[test]
    fn named_ports_take_the_slice_port_of_the_same_name() {
        let services = [service(
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}),
        )];
        let slices = [slice(
            "web",
            "a",
            json!([{"name": "admin", "port": 9090}, {"name": "http", "port": 8080}]),
            json!([ready("10.1.0.4")]),
        )];

        let table = table(&services, &slices, true);

        let http = &table.routes[&addr("10.96.0.10:80")];
        assert_eq!((http.port_name.as_str(), http.backends.as_slice()), ("http", [addr("10.1.0.4:8080")].as_slice()));
        let admin = &table.routes[&addr("10.96.0.10:9000")];
        assert_eq!(
            (admin.port_name.as_str(), admin.backends.as_slice()),
            ("admin", [addr("10.1.0.4:9090")].as_slice())
        );
    }

    #[test]
    fn a_named_port_missing_from_a_slice_gets_no_backends_from_it() {
        let services = [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}))];
        let slices = [slice("web", "a", json!([{"name": "other", "port": 8080}]), json!([ready("10.1.0.4")]))];
        assert_eq!(table(&services, &slices, true).routes[&addr("10.96.0.10:80")].backends, []);
    }

    #[test]
    fn an_unnamed_port_takes_the_only_slice_port_whatever_its_name() {
        let services = [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))];
        let slices = [
            slice("web", "a", json!([{"name": "", "port": 8080}]), json!([ready("10.1.0.4")])),
            slice("web", "b", json!([{"name": "legacy", "port": 8081}]), json!([ready("10.1.0.5")])),
        ];
        assert_eq!(
            table(&services, &slices, true).routes[&addr("10.96.0.10:80")].backends,
            [addr("10.1.0.4:8080"), addr("10.1.0.5:8081")]
        );
    }

    #[test]
    fn endpoints_not_ready_are_left_out_and_unknown_readiness_counts_as_ready() {
        let services = [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))];
        let endpoints = json!([
            {"addresses": ["10.1.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.1.0.5"], "conditions": {}},
            {"addresses": ["10.1.0.6"]},
            ready("10.1.0.7"),
        ]);
        let slices = [slice("web", "a", json!([{"port": 8080}]), endpoints)];
        assert_eq!(
            table(&services, &slices, true).routes[&addr("10.96.0.10:80")].backends,
            [addr("10.1.0.5:8080"), addr("10.1.0.6:8080"), addr("10.1.0.7:8080")]
        );
    }

    #[test]
    fn only_ipv4_slices_of_the_same_service_and_namespace_count_and_duplicates_collapse() {
        let services = [service("web", json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}))];
        let mut v6 = slice("web", "v6", json!([{"port": 8080}]), json!([ready("fd00::4")]));
        v6.address_type = "IPv6".into();
        let mut elsewhere = slice("web", "x", json!([{"port": 8080}]), json!([ready("10.9.9.9")]));
        elsewhere.metadata.namespace = Some("other".into());
        let slices = [
            slice("web", "a", json!([{"port": 8080}]), json!([ready("10.1.0.4")])),
            slice("web", "b", json!([{"port": 8080}]), json!([ready("10.1.0.4")])),
            slice("api", "a", json!([{"port": 8080}]), json!([ready("10.2.0.4")])),
            v6,
            elsewhere,
        ];
        assert_eq!(table(&services, &slices, true).routes[&addr("10.96.0.10:80")].backends, [addr("10.1.0.4:8080")]);
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let services = [
            service("headless", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            service("ext", json!({"type": "ExternalName", "externalName": "example.org", "ports": [{"port": 80}]})),
        ];
        let slices = [slice("headless", "a", json!([{"port": 80}]), json!([ready("10.1.0.4")]))];
        assert_eq!(table(&services, &slices, true), Table::default());
    }

    #[test]
    fn udp_and_sctp_ports_are_reported_and_tcp_ports_of_the_same_service_still_served() {
        let services = [service(
            "dns",
            json!({"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "sig", "port": 9, "protocol": "SCTP"},
            ]}),
        )];
        let table = table(&services, &[], true);
        assert_eq!(table.routes.keys().copied().collect::<Vec<_>>(), [addr("10.96.0.10:53")]);
        assert_eq!(table.routes[&addr("10.96.0.10:53")].port_name, "dns-tcp");
        let reasons: Vec<_> = table.skipped.iter().map(|s| (s.port_name.as_str(), s.reason.clone())).collect();
        assert_eq!(
            reasons,
            [("dns", SkipReason::Protocol("UDP".into())), ("sig", SkipReason::Protocol("SCTP".into()))]
        );
    }

    #[test]
    fn a_contested_address_goes_to_the_first_service_by_name() {
        let services = [
            service("b", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})),
            service("a", json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30080}]})),
        ];
        let table = table(&services, &[], false);
        assert_eq!(table.routes[&addr("192.168.7.2:30080")].service, "default/a");
        let reason = SkipReason::AddressTaken { addr: addr("192.168.7.2:30080"), by: "default/a:".into() };
        let expected = Skipped { service: "default/b".into(), port_name: String::new(), reason };
        assert_eq!(table.skipped, BTreeSet::from([expected]));
    }
}
