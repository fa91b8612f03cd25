//! Routing: every request goes through one handler that parses the Kubernetes URL layout.

use super::Cluster;
use super::discovery;
use super::objects::{ApiError, Kind, WatchMsg, WatchStart, find_kind, present};
use super::select::Selector;
use super::verbs::{self, PatchRequest, Via};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) fn router(cluster: Arc<Cluster>) -> Router {
    Router::new().fallback(handle).with_state(cluster)
}

type Params = HashMap<String, String>;

async fn handle(State(cluster): State<Arc<Cluster>>, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    cluster.log_request(format!("{} {target}", request.method()));
    let path: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // The WebSocket subresources, answered before the body is read (there is none: it upgrades).
    if let [
        "api",
        "v1",
        "namespaces",
        ns,
        "pods",
        pod,
        sub @ ("portforward" | "exec"),
    ] = path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        if request.method() != Method::GET && request.method() != Method::POST {
            return error(ApiError::new(405, "MethodNotAllowed", "use GET or POST"));
        }
        let answer = if *sub == "exec" {
            super::exec::exec(&cluster, ns, pod, request)
        } else {
            super::forward::portforward(&cluster, ns, pod, request)
        };
        return answer.unwrap_or_else(error);
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(body) => body,
        Err(e) => return error(ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let params: Params = Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let req = Req {
        method: &parts.method,
        params: &params,
        headers: &parts.headers,
        body: &body,
    };
    match route(&cluster, parts.uri.path(), &req) {
        Ok(response) => response,
        Err(e) => error(e),
    }
}

struct Req<'a> {
    method: &'a Method,
    params: &'a Params,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn json_response(code: u16, value: &Value) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn route(cluster: &Arc<Cluster>, path: &str, req: &Req<'_>) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let versions = &cluster.sandbox_versions;
    let aggregated = req
        .header(header::ACCEPT)
        .contains("as=APIGroupDiscoveryList");
    let discovery_doc = |doc: Value| {
        if aggregated {
            let mut response = json_response(200, &doc);
            if let Ok(value) = header::HeaderValue::from_str(discovery::AGGREGATED) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        } else {
            json_response(200, &doc)
        }
    };
    match segments.as_slice() {
        ["version"] => Ok(json_response(200, &discovery::version())),
        ["healthz" | "readyz" | "livez"] => Ok("ok".into_response()),
        ["api"] if aggregated => Ok(discovery_doc(discovery::aggregated(versions, true))),
        ["api"] => Ok(json_response(200, &discovery::core_versions(&cluster.host))),
        ["apis"] if aggregated => Ok(discovery_doc(discovery::aggregated(versions, false))),
        ["apis"] => Ok(json_response(200, &discovery::group_list(versions))),
        ["api", "v1"] => Ok(json_response(200, &discovery::resource_list("", "v1"))),
        ["apis", group] => discovery::group(versions, group)
            .map(|doc| json_response(200, &doc))
            .ok_or_else(not_found),
        ["apis", group, version] if discovery::serves(versions, group, version) => Ok(
            json_response(200, &discovery::resource_list(group, version)),
        ),
        ["api", version, rest @ ..] => resource(cluster, "", version, rest, req),
        ["apis", group, version, rest @ ..] => resource(cluster, group, version, rest, req),
        _ => Err(not_found()),
    }
}

/// A parsed resource URL.
struct Target {
    kind: &'static Kind,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(cluster: &Cluster, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    if !discovery::serves(&cluster.sandbox_versions, group, version) {
        return None;
    }
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if tail.len() <= 2 && find_kind(group, plural).is_some_and(|k| k.namespaced) =>
        {
            Target {
                kind: find_kind(group, plural)?,
                version: version.to_string(),
                namespace: Some(ns.to_string()),
                name: owned(tail.first()),
                sub: owned(tail.get(1)),
            }
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let kind = find_kind(group, plural)?;
            if kind.namespaced && !tail.is_empty() {
                return None;
            }
            Target {
                kind,
                version: version.to_string(),
                namespace: None,
                name: owned(tail.first()),
                sub: owned(tail.get(1)),
            }
        }
        _ => return None,
    };
    let sub_ok = match target.sub.as_deref() {
        None => true,
        Some("status") => target.kind.status,
        Some("log") => target.kind.plural == "pods",
        Some(_) => false,
    };
    sub_ok.then_some(target)
}

