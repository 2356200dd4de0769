//! Resource amounts as the scheduler counts them, and what a pod asks for.
//!
//! CPU is counted in millicores and everything else in whole units (bytes for memory), both
//! rounded up like Kubernetes' `MilliValue()` and `Value()`: [`trireme_model::quantity`], the one
//! parser of quantities the workspace has.
//!
//! A pod's requests follow Kubernetes' `PodRequests`: the sum of its containers and sidecars
//! (init containers with `restartPolicy: Always`), or the largest init container plus the
//! sidecars started before it when that is more, plus the pod's overhead. The "non-zero"
//! requests used for scoring give a container that names no cpu or memory request 100m and
//! 200Mi, so that many request-less pods still spread out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use trireme_model::quantity;

/// The cpu a container without a cpu request counts as when scoring (100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request counts as when scoring (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of resources: what a pod requests, what a node offers or has handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Every other resource (`ephemeral-storage`, `hugepages-2Mi`, extended resources such as
    /// `example.com/gpu`) in units, by name. `pods` is not here: nodes count pods apart.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// The amounts of a resource list (`requests`, `allocatable`); `pods` and unparsable
    /// quantities (which validation refuses) are left out.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in list.into_iter().flatten() {
            resources.set(name, amount(name, quantity));
        }
        resources
    }

    /// Sets the amount of `name`.
    pub fn set(&mut self, name: &str, value: i64) {
        match name {
            "cpu" => self.milli_cpu = value,
            "memory" => self.memory = value,
            "pods" => {}
            other => {
                self.scalar.insert(other.to_string(), value);
            }
        }
    }

    /// The amount of `name` (0 when absent).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    /// Adds `other` to these amounts.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        for (name, value) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_insert(0);
            *entry = entry.saturating_add(*value);
        }
    }

    /// Takes `other` away from these amounts (for a pod leaving a node); resources that reach
    /// zero are dropped so a node's totals do not collect names.
    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        for (name, value) in &other.scalar {
            if let Some(entry) = self.scalar.get_mut(name) {
                *entry = entry.saturating_sub(*value);
                if *entry == 0 {
                    self.scalar.remove(name);
                }
            }
        }
    }

    /// Raises each amount to `other`'s where that is larger.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        for (name, value) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_insert(0);
            *entry = (*entry).max(*value);
        }
    }

    /// Whether nothing is asked for.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.scalar.values().all(|v| *v == 0)
    }
}

/// The amount of resource `name` in `given`: millicores for cpu, units otherwise, rounded up;
/// 0 when the quantity does not parse or is negative.
pub fn amount(name: &str, given: &Quantity) -> i64 {
    let value = if name == "cpu" { quantity::milli_value(&given.0) } else { quantity::value(&given.0) };
    value.filter(|v| *v > 0).unwrap_or(0)
}

/// What a pod requests: Kubernetes' `PodRequests` (containers and sidecars summed, init
/// containers' maximum rule, overhead added). Containers without requests count as zero.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut requests = aggregate(spec, container_requests);
    requests.add(&Resources::from_list(spec.overhead.as_ref()));
    requests
}

