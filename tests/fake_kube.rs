//! Self-tests of the fake Kubernetes API server (tests/common/fake_kube), driven by the real
//! `kube::Client`, watcher and reflector over HTTP, so the runtime's tests can trust it.

mod common;

use common::eventually;
use common::fake_kube::{FakeKube, FakeOptions, PodScenario};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn quiet() -> FakeKube {
    FakeKube::start(FakeOptions {
        simulate: false,
        ..Default::default()
    })
    .await
}

fn sandbox_ar(version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("agents.x-k8s.io", version, "Sandbox");
    ApiResource::from_gvk_with_plural(&gvk, "sandboxes")
}

fn sandboxes(client: &Client, version: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &sandbox_ar(version))
}

fn sandbox(name: &str, version: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("agents.x-k8s.io/{version}"), "kind": "Sandbox",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn agent_template() -> Value {
    json!({
        "metadata": {"labels": {"app": "agent"}, "annotations": {"note": "x"}},
        "spec": {"containers": [{"name": "agent", "image": "agent:1", "ports": [{"containerPort": 4096}]}]},
    })
}

fn new_pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}, {"name": "side", "image": "side:1"}]},
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: ResourceExt>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut names: Vec<String> = items.into_iter().map(|k| k.name_any()).collect();
    names.sort();
    names
}

fn raw(method: &str, uri: &str, content_type: &str, body: Value) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap()
}

fn condition<'a>(pod: &'a Pod, ty: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
}

fn sandbox_ready(obj: &DynamicObject) -> Option<(String, String)> {
    let ready = obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
    ))
}