fn resource(
    cluster: &Arc<Cluster>,
    group: &str,
    version: &str,
    rest: &[&str],
    req: &Req<'_>,
) -> Result<Response, ApiError> {
    let t = parse_target(cluster, group, version, rest).ok_or_else(not_found)?;
    let kind = t.kind;
    let ns = t.namespace.clone().unwrap_or_default();
    let via = Via {
        version: &t.version,
        status: t.sub.as_deref() == Some("status"),
        dry_run: req.param("dryRun").is_some(),
    };
    let show = |obj: &Value| present(obj, kind, &t.version);
    let not_allowed = || {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    };
    if kind.plural == "selfsubjectaccessreviews" {
        return match (req.method, &t.name) {
            (&Method::POST, None) => access_review(cluster, req.body),
            _ => Err(not_allowed()),
        };
    }
    let sub = t.sub.as_deref();
    match (req.method, t.name.as_deref(), sub) {
        (&Method::GET, None, None) if req.flag("watch") => watch(cluster, &t, req),
        (&Method::GET, None, None) => list(cluster, &t, req),
        (&Method::GET, Some(name), None | Some("status")) => {
            let world = cluster.world();
            let obj = world
                .store
                .get(kind, &ns, name)
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(200, &show(obj)))
        }
        (&Method::GET, Some(name), Some("log")) => logs(cluster, &ns, name, req),
        (&Method::POST, None, None) if t.namespace.is_some() || !kind.namespaced => {
            let created = verbs::create(&mut cluster.world().store, kind, &ns, req.body, via)?;
            Ok(json_response(201, &show(&created)))
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            let obj = verbs::replace(&mut cluster.world().store, kind, &ns, name, req.body, via)?;
            Ok(json_response(200, &show(&obj)))
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            let patch = PatchRequest {
                content_type: req.header(header::CONTENT_TYPE),
                body: req.body,
                field_manager: req.param("fieldManager"),
            };
            let mut world = cluster.world();
            let existed = world.store.get(kind, &ns, name).is_some();
            let obj = verbs::patch(&mut world.store, kind, &ns, name, patch, via)?;
            Ok(json_response(if existed { 200 } else { 201 }, &show(&obj)))
        }
        (&Method::DELETE, Some(name), None) => {
            let obj = verbs::delete(&mut cluster.world().store, kind, &ns, name, req.body)?;
            Ok(json_response(200, &show(&obj)))
        }
        (&Method::DELETE, None, None) => {
            let selector = selector(kind, req)?;
            let mut world = cluster.world();
            let mut deleted = Vec::new();
            for obj in world.store.list(kind, t.namespace.as_deref()) {
                if selector.matches(&obj) {
                    let (obj_ns, name) = (meta_str(&obj, "namespace"), meta_str(&obj, "name"));
                    deleted.extend(world.store.remove(kind, &obj_ns, &name).map(|o| show(&o)));
                }
            }
            Ok(json_response(
                200,
                &list_doc(kind, &t.version, world.store.rv(), deleted),
            ))
        }
        _ => Err(not_allowed()),
    }
}

fn meta_str(obj: &Value, field: &str) -> String {
    super::objects::meta(obj, field).to_string()
}

fn selector(kind: &Kind, req: &Req<'_>) -> Result<Selector, ApiError> {
    Selector::parse(req.param("labelSelector"), req.param("fieldSelector"), kind)
}

fn list_doc(kind: &Kind, version: &str, rv: u64, items: Vec<Value>) -> Value {
    let api_version = if kind.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", kind.group)
    };
    json!({
        "apiVersion": api_version, "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": rv.to_string()}, "items": items,
    })
}

fn list(cluster: &Cluster, t: &Target, req: &Req<'_>) -> Result<Response, ApiError> {
    let selector = selector(t.kind, req)?;
    let world = cluster.world();
    let items = world
        .store
        .list(t.kind, t.namespace.as_deref())
        .iter()
        .filter(|obj| selector.matches(obj))
        .map(|obj| present(obj, t.kind, &t.version))
        .collect();
    Ok(json_response(
        200,
        &list_doc(t.kind, &t.version, world.store.rv(), items),
    ))
}

fn gone_line() -> Bytes {
    let status = ApiError::new(410, "Expired", "too old resource version").status();
    Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})))
}

