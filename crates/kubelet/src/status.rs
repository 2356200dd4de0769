//! A pod's status as the kubelet reports it, computed without I/O from its containers
//! ([`PodState`]): the phase, the `PodReadyToStartContainers`, `Initialized`,
//! `ContainersReady` and `Ready` conditions, container states with restart counts and last
//! states, pod and host IPs.

use std::collections::HashMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::ContainerState as KubeState;
use k8s_openapi::api::core::v1::ContainerStateRunning;
use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::api::core::v1::ContainerStateWaiting;
use k8s_openapi::api::core::v1::ContainerStatus;
use k8s_openapi::api::core::v1::HostIP;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::api::core::v1::PodIP;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::plan::PodState;
use crate::plan::Slot;
use crate::runtime::ContainerInfo;
use crate::runtime::ContainerState;

/// What a pod's status says besides its containers.
pub struct Facts<'a> {
    /// The sandbox's IP; `None` while there is no sandbox.
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    /// The runtime's name: the scheme of container ids (`process://<id>`).
    pub runtime: &'a str,
    pub start_time: Option<Time>,
}

/// The pod's conditions with the time each last changed status, kept from one status to the
/// next.
#[derive(Debug, Default)]
pub struct Conditions(HashMap<String, (String, Time)>);

impl Conditions {
    /// A pod condition that keeps its transition time while its status stays the same.
    fn condition(&mut self, type_: &str, ok: bool, now: Timestamp) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self.0.entry(type_.to_string()).or_insert_with(|| (status.to_string(), Time(now)));
        if entry.0 != status {
            *entry = (status.to_string(), Time(now));
        }
        let reason = match (type_, ok) {
            ("Ready" | "ContainersReady", false) => Some("ContainersNotReady".to_string()),
            ("Initialized", false) => Some("ContainersNotInitialized".to_string()),
            _ => None,
        };
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(entry.1.clone()),
            reason,
            ..Default::default()
        }
    }
}

/// The status of `pod` at `now`. A pod that reaches Succeeded or Failed becomes terminal in
/// `state`: nothing of it is started again.
pub fn pod_status(
    pod: &Pod,
    state: &mut PodState,
    facts: &Facts<'_>,
    conditions: &mut Conditions,
    now: Timestamp,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, state.init.get(&c.name), facts.runtime, true))
        .collect();
    let initialized = state.initialized(&spec);
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            let mut s = container_status(c, state.apps.get(&c.name), facts.runtime, false);
            if !initialized && s.state.as_ref().is_some_and(|st| st.waiting.is_some()) {
                s.state = Some(KubeState {
                    waiting: Some(ContainerStateWaiting { reason: Some("PodInitializing".into()), message: None }),
                    ..Default::default()
                });
            }
            s
        })
        .collect();
    let init_failed = policy == "Never" && state.init.values().any(|s| s.exit_code().is_some_and(|c| c != 0));
    let phase = phase(&policy, &statuses, initialized, init_failed);
    if phase == "Succeeded" || phase == "Failed" {
        state.terminal = true;
    }
    let containers_ready = initialized && !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned());
    let pod_conditions = vec![
        conditions.condition("PodReadyToStartContainers", facts.pod_ip.is_some(), now),
        conditions.condition("Initialized", initialized, now),
        conditions.condition("Ready", containers_ready, now),
        conditions.condition("ContainersReady", containers_ready, now),
        scheduled.unwrap_or_else(|| conditions.condition("PodScheduled", true, now)),
    ];
    let pod_ip = facts.pod_ip.map(|ip| ip.to_string());
    let host_ip = facts.host_ip.to_string();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(pod_conditions),
        host_ip: Some(host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: host_ip }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: facts.start_time.clone(),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()).or_else(|| Some(qos_class(&spec))),
        ..Default::default()
    }
}

/// What of a pod's status the kubelet insists on: phase, IP, condition statuses and each
/// container's readiness, restarts and state.
pub fn summary(status: &PodStatus) -> Vec<String> {
    let mut out = vec![status.phase.clone().unwrap_or_default(), status.pod_ip.clone().unwrap_or_default()];
    for c in status.conditions.iter().flatten() {
        out.push(format!("{}={}", c.type_, c.status));
    }
    for c in status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten()) {
        let state = c.state.as_ref().map(|s| {
            if s.running.is_some() {
                "running"
            } else if s.terminated.is_some() {
                "terminated"
            } else {
                "waiting"
            }
        });
        out.push(format!("{} {} {} {:?}", c.name, c.ready, c.restart_count, state));
    }
    out
}