#[tokio::test]
async fn create_get_list_replace_delete() {
    let fake = quiet().await;
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s1", "labels": {"app": "x"}}, "stringData": {"token": "hunter2"}}),
    )
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.data.as_ref().unwrap()["token"].0, b"hunter2");
    let rv1 = created.resource_version().unwrap();

    let again = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_err();
    assert_eq!(api_error(again), (409, "AlreadyExists".to_string()));
    let generated: Secret =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = secrets
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(list.items),
        vec![generated.name_any(), "s1".to_string()]
    );
    assert!(
        list.metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty())
    );

    let mut changed = secrets.get("s1").await.unwrap();
    changed.labels_mut().insert("app".into(), "y".into());
    let replaced = secrets
        .replace("s1", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.labels()["app"], "y");
    assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > rv1.parse().unwrap());
    assert_eq!(replaced.uid(), created.uid());
    let stale = secrets
        .replace("s1", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert_eq!(api_error(stale), (409, "Conflict".to_string()));

    let deleted = secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().name_any(), "s1");
    assert_eq!(
        api_error(secrets.get("s1").await.unwrap_err()),
        (404, "NotFound".to_string())
    );
    let missing = secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".to_string()));
    assert!(fake.get("secrets", "default", "s1").is_none());
    assert_eq!(fake.list("secrets", None).len(), 1);
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("DELETE /api/v1/namespaces/default/secrets/s1")),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn patches_and_status_subresource_on_pods() {
    let fake = quiet().await;
    let client = fake.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &new_pod("p1", json!({})))
        .await
        .unwrap();
    let params = PatchParams::default();

    let merged = pods
        .patch(
            "p1",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels()["m"], "1");

    // Strategic merge merges containers by name.
    let patch = json!({"spec": {"containers": [{"name": "side", "image": "side:2"}]}});
    let strategic = pods
        .patch("p1", &params, &Patch::Strategic(patch))
        .await
        .unwrap();
    let images: Vec<_> = strategic
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, vec!["busybox", "side:2"]);

    // JSON patch (kube's Patch::Json needs its `jsonpatch` feature; send it raw).
    let ops = json!([{"op": "test", "path": "/metadata/labels/m", "value": "1"},
        {"op": "add", "path": "/metadata/labels/j", "value": "2"}]);
    let uri = "/api/v1/namespaces/default/pods/p1";
    let patched: Pod = client
        .request(raw("PATCH", uri, "application/json-patch+json", ops))
        .await
        .unwrap();
    assert_eq!(patched.labels()["j"], "2");
    let failing = json!([{"op": "test", "path": "/metadata/labels/m", "value": "nope"}]);
    let err = client
        .request::<Pod>(raw("PATCH", uri, "application/json-patch+json", failing))
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 422);

    // Server-side apply creates when missing, then merges; it needs a field manager.
    let apply = PatchParams::apply("agentdeck-test").force();
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    pods.patch("p2", &apply, &Patch::Apply(body)).await.unwrap();
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "labels": {"a": "b"}}});
    let applied = pods.patch("p2", &apply, &Patch::Apply(body)).await.unwrap();
    assert_eq!(applied.labels()["a"], "b");
    assert_eq!(
        applied.spec.unwrap().containers[0].image.as_deref(),
        Some("i")
    );
    let no_manager = raw(
        "PATCH",
        "/api/v1/namespaces/default/pods/p2",
        "application/apply-patch+yaml",
        json!({"metadata": {"name": "p2"}}),
    );
    assert_eq!(
        api_error(client.request::<Pod>(no_manager).await.unwrap_err()).0,
        400
    );
    let missing = pods
        .patch("nope", &params, &Patch::Merge(json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_error(missing).0, 404);

    // The main endpoint ignores status; /status changes only status.
    let ignored = pods
        .patch(
            "p1",
            &params,
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().phase.as_deref(), Some("Pending"));
    let patch = json!({"metadata": {"labels": {"z": "1"}}, "status": {"phase": "Running", "podIP": "10.1.1.1"}});
    let status = pods
        .patch_status("p1", &params, &Patch::Merge(patch))
        .await
        .unwrap();
    assert!(!status.labels().contains_key("z"));
    assert_eq!(
        status.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    let mut replaced = status.clone();
    replaced.status.as_mut().unwrap().phase = Some("Failed".into());
    let after = pods
        .replace_status("p1", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn sandboxes_patch_status_and_versions() {
    let fake = quiet().await;
    let client = fake.client();
    let api = sandboxes(&client, "v1alpha1");
    let mut sb = sandbox("sb", "v1alpha1", json!({"podTemplate": agent_template()}));
    sb.data["status"] = json!({"serviceFQDN": "ignored"});
    let created = api.create(&PostParams::default(), &sb).await.unwrap();
    assert!(created.data.get("status").is_none());
    assert_eq!(created.metadata.generation, Some(1));

    let patch =
        json!({"spec": {"replicas": 0}, "status": {"serviceFQDN": "sb.default.svc.cluster.local"}});
    let status = api
        .patch_status("sb", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    assert_eq!(
        status.data["status"]["serviceFQDN"],
        "sb.default.svc.cluster.local"
    );
    assert!(status.data["spec"].get("replicas").is_none());

    let mut replaced = status.clone();
    replaced.data["spec"]["replicas"] = json!(1);
    replaced.data["status"]["serviceFQDN"] = json!("changed");
    let replaced = api
        .replace("sb", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["replicas"], 1);
    assert_eq!(
        replaced.data["status"]["serviceFQDN"],
        "sb.default.svc.cluster.local"
    );
    assert_eq!(replaced.metadata.generation, Some(2));

    let strategic = api
        .patch(
            "sb",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        api_error(strategic),
        (415, "UnsupportedMediaType".to_string())
    );
    let uri = "/apis/agents.x-k8s.io/v1alpha1/namespaces/default/sandboxes/sb";
    let ops = json!([{"op": "replace", "path": "/spec/replicas", "value": 0}]);
    let patched: DynamicObject = client
        .request(raw("PATCH", uri, "application/json-patch+json", ops))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["replicas"], 0);
    let apply = PatchParams::apply("agentdeck-test");
    let body = json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "sb", "labels": {"owner": "me"}}});
    let applied = api.patch("sb", &apply, &Patch::Apply(body)).await.unwrap();
    assert_eq!(applied.labels()["owner"], "me");
    assert_eq!(applied.data["spec"]["replicas"], 0);

    // One object, answered in the version asked for.
    let beta = sandboxes(&client, "v1beta1").get("sb").await.unwrap();
    assert_eq!(beta.types.unwrap().api_version, "agents.x-k8s.io/v1beta1");
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &sandbox_ar("v1alpha1"));
    let listed = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(listed.items), vec!["sb"]);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let fake = quiet().await;
    let client = fake.client();
    for (ns, name, labels) in [
        ("a", "web1", json!({"app": "web", "tier": "front"})),
        ("a", "db1", json!({"app": "db"})),
        ("b", "web2", json!({"app": "web"})),
        ("b", "plain", json!({})),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&PostParams::default(), &new_pod(name, labels))
            .await
            .unwrap();
    }
    let a: Api<Pod> = Api::namespaced(client.clone(), "a");
    a.patch_status(
        "db1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let all: Api<Pod> = Api::all(client.clone());
    let select = |labels: &'static str, fields: &'static str| {
        let all = all.clone();
        async move {
            let mut lp = ListParams::default();
            if !labels.is_empty() {
                lp = lp.labels(labels);
            }
            if !fields.is_empty() {
                lp = lp.fields(fields);
            }
            names(all.list(&lp).await.unwrap().items)
        }
    };
    assert_eq!(select("", "").await, vec!["db1", "plain", "web1", "web2"]);
    assert_eq!(select("app=web", "").await, vec!["web1", "web2"]);
    assert_eq!(select("app==web", "").await, vec!["web1", "web2"]);
    assert_eq!(select("app!=web", "").await, vec!["db1", "plain"]);
    assert_eq!(select("tier", "").await, vec!["web1"]);
    assert_eq!(select("!tier", "").await, vec!["db1", "plain", "web2"]);
    assert_eq!(
        select("app in (web, db)", "").await,
        vec!["db1", "web1", "web2"]
    );
    assert_eq!(select("app notin (web)", "").await, vec!["db1", "plain"]);
    assert_eq!(select("app=web,tier=front", "").await, vec!["web1"]);
    assert_eq!(select("", "metadata.name=web2").await, vec!["web2"]);
    assert_eq!(
        select("", "metadata.namespace==b").await,
        vec!["plain", "web2"]
    );
    assert_eq!(select("", "status.phase=Running").await, vec!["db1"]);
    assert_eq!(
        select("app=web", "status.phase!=Running,metadata.namespace=a").await,
        vec!["web1"]
    );
    assert_eq!(
        names(a.list(&ListParams::default()).await.unwrap().items),
        vec!["db1", "web1"]
    );
    let bad = all
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert_eq!(api_error(bad), (400, "BadRequest".to_string()));

    let events: Api<Event> = Api::namespaced(client.clone(), "a");
    let event: Event =
        serde_json::from_value(json!({"metadata": {"name": "e1"}, "reason": "Poked",
        "involvedObject": {"kind": "Pod", "name": "web1", "namespace": "a"}}))
        .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let fields = "involvedObject.kind=Pod,involvedObject.name=web1,involvedObject.namespace=a";
    let found = events
        .list(&ListParams::default().fields(fields))
        .await
        .unwrap();
    assert_eq!(names(found.items), vec!["e1"]);
    let none = events
        .list(&ListParams::default().fields("involvedObject.name=db1"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
}

async fn next_event<S>(
    stream: &mut S,
    what: &str,
    pred: impl Fn(&watcher::Event<ConfigMap>) -> bool,
) where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            if let Ok(event) = event
                && pred(&event)
            {
                return;
            }
        }
        panic!("watch stream ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn is_apply(name: &str) -> impl Fn(&watcher::Event<ConfigMap>) -> bool + '_ {
    move |e| matches!(e, watcher::Event::Apply(cm) if cm.name_any() == name)
}

fn config_map(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let fake = quiet().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &config_map("before", json!({})))
        .await
        .unwrap();
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher(cms.clone(), config).default_backoff().boxed();
        let before = |e: &watcher::Event<ConfigMap>| matches!(e, watcher::Event::InitApply(cm) if cm.name_any() == "before");
        next_event(&mut stream, "the initial object", before).await;
        next_event(&mut stream, "InitDone", |e| {
            matches!(e, watcher::Event::InitDone)
        })
        .await;
        cms.create(&PostParams::default(), &config_map("w1", json!({})))
            .await
            .unwrap();
        next_event(&mut stream, "w1 added", is_apply("w1")).await;
        let patch = Patch::Merge(json!({"data": {"k": "changed"}}));
        cms.patch("w1", &PatchParams::default(), &patch)
            .await
            .unwrap();
        let changed = |e: &watcher::Event<ConfigMap>| matches!(e, watcher::Event::Apply(cm) if cm.data.as_ref().is_some_and(|d| d["k"] == "changed"));
        next_event(&mut stream, "w1 modified", changed).await;
        cms.delete("w1", &DeleteParams::default()).await.unwrap();
        let deleted = |e: &watcher::Event<ConfigMap>| matches!(e, watcher::Event::Delete(cm) if cm.name_any() == "w1");
        next_event(&mut stream, "w1 deleted", deleted).await;
    }
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("sendInitialEvents=true"))
    );

    // An object that stops matching a label selector is deleted for that watch.
    let config = watcher::Config::default().labels("sel=yes");
    let mut stream = watcher(cms.clone(), config).default_backoff().boxed();
    next_event(&mut stream, "InitDone", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;
    cms.create(
        &PostParams::default(),
        &config_map("l1", json!({"sel": "yes"})),
    )
    .await
    .unwrap();
    next_event(&mut stream, "l1 added", is_apply("l1")).await;
    let patch = Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}}));
    cms.patch("l1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let left = |e: &watcher::Event<ConfigMap>| matches!(e, watcher::Event::Delete(cm) if cm.name_any() == "l1");
    next_event(&mut stream, "l1 leaving the selection", left).await;
}

