//! Kubernetes' defaulting helpers the kinds share: pod specs, containers, probes, volumes and
//! pod templates. Each kind's own defaults live in its module under [`crate::kinds`] (its
//! [`crate::strategy::Kind::default`], run on every write as Kubernetes' `SetDefaults_*`
//! functions run on every decode, and [`crate::strategy::Kind::default_on_create`]).
//! Defaults that Kubernetes sets in admission plugins every pod goes through (service account,
//! priority, not-ready/unreachable tolerations) are applied to pods too, but not to pod
//! templates, just as in Kubernetes. ClusterIP and nodePort allocation is not done here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Volume,
};

use crate::quantity;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Kubernetes' default scheduler name.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Kubernetes' default container termination message path.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The mode (0644) Kubernetes gives files of secret, configMap, downwardAPI and projected volumes.
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Kubernetes' QoS class of a pod: `BestEffort` without any cpu/memory request or limit,
/// `Guaranteed` when every container limits cpu and memory and requests exactly that,
/// `Burstable` otherwise.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let (mut any, mut guaranteed) = (false, true);
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let resources = c.resources.as_ref();
        for name in ["cpu", "memory"] {
            let get = |list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
                list.and_then(|l| l.get(name)).and_then(|q| quantity::parse(&q.0)).filter(|v| *v != 0)
            };
            let request = get(resources.and_then(|r| r.requests.as_ref()));
            let limit = get(resources.and_then(|r| r.limits.as_ref()));
            any |= request.is_some() || limit.is_some();
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(request), Some(limit)) if request != limit => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Pod spec defaults, shared by pods and the templates of deployments and replica sets:
/// `restartPolicy` `Always`, `dnsPolicy` `ClusterFirst`, `terminationGracePeriodSeconds` 30,
/// `schedulerName` `default-scheduler`, `securityContext` `{}`, container defaults
/// ([`default_container`]) and volume defaults.
pub fn default_pod_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.restart_policy, "Always");
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    spec.termination_grace_period_seconds.get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    set_if_empty(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

/// Container defaults: `imagePullPolicy` (`Always` for a `latest` or missing tag, else
/// `IfNotPresent`), `terminationMessagePath` `/dev/termination-log`,
/// `terminationMessagePolicy` `File`, `resources` `{}`, ports' protocol `TCP`, probe and
/// handler defaults, and `apiVersion` `v1` of env field references.
pub fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy =
            if image_tag(c.image.as_deref().unwrap_or_default()) == "latest" { "Always" } else { "IfNotPresent" };
        c.image_pull_policy = Some(policy.into());
    }
    set_if_empty(&mut c.termination_message_path, DEFAULT_TERMINATION_MESSAGE_PATH);
    set_if_empty(&mut c.termination_message_policy, "File");
    c.resources.get_or_insert_with(ResourceRequirements::default);
    for port in c.ports.iter_mut().flatten() {
        default_container_port(port);
    }
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
        default_probe(probe);
    }
    if let Some(lifecycle) = c.lifecycle.as_mut() {
        for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop].into_iter().flatten() {
            default_lifecycle_handler(handler);
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|from| from.field_ref.as_mut()) {
            set_if_empty(&mut field_ref.api_version, "v1");
        }
    }
}

/// The tag an image reference names, as Kubernetes' image parser reads it: `latest` when
/// neither a tag nor a digest is given, empty when only a digest is.
pub fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

/// Container port: `protocol` `TCP`.
pub fn default_container_port(port: &mut ContainerPort) {
    set_if_empty(&mut port.protocol, "TCP");
}

/// Probe: `timeoutSeconds` 1, `periodSeconds` 10, `successThreshold` 1, `failureThreshold` 3,
/// and the HTTP GET defaults.
pub fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http) = probe.http_get.as_mut() {
        default_http_get(http);
    }
}

/// Lifecycle handler: the HTTP GET defaults.
pub fn default_lifecycle_handler(handler: &mut LifecycleHandler) {
    if let Some(http) = handler.http_get.as_mut() {
        default_http_get(http);
    }
}

