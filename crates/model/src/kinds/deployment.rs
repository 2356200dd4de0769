//! `apps/v1` Deployment: defaults, validation of the selector, template and strategy, the printer; status reset on create and generation tracked.
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use serde_json::{Value, json};

use super::prelude::*;

/// How deployments are served.
const RES: &ResourceType = &ResourceType {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    namespaced: true,
    subresources: &["status", "scale"],
    categories: &["all"],
    storage: "deployments",
};

/// The deployments kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deployments;

impl Kind for Deployments {
    type Object = Deployment;
    const RESOURCE: &'static ResourceType = RES;
    const TRACKS_GENERATION: bool = true;

    fn default(d: &mut Deployment) {
        default_deployment(d);
    }

    fn validate(new: &Deployment, old: Option<&Deployment>) -> Vec<FieldError> {
        validate_deployment(new, old)
    }

    fn columns() -> &'static [Column] {
        DEPLOYMENT_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        deployment_cells(object, now)
    }

    fn status_on_create() -> Option<Value> {
        Some(json!({}))
    }
}

/// Deployment: `replicas` 1, strategy `RollingUpdate` with `maxSurge`/`maxUnavailable` `25%`,
/// `revisionHistoryLimit` 10, `progressDeadlineSeconds` 600, and the template's pod spec
/// defaults.
pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    set_if_empty(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        rolling.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".into()));
        rolling.max_surge.get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    default_template(&mut spec.template);
}

/// Deployment: replicas ≥ 0, selector, template, strategy, history and deadline numbers; on
/// update the selector is immutable.
pub fn validate_deployment(d: &Deployment, old: Option<&Deployment>) -> Vec<FieldError> {
    let empty = DeploymentSpec::default();
    let spec = d.spec.as_ref().unwrap_or(&empty);
    let mut errs = Vec::new();
    non_negative(spec.replicas, "spec.replicas", &mut errs);
    validate_workload_selector(&spec.selector, "spec.selector", &mut errs);
    validate_workload_template(&spec.template, &spec.selector, "spec.template", &mut errs);
    if let Some(strategy) = &spec.strategy {
        validate_strategy(strategy, "spec.strategy", &mut errs);
    }
    non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
    non_negative(spec.revision_history_limit, "spec.revisionHistoryLimit", &mut errs);
    if let Some(deadline) = spec.progress_deadline_seconds {
        non_negative(Some(deadline), "spec.progressDeadlineSeconds", &mut errs);
        if deadline <= spec.min_ready_seconds.unwrap_or_default() {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        let old_selector = old.spec.as_ref().map(|s| &s.selector).unwrap_or(&empty.selector);
        selector_immutable(&spec.selector, old_selector, &mut errs);
    }
    errs
}

/// A deployment strategy: `Recreate` (without `rollingUpdate`) or `RollingUpdate` (with valid
/// `maxSurge`/`maxUnavailable`, not both 0).
pub(crate) fn validate_strategy(strategy: &DeploymentStrategy, path: &str, errs: &mut Vec<FieldError>) {
    match strategy.type_.as_deref() {
        Some("Recreate") => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    format!("{path}.rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") => match &strategy.rolling_update {
            None => {
                errs.push(required_with(format!("{path}.rollingUpdate"), "this should be defaulted and never be nil"))
            }
            Some(rolling) => validate_rolling_update(rolling, &format!("{path}.rollingUpdate"), errs),
        },
        other => errs.push(FieldError::not_supported(
            format!("{path}.type"),
            other.unwrap_or_default(),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `maxSurge` and `maxUnavailable`: non-negative numbers or percentages, not both 0,
/// `maxUnavailable` at most 100%.
pub(crate) fn validate_rolling_update(rolling: &RollingUpdateDeployment, path: &str, errs: &mut Vec<FieldError>) {
    let unavailable_path = format!("{path}.maxUnavailable");
    let zero = IntOrString::Int(0);
    let unavailable = rolling.max_unavailable.as_ref().unwrap_or(&zero);
    let surge = rolling.max_surge.as_ref().unwrap_or(&zero);
    validate_int_or_percent(unavailable, &unavailable_path, errs);
    validate_int_or_percent(surge, &format!("{path}.maxSurge"), errs);
    if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
        errs.push(FieldError::invalid(&unavailable_path, unavailable, "may not be 0 when `maxSurge` is 0"));
    }
    if let IntOrString::String(s) = unavailable
        && s.ends_with('%')
        && int_or_percent_value(unavailable) > 100
    {
        errs.push(FieldError::invalid(&unavailable_path, unavailable, "must not be greater than 100%"));
    }
}

pub(crate) static DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by \
         this deployment.",
    ),
];

pub(crate) fn deployment_cells(deployment: &Value, now: i128) -> Vec<Value> {
    let spec = &deployment["spec"];
    let status = &deployment["status"];
    let desired = spec["replicas"].as_i64().unwrap_or(1);
    let (containers, images) = container_cells(&spec["template"]["spec"]);
    let selector = label_selector_string(&spec["selector"]).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(deployment),
        format!("{}/{desired}", int(&status["readyReplicas"])).into(),
        int(&status["updatedReplicas"]).into(),
        int(&status["availableReplicas"]).into(),
        age(deployment, now),
        containers,
        images,
        selector.into(),
    ]
}