#[tokio::test]
async fn reflector_recovers_after_dropped_and_expired_watches() {
    let fake = quiet().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &config_map("c0", json!({})))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    tokio::time::timeout(WAIT, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    let has = |wanted: &'static [&'static str]| {
        let reader = reader.clone();
        move || {
            let reader = reader.clone();
            async move { (names(reader.state().iter().map(|c| (**c).clone())) == wanted).then_some(()) }
        }
    };

    cms.create(&PostParams::default(), &config_map("c1", json!({})))
        .await
        .unwrap();
    eventually(WAIT, "c1 in the store", has(&["c0", "c1"])).await;
    let lists = |fake: &FakeKube| {
        fake.requests()
            .iter()
            .filter(|r| {
                r.contains("/configmaps") && !r.contains("watch=true") && r.starts_with("GET")
            })
            .count()
    };
    let lists_before = lists(&fake);

    fake.drop_watches();
    cms.create(&PostParams::default(), &config_map("c2", json!({})))
        .await
        .unwrap();
    eventually(WAIT, "c2 after a dropped watch", has(&["c0", "c1", "c2"])).await;
    assert_eq!(
        lists(&fake),
        lists_before,
        "a dropped watch resumes without relisting"
    );

    fake.expire_watches();
    cms.create(&PostParams::default(), &config_map("c3", json!({})))
        .await
        .unwrap();
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    eventually(
        WAIT,
        "c3 and no c0 after 410 Gone",
        has(&["c1", "c2", "c3"]),
    )
    .await;
    assert!(
        lists(&fake) > lists_before,
        "410 Gone makes the watcher relist"
    );
    task.abort();
}