/// The pod phase from its containers, as the kubelet computes it.
fn phase(policy: &str, statuses: &[ContainerStatus], initialized: bool, init_failed: bool) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let running = statuses.iter().filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some())).count();
    let waiting = statuses.iter().filter(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some())).count();
    let terminated: Vec<i32> = statuses
        .iter()
        .filter_map(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.exit_code))
        .collect();
    let restarting =
        |s: &ContainerStatus| s.restart_count > 0 || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
    if waiting > 0
        && statuses.iter().filter(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some())).all(|s| !restarting(s))
        && running == 0
        && terminated.is_empty()
    {
        return "Pending";
    }
    if running > 0 || waiting > 0 {
        return if statuses.iter().any(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some()) && !restarting(s)) {
            "Pending"
        } else {
            "Running"
        };
    }
    // Every container has terminated.
    match policy {
        "Always" => "Running",
        _ if terminated.iter().all(|c| *c == 0) => "Succeeded",
        "OnFailure" => "Running",
        _ => "Failed",
    }
}

fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> String {
    let containers: Vec<&Container> = spec.containers.iter().collect();
    let has = |c: &Container, which: &str| {
        c.resources.as_ref().is_some_and(|r| {
            let map = if which == "limits" { &r.limits } else { &r.requests };
            map.as_ref().is_some_and(|m| !m.is_empty())
        })
    };
    if containers.iter().all(|c| !has(c, "limits") && !has(c, "requests")) {
        return "BestEffort".into();
    }
    let guaranteed = containers.iter().all(|c| {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        ["cpu", "memory"].iter().all(|k| {
            let l = limits.and_then(|m| m.get(*k));
            l.is_some() && requests.and_then(|m| m.get(*k)).is_none_or(|q| Some(q) == l)
        })
    });
    if guaranteed { "Guaranteed".into() } else { "Burstable".into() }
}

fn terminated(info: &ContainerInfo, runtime: &str) -> Option<ContainerStateTerminated> {
    match &info.state {
        ContainerState::Exited { started_at, finished_at, exit_code, reason } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(reason.clone()),
            started_at: started_at.map(Time),
            finished_at: Some(Time(*finished_at)),
            container_id: Some(format!("{runtime}://{}", info.id)),
            ..Default::default()
        }),
        _ => None,
    }
}

