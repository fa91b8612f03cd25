//! The simulation: the agent-sandbox controller and a kubelet, reconciling after every write
//! and on a short tick (for the kubelet's timed steps).
//!
//! Controller, per Sandbox: wants to run when v1alpha1 `spec.replicas` is absent or ≥ 1 and
//! v1beta1 `spec.operatingMode` is absent or "Running". Then it ensures a Pod named after it
//! (from `spec.podTemplate`, plus the `agents.x-k8s.io/sandbox-name-hash` label, controlled by
//! the Sandbox); otherwise it deletes that Pod. A headless Service of the same name exists when
//! `spec.service` is true, or when it is absent and the Sandbox was written as v1alpha1; an owned
//! one goes when `spec.service` is false. Pods and Services controlled by a Sandbox that is gone
//! are deleted. Status: `service`, `serviceFQDN`, `podIPs`, `labelSelector`, and conditions
//! `Ready` (DependenciesReady / DependenciesNotReady) and, for a finished pod, `Finished`.
//!
//! Kubelet, per Pod: steps through its [`PodScenario`] at 0, ½ and 1 × `ready_after`, writing
//! phase, conditions, container states and core v1 Events at each step.

use super::objects::{EVENTS, PODS, SANDBOXES, SERVICES, meta, now};
use super::{Cluster, PodScenario, World};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);
const NODE: &str = "fake-node";
const HASH_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";

pub(crate) struct SimState {
    pub default: PodScenario,
    pub pod_ip: String,
    pods: HashMap<String, PodSim>,
    events: u64,
}

impl SimState {
    pub(crate) fn new(pod_ip: String) -> SimState {
        SimState {
            default: PodScenario::Ready,
            pod_ip,
            pods: HashMap::new(),
            events: 0,
        }
    }
}

/// The kubelet's record of one pod (by uid).
struct PodSim {
    scenario: PodScenario,
    since: Instant,
    /// Steps of the scenario's path already applied.
    done: usize,
    /// Apply the whole path now rather than on the clock.
    immediate: bool,
    last: Option<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Scheduled,
    Unschedulable,
    Running,
    Ready,
    PullBackOff,
    CrashLoop,
    Oom,
    Exited(i32),
}

/// A scenario's steps, each with when it happens in halves of `ready_after`.
fn path(scenario: PodScenario) -> Vec<(Stage, u32)> {
    use Stage::*;
    let run_then = |end: Stage| vec![(Scheduled, 0), (Running, 1), (end, 2)];
    match scenario {
        PodScenario::Ready => run_then(Ready),
        PodScenario::OomKilled => run_then(Oom),
        PodScenario::CrashLoopBackOff => run_then(CrashLoop),
        PodScenario::Exit(code) => run_then(Exited(code)),
        PodScenario::ImagePullBackOff => vec![(Scheduled, 0), (PullBackOff, 1)],
        PodScenario::Unschedulable => vec![(Unschedulable, 0)],
        PodScenario::Hold => vec![(Scheduled, 0)],
    }
}

pub(crate) fn spawn(cluster: Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = cluster.shutdown.subscribe();
        loop {
            {
                let mut world = cluster.world();
                controller(&mut world);
                kubelet(&mut world, cluster.ready_after);
            }
            tokio::select! {
                _ = cluster.changed.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => break,
            }
        }
    })
}

/// Puts an existing pod into `scenario` at once; false when there is no such pod.
pub(crate) fn set_pod(world: &mut World, ns: &str, name: &str, scenario: PodScenario) -> bool {
    let Some(pod) = world.store.get(PODS, ns, name) else {
        return false;
    };
    let uid = meta(pod, "uid").to_string();
    let steps = path(scenario);
    let skip = match world.sim.pods.get(&uid).and_then(|r| r.last) {
        None | Some(Stage::Unschedulable) => 0,
        Some(Stage::Scheduled) if steps[0].0 == Stage::Scheduled => 1,
        Some(_) => steps.len() - 1,
    };
    let stages: Vec<Stage> = steps[skip..].iter().map(|(s, _)| *s).collect();
    for stage in &stages {
        apply(world, ns, name, *stage);
    }
    let last = stages.last().copied();
    world.sim.pods.insert(
        uid,
        PodSim {
            scenario,
            since: Instant::now(),
            done: steps.len(),
            immediate: true,
            last,
        },
    );
    true
}

