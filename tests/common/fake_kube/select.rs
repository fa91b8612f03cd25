//! Label and field selectors, as list and watch take them in `labelSelector` / `fieldSelector`.

use super::objects::{ApiError, Kind};
use serde_json::Value;

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector plus field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Selector {
    pub(crate) fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        kind: &Kind,
    ) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        for part in split_top(labels.unwrap_or("")) {
            selector.labels.push(parse_label_req(&part)?);
        }
        for part in split_top(fields.unwrap_or("")) {
            let req = parse_field_req(&part)?;
            let key = match &req {
                Req::Eq(k, _) | Req::Ne(k, _) => k,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector {part:?}"
                    )));
                }
            };
            if !field_supported(kind, key) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {key}"
                )));
            }
            selector.fields.push(req);
        }
        Ok(selector)
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            Req::Eq(k, v) => label(k) == Some(v.as_str()),
            Req::Ne(k, v) => label(k) != Some(v.as_str()),
            Req::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::Exists(k) => label(k).is_some(),
            Req::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| match req {
                Req::Eq(k, v) => field_value(obj, k) == *v,
                Req::Ne(k, v) => field_value(obj, k) != *v,
                _ => false,
            })
    }
}

/// Splits on commas that are not inside parentheses (`a in (x,y),b`).
fn split_top(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0i32, String::new());
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

fn parse_label_req(part: &str) -> Result<Req, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {part:?}"));
    let key = |k: &str| {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(bad())
        }
    };
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|c| *c > open && c + 1 == part.len())
            .ok_or_else(bad)?;
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return match head.as_slice() {
            [k, "in"] => Ok(Req::In(key(k)?, values)),
            [k, "notin"] => Ok(Req::NotIn(key(k)?, values)),
            _ => Err(bad()),
        };
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Req::NotExists(key(k)?));
    }
    match parse_field_req(part) {
        Ok(Req::Eq(k, v)) => Ok(Req::Eq(key(&k)?, v)),
        Ok(Req::Ne(k, v)) => Ok(Req::Ne(key(&k)?, v)),
        _ => Ok(Req::Exists(key(part)?)),
    }
}

fn parse_field_req(part: &str) -> Result<Req, ApiError> {
    let pair = |op: &str| {
        part.split_once(op)
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
    };
    if let Some((k, v)) = pair("!=") {
        Ok(Req::Ne(k, v))
    } else if let Some((k, v)) = pair("==") {
        Ok(Req::Eq(k, v))
    } else if let Some((k, v)) = pair("=") {
        Ok(Req::Eq(k, v))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid selector requirement {part:?}"
        )))
    }
}

/// The field selectors the real API server supports for these kinds (CRDs: name and namespace).
fn field_supported(kind: &Kind, key: &str) -> bool {
    let extra: &[&str] = match kind.plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "secrets" => &["type"],
        "namespaces" => &["status.phase"],
        _ => &[],
    };
    key == "metadata.name" || key == "metadata.namespace" || extra.contains(&key)
}

/// A dotted field path's value as a string; "" when missing (as the API server compares).
fn field_value(obj: &Value, path: &str) -> String {
    let path = if path == "source" {
        "source.component"
    } else {
        path
    };
    let mut current = obj;
    for part in path.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