#[tokio::test]
async fn gone_comes_inside_the_watch_stream() {
    let fake = quiet().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let old = cms
        .create(&PostParams::default(), &config_map("g", json!({})))
        .await
        .unwrap();
    cms.patch(
        "g",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    let rv = old.resource_version().unwrap();
    let mut replay = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match replay.try_next().await.unwrap().unwrap() {
        WatchEvent::Modified(cm) => assert_eq!(cm.data.unwrap()["k"], "2"),
        other => panic!("expected the replayed change, got {other:?}"),
    }
    fake.expire_watches();
    match replay.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 inside the open stream, got {other:?}"),
    }
    let mut stale = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stale.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410 for a forgotten resourceVersion, got {other:?}"),
    }
    let timed = WatchParams::default().timeout(1);
    let mut short = cms.watch(&timed, "0").await.unwrap().boxed();
    assert!(matches!(
        short.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    let ended = tokio::time::timeout(Duration::from_secs(5), short.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_none(), "timeoutSeconds ends the stream");
}

#[tokio::test]
async fn controller_runs_a_v1alpha1_sandbox() {
    let fake = FakeKube::start(FakeOptions {
        sandbox_versions: vec!["v1alpha1"],
        ..Default::default()
    })
    .await;
    let client = fake.client();
    let api = sandboxes(&client, "v1alpha1");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let spec = json!({"podTemplate": agent_template()});
    let sb = api
        .create(&PostParams::default(), &sandbox("sb1", "v1alpha1", spec))
        .await
        .unwrap();

    let ready_sandbox = || {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move {
                let sb = api.get("sb1").await.ok()?;
                (sandbox_ready(&sb)? == ("True".into(), "DependenciesReady".into())).then_some(sb)
            }
        }
    };
    let ready = eventually(WAIT, "sandbox Ready", ready_sandbox()).await;
    assert_eq!(
        ready.data["status"]["serviceFQDN"],
        "sb1.default.svc.cluster.local"
    );
    assert_eq!(ready.data["status"]["service"], "sb1");
    assert_eq!(ready.data["status"]["podIPs"], json!(["127.0.0.1"]));

    let pod = pods.get("sb1").await.unwrap();
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Sandbox", sb.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(pod.labels()["app"], "agent");
    assert_eq!(pod.annotations()["note"], "x");
    let hash = pod.labels()["agents.x-k8s.io/sandbox-name-hash"].clone();
    assert_eq!(condition(&pod, "Ready").unwrap().status, "True");
    let service = services.get("sb1").await.unwrap();
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.selector.unwrap()["agents.x-k8s.io/sandbox-name-hash"],
        hash
    );
    assert_eq!(spec.ports.unwrap()[0].port, 4096);

    // "Restart": delete the pod, the controller makes a new one.
    pods.delete("sb1", &DeleteParams::default()).await.unwrap();
    let old_uid = pod.uid();
    let pods2 = pods.clone();
    eventually(WAIT, "a new pod", move || {
        let pods = pods2.clone();
        let old_uid = old_uid.clone();
        async move { pods.get("sb1").await.ok().filter(|p| p.uid() != old_uid) }
    })
    .await;

    // Suspend and resume.
    let params = PatchParams::default();
    api.patch(
        "sb1",
        &params,
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    let (pods2, api2) = (pods.clone(), api.clone());
    eventually(WAIT, "pod gone, sandbox not ready", move || {
        let (pods, api) = (pods2.clone(), api2.clone());
        async move {
            let gone = pods.get_opt("sb1").await.unwrap().is_none();
            let sb = api.get("sb1").await.unwrap();
            (gone && sandbox_ready(&sb)? == ("False".into(), "DependenciesNotReady".into()))
                .then_some(())
        }
    })
    .await;
    assert!(
        services.get_opt("sb1").await.unwrap().is_some(),
        "the service stays while suspended"
    );
    api.patch(
        "sb1",
        &params,
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "sandbox Ready again", ready_sandbox()).await;

    api.delete("sb1", &DeleteParams::default()).await.unwrap();
    let (pods2, services2) = (pods.clone(), services.clone());
    eventually(WAIT, "pod and service gone with the sandbox", move || {
        let (pods, services) = (pods2.clone(), services2.clone());
        async move {
            let pod = pods.get_opt("sb1").await.unwrap();
            let service = services.get_opt("sb1").await.unwrap();
            (pod.is_none() && service.is_none()).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn controller_follows_v1beta1_operating_mode_and_service() {
    let fake = FakeKube::start(FakeOptions::default()).await;
    fake.set_pod_ip("10.0.0.7");
    let client = fake.client();
    let api = sandboxes(&client, "v1beta1");
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let spec = json!({"podTemplate": agent_template()});
    api.create(&PostParams::default(), &sandbox("sb2", "v1beta1", spec))
        .await
        .unwrap();
    let get = |fake: &FakeKube| fake.get("sandboxes", "default", "sb2").unwrap();
    eventually(WAIT, "v1beta1 sandbox Ready", || async {
        let sb = get(&fake);
        (sb["status"]["conditions"][0]["status"] == "True").then_some(())
    })
    .await;
    let sb = get(&fake);
    assert_eq!(sb["status"]["podIPs"], json!(["10.0.0.7"]));
    assert!(sb["status"].get("serviceFQDN").is_none());
    assert!(
        services.get_opt("sb2").await.unwrap().is_none(),
        "no service unless asked (v1beta1)"
    );

    let params = PatchParams::default();
    api.patch(
        "sb2",
        &params,
        &Patch::Merge(json!({"spec": {"service": true}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "service and FQDN", || async {
        let fqdn = get(&fake)["status"]["serviceFQDN"]
            .as_str()
            .map(str::to_string);
        (fqdn.as_deref() == Some("sb2.default.svc.cluster.local")).then_some(())
    })
    .await;
    assert!(services.get_opt("sb2").await.unwrap().is_some());

    api.patch(
        "sb2",
        &params,
        &Patch::Merge(json!({"spec": {"operatingMode": "Suspended"}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "pod gone when Suspended", || async {
        fake.get("pods", "default", "sb2").is_none().then_some(())
    })
    .await;
    api.patch(
        "sb2",
        &params,
        &Patch::Merge(json!({"spec": {"operatingMode": "Running"}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "pod back when Running", || async {
        fake.get("pods", "default", "sb2")
    })
    .await;

    // Stored once, served in both versions.
    let alpha = sandboxes(&client, "v1alpha1").get("sb2").await.unwrap();
    assert_eq!(alpha.types.unwrap().api_version, "agents.x-k8s.io/v1alpha1");

    // A pod that cannot pull its image keeps the sandbox not ready.
    fake.default_pod_scenario(PodScenario::ImagePullBackOff);
    api.create(
        &PostParams::default(),
        &sandbox("sb3", "v1beta1", json!({"podTemplate": agent_template()})),
    )
    .await
    .unwrap();
    eventually(WAIT, "sb3 pod in ImagePullBackOff", || async {
        let pod = fake.get("pods", "default", "sb3")?;
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
        (waiting == "ImagePullBackOff").then_some(())
    })
    .await;
    let sb3 = fake.get("sandboxes", "default", "sb3").unwrap();
    assert_eq!(
        sb3["status"]["conditions"][0]["reason"],
        "DependenciesNotReady"
    );
}

#[tokio::test]
async fn discovery_prefers_v1beta1_when_served() {
    let both = FakeKube::start(FakeOptions {
        simulate: false,
        ..Default::default()
    })
    .await;
    let client = both.client();
    let group = kube::discovery::group(&client, "agents.x-k8s.io")
        .await
        .unwrap();
    assert_eq!(group.preferred_version_or_latest(), "v1beta1");
    let (ar, caps) = group.recommended_kind("Sandbox").unwrap();
    assert_eq!(
        (ar.version.as_str(), ar.plural.as_str()),
        ("v1beta1", "sandboxes")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "status")
    );
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("agents.x-k8s.io") && discovery.has_group(""));
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let sandbox_group = aggregated.get("agents.x-k8s.io").unwrap();
    assert_eq!(sandbox_group.preferred_version_or_latest(), "v1beta1");
    let core = kube::discovery::group(&client, "").await.unwrap();
    let (_, pod_caps) = core.recommended_kind("Pod").unwrap();
    assert!(
        pod_caps
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "log")
    );
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");

    let alpha = FakeKube::start(FakeOptions {
        sandbox_versions: vec!["v1alpha1"],
        simulate: false,
        ..Default::default()
    })
    .await;
    let client = alpha.client();
    let group = kube::discovery::group(&client, "agents.x-k8s.io")
        .await
        .unwrap();
    assert_eq!(group.preferred_version_or_latest(), "v1alpha1");
    assert_eq!(group.versions().collect::<Vec<_>>(), vec!["v1alpha1"]);
    let unserved = sandboxes(&client, "v1beta1")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_error(unserved).0, 404);
}

#[tokio::test]
async fn pod_logs_tail_and_follow() {
    let fake = FakeKube::start(FakeOptions::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(fake.client());
    pods.create(&PostParams::default(), &new_pod("lp", json!({})))
        .await
        .unwrap();
    for line in ["one", "two", "three"] {
        fake.append_log("default", "lp", line);
    }
    let tail = LogParams {
        tail_lines: Some(2),
        ..Default::default()
    };
    assert_eq!(pods.logs("lp", &tail).await.unwrap(), "two\nthree\n");
    let recent = LogParams {
        since_seconds: Some(3600),
        ..Default::default()
    };
    assert_eq!(pods.logs("lp", &recent).await.unwrap(), "one\ntwo\nthree\n");

    let follow = LogParams {
        follow: true,
        tail_lines: Some(1),
        ..Default::default()
    };
    let mut lines = pods.log_stream("lp", &follow).await.unwrap().lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("three"));
    fake.append_log("default", "lp", "four");
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("four"));
    fake.delete("pods", "default", "lp");
    assert_eq!(
        next_line(&mut lines).await,
        None,
        "the follow ends with the pod"
    );
    let missing = pods.logs("lp", &LogParams::default()).await.unwrap_err();
    assert_eq!(api_error(missing).0, 404);
}

async fn next_line<R: futures::AsyncBufRead + Unpin>(
    lines: &mut futures::io::Lines<R>,
) -> Option<String> {
    tokio::time::timeout(WAIT, lines.try_next())
        .await
        .unwrap()
        .unwrap()
}

async fn pod_events(client: &Client, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={pod}"
    ));
    events
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn kubelet_scenarios_show_in_status_and_events() {
    let fake = FakeKube::start(FakeOptions {
        ready_after: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let client = fake.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let status_of = |name: &'static str| {
        let pods = pods.clone();
        move || {
            let pods = pods.clone();
            async move { pods.get(name).await.ok() }
        }
    };

    // Ready, then OOMKilled now.
    pods.create(&PostParams::default(), &new_pod("oom", json!({})))
        .await
        .unwrap();
    let ready = eventually(WAIT, "oom pod ready", || async {
        let pod = status_of("oom")().await?;
        (condition(&pod, "Ready")?.status == "True").then_some(pod)
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.pod_ip.as_deref()),
        (Some("Running"), Some("127.0.0.1"))
    );
    fake.set_pod("default", "oom", PodScenario::OomKilled);
    let pod = pods.get("oom").await.unwrap();
    let container = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let last = container
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.exit_code),
        (Some("OOMKilled"), 137)
    );
    assert_eq!(container.restart_count, 1);
    let waiting = container.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(condition(&pod, "Ready").unwrap().status, "False");
    let reasons = pod_events(&client, "oom").await;
    for reason in [
        "Scheduled",
        "Pulling",
        "Pulled",
        "Created",
        "Started",
        "BackOff",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }

    // Every new pod fails to pull its image.
    fake.default_pod_scenario(PodScenario::ImagePullBackOff);
    pods.create(&PostParams::default(), &new_pod("pull", json!({})))
        .await
        .unwrap();
    let pod = eventually(WAIT, "ImagePullBackOff", || async {
        let pod = status_of("pull")().await?;
        let state = pod.status.as_ref()?.container_statuses.as_ref()?[0]
            .state
            .clone()?;
        (state.waiting?.reason.as_deref() == Some("ImagePullBackOff")).then_some(pod)
    })
    .await;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(
        pod_events(&client, "pull")
            .await
            .iter()
            .any(|r| r == "Failed")
    );

    // Unschedulable.
    fake.default_pod_scenario(PodScenario::Unschedulable);
    pods.create(&PostParams::default(), &new_pod("nosched", json!({})))
        .await
        .unwrap();
    let pod = eventually(WAIT, "Unschedulable", || async {
        let pod = status_of("nosched")().await?;
        let scheduled = condition(&pod, "PodScheduled")?.clone();
        (scheduled.reason.as_deref() == Some("Unschedulable")).then_some(scheduled)
    })
    .await;
    assert_eq!(pod.status, "False");
    assert!(
        pod_events(&client, "nosched")
            .await
            .iter()
            .any(|r| r == "FailedScheduling")
    );

    // Held in Pending, then released; an exit under restartPolicy Never fails the pod.
    fake.default_pod_scenario(PodScenario::Hold);
    let mut never = new_pod("held", json!({}));
    never.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    pods.create(&PostParams::default(), &never).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = pods.get("held").await.unwrap();
    assert_eq!(
        held.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(condition(&held, "PodScheduled").unwrap().status, "True");
    fake.set_pod("default", "held", PodScenario::Ready);
    let released = pods.get("held").await.unwrap();
    assert_eq!(condition(&released, "Ready").unwrap().status, "True");
    fake.set_pod("default", "held", PodScenario::Exit(3));
    let exited = pods.get("held").await.unwrap();
    let status = exited.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 3);
}

#[tokio::test]
async fn access_reviews_answer_allowed_unless_denied() {
    let fake = quiet().await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(fake.client());
    let review = |verb: &str, resource: &str| -> SelfSubjectAccessReview {
        serde_json::from_value(json!({"spec": {"resourceAttributes":
            {"verb": verb, "resource": resource, "namespace": "default", "group": ""}}}))
        .unwrap()
    };
    let allowed = |r: SelfSubjectAccessReview| r.status.unwrap().allowed;
    let answer = reviews
        .create(&PostParams::default(), &review("create", "pods"))
        .await
        .unwrap();
    assert!(allowed(answer));
    fake.deny("create", "pods");
    let answer = reviews
        .create(&PostParams::default(), &review("create", "pods"))
        .await
        .unwrap();
    assert!(!allowed(answer));
    let answer = reviews
        .create(&PostParams::default(), &review("delete", "pods"))
        .await
        .unwrap();
    assert!(allowed(answer));
}

/// kubectl as an independent client, when it happens to be installed.
#[tokio::test]
async fn kubectl_if_installed() {
    let Some(kubectl) = which("kubectl") else {
        return;
    };
    let fake = FakeKube::start(FakeOptions::default()).await;
    let home = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str], stdin: &'static str| {
        let mut cmd = tokio::process::Command::new(&kubectl);
        cmd.env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("none"))
            .args([
                "--server",
                &fake.url,
                "--request-timeout=10s",
                "-n",
                "default",
            ])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = cmd.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.as_bytes()).await.unwrap();
            drop(input);
            let out = tokio::time::timeout(WAIT, child.wait_with_output())
                .await
                .unwrap()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "kubectl {args:?} failed: {err}");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let manifest = r#"{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "k1"}, "spec": {"podTemplate": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}}"#;
    let resources = run(&["api-resources"], "").await;
    assert!(resources.contains("sandboxes"), "{resources}");

    run(&["create", "--validate=false", "-f", "-"], manifest).await;
    eventually(WAIT, "the controller's pod for k1", || async {
        fake.get("pods", "default", "k1")
    })
    .await;
    let pods = run(&["get", "pods", "-o", "name"], "").await;
    assert!(pods.contains("pod/k1"), "{pods}");
    let json = run(
        &["get", "sandboxes.agents.x-k8s.io", "k1", "-o", "json"],
        "",
    )
    .await;
    assert!(json.contains("\"podTemplate\""), "{json}");
    run(&["delete", "sandboxes.agents.x-k8s.io", "k1"], "").await;
    assert!(fake.get("sandboxes", "default", "k1").is_none());
    let secret = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ks"}, "stringData": {"a": "b"}}"#;
    run(
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        secret,
    )
    .await;
    assert_eq!(
        fake.get("secrets", "default", "ks").unwrap()["data"]["a"],
        "Yg=="
    );
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kp"},
        "spec": {"containers": [{"name": "a", "image": "a"}]}}"#;
    run(&["create", "--validate=false", "-f", "-"], pod).await;
    fake.append_log("default", "kp", "hello from kp");
    assert_eq!(run(&["logs", "kp"], "").await, "hello from kp\n");
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