fn container_status(container: &Container, slot: Option<&Slot>, runtime: &str, init: bool) -> ContainerStatus {
    let image = container.image.clone().unwrap_or_default();
    let waiting = |reason: &str, message: Option<String>| KubeState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_string()), message }),
        ..Default::default()
    };
    let Some(slot) = slot else {
        return ContainerStatus {
            name: container.name.clone(),
            image: image.clone(),
            image_id: String::new(),
            state: Some(waiting(if init { "PodInitializing" } else { "ContainerCreating" }, None)),
            ..Default::default()
        };
    };
    let state = match (&slot.waiting, &slot.current) {
        (Some((reason, message)), _) => waiting(reason, Some(message.clone())),
        (None, Some(info)) => match &info.state {
            ContainerState::Running { started_at } => KubeState {
                running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }),
                ..Default::default()
            },
            ContainerState::Created => waiting("ContainerCreating", None),
            ContainerState::Exited { .. } => KubeState { terminated: terminated(info, runtime), ..Default::default() },
        },
        (None, None) => waiting("ContainerCreating", None),
    };
    // A container waiting to be restarted shows its last run as lastState.
    let last = match (&slot.waiting, &slot.current) {
        (Some(_), Some(info)) => terminated(info, runtime),
        _ => slot.previous.as_ref().and_then(|p| terminated(p, runtime)),
    };
    let running = slot.running() && slot.waiting.is_none();
    ContainerStatus {
        name: container.name.clone(),
        image: slot.current.as_ref().map(|c| c.image.clone()).unwrap_or(image),
        image_id: slot.current.as_ref().map(|c| c.image_id.clone()).unwrap_or_default(),
        container_id: slot.current.as_ref().map(|c| format!("{runtime}://{}", c.id)),
        ready: running && slot.ready && slot.started,
        started: Some(running && slot.started),
        restart_count: slot.restart_count(),
        state: Some(state),
        last_state: last.map(|t| KubeState { terminated: Some(t), ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, restarts: i32) -> ContainerStatus {
        let st = match state {
            "running" => KubeState { running: Some(Default::default()), ..Default::default() },
            "waiting" => KubeState { waiting: Some(Default::default()), ..Default::default() },
            code => KubeState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code.parse().unwrap_or(1),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        ContainerStatus { state: Some(st), restart_count: restarts, ..Default::default() }
    }

    #[test]
    fn phases_follow_containers_and_the_restart_policy() {
        assert_eq!(phase("Always", &[status("waiting", 0)], true, false), "Pending");
        assert_eq!(phase("Always", &[status("running", 0)], true, false), "Running");
        assert_eq!(phase("Always", &[status("waiting", 3)], true, false), "Running");
        assert_eq!(phase("Never", &[status("0", 0), status("0", 0)], true, false), "Succeeded");
        assert_eq!(phase("Never", &[status("0", 0), status("1", 0)], true, false), "Failed");
        assert_eq!(phase("OnFailure", &[status("0", 0)], true, false), "Succeeded");
        assert_eq!(phase("Always", &[status("running", 0)], false, false), "Pending");
        assert_eq!(phase("Never", &[status("waiting", 0)], false, true), "Failed");
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "uid": "u"}, "spec": spec}))
            .expect("a pod")
    }

    fn exited(name: &str, code: i32) -> ContainerInfo {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("a timestamp");
        ContainerInfo {
            id: format!("u_{name}_0"),
            pod: crate::runtime::PodRef { uid: "u".into(), namespace: "default".into(), name: "web".into() },
            name: name.into(),
            attempt: 0,
            image: "busybox".into(),
            image_id: String::new(),
            state: ContainerState::Exited {
                started_at: Some(at(0)),
                finished_at: at(1),
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
            },
        }
    }

    fn facts() -> Facts<'static> {
        Facts { pod_ip: Some([10, 0, 0, 2].into()), host_ip: [127, 0, 0, 1].into(), runtime: "fake", start_time: None }
    }

    #[test]
    fn a_pod_whose_containers_all_exited_succeeds_or_fails_and_is_never_restarted() {
        let cases = [
            ("Never", vec![0, 0], "Succeeded"),
            ("Never", vec![0, 1], "Failed"),
            ("OnFailure", vec![0, 0], "Succeeded"),
            ("Always", vec![0, 0], "Running"),
        ];
        for (policy, codes, expected) in cases {
            let pod = pod(serde_json::json!({
                "restartPolicy": policy,
                "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}],
            }));
            let mut state = PodState::default();
            state.adopt(vec![exited("a", codes[0]), exited("b", codes[1])]);
            let now = Timestamp::from_second(1_700_000_100).expect("a timestamp");
            let status = pod_status(&pod, &mut state, &facts(), &mut Conditions::default(), now);
            assert_eq!(status.phase.as_deref(), Some(expected), "{policy} {codes:?}");
            let terminal = expected != "Running";
            assert_eq!(state.terminal, terminal, "{policy} {codes:?}");
            let plan = state.plan(&pod, tokio::time::Instant::now());
            assert_eq!(plan.is_empty(), terminal, "{policy} {codes:?}: {plan:?}");
        }
    }

    #[test]
    fn an_init_container_that_fails_under_restart_policy_never_fails_the_pod() {
        let pod = pod(serde_json::json!({
            "restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "busybox"}],
        }));
        let mut state = PodState::default();
        state.adopt(vec![exited("init", 2)]);
        state.align(&pod);
        assert!(state.plan(&pod, tokio::time::Instant::now()).is_empty());
        let now = Timestamp::from_second(1_700_000_100).expect("a timestamp");
        let status = pod_status(&pod, &mut state, &facts(), &mut Conditions::default(), now);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let app = status.container_statuses.as_deref().and_then(|s| s.first()).cloned().unwrap_or_default();
        let waiting = app.state.and_then(|s| s.waiting).and_then(|w| w.reason);
        assert_eq!(waiting.as_deref(), Some("PodInitializing"));
    }
}
