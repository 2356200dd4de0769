//! `v1` Pod: defaults and admission defaults, validation with the pod update rules, the printer, selectable fields and graceful deletion (a bound, running pod waits for its kubelet).
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Toleration};
use serde_json::{Value, json};

use super::prelude::*;

/// How pods are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    namespaced: true,
    subresources: &["status", "log", "binding", "eviction", "exec"],
    categories: &["all"],
    storage: "pods",
};

/// The pods kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pods;

impl Kind for Pods {
    type Object = Pod;
    const RESOURCE: &'static ResourceType = RES;
    const TRACKS_GENERATION: bool = true;
    const FIELD_CONVERSION: bool = true;

    fn default(pod: &mut Pod) {
        default_pod(pod);
    }

    fn default_on_create(pod: &mut Pod) {
        default_pod_on_create(pod);
    }

    fn validate(new: &Pod, old: Option<&Pod>) -> Vec<FieldError> {
        validate_pod(new, old)
    }

    fn columns() -> &'static [Column] {
        POD_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        pod_cells(object, now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        fields::meta(object, field).or_else(|| pod_field(object, field))
    }

    fn status_on_create() -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    /// A pod bound to a node and still running gets its grace period (the client's, else its
    /// spec's), so its kubelet can stop it; any other pod goes at once.
    fn deletion_grace(current: &Value, requested: Option<i64>) -> i64 {
        let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
        let spec_grace = current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
        let grace = requested.unwrap_or(spec_grace).max(0);
        if !bound || matches!(phase, "Succeeded" | "Failed") || grace == 0 { 0 } else { grace }
    }
}

