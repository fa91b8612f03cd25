//! The pods bound to this node: one worker per pod (by uid) that prepares its volumes, runs its
//! containers, writes its status, and finalises its deletion.

use super::container::{ContainerTask, RestartPolicy, container_id};
use super::{
    ContainerRecord, GRACE_CAP, PodEntry, PodState, RunState, Shared, lock, now_secs, pod_dirs,
    setup,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

static SERIAL: AtomicU64 = AtomicU64::new(0);

struct Worker {
    updates: watch::Sender<Pod>,
    entry: Arc<PodEntry>,
    task: JoinHandle<()>,
}

/// Watches the pods bound to this node and keeps one worker per pod, until the kubelet stops.
pub(crate) async fn dispatch(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut relisted: Option<HashSet<String>> = None;
    let mut swept = false;
    let mut cleanups: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            event = stream.next() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Ok(Event::Init) => relisted = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                apply(&shared, &mut workers, pod);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    let vanished: Vec<String> = workers
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in vanished {
                        if let Some(worker) = workers.remove(&uid) {
                            cleanups.push(vanish(&shared, worker));
                        }
                    }
                }
                if !swept {
                    // Folders of pods an earlier kubelet on this root ran, and that are gone.
                    swept = true;
                    for uid in pod_dirs(&shared.root) {
                        if !workers.contains_key(&uid) {
                            let _ = std::fs::remove_dir_all(shared.root.join("pods").join(uid));
                        }
                    }
                }
            }
            Ok(Event::Apply(pod)) => apply(&shared, &mut workers, pod),
            Ok(Event::Delete(pod)) => {
                if let Some(worker) = pod.metadata.uid.and_then(|uid| workers.remove(&uid)) {
                    cleanups.push(vanish(&shared, worker));
                }
            }
            Err(e) => tracing::warn!(node = %shared.node, "watching the node's pods: {e}"),
        }
        cleanups.retain(|task| !task.is_finished());
    }
    // Stopping: every process dies now; the folders stay for a kubelet started again here.
    for (_, worker) in workers.drain() {
        worker.entry.gone.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), worker.task).await;
    }
    for task in cleanups {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// A pod seen: news for its worker, or a new worker.
fn apply(shared: &Arc<Shared>, workers: &mut HashMap<String, Worker>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(worker) = workers.get(&uid) {
        worker.updates.send_replace(pod);
        return;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    // A pod this node ran before (a kubelet started again) keeps its IP.
    let known_ip = status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| ip.octets()[0] == 127 && !ip.is_unspecified());
    let ip = if host_network {
        Ipv4Addr::LOCALHOST
    } else {
        known_ip.unwrap_or_else(|| shared.allocate_ip())
    };
    let start_time = status
        .start_time
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|t| t.as_str().map(str::to_string))
        .unwrap_or_else(now_secs);
    let scheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| serde_json::to_value(c).ok());
    let containers = spec
        .containers
        .iter()
        .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default()))
        .collect();
    let gone = CancellationToken::new();
    let entry = Arc::new(PodEntry {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        dir: shared.root.join("pods").join(&uid),
        uid: uid.clone(),
        serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        ip,
        host_network,
        start_time,
        scheduled,
        state: Mutex::new(PodState {
            containers,
            conditions: HashMap::new(),
            volumes_ready: false,
            finished: false,
        }),
        changed: Notify::new(),
        stop: gone.child_token(),
        gone,
        grace: Mutex::new(GRACE_CAP),
        written: tokio::sync::Mutex::new(None),
    });
    tracing::info!(pod = %entry.name, namespace = %entry.namespace, %ip, "running a pod");
    shared.insert(entry.clone());
    let (updates, receiver) = watch::channel(pod);
    let task = tokio::spawn(run(shared.clone(), entry.clone(), receiver));
    workers.insert(
        uid,
        Worker {
            updates,
            entry,
            task,
        },
    );
}

/// The pod is gone from the API: kill at once, then remove its folders.
fn vanish(shared: &Arc<Shared>, worker: Worker) -> JoinHandle<()> {
    worker.entry.gone.cancel();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _ = worker.task.await;
        let _ = std::fs::remove_dir_all(&worker.entry.dir);
        shared.remove(&worker.entry.uid);
        tracing::info!(pod = %worker.entry.name, "pod gone, cleaned up");
    })
}