fn kubelet(world: &mut World, ready_after: Duration) {
    let pods = world.store.list(PODS, None);
    let uids: HashSet<&str> = pods.iter().map(|p| meta(p, "uid")).collect();
    world.sim.pods.retain(|uid, _| uids.contains(uid.as_str()));
    for pod in &pods {
        let default = world.sim.default;
        let record = world
            .sim
            .pods
            .entry(meta(pod, "uid").to_string())
            .or_insert_with(|| PodSim {
                scenario: default,
                since: Instant::now(),
                done: 0,
                immediate: false,
                last: None,
            });
        let steps = path(record.scenario);
        let elapsed = record.since.elapsed();
        let target = if record.immediate {
            steps.len()
        } else {
            steps
                .iter()
                .take_while(|(_, halves)| elapsed >= ready_after * *halves / 2)
                .count()
        };
        if target <= record.done {
            continue;
        }
        let stages: Vec<Stage> = steps[record.done..target].iter().map(|(s, _)| *s).collect();
        record.done = target;
        record.last = stages.last().copied();
        for stage in stages {
            apply(world, meta(pod, "namespace"), meta(pod, "name"), stage);
        }
    }
}

fn condition(
    old: &Value,
    ty: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let previous = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        });
    let since = previous
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| now().into());
    let mut c = json!({"type": ty, "status": status, "lastTransitionTime": since});
    if let Some(reason) = reason {
        c["reason"] = reason.into();
    }
    if let Some(message) = message {
        c["message"] = message.into();
    }
    c
}

