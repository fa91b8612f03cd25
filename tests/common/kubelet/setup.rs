//! What a container needs before it can start: its volumes as folders, its environment (read
//! from the real Secrets and ConfigMaps), and the translation of in-container paths to host paths
//! (see the module's top for the rule).

use super::{PodEntry, Shared};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, Secret,
    ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Why a container cannot start yet.
pub(crate) enum SetupError {
    /// `CreateContainerConfigError`: a Secret, ConfigMap or key is missing (tried again).
    Config(String),
    /// `CreateContainerError`: it cannot run here at all (no command …).
    Container(String),
}

/// The pod's volumes on the host: name → folder (or file/folder of a hostPath).
pub(crate) struct Volumes {
    pub host: HashMap<String, HostVolume>,
}

pub(crate) struct HostVolume {
    pub path: PathBuf,
    /// Missing subPath folders may be made in it (emptyDir, hostPath).
    pub writable: bool,
}

/// A process to start, every path already on the host.
#[derive(Clone)]
pub(crate) struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// (mountPath, host path), longest first: for an `exec` probe's command.
    pub mounts: Vec<(String, PathBuf)>,
    /// What `0.0.0.0` becomes (none with hostNetwork).
    pub any_address: Option<String>,
}

impl Launch {
    /// A word of a command run like this container (an `exec` probe): expanded and translated.
    pub fn word(&self, word: &str) -> String {
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        translate(&expand(word, &env), &self.mounts, self.any_address.clone())
    }
}

/// Where a Secret or ConfigMap lookup ended.
enum Lookup {
    Found(BTreeMap<String, Vec<u8>>),
    /// The API's 404 message (`secrets "x" not found`).
    NotFound(String),
}

#[derive(Clone, Copy)]
enum Source {
    Secret,
    ConfigMap,
}

async fn lookup(
    shared: &Shared,
    namespace: &str,
    source: Source,
    name: &str,
) -> Result<Lookup, String> {
    let client = shared.client.clone();
    let result = match source {
        Source::Secret => Api::<Secret>::namespaced(client, namespace)
            .get(name)
            .await
            .map(|s| {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            }),
        Source::ConfigMap => Api::<ConfigMap>::namespaced(client, namespace)
            .get(name)
            .await
            .map(|c| {
                let mut data: BTreeMap<String, Vec<u8>> = c
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    c.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            }),
    };
    match result {
        Ok(data) => Ok(Lookup::Found(data)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Lookup::NotFound(s.message)),
        Err(e) => Err(e.to_string()),
    }
}

fn kind_name(source: Source) -> &'static str {
    match source {
        Source::Secret => "Secret",
        Source::ConfigMap => "ConfigMap",
    }
}

// ---------------------------------------------------------------------------------------------
// Volumes

/// Makes every volume of the pod; the error is the FailedMount message.
pub(crate) async fn volumes(
    shared: &Shared,
    entry: &PodEntry,
    pod: &Pod,
) -> Result<Volumes, String> {
    let mut host = HashMap::new();
    let spec_volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in &spec_volumes {
        let (path, writable) = volume_on_host(shared, entry, pod, volume)
            .await
            .map_err(|e| {
                format!(
                    "MountVolume.SetUp failed for volume \"{}\" : {e}",
                    volume.name
                )
            })?;
        host.insert(volume.name.clone(), HostVolume { path, writable });
    }
    Ok(Volumes { host })
}