/// The cpu (millicores) and memory (bytes) a pod counts as when scoring: like
/// [`pod_requests`], but a container that does not name a cpu or memory request counts as
/// 100m / 200Mi of it.
pub fn pod_non_zero_requests(spec: &PodSpec) -> (i64, i64) {
    let mut requests = aggregate(spec, |c| {
        let mut r = container_requests(c);
        let named =
            |name: &str| c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some_and(|l| l.contains_key(name));
        if !named("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !named("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        r
    });
    requests.add(&Resources::from_list(spec.overhead.as_ref()));
    (requests.milli_cpu, requests.memory)
}

fn container_requests(container: &Container) -> Resources {
    Resources::from_list(container.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// Whether an init container is a sidecar (runs for the pod's whole life).
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// Kubernetes' `AggregateContainerRequests`: containers plus sidecars, against each init
/// container plus the sidecars started before it.
fn aggregate(spec: &PodSpec, requests_of: impl Fn(&Container) -> Resources) -> Resources {
    let mut total = Resources::default();
    for container in &spec.containers {
        total.add(&requests_of(container));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for container in spec.init_containers.iter().flatten() {
        let own = requests_of(container);
        let during = if is_sidecar(container) {
            total.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut during = own;
            during.add(&sidecars);
            during
        };
        init_peak.max_with(&during);
    }
    total.max_with(&init_peak);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("a pod spec")
    }

    fn container(name: &str, requests: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "busybox", "resources": {"requests": requests}})
    }

    #[test]
    fn cpu_is_counted_in_millicores_and_memory_in_bytes_rounded_up() {
        assert_eq!(amount("cpu", &Quantity("100m".into())), 100);
        assert_eq!(amount("cpu", &Quantity("1".into())), 1000);
        assert_eq!(amount("cpu", &Quantity("0.5".into())), 500);
        assert_eq!(amount("cpu", &Quantity("1u".into())), 1, "a sliver of a core rounds up to 1m");
        assert_eq!(amount("memory", &Quantity("128Mi".into())), 128 * 1024 * 1024);
        assert_eq!(amount("memory", &Quantity("1Gi".into())), 1 << 30);
        assert_eq!(amount("memory", &Quantity("1e9".into())), 1_000_000_000);
        assert_eq!(amount("memory", &Quantity("500M".into())), 500_000_000);
        assert_eq!(amount("memory", &Quantity("nonsense".into())), 0);
        assert_eq!(amount("memory", &Quantity("1500m".into())), 2, "a fraction of a byte rounds up");
        assert_eq!(amount("cpu", &Quantity("-1".into())), 0, "negative counts as nothing");
        assert_eq!(amount("memory", &Quantity("16E".into())), i64::MAX, "saturates");
    }

    #[test]
    fn containers_add_up_and_the_largest_init_container_wins_when_it_is_larger() {
        let s = spec(json!({
            "containers": [container("a", json!({"cpu": "100m", "memory": "64Mi"})), container("b", json!({"cpu": "200m"}))],
            "initContainers": [container("i1", json!({"cpu": "1"})), container("i2", json!({"memory": "32Mi"}))],
        }));
        let r = pod_requests(&s);
        assert_eq!(r.milli_cpu, 1000, "the init container needs more cpu than the containers together");
        assert_eq!(r.memory, 64 * 1024 * 1024, "the containers need more memory than any init container");
    }

    #[test]
    fn sidecars_count_for_the_whole_pod_and_during_later_init_containers() {
        let mut sidecar = container("log", json!({"cpu": "300m"}));
        sidecar["restartPolicy"] = json!("Always");
        let s = spec(json!({
            "containers": [container("app", json!({"cpu": "200m"}))],
            "initContainers": [sidecar, container("migrate", json!({"cpu": "600m"}))],
        }));
        assert_eq!(pod_requests(&s).milli_cpu, 900, "the migration runs beside the sidecar: 600m + 300m");
    }

    #[test]
    fn overhead_is_added_and_scalar_resources_are_kept_by_name() {
        let s = spec(json!({
            "containers": [container("a", json!({"cpu": "1", "example.com/gpu": "2", "ephemeral-storage": "1Gi"}))],
            "overhead": {"cpu": "250m"},
        }));
        let r = pod_requests(&s);
        assert_eq!(r.milli_cpu, 1250);
        assert_eq!(r.get("example.com/gpu"), 2);
        assert_eq!(r.get("ephemeral-storage"), 1 << 30);
    }

    #[test]
    fn containers_without_requests_count_as_zero_to_fit_but_as_defaults_to_score() {
        let s = spec(json!({"containers": [{"name": "a", "image": "busybox"}, container("b", json!({"cpu": "0"}))]}));
        assert!(pod_requests(&s).is_zero());
        assert_eq!(pod_non_zero_requests(&s), (DEFAULT_MILLI_CPU_REQUEST, 2 * DEFAULT_MEMORY_REQUEST));
    }
}
