//! The object store: the kinds served, one global resourceVersion, the retained change history
//! and the open watches it fans changes out to.

use super::select::Selector;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, watch};

/// One resource the fake serves.
pub(crate) struct Kind {
    pub group: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource (so the main endpoint ignores `.status`).
    pub status: bool,
    /// Bumps `metadata.generation` when `.spec` changes (custom resources).
    pub generation: bool,
    pub verbs: &'static [&'static str],
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) const SANDBOX_GROUP: &str = "agents.x-k8s.io";

pub(crate) const KINDS: &[Kind] = &[
    kind("", "pods", "pod", "Pod", true, &["po"], true),
    kind("", "secrets", "secret", "Secret", true, &[], false),
    kind("", "services", "service", "Service", true, &["svc"], true),
    kind("", "events", "event", "Event", true, &["ev"], false),
    kind(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
    ),
    kind(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
    ),
    Kind {
        generation: true,
        ..kind(
            SANDBOX_GROUP,
            "sandboxes",
            "sandbox",
            "Sandbox",
            true,
            &[],
            true,
        )
    },
    Kind {
        verbs: &["create"],
        ..kind(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
        )
    },
];

pub(crate) static PODS: &Kind = &KINDS[0];
pub(crate) static SERVICES: &Kind = &KINDS[2];
pub(crate) static EVENTS: &Kind = &KINDS[3];
pub(crate) static SANDBOXES: &Kind = &KINDS[6];

const fn kind(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
) -> Kind {
    Kind {
        group,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        status,
        generation: false,
        verbs: RW,
    }
}

pub(crate) fn find_kind(group: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// The kind of a plural in any group (for the test-facing API).
pub(crate) fn kind_of(plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.plural == plural)
}

/// The object as served at `version` (no conversion beyond apiVersion and kind).
pub(crate) fn present(obj: &Value, kind: &Kind, version: &str) -> Value {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        let api_version = if kind.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", kind.group)
        };
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.kind.into());
    }
    obj
}

/// A failure answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }
    pub(crate) fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural),
        )
        .with_details(kind, name)
    }
    pub(crate) fn already_exists(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural),
        )
        .with_details(kind, name)
    }
    pub(crate) fn conflict(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.plural
            ),
        )
        .with_details(kind, name)
    }
    fn with_details(mut self, kind: &Kind, name: &str) -> ApiError {
        self.details = Some(json!({"name": name, "group": kind.group, "kind": kind.plural}));
        self
    }
    pub(crate) fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// One write, as retained for watches that resume from an older resourceVersion.
struct Record {
    rv: u64,
    resource: &'static str,
    namespace: String,
    change: Change,
    object: Value,
    old: Option<Value>,
}

pub(crate) enum WatchMsg {
    Event(&'static str, Value),
    /// History was forgotten: answer 410 Gone inside the stream, then end it.
    Expire,
    /// Break the connection.
    Drop,
}

struct Watcher {
    resource: &'static str,
    namespace: Option<String>,
    selector: Selector,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

/// How a watch starts: the events to send first, or Gone.
pub(crate) enum WatchStart {
    Events(
        Vec<(&'static str, Value)>,
        mpsc::UnboundedReceiver<WatchMsg>,
    ),
    Gone,
}

const HISTORY: usize = 10_000;

type Key = (&'static str, String, String);

/// A log line with the time it was written.
pub(crate) type LogLine = (chrono::DateTime<chrono::Utc>, String);

pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Record>,
    /// Changes at or below this resourceVersion are forgotten.
    compacted: u64,
    watchers: Vec<Watcher>,
    changed: Arc<Notify>,
    /// Container logs by (namespace, pod): (time, line).
    pub logs: HashMap<(String, String), Vec<LogLine>>,
    /// Bumped whenever logs are appended or a pod goes (wakes `follow` readers).
    pub log_seq: watch::Sender<u64>,
    generated: u64,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    map.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// Equal apart from resourceVersion (a write that changes nothing is not a write).
fn same(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = meta_mut(&mut v) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

impl Store {
    pub(crate) fn new(changed: Arc<Notify>) -> Store {
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            compacted: 0,
            watchers: Vec::new(),
            changed,
            logs: HashMap::new(),
            log_seq: watch::channel(0).0,
            generated: 0,
        }
    }

    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<&Value> {
        let ns = if kind.namespaced { namespace } else { "" };
        self.objects
            .get(&(kind.plural, ns.to_string(), name.to_string()))
    }

    /// Objects of a kind, sorted by namespace and name; `None` means every namespace.
    pub(crate) fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((res, ns, _), _)| {
                *res == kind.plural && (!kind.namespaced || namespace.is_none_or(|n| n == ns))
            })
            .map(|(_, obj)| obj.clone())
            .collect()
    }