/// Where some of a volume's files come from.
enum FileSource<'a> {
    /// A Secret or ConfigMap: its name, the keys to take (all when none), whether it may be missing.
    Object(Source, String, Option<&'a [KeyToPath]>, Option<bool>),
    Downward(&'a [DownwardAPIVolumeFile]),
    Token(&'a ServiceAccountTokenProjection),
}

async fn volume_on_host(
    shared: &Shared,
    entry: &PodEntry,
    pod: &Pod,
    volume: &Volume,
) -> Result<(PathBuf, bool), String> {
    let dir = entry.dir.join("volumes").join(&volume.name);
    let ns = entry.namespace.as_str();
    if volume.empty_dir.is_some() {
        mkdir(&dir)?;
        return Ok((dir, true));
    }
    if let Some(hp) = &volume.host_path {
        let path = PathBuf::from(&hp.path);
        if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
            mkdir(&path)?;
        }
        return Ok((path, true));
    }
    // What the volume's files come from: one source for secret, configMap and downwardAPI
    // volumes, several for a projected one.
    let (default_mode, sources): (i32, Vec<FileSource>) = if let Some(s) = &volume.secret {
        let object = FileSource::Object(
            Source::Secret,
            s.secret_name.clone().unwrap_or_default(),
            s.items.as_deref(),
            s.optional,
        );
        (s.default_mode.unwrap_or(0o644), vec![object])
    } else if let Some(c) = &volume.config_map {
        let object = FileSource::Object(
            Source::ConfigMap,
            c.name.clone(),
            c.items.as_deref(),
            c.optional,
        );
        (c.default_mode.unwrap_or(0o644), vec![object])
    } else if let Some(d) = &volume.downward_api {
        let items = d.items.as_deref().unwrap_or_default();
        (
            d.default_mode.unwrap_or(0o644),
            vec![FileSource::Downward(items)],
        )
    } else if let Some(p) = &volume.projected {
        let mut sources = Vec::new();
        for source in p.sources.as_deref().unwrap_or_default() {
            sources.push(if let Some(s) = &source.secret {
                FileSource::Object(
                    Source::Secret,
                    s.name.clone(),
                    s.items.as_deref(),
                    s.optional,
                )
            } else if let Some(c) = &source.config_map {
                FileSource::Object(
                    Source::ConfigMap,
                    c.name.clone(),
                    c.items.as_deref(),
                    c.optional,
                )
            } else if let Some(d) = &source.downward_api {
                FileSource::Downward(d.items.as_deref().unwrap_or_default())
            } else if let Some(t) = &source.service_account_token {
                FileSource::Token(t)
            } else {
                return Err("a projected source the test kubelet does not model".to_string());
            });
        }
        (p.default_mode.unwrap_or(0o644), sources)
    } else {
        return Err(format!(
            "the test kubelet models emptyDir, hostPath, secret, configMap, downwardAPI and \
             projected volumes only, not {}",
            serde_json::to_value(volume)
                .ok()
                .and_then(|v| v
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned()))
                .unwrap_or_else(|| "this one".to_string())
        ));
    };
    let mut files: Vec<(String, Vec<u8>, i32)> = Vec::new();
    for source in sources {
        match source {
            FileSource::Object(kind, name, items, optional) => {
                project(shared, ns, kind, &name, items, optional, &mut files).await?
            }
            FileSource::Downward(items) => {
                for item in items {
                    files.push((
                        item.path.clone(),
                        downward(entry, pod, item.field_ref.as_ref())?.into_bytes(),
                        item.mode.unwrap_or(-1),
                    ));
                }
            }
            FileSource::Token(t) => {
                let token = service_account_token(
                    shared,
                    entry,
                    pod,
                    t.audience.as_deref(),
                    t.expiration_seconds,
                )
                .await?;
                files.push((t.path.clone(), token.into_bytes(), -1));
            }
        }
    }
    // Written afresh: a folder per volume, one file per key.
    let _ = std::fs::remove_dir_all(&dir);
    mkdir(&dir)?;
    for (path, content, mode) in files {
        if Path::new(&path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("refusing the path {path:?} in a volume"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            mkdir(parent)?;
        }
        std::fs::write(&file, content).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mode = if mode < 0 { default_mode } else { mode };
        std::fs::set_permissions(
            &file,
            std::fs::Permissions::from_mode((mode as u32 & 0o777) | 0o400),
        )
        .map_err(|e| format!("chmod {}: {e}", file.display()))?;
    }
    Ok((dir, false))
}

/// The files of a Secret or ConfigMap: every key, or the `items`.
async fn project(
    shared: &Shared,
    namespace: &str,
    source: Source,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    files: &mut Vec<(String, Vec<u8>, i32)>,
) -> Result<(), String> {
    let data = match lookup(shared, namespace, source, name).await? {
        Lookup::Found(data) => data,
        Lookup::NotFound(_) if optional == Some(true) => return Ok(()),
        Lookup::NotFound(message) => return Err(message),
    };
    match items {
        None => files.extend(data.into_iter().map(|(k, v)| (k, v, -1))),
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => files.push((item.path.clone(), v.clone(), item.mode.unwrap_or(-1))),
                    None if optional == Some(true) => {}
                    None => {
                        return Err(match source {
                            Source::Secret => {
                                format!("secret references non-existent secret key: {}", item.key)
                            }
                            Source::ConfigMap => {
                                format!(
                                    "configmap references non-existent config key: {}",
                                    item.key
                                )
                            }
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

async fn service_account_token(
    shared: &Shared,
    entry: &PodEntry,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let mut spec = json!({
        "expirationSeconds": expiration.unwrap_or(3607),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": entry.name, "uid": entry.uid},
    });
    if let Some(audience) = audience {
        spec["audiences"] = json!([audience]);
    }
    let request =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let api: Api<ServiceAccount> = Api::namespaced(shared.client.clone(), &entry.namespace);
    let answer: serde_json::Value = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => s.message,
            e => e.to_string(),
        })?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "a TokenRequest without a token".to_string())
}

/// A `fieldRef` value.
fn downward(
    entry: &PodEntry,
    pod: &Pod,
    field: Option<&ObjectFieldSelector>,
) -> Result<String, String> {
    let Some(field) = field else {
        return Err("resourceFieldRef is not modelled by the test kubelet".to_string());
    };
    let path = field.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key).cloned()).unwrap_or_default()
    };
    let key_of = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => entry.name.clone(),
        "metadata.namespace" => entry.namespace.clone(),
        "metadata.uid" => entry.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        "status.podIP" | "status.podIPs" => entry.ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                &meta.labels
            } else {
                &meta.annotations
            };
            map.as_ref()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        }
        _ => {
            if let Some(key) = key_of("metadata.labels['") {
                from_map(meta.labels.as_ref(), &key)
            } else if let Some(key) = key_of("metadata.annotations['") {
                from_map(meta.annotations.as_ref(), &key)
            } else {
                return Err(format!(
                    "the test kubelet does not model the fieldRef {path}"
                ));
            }
        }
    })
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The container

