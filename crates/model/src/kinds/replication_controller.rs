//! `v1` ReplicationController, the oldest workload kind: a map selector defaulted from the
//! template's labels, validation as Kubernetes' `ValidateReplicationController`, the printer and
//! the `status.replicas` field; status reset on create and generation tracked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController, ReplicationControllerSpec};
use serde_json::{Value, json};

use super::prelude::*;

/// How replication controllers are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "ReplicationController",
    plural: "replicationcontrollers",
    singular: "replicationcontroller",
    short_names: &["rc"],
    namespaced: true,
    subresources: &["status", "scale"],
    categories: &["all"],
    storage: "controllers",
};

/// The replication controller kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicationControllers;

impl Kind for ReplicationControllers {
    type Object = ReplicationController;
    const RESOURCE: &'static ResourceType = RES;
    const TRACKS_GENERATION: bool = true;
    const FIELD_CONVERSION: bool = true;

    fn default(rc: &mut ReplicationController) {
        default_replication_controller(rc);
    }

    fn validate(new: &ReplicationController, _old: Option<&ReplicationController>) -> Vec<FieldError> {
        validate_replication_controller(new)
    }

    fn columns() -> &'static [Column] {
        REPLICATION_CONTROLLER_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        let spec = &object["spec"];
        let status = &object["status"];
        let (containers, images) = container_cells(&spec["template"]["spec"]);
        vec![
            name(object),
            spec["replicas"].as_i64().unwrap_or(1).into(),
            int(&status["replicas"]).into(),
            int(&status["readyReplicas"]).into(),
            age(object, now),
            containers,
            images,
            format_labels(&spec["selector"]).into(),
        ]
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        match field {
            "status.replicas" => Some(int(&object["status"]["replicas"]).to_string()),
            _ => fields::meta(object, field),
        }
    }

    fn status_on_create() -> Option<Value> {
        Some(json!({}))
    }
}

/// `SetDefaults_ReplicationController`: the selector and the object's labels default to the
/// template's labels, `replicas` to 1; the template gets the pod spec defaults.
pub fn default_replication_controller(rc: &mut ReplicationController) {
    let spec = rc.spec.get_or_insert_with(Default::default);
    if let Some(labels) = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()) {
        if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            rc.metadata.labels = Some(labels);
        }
    }
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        default_template(template);
    }
}

/// `ValidateReplicationControllerSpec`: replicas and minReadySeconds ≥ 0, a non-empty selector
/// that matches the template's labels, a template whose pods restart `Always` and have no
/// deadline. Unlike apps/v1 kinds, the selector may change.
pub fn validate_replication_controller(rc: &ReplicationController) -> Vec<FieldError> {
    let empty = ReplicationControllerSpec::default();
    let spec = rc.spec.as_ref().unwrap_or(&empty);
    let mut errs = Vec::new();
    non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty());
    if selector.is_none() {
        errs.push(FieldError::required("spec.selector"));
    }
    non_negative(spec.replicas, "spec.replicas", &mut errs);
    let Some(template) = spec.template.as_ref() else {
        errs.push(FieldError::required("spec.template"));
        return errs;
    };
    validate_template(template, selector, &mut errs);
    errs
}

/// `ValidatePodTemplateSpecForRC`.
fn validate_template(
    template: &PodTemplateSpec,
    selector: Option<&BTreeMap<String, String>>,
    errs: &mut Vec<FieldError>,
) {
    let meta = template.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.as_ref());
    if let Some(selector) = selector
        && !selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        errs.push(invalid_rendered(
            "spec.template.metadata.labels",
            go_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validate_labels(labels, "spec.template.metadata.labels"));
    errs.extend(validate_annotations(meta.and_then(|m| m.annotations.as_ref()), "spec.template.metadata.annotations"));
    let empty_spec = Default::default();
    let spec = template.spec.as_ref().unwrap_or(&empty_spec);
    errs.extend(validate_pod_spec(spec, "spec.template.spec"));
    let policy = spec.restart_policy.as_deref().unwrap_or_default();
    if policy != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", policy, &["Always"]));
    }
    if spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicationController is not Supported",
        ));
    }
}

static REPLICATION_CONTROLLER_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and \
         unspecified. Defaults to 1. More info: \
         https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
    ),
    column(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas. More info: \
         https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
    ),
    column("Ready", "integer", "The number of ready replicas for this replication controller."),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is \
         defaulted to the labels present on the Pod template. Label keys and values that must match in order to be \
         controlled by this replication controller, if empty defaulted to labels on Pod template. More info: \
         https://kubernetes.io/docs/concepts/overview/working-with-objects/labels#label-selectors",
    ),
];

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use crate::decode::Rejected;
    use crate::kinds::normalize;
    use crate::resource::find;
    use crate::strategy::Strategy;

    use super::*;

    fn rc(selector: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": selector,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
                }
            }
        })
    }

    fn messages(body: Value) -> Vec<String> {
        let resource = find("", "v1", "replicationcontrollers").expect("served");
        match normalize(resource, body, None, true) {
            Err(Rejected::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn is_served_as_rc_in_the_core_group_and_stored_under_controllers() {
        let resource = find("", "v1", "replicationcontrollers").expect("served");
        assert_eq!(resource.short_names, ["rc"]);
        assert_eq!(
            crate::keys::object_key(resource.storage, Some("default"), "web"),
            "/registry/controllers/default/web"
        );
        assert!(crate::resource::by_kind("v1", "ReplicationController").is_some());
    }

    #[test]
    fn the_selector_labels_and_replicas_default_from_the_template() {
        let resource = find("", "v1", "replicationcontrollers").expect("served");
        let out = normalize(resource, rc(Value::Null, json!({"app": "web"})), None, true).expect("valid");
        assert_eq!(out.object["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(out.object["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out.object["spec"]["replicas"], 1);
        assert_eq!(out.object["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn a_selector_that_does_not_match_the_template_is_invalid() {
        assert_eq!(
            messages(rc(json!({"app": "db"}), json!({"app": "web"}))),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not \
              match template `labels`"]
        );
    }

    #[test]
    fn no_selector_and_no_labels_is_a_required_selector() {
        let errors = messages(rc(Value::Null, Value::Null));
        assert_eq!(errors, ["spec.selector: Required value"]);
    }

    #[test]
    fn a_template_that_does_not_restart_always_is_invalid() {
        let mut body = rc(json!({"app": "web"}), json!({"app": "web"}));
        body["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        body["spec"]["replicas"] = json!(-1);
        assert_eq!(
            messages(body),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
    }

    #[test]
    fn the_table_prints_desired_current_ready_and_the_selector() {
        let kind = ReplicationControllers;
        let mut object = rc(json!({"app": "web", "tier": "front"}), json!({"app": "web", "tier": "front"}));
        object["spec"]["replicas"] = json!(3);
        object["status"] = json!({"replicas": 2, "readyReplicas": 1});
        let cells = Strategy::cells(&kind, &object, SystemTime::now());
        assert_eq!(cells.len(), Strategy::columns(&kind).len());
        assert_eq!(&cells[..4], &[json!("web"), json!(3), json!(2), json!(1)]);
        assert_eq!(cells[5..], [json!("web"), json!("nginx:1.27"), json!("app=web,tier=front")]);
        assert_eq!(Strategy::field(&kind, &object, "status.replicas").as_deref(), Some("2"));
        assert_eq!(Strategy::field(&kind, &object, "spec.replicas"), None);
    }
}