    /// Stores a new object: settles its name (or `generateName`), namespace, uid,
    /// creationTimestamp and resourceVersion. `dry_run` answers without storing.
    pub(crate) fn create(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ns = if kind.namespaced {
            namespace.to_string()
        } else {
            String::new()
        };
        let mut name = meta(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(format!(
                    "{} is invalid: metadata.name: Required value: name or generateName is required",
                    kind.kind
                )));
            }
            loop {
                self.generated += 1;
                name = format!("{prefix}{}", suffix(self.generated));
                if self.get(kind, &ns, &name).is_none() {
                    break;
                }
            }
        }
        if self.get(kind, &ns, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        let rv = self.rv + 1;
        let meta = meta_mut(&mut obj)
            .ok_or_else(|| ApiError::bad_request("the body must be an object"))?;
        meta.insert("name".into(), name.clone().into());
        if kind.namespaced {
            meta.insert("namespace".into(), ns.clone().into());
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.remove("deletionTimestamp");
        if kind.generation {
            meta.insert("generation".into(), 1.into());
        }
        if !dry_run {
            self.rv = rv;
            self.objects
                .insert((kind.plural, ns.clone(), name), obj.clone());
            self.record(kind, ns, Change::Added, obj.clone(), None);
        }
        Ok(obj)
    }

    /// Replaces a stored object (which must exist) with `new`, keeping its identity. A write that
    /// changes nothing keeps the old resourceVersion and sends no event.
    pub(crate) fn update(&mut self, kind: &'static Kind, new: Value, dry_run: bool) -> Value {
        let ns = if kind.namespaced {
            meta(&new, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta(&new, "name").to_string();
        let key = (kind.plural, ns.clone(), name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return new;
        };
        let mut new = new;
        if let Some(m) = meta_mut(&mut new) {
            for field in ["uid", "creationTimestamp", "generation"] {
                match old.get("metadata").and_then(|o| o.get(field)) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
        }
        if same(&old, &new) {
            return old;
        }
        let rv = self.rv + 1;
        let spec_changed = old.get("spec") != new.get("spec");
        if let Some(m) = meta_mut(&mut new) {
            m.insert("resourceVersion".into(), rv.to_string().into());
            if kind.generation && spec_changed {
                let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                m.insert("generation".into(), (generation + 1).into());
            }
        }
        if !dry_run {
            self.rv = rv;
            self.objects.insert(key, new.clone());
            self.record(kind, ns, Change::Modified, new.clone(), Some(old));
        }
        new
    }

    /// Removes an object; the answer carries the resourceVersion of the deletion.
    pub(crate) fn remove(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let ns = if kind.namespaced {
            namespace.to_string()
        } else {
            String::new()
        };
        let mut obj = self
            .objects
            .remove(&(kind.plural, ns.clone(), name.to_string()))?;
        self.rv += 1;
        if let Some(m) = meta_mut(&mut obj) {
            m.insert("resourceVersion".into(), self.rv.to_string().into());
        }
        if kind.plural == "pods" {
            self.logs.remove(&(ns.clone(), name.to_string()));
            self.log_seq.send_modify(|n| *n += 1);
        }
        self.record(kind, ns, Change::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn record(
        &mut self,
        kind: &'static Kind,
        namespace: String,
        change: Change,
        object: Value,
        old: Option<Value>,
    ) {
        let record = Record {
            rv: self.rv,
            resource: kind.plural,
            namespace,
            change,
            object,
            old,
        };
        self.watchers.retain(|w| {
            if let Some((ty, obj)) = w.event_for(&record) {
                w.tx.send(WatchMsg::Event(ty, obj.clone())).is_ok()
            } else {
                !w.tx.is_closed()
            }
        });
        self.history.push_back(record);
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        self.changed.notify_one();
    }

    /// Opens a watch. `rv` "" or "0" (or `initial`, for sendInitialEvents) starts with ADDED for
    /// every matching object; a number replays the retained changes after it, or is Gone.
    pub(crate) fn watch(
        &mut self,
        kind: &'static Kind,
        namespace: Option<String>,
        selector: Selector,
        rv: &str,
        initial: bool,
    ) -> Result<WatchStart, ApiError> {
        let watcher_ns = namespace.filter(|_| kind.namespaced);
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            resource: kind.plural,
            namespace: watcher_ns,
            selector,
            tx,
        };
        let mut events = Vec::new();
        if initial || rv.is_empty() || rv == "0" {
            for obj in self.list(kind, watcher.namespace.as_deref()) {
                if watcher.selector.matches(&obj) {
                    events.push(("ADDED", obj));
                }
            }
        } else {
            let from: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if from < self.compacted {
                return Ok(WatchStart::Gone);
            }
            for record in self.history.iter().filter(|r| r.rv > from) {
                if let Some((ty, obj)) = watcher.event_for(record) {
                    events.push((ty, obj.clone()));
                }
            }
        }
        self.watchers.push(watcher);
        Ok(WatchStart::Events(events, rx))
    }

    /// Forgets all history and tells every open watch it is Gone.
    pub(crate) fn expire_watches(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Expire);
        }
    }

    pub(crate) fn drop_watches(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Drop);
        }
    }
}

impl Watcher {
    /// The event this watcher sees for a change: an object leaving the selection is DELETED for
    /// it, one entering is ADDED.
    fn event_for<'a>(&self, r: &'a Record) -> Option<(&'static str, &'a Value)> {
        if r.resource != self.resource
            || self.namespace.as_ref().is_some_and(|ns| *ns != r.namespace)
        {
            return None;
        }
        let now = self.selector.matches(&r.object);
        match r.change {
            Change::Added => now.then_some(("ADDED", &r.object)),
            Change::Deleted => now.then_some(("DELETED", &r.object)),
            Change::Modified => {
                let before = r.old.as_ref().is_some_and(|o| self.selector.matches(o));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", &r.object)),
                    (true, false) => Some(("DELETED", &r.object)),
                    (false, true) => Some(("ADDED", &r.object)),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Five characters of [a-z0-9] for generateName (deterministic, distinct per call).
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