/// Everything a container's process needs, or why it cannot start.
pub(crate) async fn launch(
    shared: &Shared,
    entry: &PodEntry,
    pod: &Pod,
    container: &Container,
    volumes: &Volumes,
) -> Result<Launch, SetupError> {
    let command = container.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(SetupError::Container(format!(
            "the test kubelet runs a container's command and args as a local process, and \
             container {:?} has no command (its image's entrypoint is not known here)",
            container.name
        )));
    }
    let env = environment(shared, entry, pod, container).await?;
    let lookup_env = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mounts = mounts(entry, container, volumes, &lookup_env).map_err(SetupError::Container)?;
    let rewrite = |value: &str| translate(value, &mounts, ip_rewrite(entry));
    let mut words: Vec<String> = command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|w| rewrite(&expand(w, &lookup_env)))
        .collect();
    let program = words.remove(0);
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| {
            let v = rewrite(&v);
            (k, v)
        })
        .collect();
    let cwd = match container.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(dir) => match on_host(dir, &mounts) {
            Some(host) => PathBuf::from(host),
            None => entry.dir.join("rootfs").join(dir.trim_start_matches('/')),
        },
        None => entry.dir.join("rootfs"),
    };
    mkdir(&cwd).map_err(SetupError::Container)?;
    Ok(Launch {
        program,
        args: words,
        env,
        cwd,
        mounts,
        any_address: ip_rewrite(entry),
    })
}

fn ip_rewrite(entry: &PodEntry) -> Option<String> {
    (!entry.host_network).then(|| entry.ip.to_string())
}

/// The container's environment, in order (a later name wins): PATH, HOSTNAME, envFrom, env.
async fn environment(
    shared: &Shared,
    entry: &PodEntry,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, SetupError> {
    let ns = entry.namespace.as_str();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".to_string(), shared.path_env.clone()),
        ("HOSTNAME".to_string(), entry.name.clone()),
    ];
    let failed = |e: String| SetupError::Config(e);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, name, optional) = if let Some(s) = &from.secret_ref {
            (Source::Secret, s.name.clone(), s.optional)
        } else if let Some(c) = &from.config_map_ref {
            (Source::ConfigMap, c.name.clone(), c.optional)
        } else {
            continue;
        };
        match lookup(shared, ns, source, &name).await.map_err(failed)? {
            Lookup::Found(data) => {
                for (k, v) in data {
                    env.push((
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    ));
                }
            }
            Lookup::NotFound(_) if optional == Some(true) => {}
            Lookup::NotFound(message) => return Err(SetupError::Config(message)),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            let keyed = if let Some(s) = &from.secret_key_ref {
                Some((Source::Secret, &s.name, &s.key, s.optional))
            } else {
                from.config_map_key_ref
                    .as_ref()
                    .map(|c| (Source::ConfigMap, &c.name, &c.key, c.optional))
            };
            if let Some((source, name, key, optional)) = keyed {
                match lookup(shared, ns, source, name).await.map_err(failed)? {
                    Lookup::Found(data) => match data.get(key.as_str()) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional == Some(true) => continue,
                        None => {
                            return Err(SetupError::Config(format!(
                                "couldn't find key {key} in {} {ns}/{name}",
                                kind_name(source)
                            )));
                        }
                    },
                    Lookup::NotFound(_) if optional == Some(true) => continue,
                    Lookup::NotFound(message) => return Err(SetupError::Config(message)),
                }
            } else if from.field_ref.is_some() {
                downward(entry, pod, from.field_ref.as_ref()).map_err(SetupError::Config)?
            } else {
                return Err(SetupError::Config(format!(
                    "env {}: resourceFieldRef is not modelled by the test kubelet",
                    var.name
                )));
            }
        } else {
            let so_far = |name: &str| {
                env.iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            expand(var.value.as_deref().unwrap_or_default(), &so_far)
        };
        env.push((var.name.clone(), value));
    }
    // One value per name, the last one, in first-seen order.
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

