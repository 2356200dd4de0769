//! The pod manager: watches the pods bound to this node (through any master), keeps one
//! worker per pod, checkpoints every pod it runs so that a kubelet restarted while no master
//! answers keeps its pods, and stops pods nobody wants any more.

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use kube::runtime::watcher::Event;
use tokio::sync::watch;
use tokio::task::JoinSet;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::runtime::ContainerInfo;
use crate::runtime::PodRef;
use crate::worker;
use crate::worker::Shared;

/// The pods this node runs, by uid: what the log server reads to find containers.
pub type PodIndex = Arc<std::sync::RwLock<HashMap<String, Arc<Pod>>>>;

struct Running {
    updates: watch::Sender<Option<Arc<Pod>>>,
}

/// Runs the pod manager until shutdown.
pub async fn run(shared: Arc<Shared>, index: PodIndex) {
    let checkpoints = shared.config.root_dir.join("checkpoints");
    if let Err(e) = std::fs::create_dir_all(&checkpoints) {
        tracing::error!(dir = %checkpoints.display(), error = %e, "cannot create the checkpoint dir");
    }
    let mut workers: HashMap<String, Running> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut existing = match shared.runtime.list_containers().await {
        Ok(list) => group_by_pod(list),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list existing containers");
            HashMap::new()
        }
    };
    // Pods checkpointed by a previous run keep running from their last known spec until the
    // API says otherwise.
    for pod in load_checkpoints(&checkpoints) {
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        let adopted = existing.remove(&uid).unwrap_or_default();
        tracing::info!(pod = ?pod.metadata.name, containers = adopted.len(), "resuming checkpointed pod");
        start_worker(&shared, &index, &mut workers, &mut tasks, Arc::new(pod), adopted);
    }

    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let stream = watcher(api, watcher::Config::default().fields(&selector));
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<HashSet<String>> = None;
    let mut listed_once = false;
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    forget(&checkpoints, &index, &mut workers, &uid);
                }
                continue;
            }
            event = stream.next() => event,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => {
                let Some(uid) = pod.metadata.uid.clone() else { continue };
                if let Some(seen) = listing.as_mut() {
                    seen.insert(uid.clone());
                }
                let pod = Arc::new(pod);
                checkpoint(&checkpoints, &pod);
                if let Ok(mut i) = index.write() {
                    i.insert(uid.clone(), pod.clone());
                }
                match workers.get(&uid) {
                    Some(running) => {
                        running.updates.send_replace(Some(pod));
                    }
                    None => {
                        let adopted = existing.remove(&uid).unwrap_or_default();
                        start_worker(&shared, &index, &mut workers, &mut tasks, pod, adopted);
                    }
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(running) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                    running.updates.send_replace(None);
                }
            }
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                for (uid, running) in &workers {
                    if !seen.contains(uid) {
                        tracing::info!(pod = %uid, "pod no longer bound here; stopping it");
                        running.updates.send_replace(None);
                    }
                }
                if !listed_once {
                    listed_once = true;
                    // Containers of pods that neither the API nor a checkpoint knows.
                    for (uid, containers) in existing.drain() {
                        if !seen.contains(&uid) {
                            cleanup_orphan(&shared, uid, containers).await;
                        }
                    }
                    cleanup_orphan_sandboxes(&shared, &seen, &workers).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pod watch failed; pods keep running, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    // Shutdown: workers leave their containers running for the next kubelet, unless asked.
    drop(workers);
    while tasks.join_next().await.is_some() {}
    if shared.config.stop_pods_on_exit {
        stop_all(&shared).await;
    }
}

/// Stops every container and removes every sandbox of this node (checkpoints stay: a kubelet
/// started again starts the pods afresh).
async fn stop_all(shared: &Shared) {
    let containers = shared.runtime.list_containers().await.unwrap_or_default();
    let stops =
        containers.iter().filter(|c| matches!(c.state, crate::runtime::ContainerState::Running { .. })).map(|c| {
            let runtime = shared.runtime.clone();
            let id = c.id.clone();
            async move { runtime.stop_container(&id, std::time::Duration::from_secs(5)).await }
        });
    let stopped = futures::future::join_all(stops).await;
    tracing::info!(containers = stopped.len(), "stopped every container (--stop-pods-on-exit)");
    for sandbox in shared.runtime.list_sandboxes().await.unwrap_or_default() {
        let _ = shared.runtime.remove_sandbox(&sandbox.pod).await;
    }
}

fn start_worker(
    shared: &Arc<Shared>,
    index: &PodIndex,
    workers: &mut HashMap<String, Running>,
    tasks: &mut JoinSet<String>,
    pod: Arc<Pod>,
    adopted: Vec<ContainerInfo>,
) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    let pod_ref = PodRef {
        uid: uid.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
    };
    if let Ok(mut i) = index.write() {
        i.insert(uid.clone(), pod.clone());
    }
    let (tx, rx) = watch::channel(Some(pod));
    workers.insert(uid.clone(), Running { updates: tx });
    let shared = shared.clone();
    tasks.spawn(async move {
        worker::run(shared, pod_ref, rx, adopted).await;
        uid
    });
}

fn forget(checkpoints: &std::path::Path, index: &PodIndex, workers: &mut HashMap<String, Running>, uid: &str) {
    // A worker that ended because the kubelet shuts down keeps its checkpoint.
    let gone = workers
        .get(uid)
        .is_some_and(|r| r.updates.borrow().as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    workers.remove(uid);
    if gone {
        let _ = std::fs::remove_file(checkpoints.join(format!("{uid}.json")));
        if let Ok(mut i) = index.write() {
            i.remove(uid);
        }
    }
}

fn group_by_pod(list: Vec<ContainerInfo>) -> HashMap<String, Vec<ContainerInfo>> {
    let mut map: HashMap<String, Vec<ContainerInfo>> = HashMap::new();
    for c in list {
        map.entry(c.pod.uid.clone()).or_default().push(c);
    }
    map
}

fn checkpoint(dir: &std::path::Path, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else { return };
    let path = dir.join(format!("{uid}.json"));
    // Unsynced: a checkpoint only has to outlive the kubelet (a crash of the machine ends every
    // container anyway), and this runs on every pod event.
    let result = serde_json::to_vec(pod)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_atomic(&path, &bytes, FileOptions::UNSYNCED));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot checkpoint pod");
    }
}

fn load_checkpoints(dir: &std::path::Path) -> Vec<Pod> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut pods = Vec::new();
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let pod = std::fs::read(&path).and_then(|b| serde_json::from_slice::<Pod>(&b).map_err(std::io::Error::from));
        match pod {
            Ok(pod) => pods.push(pod),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable pod checkpoint; removing it");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    pods
}

async fn cleanup_orphan(shared: &Shared, uid: String, containers: Vec<ContainerInfo>) {
    tracing::info!(pod = %uid, "stopping containers of a pod this node no longer runs");
    for c in &containers {
        let _ = shared.runtime.stop_container(&c.id, std::time::Duration::from_secs(5)).await;
    }
    if let Some(c) = containers.first() {
        let _ = shared.runtime.remove_sandbox(&c.pod).await;
    }
}

async fn cleanup_orphan_sandboxes(shared: &Shared, seen: &HashSet<String>, workers: &HashMap<String, Running>) {
    let Ok(sandboxes) = shared.runtime.list_sandboxes().await else { return };
    for sandbox in sandboxes {
        if !seen.contains(&sandbox.pod.uid) && !workers.contains_key(&sandbox.pod.uid) {
            let _ = shared.runtime.remove_sandbox(&sandbox.pod).await;
        }
    }
}
