//! `discovery.k8s.io/v1` EndpointSlice: defaults, validation, the printer.
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::prelude::*;

/// How endpointslices are served.
const RES: &ResourceType = &ResourceType {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    short_names: &[],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "endpointslices",
};

/// The endpointslices kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointSlices;

impl Kind for EndpointSlices {
    type Object = EndpointSlice;
    const RESOURCE: &'static ResourceType = RES;

    fn default(slice: &mut EndpointSlice) {
        default_endpoint_slice(slice);
    }

    fn validate(new: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
        validate_endpoint_slice(new, old)
    }

    fn columns() -> &'static [Column] {
        ENDPOINT_SLICE_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![
            name(object),
            text(&object["addressType"]).into(),
            format_slice_ports(&object["ports"]).into(),
            format_slice_endpoints(&object["endpoints"]).into(),
            age(object, now),
        ]
    }
}

/// EndpointSlice: ports' `name` `""` and `protocol` `TCP`.
pub fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        port.name.get_or_insert_with(String::new);
        set_if_empty(&mut port.protocol, "TCP");
    }
}

/// EndpointSlice: `addressType` required, one of FQDN/IPv4/IPv6, immutable.
pub fn validate_endpoint_slice(slice: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    one_of(Some(slice.address_type.as_str()), "addressType", &["FQDN", "IPv4", "IPv6"], &mut errs);
    if let Some(old) = old
        && old.address_type != slice.address_type
    {
        errs.push(FieldError::invalid("addressType", &slice.address_type, FIELD_IMMUTABLE));
    }
    errs
}

pub(crate) static ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
    column("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    column("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

/// `formatDiscoveryPorts`: port numbers (or names, or `*`) of an EndpointSlice.
pub(crate) fn format_slice_ports(ports: &Value) -> String {
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
pub(crate) fn format_slice_endpoints(endpoints: &Value) -> String {
    let list: Vec<String> = items(endpoints).iter().flat_map(|e| items(&e["addresses"]).iter().map(text)).collect();
    list_with_more(&list, list.len(), 3)
}

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn endpoint_slices_need_a_supported_address_type() {
            let slice = EndpointSlice { metadata: meta("e"), address_type: "IPv5".into(), ..EndpointSlice::default() };
            assert_eq!(
                messages(&validate_endpoint_slice(&slice, None)),
                ["addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
            );
        }
    }
}
