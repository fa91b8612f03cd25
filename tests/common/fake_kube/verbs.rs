//! What create, replace, patch and delete do to the store, with the status subresource rules:
//! the main endpoint ignores `.status`, `/status` changes only status.

use super::objects::{ApiError, Kind, SANDBOX_GROUP, Store, meta, present};
use super::patch;
use serde_json::{Map, Value, json};

fn object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request("the body must be a JSON object"))
    }
}

/// The identity in the body must agree with the URL.
fn check_identity(
    kind: &Kind,
    obj: &Value,
    namespace: &str,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let ns = meta(obj, "namespace");
    if kind.namespaced && !ns.is_empty() && ns != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(name) = name
        && meta(obj, "name") != name
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    Ok(())
}

fn set_meta(obj: &mut Value, field: &str, value: &str) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(field.into(), value.into());
        }
    }
}

/// Server-side defaults this fake applies: Secret `stringData` folded into `data`, a new Pod
/// starts Pending, a new Namespace is Active, a Service gets a cluster IP.
fn normalize(kind: &Kind, obj: &mut Value, creating: bool, store: &Store) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match kind.plural {
        "secrets" => {
            if let Some(Value::Object(strings)) = map.remove("stringData") {
                let data = map.entry("data").or_insert_with(|| json!({}));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in strings {
                        let text = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        data.insert(k, base64(text.as_bytes()).into());
                    }
                }
            }
        }
        "namespaces" if creating => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        "pods" if creating => {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        "services" if creating => {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut()
                && !spec.contains_key("clusterIP")
            {
                let ip = format!(
                    "10.96.{}.{}",
                    (store.rv() / 250) % 250,
                    store.rv() % 250 + 1
                );
                spec.insert("clusterIP".into(), ip.clone().into());
                spec.insert("clusterIPs".into(), json!([ip]));
            }
        }
        _ => {}
    }
}

/// Keeps the old status on the main endpoint; takes only the new status on `/status`.
fn status_rules(kind: &Kind, old: &Value, new: Value, status_endpoint: bool) -> Value {
    if !kind.status {
        return new;
    }
    let (mut base, from) = if status_endpoint {
        (old.clone(), &new)
    } else {
        (new.clone(), old)
    };
    if let Some(map) = base.as_object_mut() {
        match from.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    base
}

/// How a write arrived: through which version, the `/status` subresource or not, dry run or not.
#[derive(Clone, Copy)]
pub(crate) struct Via<'a> {
    pub version: &'a str,
    pub status: bool,
    pub dry_run: bool,
}

pub(crate) fn create(
    store: &mut Store,
    kind: &'static Kind,
    namespace: &str,
    body: &[u8],
    via: Via<'_>,
) -> Result<Value, ApiError> {
    let obj = object(body)?;
    check_identity(kind, &obj, namespace, None)?;
    // The stored object remembers the version it was written through.
    let mut obj = present(&obj, kind, via.version);
    if kind.status
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    normalize(kind, &mut obj, true, store);
    store.create(kind, namespace, obj, via.dry_run)
}

fn existing(store: &Store, kind: &Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
    store
        .get(kind, namespace, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(kind, name))
}

/// Writes `new` over `old` with the resourceVersion precondition and the status rules.
fn write(
    store: &mut Store,
    kind: &'static Kind,
    old: &Value,
    new: Value,
    via: Via<'_>,
) -> Result<Value, ApiError> {
    let name = meta(old, "name").to_string();
    let rv = meta(&new, "resourceVersion");
    if !rv.is_empty() && rv != meta(old, "resourceVersion") {
        return Err(ApiError::conflict(kind, &name));
    }
    if meta(&new, "name") != name {
        return Err(ApiError::bad_request("metadata.name cannot be changed"));
    }
    let mut new = present(&new, kind, via.version);
    set_meta(&mut new, "namespace", meta(old, "namespace"));
    set_meta(&mut new, "resourceVersion", meta(old, "resourceVersion"));
    normalize(kind, &mut new, false, store);
    let new = status_rules(kind, old, new, via.status);
    Ok(store.update(kind, new, via.dry_run))
}

pub(crate) fn replace(
    store: &mut Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
    via: Via<'_>,
) -> Result<Value, ApiError> {
    let new = object(body)?;
    check_identity(kind, &new, namespace, Some(name))?;
    let old = existing(store, kind, namespace, name)?;
    write(store, kind, &old, new, via)
}

pub(crate) struct PatchRequest<'a> {
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub field_manager: Option<&'a str>,
}

pub(crate) fn patch(
    store: &mut Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    req: PatchRequest<'_>,
    via: Via<'_>,
) -> Result<Value, ApiError> {
    let media = req.content_type.split(';').next().unwrap_or("").trim();
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let current = store.get(kind, namespace, name).cloned();
    let mut patched = match current.clone() {
        Some(obj) => obj,
        None if media == "application/apply-patch+yaml" => Value::Object(Map::new()),
        None => return Err(ApiError::not_found(kind, name)),
    };
    match media {
        "application/merge-patch+json" => patch::merge(&mut patched, &body),
        "application/strategic-merge-patch+json" if kind.group == SANDBOX_GROUP => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        "application/strategic-merge-patch+json" => patch::strategic(&mut patched, &body),
        "application/json-patch+json" => {
            patch::json_patch(&mut patched, &body).map_err(ApiError::invalid)?
        }
        "application/apply-patch+yaml" => {
            if req.field_manager.is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "PATCH /apply requires fieldManager to be set: fieldManager is required for apply requests",
                ));
            }
            if !body.is_object() {
                return Err(ApiError::bad_request("an apply patch must be an object"));
            }
            check_identity(kind, &body, namespace, Some(name))?;
            patch::merge(&mut patched, &body);
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {other:?}"),
            ));
        }
    }
    if !patched.is_object() {
        return Err(ApiError::invalid("the patched object is not an object"));
    }
    match current {
        Some(old) => write(store, kind, &old, patched, via),
        None => {
            set_meta(&mut patched, "name", name);
            let bytes =
                serde_json::to_vec(&patched).map_err(|e| ApiError::invalid(e.to_string()))?;
            create(store, kind, namespace, &bytes, via)
        }
    }
}

/// Deletes at once (no graceful deletion, no finalizers), honouring `preconditions`.
pub(crate) fn delete(
    store: &mut Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let old = existing(store, kind, namespace, name)?;
    if !body.is_empty()
        && let Ok(options) = serde_json::from_slice::<Value>(body)
    {
        let pre = |field: &str| {
            options
                .pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .filter(|v| *v != meta(&old, field))
                .map(|_| ())
        };
        if pre("uid").or(pre("resourceVersion")).is_some() {
            return Err(ApiError::conflict(kind, name));
        }
    }
    store
        .remove(kind, namespace, name)
        .ok_or_else(|| ApiError::not_found(kind, name))
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
