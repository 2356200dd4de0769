//! Fixtures the model's unit tests share (test builds only): the types and helpers the tests of
//! validation rules ([`validation`]) and of defaults ([`defaults`]) build objects with.

/// Objects as the validation tests build them: named, in `default`, with pod defaults applied.
pub(crate) mod validation {
    pub(crate) use std::collections::BTreeMap;

    pub(crate) use k8s_openapi::ByteString;
    pub(crate) use k8s_openapi::api::apps::v1::*;
    pub(crate) use k8s_openapi::api::core::v1::*;
    pub(crate) use k8s_openapi::api::discovery::v1::EndpointSlice;
    pub(crate) use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    pub(crate) use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, LabelSelectorRequirement, ObjectMeta,
    };
    pub(crate) use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    pub(crate) use serde::Serialize;

    pub(crate) use crate::field::{FieldError, Reason};
    pub(crate) use crate::kinds::{
        config_map::*, deployment::*, endpoint_slice::*, pod::*, replica_set::*, secret::*, service::*,
    };
    pub(crate) use crate::resource::{ResourceType, find};
    pub(crate) use crate::validation::*;

    pub(crate) fn meta(name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() }
    }

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub(crate) fn container(name: &str, image: &str) -> Container {
        Container { name: name.into(), image: Some(image.into()), ..Container::default() }
    }

    pub(crate) fn pod(containers: Vec<Container>) -> Pod {
        let mut pod =
            Pod { metadata: meta("p"), spec: Some(PodSpec { containers, ..PodSpec::default() }), ..Pod::default() };
        default_pod(&mut pod);
        pod
    }

    pub(crate) fn template(labels_: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: labels(labels_), ..ObjectMeta::default() }),
            spec: Some(PodSpec { containers: vec![container("web", "nginx")], ..PodSpec::default() }),
        }
    }

    pub(crate) fn deployment(selector: &[(&str, &str)], template_labels: &[(&str, &str)]) -> Deployment {
        let mut d = Deployment {
            metadata: meta("web"),
            spec: Some(DeploymentSpec {
                selector: LabelSelector { match_labels: labels(selector), match_expressions: None },
                template: template(template_labels),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        default_deployment(&mut d);
        d
    }

    pub(crate) fn service(ports: Vec<ServicePort>) -> Service {
        let mut svc = Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec { ports: Some(ports), ..ServiceSpec::default() }),
            ..Service::default()
        };
        default_service(&mut svc);
        svc
    }

    pub(crate) fn port(name: Option<&str>, number: i32) -> ServicePort {
        ServicePort { name: name.map(str::to_string), port: number, ..ServicePort::default() }
    }

    pub(crate) fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn resource(group: &str, plural: &str) -> &'static ResourceType {
        find(group, "v1", plural).expect("served resource")
    }

    /// The errors the kind's strategy finds in `object` on create (after defaulting).
    pub(crate) fn validate(resource: &ResourceType, object: &impl Serialize) -> Vec<FieldError> {
        let value = serde_json::to_value(object).expect("encodes");
        match crate::kinds::normalize(resource, value, None, true) {
            Ok(_) => Vec::new(),
            Err(crate::decode::Rejected::Invalid(errors)) => errors,
            Err(e) => panic!("not a validation error: {e}"),
        }
    }
}

/// Objects as the defaulting tests build them: bare, before any default.
pub(crate) mod defaults {
    pub(crate) use std::collections::BTreeMap;

    pub(crate) use k8s_openapi::ByteString;
    pub(crate) use k8s_openapi::api::apps::v1::*;
    pub(crate) use k8s_openapi::api::core::v1::*;
    pub(crate) use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    pub(crate) use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    pub(crate) use crate::defaults::*;
    pub(crate) use crate::kinds::{
        deployment::*, namespace::*, node::*, pod::*, replica_set::*, secret::*, service::*,
    };

    pub(crate) fn container(image: &str) -> Container {
        Container { name: "c".into(), image: Some(image.into()), ..Container::default() }
    }

    pub(crate) fn pod_with(containers: Vec<Container>) -> Pod {
        Pod { spec: Some(PodSpec { containers, ..PodSpec::default() }), ..Pod::default() }
    }
}