/// Pod: the pod spec defaults ([`default_pod_spec`]) plus what Kubernetes sets on pods but
/// not on templates: `enableServiceLinks`, requests defaulted from limits, host ports for host
/// networking, and the admission defaults (`serviceAccountName`/`serviceAccount` `default`,
/// `priority` 0, `preemptionPolicy` `PreemptLowerPriority`, the 300s not-ready and unreachable
/// tolerations).
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_requests_from_limits(c);
    }
    if spec.host_network == Some(true) {
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.is_none_or(|p| p == 0) {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    match (spec.service_account_name.as_deref(), spec.service_account.as_deref()) {
        (None | Some(""), None | Some("")) => {
            spec.service_account_name = Some("default".into());
            spec.service_account = Some("default".into());
        }
        (None | Some(""), Some(sa)) => spec.service_account_name = Some(sa.to_string()),
        (Some(sa), None | Some("")) => spec.service_account = Some(sa.to_string()),
        _ => {}
    }
    if spec.priority_class_name.as_deref().is_none_or(str::is_empty) {
        spec.priority.get_or_insert(0);
    }
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = tolerations.iter().any(|t| {
            (t.key.as_deref() == Some(key) || t.key.as_deref().is_none_or(str::is_empty))
                && t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoExecute")
        });
        if !tolerated {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
}

/// Pod, on create only: `status.phase` `Pending` when empty and `status.qosClass` computed from
/// the containers' resources. Not applied on update: the phase then belongs to the kubelet.
pub fn default_pod_on_create(pod: &mut Pod) {
    let qos = pod.spec.as_ref().map_or("BestEffort", qos_class);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    if status.phase.as_deref().is_none_or(str::is_empty) {
        status.phase = Some("Pending".into());
    }
    if status.qos_class.as_deref().is_none_or(str::is_empty) {
        status.qos_class = Some(qos.into());
    }
}

/// Pod: the pod spec ([`validate_pod_spec`]) and, on update, what a pod update may change.
pub fn validate_pod(pod: &Pod, old: Option<&Pod>) -> Vec<FieldError> {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let mut errs = validate_pod_spec(spec, "spec");
    if let Some(old) = old {
        errs.extend(validate_pod_spec_update(spec, old.spec.as_ref().unwrap_or(&empty), "spec"));
    }
    errs
}

pub(crate) static POD_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "string", "The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod \
         has restarted.",
    ),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

pub(crate) fn pod_cells(pod: &Value, now: i128) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let conditions = items(&status["conditions"]);
    let init_specs = items(&spec["initContainers"]);
    let restartable =
        |name: &str| init_specs.iter().any(|c| str_of(&c["name"]) == name && str_of(&c["restartPolicy"]) == "Always");

    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let total = items(&spec["containers"]).len() + init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0usize;
    let mut last_restart: Option<i128> = None;
    let mut last_restartable_restart: Option<i128> = None;
    let later = |last: &mut Option<i128>, finished: Option<i128>| {
        if let Some(f) = finished
            && last.is_none_or(|l| l < f)
        {
            *last = Some(f);
        }
    };

    let phase = match str_of(&status["phase"]) {
        "" => "Pending",
        p => p,
    };
    let mut reason = match str_of(&status["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, container) in items(&status["initContainerStatuses"]).iter().enumerate() {
        let count = int(&container["restartCount"]);
        let finished = timestamp(&container["lastState"]["terminated"]["finishedAt"]);
        restarts += count;
        later(&mut last_restart, finished);
        let is_restartable = restartable(str_of(&container["name"]));
        if is_restartable {
            restartable_restarts += count;
            later(&mut last_restartable_restart, finished);
        }
        let terminated = &container["state"]["terminated"];
        let waiting = &container["state"]["waiting"];
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if is_restartable && container["started"] == true {
            if container["ready"] == true {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.is_object() {
            match str_of(&terminated["reason"]) {
                "" if int(&terminated["signal"]) != 0 => format!("Init:Signal:{}", int(&terminated["signal"])),
                "" => format!("Init:ExitCode:{}", int(&terminated["exitCode"])),
                r => format!("Init:{r}"),
            }
        } else if waiting.is_object() && !matches!(str_of(&waiting["reason"]), "" | "PodInitializing") {
            format!("Init:{}", str_of(&waiting["reason"]))
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions.iter().find(|c| c["type"] == "Initialized").is_some_and(|c| c["status"] == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for container in items(&status["containerStatuses"]).iter().rev() {
            restarts += int(&container["restartCount"]);
            later(&mut last_restart, timestamp(&container["lastState"]["terminated"]["finishedAt"]));
            let terminated = &container["state"]["terminated"];
            let waiting = &container["state"]["waiting"];
            if waiting.is_object() && !str_of(&waiting["reason"]).is_empty() {
                reason = str_of(&waiting["reason"]).to_string();
            } else if terminated.is_object() && !str_of(&terminated["reason"]).is_empty() {
                reason = str_of(&terminated["reason"]).to_string();
            } else if terminated.is_object() {
                reason = match int(&terminated["signal"]) {
                    0 => format!("ExitCode:{}", int(&terminated["exitCode"])),
                    signal => format!("Signal:{signal}"),
                };
            } else if container["ready"] == true && container["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && str_of(&status["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(last) if restarts != 0 => format!("{restarts} ({} ago)", since_nanos(last, now)),
        _ => restarts.to_string(),
    };

    let pod_ip = items(&status["podIPs"])
        .first()
        .map(|ip| str_of(&ip["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_of(&status["podIP"]));
    let or_none = |s: &str| if s.is_empty() { "<none>".to_string() } else { s.to_string() };
    let gates = items(&spec["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|gate| {
                conditions.iter().find(|c| c["type"] == gate["conditionType"]).is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(pod, now),
        or_none(pod_ip).into(),
        or_none(str_of(&spec["nodeName"])).into(),
        or_none(str_of(&status["nominatedNodeName"])).into(),
        readiness_gates.into(),
    ]
}

/// Pod fields (`ToSelectableFields` in `pkg/registry/core/pod/strategy.go`).
pub(crate) fn pod_field(pod: &Value, field: &str) -> Option<String> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    Some(match field {
        // `spec.host` is what old v1 clients send for spec.nodeName.
        "spec.nodeName" | "spec.host" => text(&spec["nodeName"]),
        "spec.restartPolicy" => text(&spec["restartPolicy"]),
        "spec.schedulerName" => text(&spec["schedulerName"]),
        "spec.serviceAccountName" => text(&spec["serviceAccountName"]),
        "spec.hostNetwork" => (spec["hostNetwork"] == true).to_string(),
        "status.phase" => text(&status["phase"]),
        "status.podIP" => {
            let first = status["podIPs"].as_array().and_then(|ips| ips.first()).map(|ip| text(&ip["ip"]));
            first.filter(|ip| !ip.is_empty()).unwrap_or_else(|| text(&status["podIP"]))
        }
        // Accepted by the conversion but absent from the selectable fields: always "".
        "status.podIPs" => String::new(),
        "status.nominatedNodeName" => text(&status["nominatedNodeName"]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn a_valid_pod_has_no_errors() {
            assert_eq!(messages(&validate_pod(&pod(vec![container("web", "nginx")]), None)), Vec::<String>::new());
        }

        #[test]
        fn a_pod_needs_at_least_one_container() {
            let errs = validate_pod(&pod(vec![]), None);
            assert_eq!(messages(&errs), ["spec.containers: Required value"]);
        }

        #[test]
        fn container_names_are_required_dns_labels_and_unique() {
            let errs = validate_pod(&pod(vec![container("", "nginx")]), None);
            assert_eq!(messages(&errs), ["spec.containers[0].name: Required value"]);
            let errs = validate_pod(&pod(vec![container("Web", "nginx")]), None);
            assert!(
                errs[0]
                    .to_string()
                    .starts_with("spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label")
            );
            let errs = validate_pod(&pod(vec![container("web", "nginx"), container("web", "redis")]), None);
            assert_eq!(messages(&errs), ["spec.containers[1].name: Duplicate value: \"web\""]);
        }

        #[test]
        fn init_and_regular_containers_share_one_name_space() {
            let mut p = pod(vec![container("web", "nginx")]);
            if let Some(spec) = p.spec.as_mut() {
                let mut init = container("web", "busybox");
                crate::defaults::default_container(&mut init);
                spec.init_containers = Some(vec![init]);
            }
            assert_eq!(messages(&validate_pod(&p, None)), ["spec.containers[0].name: Duplicate value: \"web\""]);
        }

        #[test]
        fn container_images_are_required() {
            let mut c = container("web", "");
            c.image = None;
            assert_eq!(messages(&validate_pod(&pod(vec![c]), None)), ["spec.containers[0].image: Required value"]);
        }

        #[test]
        fn container_ports_must_be_in_range() {
            let mut c = container("web", "nginx");
            c.ports = Some(vec![
                ContainerPort { container_port: 70000, protocol: Some("TCP".into()), ..ContainerPort::default() },
                ContainerPort { container_port: 80, protocol: Some("HTTP".into()), ..ContainerPort::default() },
            ]);
            let errs = validate_pod(&pod(vec![c]), None);
            assert_eq!(
                messages(&errs),
                [
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ]
            );
        }

        #[test]
        fn restart_policy_must_be_always_on_failure_or_never() {
            let mut p = pod(vec![container("web", "nginx")]);
            if let Some(spec) = p.spec.as_mut() {
                spec.restart_policy = Some("Sometimes".into());
            }
            assert_eq!(
                messages(&validate_pod(&p, None)),
                [
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
                ]
            );
        }

        #[test]
        fn requests_may_not_exceed_limits() {
            let mut c = container("web", "nginx");
            let list = |v: &str| Some(BTreeMap::from([("cpu".to_string(), Quantity(v.into()))]));
            c.resources =
                Some(ResourceRequirements { requests: list("2"), limits: list("500m"), ..Default::default() });
            assert_eq!(
                messages(&validate_pod(&pod(vec![c.clone()]), None)),
                [
                    "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 500m"
                ]
            );
            c.resources =
                Some(ResourceRequirements { requests: list("0.5"), limits: list("500m"), ..Default::default() });
            assert!(validate_pod(&pod(vec![c.clone()]), None).is_empty());
            c.resources = Some(ResourceRequirements { limits: list("lots"), ..Default::default() });
            let errs = validate_pod(&pod(vec![c]), None);
            assert!(errs[0].to_string().starts_with(
                "spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantities must match"
            ));
        }

        #[test]
        fn probes_need_exactly_one_handler_and_liveness_succeeds_once() {
            let mut c = container("web", "nginx");
            c.liveness_probe = Some(Probe { success_threshold: Some(2), ..Probe::default() });
            let errs = validate_pod(&pod(vec![c]), None);
            assert_eq!(
                messages(&errs),
                [
                    "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                    "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                ]
            );
        }

        #[test]
        fn an_update_may_change_container_images() {
            let old = pod(vec![container("web", "nginx:1")]);
            let new = pod(vec![container("web", "nginx:2")]);
            assert!(validate_pod(&new, Some(&old)).is_empty());
        }

        #[test]
        fn an_update_may_not_change_other_pod_spec_fields() {
            let old = pod(vec![container("web", "nginx:1")]);
            let mut new = old.clone();
            if let Some(spec) = new.spec.as_mut() {
                spec.restart_policy = Some("Never".into());
            }
            let errs = validate_pod(&new, Some(&old));
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].field, "spec");
            assert_eq!(errs[0].reason, Reason::FieldValueForbidden);
            assert!(errs[0].message.starts_with(&format!(
                "Forbidden: pod updates may not change fields other than {POD_UPDATABLE_FIELDS}\n"
            )));
            assert!(
                errs[0].message.contains("- spec.restartPolicy: \"Always\"\n+ spec.restartPolicy: \"Never\""),
                "{}",
                errs[0]
            );
        }

        #[test]
        fn an_update_may_add_tolerations_but_not_remove_them() {
            let old = pod(vec![container("web", "nginx")]);
            let mut added = old.clone();
            if let Some(spec) = added.spec.as_mut() {
                spec.tolerations.get_or_insert_with(Vec::new).push(Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Exists".into()),
                    ..Toleration::default()
                });
            }
            assert!(validate_pod(&added, Some(&old)).is_empty());
            let errs = validate_pod(&old, Some(&added));
            assert_eq!(
                messages(&errs),
                ["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
            );
        }

        #[test]
        fn an_update_may_only_lower_active_deadline_seconds() {
            let mut old = pod(vec![container("web", "nginx")]);
            if let Some(spec) = old.spec.as_mut() {
                spec.active_deadline_seconds = Some(100);
            }
            let mut new = old.clone();
            if let Some(spec) = new.spec.as_mut() {
                spec.active_deadline_seconds = Some(50);
            }
            assert!(validate_pod(&new, Some(&old)).is_empty());
            let errs = validate_pod(&old, Some(&new));
            assert_eq!(
                messages(&errs),
                ["spec.activeDeadlineSeconds: Invalid value: 100: must be less than or equal to previous value"]
            );
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn pods_get_service_account_service_links_and_admission_defaults() {
            let mut pod = pod_with(vec![container("nginx")]);
            default_pod(&mut pod);
            let spec = pod.spec.as_ref().expect("spec");
            assert_eq!(spec.service_account_name.as_deref(), Some("default"));
            assert_eq!(spec.service_account.as_deref(), Some("default"));
            assert_eq!(spec.enable_service_links, Some(true));
            assert_eq!(spec.priority, Some(0));
            assert_eq!(spec.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
            let tolerations = spec.tolerations.as_ref().expect("tolerations");
            assert_eq!(tolerations.len(), 2);
            assert_eq!(tolerations[0].toleration_seconds, Some(300));
            default_pod(&mut pod);
            assert_eq!(pod.spec.as_ref().and_then(|s| s.tolerations.as_ref()).map(Vec::len), Some(2), "idempotent");
        }

        #[test]
        fn pod_requests_default_to_limits() {
            let mut c = container("nginx");
            c.resources = Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("cpu".to_string(), Quantity("500m".into()))])),
                ..ResourceRequirements::default()
            });
            let mut pod = pod_with(vec![c]);
            default_pod(&mut pod);
            let resources = pod.spec.as_ref().expect("spec").containers[0].resources.clone().expect("resources");
            assert_eq!(resources.requests.expect("requests")["cpu"], Quantity("500m".into()));
        }

        #[test]
        fn pod_status_is_pending_on_create_with_a_qos_class() {
            let mut pod = pod_with(vec![container("nginx")]);
            default_pod(&mut pod);
            default_pod_on_create(&mut pod);
            let status = pod.status.as_ref().expect("status");
            assert_eq!(status.phase.as_deref(), Some("Pending"));
            assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));

            let mut running = pod_with(vec![container("nginx")]);
            running.status = Some(PodStatus { phase: Some("Running".into()), ..PodStatus::default() });
            default_pod_on_create(&mut running);
            assert_eq!(running.status.expect("status").phase.as_deref(), Some("Running"));
        }

        #[test]
        fn qos_class_follows_requests_and_limits() {
            let with = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
                let list = |items: &[(&str, &str)]| {
                    Some(items.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect())
                };
                let mut c = container("nginx");
                c.resources =
                    Some(ResourceRequirements { requests: list(requests), limits: list(limits), ..Default::default() });
                PodSpec { containers: vec![c], ..PodSpec::default() }
            };
            assert_eq!(qos_class(&with(&[], &[])), "BestEffort");
            assert_eq!(qos_class(&with(&[("cpu", "100m")], &[])), "Burstable");
            assert_eq!(
                qos_class(&with(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "1000m"), ("memory", "1024Mi")])),
                "Guaranteed"
            );
        }
    }
}
