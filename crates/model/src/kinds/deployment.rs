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

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn a_valid_deployment_has_no_errors() {
            assert!(validate_deployment(&deployment(&[("app", "web")], &[("app", "web")]), None).is_empty());
        }

        #[test]
        fn a_deployment_needs_a_selector_matching_its_template() {
            let errs = validate_deployment(&deployment(&[("app", "web")], &[("app", "api"), ("tier", "fe")]), None);
            assert_eq!(
                messages(&errs),
                ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\", \"tier\":\"fe\"}: \
                     `selector` does not match template `labels`"]
            );
            let mut d = deployment(&[], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut() {
                spec.selector = LabelSelector::default();
            }
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                [
                    "spec.selector: Required value",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does \
                     not match template `labels`",
                ]
            );
        }

        #[test]
        fn an_empty_deployment_selector_is_invalid() {
            let d = deployment(&[], &[("app", "web")]);
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, \
                     MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]
            );
        }

        #[test]
        fn deployment_replicas_may_not_be_negative() {
            let mut d = deployment(&[("app", "web")], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut() {
                spec.replicas = Some(-1);
            }
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
            );
        }

        #[test]
        fn deployment_templates_must_restart_always() {
            let mut d = deployment(&[("app", "web")], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                spec.restart_policy = Some("Never".into());
            }
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                ["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
            );
        }

        #[test]
        fn deployment_strategy_type_must_be_rolling_update_or_recreate() {
            let mut d = deployment(&[("app", "web")], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut() {
                spec.strategy = Some(DeploymentStrategy { type_: Some("BlueGreen".into()), rolling_update: None });
            }
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                [
                    "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""
                ]
            );
        }

        #[test]
        fn max_surge_and_max_unavailable_may_not_both_be_zero() {
            let mut d = deployment(&[("app", "web")], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut() {
                spec.strategy = Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(0)),
                        max_unavailable: Some(IntOrString::String("0%".into())),
                    }),
                });
            }
            assert_eq!(
                messages(&validate_deployment(&d, None)),
                [
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
                ]
            );
        }

        #[test]
        fn rolling_update_values_must_be_counts_or_percentages() {
            let mut d = deployment(&[("app", "web")], &[("app", "web")]);
            if let Some(spec) = d.spec.as_mut() {
                spec.strategy = Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("lots".into())),
                        max_unavailable: Some(IntOrString::String("150%".into())),
                    }),
                });
            }
            let errs = messages(&validate_deployment(&d, None));
            assert_eq!(errs.len(), 2, "{errs:?}");
            assert!(
                errs[0].starts_with("spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent")
            );
            assert_eq!(
                errs[1],
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
            );
        }

        #[test]
        fn a_deployment_selector_is_immutable() {
            let old = deployment(&[("app", "web")], &[("app", "web"), ("v", "2")]);
            let new = deployment(&[("app", "web"), ("v", "2")], &[("app", "web"), ("v", "2")]);
            assert_eq!(
                messages(&validate_deployment(&new, Some(&old))),
                ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \
                     \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]
            );
            assert!(validate_deployment(&old, Some(&old)).is_empty());
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn deployment_defaults_match_kubernetes() {
            let mut d = Deployment::default();
            default_deployment(&mut d);
            let spec = d.spec.as_ref().expect("spec");
            assert_eq!(spec.replicas, Some(1));
            assert_eq!(spec.revision_history_limit, Some(10));
            assert_eq!(spec.progress_deadline_seconds, Some(600));
            let strategy = spec.strategy.as_ref().expect("strategy");
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
            let rolling = strategy.rolling_update.as_ref().expect("rollingUpdate");
            assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
            assert_eq!(rolling.max_unavailable, Some(IntOrString::String("25%".into())));
            assert_eq!(spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()), Some("Always"));
        }

        #[test]
        fn a_recreate_deployment_gets_no_rolling_update() {
            let mut d = Deployment::default();
            d.spec.get_or_insert_with(Default::default).strategy =
                Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
            default_deployment(&mut d);
            assert_eq!(d.spec.expect("spec").strategy.expect("strategy").rolling_update, None);
        }
    }
}
