//! `apps/v1` ReplicaSet: defaults, validation of the selector and template, the printer; status reset on create and generation tracked.
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use serde_json::{Value, json};

use super::prelude::*;

/// How replicasets are served.
const RES: &ResourceType = &ResourceType {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    namespaced: true,
    subresources: &["status", "scale"],
    categories: &["all"],
    storage: "replicasets",
};

/// The replicasets kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaSets;

impl Kind for ReplicaSets {
    type Object = ReplicaSet;
    const RESOURCE: &'static ResourceType = RES;
    const TRACKS_GENERATION: bool = true;

    fn default(rs: &mut ReplicaSet) {
        default_replica_set(rs);
    }

    fn validate(new: &ReplicaSet, old: Option<&ReplicaSet>) -> Vec<FieldError> {
        validate_replica_set(new, old)
    }

    fn columns() -> &'static [Column] {
        REPLICA_SET_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        replica_set_cells(object, now)
    }

    fn status_on_create() -> Option<Value> {
        Some(json!({}))
    }
}

/// ReplicaSet: `replicas` 1 and the template's pod spec defaults.
pub fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        default_template(template);
    }
}

/// ReplicaSet: replicas ≥ 0, selector, template; on update the selector is immutable.
pub fn validate_replica_set(rs: &ReplicaSet, old: Option<&ReplicaSet>) -> Vec<FieldError> {
    let empty = ReplicaSetSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&empty);
    let mut errs = Vec::new();
    non_negative(spec.replicas, "spec.replicas", &mut errs);
    non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
    validate_workload_selector(&spec.selector, "spec.selector", &mut errs);
    let empty_template = PodTemplateSpec::default();
    let template = spec.template.as_ref().unwrap_or(&empty_template);
    validate_workload_template(template, &spec.selector, "spec.template", &mut errs);
    if let Some(old) = old {
        let old_selector = old.spec.as_ref().map(|s| &s.selector).unwrap_or(&empty.selector);
        selector_immutable(&spec.selector, old_selector, &mut errs);
    }
    errs
}

pub(crate) static REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
];

pub(crate) fn replica_set_cells(replica_set: &Value, now: i128) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn a_replica_set_follows_the_same_selector_and_template_rules() {
            let mut rs = ReplicaSet {
                metadata: meta("web-1"),
                spec: Some(ReplicaSetSpec {
                    selector: LabelSelector { match_labels: labels(&[("app", "web")]), match_expressions: None },
                    template: Some(template(&[("app", "web")])),
                    ..ReplicaSetSpec::default()
                }),
                ..ReplicaSet::default()
            };
            default_replica_set(&mut rs);
            assert!(validate_replica_set(&rs, None).is_empty());
            let old = rs.clone();
            if let Some(spec) = rs.spec.as_mut() {
                spec.replicas = Some(-3);
                spec.selector.match_labels = labels(&[("app", "other")]);
            }
            assert_eq!(
                messages(&validate_replica_set(&rs, Some(&old))),
                [
                    "spec.replicas: Invalid value: -3: must be greater than or equal to 0",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does \
                     not match template `labels`",
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"other\"}, \
                     MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
                ]
            );
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn replica_set_defaults_to_one_replica() {
            let mut rs = ReplicaSet::default();
            default_replica_set(&mut rs);
            assert_eq!(rs.spec.expect("spec").replicas, Some(1));
        }
    }
}