/// Writes one kubelet step into the pod's status and records its Events.
fn apply(world: &mut World, ns: &str, name: &str, stage: Stage) {
    let Some(mut pod) = world.store.get(PODS, ns, name).cloned() else {
        return;
    };
    let old = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    let containers: Vec<(String, String)> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let field =
                        |f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                    (field("name"), field("image"))
                })
                .collect()
        })
        .unwrap_or_default();
    let restarts = |c: &str| {
        old.get("containerStatuses")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(c))
            })
            .and_then(|s| s.get("restartCount"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let uid = meta(&pod, "uid").to_string();
    let stamp = now();
    let not_ready = |c: &[(String, String)]| {
        let names: Vec<&str> = c.iter().map(|(n, _)| n.as_str()).collect();
        format!("containers with unready status: [{}]", names.join(" "))
    };

    // (phase, ip?, PodScheduled, ready, container state, last state, restart bump, ready reason)
    let mut phase = "Running";
    let mut with_ip = true;
    let mut ready = false;
    let mut bump = 0;
    let mut ready_reason = "ContainersNotReady";
    let (state, last): (Value, Value) = match stage {
        Stage::Scheduled => {
            (phase, with_ip) = ("Pending", false);
            (
                json!({"waiting": {"reason": "ContainerCreating"}}),
                json!({}),
            )
        }
        Stage::Unschedulable => {
            (phase, with_ip) = ("Pending", false);
            (Value::Null, Value::Null)
        }
        Stage::Running => (json!({"running": {"startedAt": stamp}}), json!({})),
        Stage::Ready => {
            ready = true;
            let started = old
                .pointer("/containerStatuses/0/state/running/startedAt")
                .cloned();
            (
                json!({"running": {"startedAt": started.unwrap_or_else(|| stamp.clone().into())}}),
                json!({}),
            )
        }
        Stage::PullBackOff => {
            phase = "Pending";
            (
                json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}),
                json!({}),
            )
        }
        Stage::CrashLoop | Stage::Oom | Stage::Exited(_) => {
            let code = match stage {
                Stage::Oom => 137,
                Stage::Exited(code) => code,
                _ => 1,
            };
            let reason = match (stage, code) {
                (Stage::Oom, _) => "OOMKilled",
                (_, 0) => "Completed",
                _ => "Error",
            };
            let terminated = json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": stamp, "finishedAt": stamp, "containerID": format!("containerd://{uid}")}});
            let restarting = !matches!(stage, Stage::Exited(_))
                || policy == "Always"
                || (policy == "OnFailure" && code != 0);
            if restarting {
                bump = 1;
                let waiting = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off 10s restarting failed container in pod {name}_{ns}({uid})")}});
                (waiting, terminated)
            } else {
                phase = if code == 0 { "Succeeded" } else { "Failed" };
                ready_reason = if code == 0 {
                    "PodCompleted"
                } else {
                    "PodFailed"
                };
                (terminated, json!({}))
            }
        }
    };

    let mut status = Map::new();
    status.insert("phase".into(), phase.into());
    status.insert("qosClass".into(), "BestEffort".into());
    if stage == Stage::Unschedulable {
        let message = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                       available: 1 No preemption victims found for incoming pod.";
        status.insert(
            "conditions".into(),
            json!([condition(
                &old,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message)
            )]),
        );
    } else {
        let (flag, reason, message) = if ready {
            ("True", None, None)
        } else {
            ("False", Some(ready_reason), Some(not_ready(&containers)))
        };
        status.insert(
            "conditions".into(),
            json!([
                condition(&old, "PodScheduled", "True", None, None),
                condition(&old, "Initialized", "True", None, None),
                condition(&old, "ContainersReady", flag, reason, message.as_deref()),
                condition(&old, "Ready", flag, reason, message.as_deref()),
            ]),
        );
        status.insert("hostIP".into(), "127.0.0.1".into());
        status.insert("hostIPs".into(), json!([{"ip": "127.0.0.1"}]));
        let start = old
            .get("startTime")
            .cloned()
            .unwrap_or_else(|| stamp.clone().into());
        status.insert("startTime".into(), start);
        let ip = world.sim.pod_ip.clone();
        let ip = old
            .get("podIP")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(ip);
        if with_ip {
            status.insert("podIP".into(), ip.clone().into());
            status.insert("podIPs".into(), json!([{"ip": ip}]));
        }
        let statuses: Vec<Value> = containers
            .iter()
            .map(|(c, image)| {
                json!({
                    "name": c, "image": image, "imageID": "", "containerID": format!("containerd://{uid}-{c}"),
                    "ready": ready, "started": state.get("running").is_some(),
                    "restartCount": restarts(c) + bump, "state": state, "lastState": last,
                })
            })
            .collect();
        status.insert("containerStatuses".into(), statuses.into());
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), NODE.into());
        }
    }
    pod["status"] = Value::Object(status);
    world.store.update(PODS, pod.clone(), false);

    // Events, as the scheduler and the kubelet record them.
    let mut record = |ty: &str, reason: &str, message: String, container: Option<&str>| {
        let scheduler = matches!(reason, "Scheduled" | "FailedScheduling");
        let component = if scheduler {
            "default-scheduler"
        } else {
            "kubelet"
        };
        event(world, &pod, ty, reason, &message, component, container);
    };
    match stage {
        Stage::Scheduled => record(
            "Normal",
            "Scheduled",
            format!("Successfully assigned {ns}/{name} to {NODE}"),
            None,
        ),
        Stage::Unschedulable => record(
            "Warning",
            "FailedScheduling",
            "0/1 nodes are available: 1 Insufficient cpu.".to_string(),
            None,
        ),
        _ => {}
    }
    for (container, image) in &containers {
        let c = Some(container.as_str());
        match stage {
            Stage::Scheduled => {
                record("Normal", "Pulling", format!("Pulling image \"{image}\""), c)
            }
            Stage::Running => {
                record(
                    "Normal",
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in 1s"),
                    c,
                );
                record(
                    "Normal",
                    "Created",
                    format!("Created container: {container}"),
                    c,
                );
                record(
                    "Normal",
                    "Started",
                    format!("Started container {container}"),
                    c,
                );
            }
            Stage::PullBackOff => {
                let why = format!(
                    "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to \
                     pull and unpack image \"{image}\": not found"
                );
                record("Warning", "Failed", why, c);
                record("Warning", "Failed", "Error: ErrImagePull".to_string(), c);
                record(
                    "Normal",
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                    c,
                );
                record(
                    "Warning",
                    "Failed",
                    "Error: ImagePullBackOff".to_string(),
                    c,
                );
            }
            Stage::CrashLoop | Stage::Oom | Stage::Exited(_) if bump > 0 => {
                let message = format!(
                    "Back-off restarting failed container {container} in pod {name}_{ns}({uid})"
                );
                record("Warning", "BackOff", message, c);
            }
            _ => {}
        }
    }
}