/// HTTP GET action: `path` `/`, `scheme` `HTTP`.
pub fn default_http_get(http: &mut HTTPGetAction) {
    set_if_empty(&mut http.path, "/");
    set_if_empty(&mut http.scheme, "HTTP");
}

/// Volume: `emptyDir: {}` when no source is given; `defaultMode` 0644 for secret, configMap,
/// downwardAPI and projected volumes; hostPath `type` `""`.
pub fn default_volume(volume: &mut Volume) {
    if *volume == (Volume { name: volume.name.clone(), ..Volume::default() }) {
        volume.empty_dir = Some(Default::default());
    }
    if let Some(s) = volume.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(c) = volume.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(d) = volume.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(p) = volume.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(h) = volume.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
}

/// Pods only: each limit without a request becomes the request too.
pub(crate) fn default_requests_from_limits(c: &mut Container) {
    let Some(resources) = c.resources.as_mut() else { return };
    let Some(limits) = resources.limits.as_ref().filter(|l| !l.is_empty()) else { return };
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    for (name, quantity) in limits {
        requests.entry(name.clone()).or_insert_with(|| quantity.clone());
    }
}

/// Pod template: the pod spec defaults ([`default_pod_spec`]).
pub fn default_template(template: &mut PodTemplateSpec) {
    default_pod_spec(template.spec.get_or_insert_with(PodSpec::default));
}

/// Sets `field` to `value` when it is unset or empty.
pub(crate) fn set_if_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::defaults::*;

    #[test]
    fn pod_spec_defaults_match_kubernetes() {
        let mut spec = PodSpec { containers: vec![container("nginx")], ..PodSpec::default() };
        default_pod_spec(&mut spec);
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.security_context, Some(PodSecurityContext::default()));
        assert_eq!(spec.service_account_name, None, "templates get no service account");
        assert_eq!(spec.enable_service_links, None, "templates get no service links");
        let c = &spec.containers[0];
        assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(c.resources, Some(ResourceRequirements::default()));
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut spec = PodSpec {
            containers: vec![Container { image_pull_policy: Some("Never".into()), ..container("nginx") }],
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(5),
            ..PodSpec::default()
        };
        default_pod_spec(&mut spec);
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn image_pull_policy_is_always_for_latest_or_untagged_images_and_if_not_present_otherwise() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
        ] {
            let mut c = container(image);
            default_container(&mut c);
            assert_eq!(c.image_pull_policy.as_deref(), Some(policy), "{image}");
        }
    }

    #[test]
    fn ports_probes_and_http_get_are_defaulted() {
        let mut c = container("nginx:1");
        c.ports = Some(vec![ContainerPort { container_port: 80, ..ContainerPort::default() }]);
        c.liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction { port: IntOrString::Int(80), ..HTTPGetAction::default() }),
            ..Probe::default()
        });
        default_container(&mut c);
        assert_eq!(c.ports.as_ref().expect("ports")[0].protocol.as_deref(), Some("TCP"));
        let probe = c.liveness_probe.as_ref().expect("probe");
        assert_eq!(
            (probe.timeout_seconds, probe.period_seconds, probe.success_threshold, probe.failure_threshold),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http = probe.http_get.as_ref().expect("httpGet");
        assert_eq!((http.scheme.as_deref(), http.path.as_deref()), (Some("HTTP"), Some("/")));
    }

    #[test]
    fn volumes_without_a_source_become_empty_dirs_and_modes_are_defaulted() {
        let mut bare = Volume { name: "scratch".into(), ..Volume::default() };
        default_volume(&mut bare);
        assert!(bare.empty_dir.is_some());
        let mut secret = Volume { name: "s".into(), secret: Some(SecretVolumeSource::default()), ..Volume::default() };
        default_volume(&mut secret);
        assert_eq!(secret.secret.expect("secret").default_mode, Some(420));
        assert!(secret.empty_dir.is_none());
    }
}
