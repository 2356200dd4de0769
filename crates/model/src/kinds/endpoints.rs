//! `v1` Endpoints: defaults and the printer.
use k8s_openapi::api::core::v1::Endpoints;
use serde_json::Value;

use super::prelude::*;

/// How endpoints are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "endpoints",
};

/// The endpoints kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointsKind;

impl Kind for EndpointsKind {
    type Object = Endpoints;
    const RESOURCE: &'static ResourceType = RES;

    fn default(ep: &mut Endpoints) {
        default_endpoints(ep);
    }

    fn columns() -> &'static [Column] {
        ENDPOINTS_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![name(object), format_endpoints(&object["subsets"]).into(), age(object, now)]
    }
}

/// Endpoints: ports' `protocol` `TCP`.
pub fn default_endpoints(ep: &mut Endpoints) {
    for port in ep.subsets.iter_mut().flatten().flat_map(|s| s.ports.iter_mut().flatten()) {
        set_if_empty(&mut port.protocol, "TCP");
    }
}

pub(crate) static ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, column("Endpoints", "string", "The set of all endpoints is the union of all subsets."), AGE];

/// `formatEndpoints`: up to three `ip:port` pairs, then ` + N more...`; `<none>` without subsets.
pub(crate) fn format_endpoints(subsets: &Value) -> String {
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