fn stream_response(
    content_type: &'static str,
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> Response {
    let body = Body::from_stream(ReceiverStream::new(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn watch(cluster: &Arc<Cluster>, t: &Target, req: &Req<'_>) -> Result<Response, ApiError> {
    let selector = selector(t.kind, req)?;
    let initial = req.flag("sendInitialEvents");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let rv = req.param("resourceVersion").unwrap_or("");
    let (start, current_rv) = {
        let mut world = cluster.world();
        let start = world
            .store
            .watch(t.kind, t.namespace.clone(), selector, rv, initial)?;
        (start, world.store.rv())
    };
    let (kind, version) = (t.kind, t.version.clone());
    let line = move |ty: &str, obj: &Value| {
        Bytes::from(format!(
            "{}\n",
            json!({"type": ty, "object": present(obj, kind, &version)})
        ))
    };
    let (tx, rx) = mpsc::channel(64);
    let mut shutdown = cluster.shutdown.subscribe();
    let (events, mut changes) = match start {
        WatchStart::Gone => {
            let _ = tx.try_send(Ok(gone_line()));
            return Ok(stream_response("application/json", rx));
        }
        WatchStart::Events(events, changes) => (events, changes),
    };
    tokio::spawn(async move {
        for (ty, obj) in events {
            if tx.send(Ok(line(ty, &obj))).await.is_err() {
                return;
            }
        }
        if initial {
            let mark = json!({"metadata": {"resourceVersion": current_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                return;
            }
        }
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = changes.recv() => match msg {
                    Some(WatchMsg::Event(ty, obj)) => {
                        if tx.send(Ok(line(ty, &obj))).await.is_err() {
                            break;
                        }
                    }
                    Some(WatchMsg::Expire) => {
                        let _ = tx.send(Ok(gone_line())).await;
                        break;
                    }
                    Some(WatchMsg::Drop) => {
                        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "watch dropped");
                        let _ = tx.send(Err(reset)).await;
                        break;
                    }
                    None => break,
                },
                _ = &mut deadline => break,
                _ = shutdown.changed() => break,
                _ = tx.closed() => break,
            }
        }
    });
    Ok(stream_response("application/json", rx))
}

fn logs(cluster: &Arc<Cluster>, ns: &str, name: &str, req: &Req<'_>) -> Result<Response, ApiError> {
    let pods = find_kind("", "pods").ok_or_else(not_found)?;
    let key = (ns.to_string(), name.to_string());
    // Read the lines and subscribe to later ones under one lock, so none fall in between.
    let (lines, mut seen, mut seq) = {
        let world = cluster.world();
        world
            .store
            .get(pods, ns, name)
            .ok_or_else(|| ApiError::not_found(pods, name))?;
        let lines = world.store.logs.get(&key).cloned().unwrap_or_default();
        let seen = lines.len();
        (lines, seen, world.store.log_seq.subscribe())
    };
    let timestamps = req.flag("timestamps");
    let render = move |(at, line): &(chrono::DateTime<chrono::Utc>, String)| {
        if timestamps {
            format!(
                "{} {line}\n",
                at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            )
        } else {
            format!("{line}\n")
        }
    };
    let since = req
        .param("sinceSeconds")
        .and_then(|s| s.parse::<i64>().ok())
        .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s));
    let mut shown: Vec<_> = lines
        .iter()
        .filter(|(at, _)| since.is_none_or(|s| *at >= s))
        .collect();
    if let Some(tail) = req.param("tailLines").and_then(|s| s.parse::<usize>().ok()) {
        shown = shown.split_off(shown.len().saturating_sub(tail));
    }
    let text: String = shown.into_iter().map(&render).collect();
    if !req.flag("follow") {
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response());
    }
    let (tx, rx) = mpsc::channel(64);
    let cluster = cluster.clone();
    let mut shutdown = cluster.shutdown.subscribe();
    tokio::spawn(async move {
        if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = seq.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
                _ = tx.closed() => break,
            }
            let fresh: Vec<String> = {
                let world = cluster.world();
                if world.store.get(pods, &key.0, &key.1).is_none() {
                    break;
                }
                let lines = world
                    .store
                    .logs
                    .get(&key)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let fresh = lines.iter().skip(seen).map(&render).collect();
                seen = lines.len();
                fresh
            };
            for line in fresh {
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(stream_response("text/plain", rx))
}

fn access_review(cluster: &Cluster, body: &[u8]) -> Result<Response, ApiError> {
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let attr = |field: &str| {
        review
            .pointer(&format!("/spec/resourceAttributes/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (verb, resource, sub) = (attr("verb"), attr("resource"), attr("subresource"));
    let full = if sub.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{sub}")
    };
    let denied = cluster
        .world()
        .denied
        .iter()
        .any(|(v, r)| (*v == verb || v == "*") && (*r == resource || *r == full));
    review["apiVersion"] = "authorization.k8s.io/v1".into();
    review["kind"] = "SelfSubjectAccessReview".into();
    review["status"] = if denied {
        json!({"allowed": false, "denied": true, "reason": "denied by the fake API server"})
    } else {
        json!({"allowed": true})
    };
    Ok(json_response(201, &review))
}
