//! Events the kubelet reports about pods (`kubectl describe pod` shows them): containers
//! started and stopped, back-off, failed probes, images it cannot run.
//!
//! Recording never blocks a pod worker: each event is sent by a task of its own, and dropped
//! (with a debug log) when no master answers.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::EventSource;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::Client;
use kube::api::PostParams;

use crate::runtime::PodRef;

/// `Normal` or `Warning`, as Kubernetes types events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Who reports: the kubelet of `node`.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
}

impl Recorder {
    pub fn new(client: Client, node: String) -> Recorder {
        Recorder { client, node }
    }

    /// Records an event about `pod` (and its container `container`, if any).
    pub fn record(&self, pod: &PodRef, container: Option<&str>, kind: Kind, reason: &str, message: String) {
        let now = Timestamp::now();
        let suffix: String = format!("{:x}", now.as_nanosecond() as u64 ^ u64::from(std::process::id()));
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{suffix}", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                field_path: container.map(|c| format!("spec.containers{{{c}}}")),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(match kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            source: Some(EventSource { component: Some("kubelet".into()), host: Some(self.node.clone()) }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        tokio::spawn(async move {
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}