fn event(
    world: &mut World,
    pod: &Value,
    ty: &str,
    reason: &str,
    message: &str,
    component: &str,
    container: Option<&str>,
) {
    world.sim.events += 1;
    let (ns, name) = (meta(pod, "namespace"), meta(pod, "name"));
    let stamp = now();
    let mut involved = json!({
        "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
        "uid": meta(pod, "uid"), "resourceVersion": meta(pod, "resourceVersion"),
    });
    if let Some(c) = container {
        involved["fieldPath"] = format!("spec.containers{{{c}}}").into();
    }
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", 0x1800_0000_0000 + world.sim.events), "namespace": ns},
        "involvedObject": involved, "reason": reason, "message": message, "type": ty,
        "source": {"component": component, "host": NODE},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "reportingComponent": component, "reportingInstance": NODE,
    });
    let _ = world.store.create(EVENTS, ns, event, false);
}

/// agent-sandbox's label value: FNV-1a (32 bit) of the name, in hex.
fn name_hash(name: &str) -> String {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// The (kind, uid) of an object's controller.
fn controller_of(obj: &Value) -> Option<(&str, &str)> {
    let refs = obj.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    Some((owner.get("kind")?.as_str()?, owner.get("uid")?.as_str()?))
}

fn controller(world: &mut World) {
    let sandboxes = world.store.list(SANDBOXES, None);
    for sandbox in &sandboxes {
        reconcile_sandbox(world, sandbox);
    }
    let live: HashSet<&str> = sandboxes.iter().map(|s| meta(s, "uid")).collect();
    for kind in [PODS, SERVICES] {
        for obj in world.store.list(kind, None) {
            if let Some(("Sandbox", uid)) = controller_of(&obj)
                && !live.contains(uid)
            {
                world
                    .store
                    .remove(kind, meta(&obj, "namespace"), meta(&obj, "name"));
            }
        }
    }
}

fn reconcile_sandbox(world: &mut World, sandbox: &Value) {
    let (ns, name, uid) = (
        meta(sandbox, "namespace"),
        meta(sandbox, "name"),
        meta(sandbox, "uid"),
    );
    let api_version = sandbox
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = sandbox.get("spec").cloned().unwrap_or_else(|| json!({}));
    let run = match spec.get("operatingMode").and_then(Value::as_str) {
        Some(mode) => mode == "Running",
        None => spec
            .get("replicas")
            .and_then(Value::as_i64)
            .is_none_or(|r| r >= 1),
    };
    let want_service = spec
        .get("service")
        .and_then(Value::as_bool)
        .or(api_version.ends_with("/v1alpha1").then_some(true));
    let hash = name_hash(name);
    let owner = json!([{"apiVersion": api_version, "kind": "Sandbox", "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true}]);
    let owned = |obj: &&Value| controller_of(obj).is_some_and(|(_, u)| u == uid);

    match (world.store.get(PODS, ns, name), run) {
        (None, true) => {
            let template = spec
                .get("podTemplate")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut labels = template
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone().into());
            let annotations = template
                .pointer("/metadata/annotations")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                    "annotations": annotations, "ownerReferences": owner},
                "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
                "status": {"phase": "Pending", "qosClass": "BestEffort"},
            });
            let _ = world.store.create(PODS, ns, pod, false);
        }
        (Some(pod), false) if owned(&pod) => {
            world.store.remove(PODS, ns, name);
        }
        _ => {}
    }

    match (world.store.get(SERVICES, ns, name), want_service) {
        (None, Some(true)) => {
            let ports: Vec<Value> = spec
                .pointer("/podTemplate/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .filter_map(|p| {
                    let port = p.get("containerPort")?.as_i64()?;
                    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let default = format!("p-{port}-{}", protocol.to_lowercase());
                    let port_name = p.get("name").and_then(Value::as_str).unwrap_or(&default);
                    Some(json!({"name": port_name, "port": port, "protocol": protocol, "targetPort": port}))
                })
                .collect();
            let service = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": {HASH_LABEL: hash},
                    "ownerReferences": owner},
                "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {HASH_LABEL: hash},
                    "ports": ports},
            });
            let _ = world.store.create(SERVICES, ns, service, false);
        }
        (Some(service), Some(false)) if owned(&service) => {
            world.store.remove(SERVICES, ns, name);
        }
        _ => {}
    }

    let pod = world.store.get(PODS, ns, name).filter(owned);
    let service = world.store.get(SERVICES, ns, name).filter(owned);
    let old = sandbox.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = Map::new();
    if service.is_some() {
        status.insert("service".into(), name.into());
        status.insert(
            "serviceFQDN".into(),
            format!("{name}.{ns}.svc.cluster.local").into(),
        );
    }
    let phase = pod
        .and_then(|p| p.pointer("/status/phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ips: Vec<Value> = pod
        .and_then(|p| p.pointer("/status/podIPs"))
        .and_then(Value::as_array)
        .map(|ips| ips.iter().filter_map(|ip| ip.get("ip").cloned()).collect())
        .unwrap_or_default();
    let pod_ready = phase == "Running"
        && !ips.is_empty()
        && pod
            .and_then(|p| p.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
    if pod.is_some() {
        status.insert(
            "labelSelector".into(),
            format!("{HASH_LABEL}={hash}").into(),
        );
    }
    if !ips.is_empty() {
        status.insert("podIPs".into(), ips.into());
    }
    let mut message = match (pod, phase) {
        (None, _) => "Pod does not exist".to_string(),
        (Some(_), "Running") if pod_ready => "Pod is Ready".to_string(),
        (Some(_), "Running") => "Pod is Running but not Ready".to_string(),
        (Some(_), phase) => format!("Pod exists with phase: {phase}"),
    };
    let service_required = want_service == Some(true) || service.is_some();
    if service_required {
        message += if service.is_some() {
            "; Service Exists"
        } else {
            "; Service does not exist"
        };
    }
    let ready = pod_ready && (!service_required || service.is_some());
    let generation = sandbox
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let with_generation = |mut c: Value| {
        c["observedGeneration"] = generation.clone();
        c
    };
    let (flag, reason) = if ready {
        ("True", "DependenciesReady")
    } else {
        ("False", "DependenciesNotReady")
    };
    let mut conditions = vec![with_generation(condition(
        &old,
        "Ready",
        flag,
        Some(reason),
        Some(&message),
    ))];
    if let Some((reason, message)) = match phase {
        "Succeeded" => Some(("PodSucceeded", "Pod completed successfully")),
        "Failed" => Some(("PodFailed", "Pod failed")),
        _ => None,
    } {
        conditions.push(with_generation(condition(
            &old,
            "Finished",
            "True",
            Some(reason),
            Some(message),
        )));
    }
    status.insert("conditions".into(), conditions.into());
    let status = Value::Object(status);
    if old != status {
        let mut updated = sandbox.clone();
        updated["status"] = status;
        world.store.update(SANDBOXES, updated, false);
    }
}