/// `$(VAR)` replaced by VAR's value when it has one (left as is otherwise), `$$` is `$`: the
/// expansion Kubernetes applies to env values, command and args.
pub(crate) fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match vars(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's mounts: (mountPath, host path), longest mountPath first. Nested mounts are
/// made visible in their outer volume's folder by a symlink.
fn mounts(
    entry: &PodEntry,
    container: &Container,
    volumes: &Volumes,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes.host.get(&mount.name).ok_or_else(|| {
            format!(
                "volumeMount {:?} names no volume of pod {}",
                mount.name, entry.name
            )
        })?;
        let sub = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, env)),
            _ => None,
        };
        let host = match sub {
            Some(sub) => {
                if Path::new(&sub)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!("refusing the subPath {sub:?}"));
                }
                let host = volume.path.join(&sub);
                if !host.exists() && volume.writable {
                    mkdir(&host)?;
                }
                host
            }
            None => volume.path.clone(),
        };
        let path = mount.mount_path.trim_end_matches('/').to_string();
        if path.is_empty() {
            return Err("a volumeMount at / cannot be translated".to_string());
        }
        out.push((path, host));
    }
    out.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    // A mount inside another one: a symlink at its place in the outer volume's folder.
    for (i, (path, host)) in out.iter().enumerate() {
        let outer = out[i + 1..]
            .iter()
            .find(|(outer, _)| path.starts_with(&format!("{outer}/")));
        if let Some((outer_path, outer_host)) = outer {
            let link = outer_host.join(&path[outer_path.len() + 1..]);
            if let Some(parent) = link.parent() {
                mkdir(parent)?;
            }
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.file_type().is_symlink() => {
                    let _ = std::fs::remove_file(&link);
                }
                Ok(_) => continue,
                Err(_) => {}
            }
            std::os::unix::fs::symlink(host, &link)
                .map_err(|e| format!("linking {} to {}: {e}", link.display(), host.display()))?;
        }
    }
    Ok(out)
}

/// The path rule (a value equal to a mountPath, or starting with it and `/`, goes to the host
/// path; the longest mountPath wins), then `0.0.0.0` as a whole word becomes the pod IP.
pub(crate) fn translate(value: &str, mounts: &[(String, PathBuf)], ip: Option<String>) -> String {
    let out = on_host(value, mounts).unwrap_or_else(|| value.to_string());
    match ip {
        Some(ip) => replace_any_address(&out, &ip),
        None => out,
    }
}

/// The host path of an in-container path under a mount (the longest mountPath wins).
fn on_host(value: &str, mounts: &[(String, PathBuf)]) -> Option<String> {
    mounts.iter().find_map(|(path, host)| {
        let rest = value.strip_prefix(path.as_str())?;
        (rest.is_empty() || rest.starts_with('/'))
            .then(|| format!("{}{rest}", host.to_string_lossy()))
    })
}

fn replace_any_address(value: &str, ip: &str) -> String {
    const ANY: &str = "0.0.0.0";
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(found) = value[from..].find(ANY) {
        let at = from + found;
        let end = at + ANY.len();
        let joined = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_digit() || *b == b'.');
        if !joined(at.checked_sub(1).and_then(|i| bytes.get(i))) && !joined(bytes.get(end)) {
            out.push_str(&value[last..at]);
            out.push_str(ip);
            last = end;
        }
        from = end;
    }
    out.push_str(&value[last..]);
    out
}

/// SIGKILLs process groups an earlier kubelet on this root left running (their pid files, when
/// the process still works in a folder of this root).
pub(crate) fn kill_leftovers(root: &Path) {
    for uid in super::pod_dirs(root) {
        let dir = root.join("pods").join(uid).join("containers");
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let pid: Option<i32> = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                let ours = std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(root));
                if ours {
                    tracing::info!(pid, "killing a process an earlier kubelet left running");
                    super::container::signal_group(pid as u32, libc::SIGKILL);
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}