/// Cancels `entry.stop` (with the grace period set) once the pod has a deletionTimestamp.
async fn watch_deletion(entry: Arc<PodEntry>, mut updates: watch::Receiver<Pod>) {
    loop {
        let grace = {
            let pod = updates.borrow_and_update();
            pod.metadata.deletion_timestamp.as_ref().map(|_| {
                pod.metadata
                    .deletion_grace_period_seconds
                    .or_else(|| {
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30)
            })
        };
        if let Some(grace) = grace {
            *lock(&entry.grace) = Duration::from_secs(grace.max(0) as u64).min(GRACE_CAP);
            entry.stop.cancel();
            return;
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

/// A pod's whole life on this node.
async fn run(shared: Arc<Shared>, entry: Arc<PodEntry>, updates: watch::Receiver<Pod>) {
    let pod = Arc::new(updates.borrow().clone());
    let deletion = tokio::spawn(watch_deletion(entry.clone(), updates));
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        // Ended before this kubelet saw it: nothing runs again; deleted, it is finalised.
        entry.update(|s| {
            s.finished = true;
            for c in &mut s.containers {
                c.done = true;
            }
        });
        entry.stop.cancelled().await;
        if !entry.gone.is_cancelled() {
            shared.finalise(&entry).await;
        }
        deletion.abort();
        return;
    }
    let writer = tokio::spawn(status_writer(shared.clone(), entry.clone(), pod.clone()));
    entry.changed.notify_one();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ran_to_end = false;
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        let message = "the test kubelet does not run init containers".to_string();
        entry.update(|s| {
            for c in &mut s.containers {
                c.state = RunState::Waiting {
                    reason: "CreateContainerError".to_string(),
                    message: Some(message.clone()),
                };
            }
        });
        shared.event(&entry, None, true, "Failed", format!("Error: {message}"));
    } else if let Some(volumes) = prepare_volumes(&shared, &entry, &pod).await {
        entry.update(|s| s.volumes_ready = true);
        let volumes = Arc::new(volumes);
        let policy = RestartPolicy::of(&pod);
        let mut tasks = JoinSet::new();
        for (index, container) in spec.containers.iter().enumerate() {
            tasks.spawn(
                ContainerTask {
                    shared: shared.clone(),
                    entry: entry.clone(),
                    index,
                    pod: pod.clone(),
                    container: container.clone(),
                    volumes: volumes.clone(),
                    policy,
                }
                .run(),
            );
        }
        while tasks.join_next().await.is_some() {}
        ran_to_end = !entry.stop.is_cancelled();
    }
    if ran_to_end {
        // Every container ended for good (restartPolicy Never / OnFailure): the phase is final.
        entry.update(|s| s.finished = true);
    }
    entry.stop.cancelled().await;
    if entry.gone.is_cancelled() {
        writer.abort();
        deletion.abort();
        return;
    }
    // Deleted: the last status, then the kubelet's delete with grace 0.
    entry.update(|s| s.finished = true);
    if let Err(e) = flush(&shared, &entry, &pod).await {
        tracing::debug!(pod = %entry.name, "the last status: {e}");
    }
    writer.abort();
    shared.finalise(&entry).await;
    deletion.abort();
}

/// The pod's volumes, tried again every 2 s while a Secret or ConfigMap is missing; `None` when
/// the pod is stopped meanwhile.
async fn prepare_volumes(shared: &Shared, entry: &PodEntry, pod: &Pod) -> Option<setup::Volumes> {
    let mut reported: Option<String> = None;
    loop {
        match setup::volumes(shared, entry, pod).await {
            Ok(volumes) => return Some(volumes),
            Err(message) => {
                if reported.as_deref() != Some(message.as_str()) {
                    shared.event(entry, None, true, "FailedMount", message.clone());
                    reported = Some(message);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(super::container::SETUP_RETRY) => {}
            _ = entry.stop.cancelled() => return None,
        }
    }
}

/// Writes the status whenever it changes, until the pod is gone.
async fn status_writer(shared: Arc<Shared>, entry: Arc<PodEntry>, pod: Arc<Pod>) {
    loop {
        tokio::select! {
            _ = entry.changed.notified() => {}
            _ = entry.gone.cancelled() => return,
        }
        // Changes that come together go in one write.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if entry.gone.is_cancelled() {
            return;
        }
        match flush(&shared, &entry, &pod).await {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                tracing::warn!(pod = %entry.name, "writing the pod's status: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                entry.changed.notify_one();
            }
        }
    }
}

/// Writes the status now if it differs from the last one written.
async fn flush(shared: &Shared, entry: &PodEntry, pod: &Pod) -> Result<(), kube::Error> {
    let mut written = entry.written.lock().await;
    let status = compose(entry, pod);
    if written.as_ref() == Some(&status) {
        return Ok(());
    }
    shared
        .pods_api(&entry.namespace)
        .patch_status(
            &entry.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    *written = Some(status);
    Ok(())
}

fn container_status(c: &ContainerRecord) -> Value {
    let (state, id, started) = match &c.state {
        RunState::Waiting { reason, message } => {
            let mut waiting = json!({"reason": reason});
            if let Some(message) = message {
                waiting["message"] = json!(message);
            }
            let id = c.last.as_ref().and_then(|t| t.container_id.clone());
            (json!({"waiting": waiting}), id, false)
        }
        RunState::Running { started_at, pid } => (
            json!({"running": {"startedAt": started_at}}),
            Some(container_id(*pid)),
            true,
        ),
        RunState::Terminated(t) => (
            json!({"terminated": t.to_json()}),
            t.container_id.clone(),
            false,
        ),
    };
    let last = c
        .last
        .as_ref()
        .map_or_else(|| json!({}), |t| json!({"terminated": t.to_json()}));
    let mut status = json!({
        "name": c.name,
        "image": c.image,
        "imageID": if c.runs > 0 { format!("testkubelet://{}", c.image) } else { String::new() },
        "ready": c.ready,
        "started": started,
        "restartCount": c.restart_count,
        "state": state,
        "lastState": last,
    });
    if let Some(id) = id {
        status["containerID"] = json!(id);
    }
    status
}

/// The pod's status as the kubelet would write it now (phase as the kubelet's getPhase).
fn compose(entry: &PodEntry, pod: &Pod) -> Value {
    let policy = RestartPolicy::of(pod);
    let mut state = entry.lock();
    let statuses: Vec<Value> = state.containers.iter().map(container_status).collect();
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &state.containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if c.last.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    let finished = state.finished;
    let phase = if waiting > 0 {
        if finished { "Failed" } else { "Pending" }
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        let all_succeeded = stopped == succeeded;
        match policy {
            _ if finished || policy == RestartPolicy::Never => {
                if all_succeeded {
                    "Succeeded"
                } else {
                    "Failed"
                }
            }
            RestartPolicy::OnFailure if all_succeeded => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let ready = !state.containers.is_empty() && state.containers.iter().all(|c| c.ready);
    let unready: Vec<String> = state
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.clone())
        .collect();
    let sandbox = state.volumes_ready && !finished;
    // Init containers are not run here: such a pod never gets initialised.
    let initialized = pod
        .spec
        .as_ref()
        .is_none_or(|s| s.init_containers.as_ref().is_none_or(Vec::is_empty));
    let conditions_state = &mut state.conditions;
    let mut condition =
        |kind: &'static str, status: bool, reason: Option<&str>, message: Option<String>| {
            let since = match conditions_state.get(kind) {
                Some((was, since)) if *was == status => since.clone(),
                _ => {
                    let now = now_secs();
                    conditions_state.insert(kind, (status, now.clone()));
                    now
                }
            };
            let mut c = json!({
                "type": kind,
                "status": if status { "True" } else { "False" },
                "lastProbeTime": null,
                "lastTransitionTime": since,
            });
            if let Some(reason) = reason {
                c["reason"] = json!(reason);
            }
            if let Some(message) = message {
                c["message"] = json!(message);
            }
            c
        };
    let (reason, message) = if terminal {
        (Some("PodCompleted"), None)
    } else if !ready {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else {
        (None, None)
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox, None, None),
        condition("Initialized", initialized, None, None),
        condition("Ready", ready, reason, message.clone()),
        condition("ContainersReady", ready, reason, message),
    ];
    conditions.push(
        entry
            .scheduled
            .clone()
            .unwrap_or_else(|| condition("PodScheduled", true, None, None)),
    );
    let ip = if entry.host_network {
        "127.0.0.1".to_string()
    } else {
        entry.ip.to_string()
    };
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": statuses,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": entry.start_time,
    });
    if let Some(generation) = pod.metadata.generation {
        status["observedGeneration"] = json!(generation);
    }
    status
}
