//! What agentdeck asks the cluster for: a `Sandbox` of agent-sandbox whose pod template comes from
//! the agent's config, and a per-session `Secret` holding the session's env and files. Values of
//! the env never appear in the Sandbox: the pod gets them by `secretKeyRef`.

use super::names::{self, CONTAINER, WORKDIR};
use crate::config::KubernetesConfig;
use crate::runtime::{RuntimeError, SandboxSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The agent-sandbox API version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1alpha1,
    V1beta1,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1alpha1 => "v1alpha1",
            Version::V1beta1 => "v1beta1",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource {
            group: names::GROUP.to_string(),
            version: self.as_str().to_string(),
            api_version: format!("{}/{}", names::GROUP, self.as_str()),
            kind: names::KIND.to_string(),
            plural: names::PLURAL.to_string(),
        }
    }

    /// The merge patch that suspends (`false`) or runs (`true`) a Sandbox.
    pub fn running_patch(self, running: bool) -> Value {
        match self {
            Version::V1alpha1 => json!({"spec": {"replicas": i32::from(running)}}),
            Version::V1beta1 => {
                json!({"spec": {"operatingMode": if running { "Running" } else { "Suspended" }}})
            }
        }
    }

    /// Whether a Sandbox object asks to run (not suspended).
    pub fn wants_running(self, sandbox: &Value) -> bool {
        let spec = &sandbox["spec"];
        match self {
            Version::V1alpha1 => spec["replicas"].as_i64().unwrap_or(1) > 0,
            Version::V1beta1 => spec["operatingMode"].as_str().unwrap_or("Running") == "Running",
        }
    }
}

/// Secret keys: env vars under `env.`, files under `file.N`.
pub(super) fn env_key(name: &str) -> String {
    format!("env.{name}")
}

pub(super) fn file_key(index: usize) -> String {
    format!("file.{index}")
}

/// A relative path inside the working folder, refusing anything that could escape it.
pub(super) fn safe_path(path: &str) -> Result<&str, RuntimeError> {
    let p = std::path::Path::new(path);
    let ok = !path.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(path)
    } else {
        Err(RuntimeError::Failed(format!(
            "refusing sandbox file path {path:?}: it must stay inside the working folder"
        )))
    }
}

pub fn labels(spec: &SandboxSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::LABEL_MANAGED.to_string(),
            names::MANAGED_BY.to_string(),
        ),
        (
            names::LABEL_SESSION.to_string(),
            spec.session_id.to_string(),
        ),
        (
            names::LABEL_AGENT.to_string(),
            names::label_value(&spec.agent.id),
        ),
        (
            names::LABEL_TEAM.to_string(),
            names::label_value(&spec.team),
        ),
    ])
}

/// The per-session Secret.
pub fn secret(spec: &SandboxSpec, namespace: &str, sandbox: &str) -> Result<Secret, RuntimeError> {
    let mut data = BTreeMap::new();
    for (name, value) in &spec.env {
        data.insert(env_key(name), ByteString(value.clone().into_bytes()));
    }
    for (i, (path, content)) in spec.files.iter().enumerate() {
        safe_path(path)?;
        data.insert(file_key(i), ByteString(content.clone().into_bytes()));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(names::secret_name(sandbox)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(spec)),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    })
}

fn substitute(arg: &str, port: u16) -> String {
    arg.replace("{host}", "0.0.0.0")
        .replace("{port}", &port.to_string())
        .replace("{workdir}", WORKDIR)
}

/// The image `agent` runs in: one is needed on Kubernetes (`doctor` checks it too).
pub fn image_of(agent: &crate::config::AgentSpec) -> Result<&str, RuntimeError> {
    agent
        .image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            RuntimeError::Failed(format!(
                "agent {:?} has no image: set image = \"…\" under [agents.{}] to run it on Kubernetes",
                agent.id, agent.id
            ))
        })
}

/// The container's resources as the agent asks for them.
pub(super) fn resources(agent: &crate::config::AgentSpec) -> Value {
    let r = &agent.resources;
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &r.cpu {
        requests.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &r.memory {
        requests.insert("memory".into(), json!(memory));
    }
    if let Some(cpu) = &r.cpu_limit {
        limits.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &r.memory_limit {
        limits.insert("memory".into(), json!(memory));
    }
    json!({"requests": requests, "limits": limits})
}

/// The environment every sandbox's container gets besides its own (not secret).
pub(super) fn fixed_env() -> Vec<(&'static str, String)> {
    let mut env = vec![("HOME", format!("{WORKDIR}/home"))];
    env.extend(
        crate::runtime::OPENCODE_SWITCHES
            .iter()
            .map(|(k, v)| (*k, v.to_string())),
    );
    env
}

/// The Sandbox object for `spec` in the given API version.
pub fn sandbox(
    spec: &SandboxSpec,
    config: &KubernetesConfig,
    version: Version,
    namespace: &str,
    name: &str,
) -> Result<DynamicObject, RuntimeError> {
    let agent = &spec.agent;
    let image = image_of(agent)?;
    let port = config.harness_port;
    let secret = names::secret_name(name);

    let mut env: Vec<Value> = spec
        .env
        .keys()
        .map(|k| {
            json!({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": env_key(k)}}})
        })
        .collect();
    let session = [("AGENTDECK_SESSION_ID", spec.session_id.to_string())];
    for (k, v) in session.into_iter().chain(fixed_env()) {
        env.push(json!({"name": k, "value": v}));
    }

    let mut mounts = vec![json!({"name": "workspace", "mountPath": WORKDIR})];
    for (i, path) in spec.files.keys().enumerate() {
        let path = safe_path(path)?;
        mounts.push(json!({
            "name": "files", "mountPath": format!("{WORKDIR}/{path}"),
            "subPath": file_key(i), "readOnly": true
        }));
    }

    let mut container = json!({
        "name": CONTAINER,
        "image": image,
        "workingDir": WORKDIR,
        "ports": [{"name": "harness", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": resources(agent),
        // The harness asks for its password on every path, health included, and the password
        // must not be written into the Sandbox: ready means it listens; the core then checks
        // its health with the password.
        "readinessProbe": {
            "tcpSocket": {"port": port},
            "periodSeconds": 1,
            "failureThreshold": 3
        },
        "volumeMounts": mounts,
    });
    if !agent.command.is_empty() {
        container["command"] = json!(
            agent
                .command
                .iter()
                .map(|a| substitute(a, port))
                .collect::<Vec<_>>()
        );
    }

    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "containers": [container],
        "volumes": [
            {"name": "workspace", "emptyDir": {}},
            {"name": "files", "secret": {"secretName": secret}}
        ]
    });
    if let Some(sa) = &config.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }

    let labels = labels(spec);
    let mut sandbox_spec = json!({
        "podTemplate": {
            "metadata": {"labels": labels, "annotations": {"agentdeck.dev/model": agent.model}},
            "spec": pod_spec
        }
    });
    match version {
        Version::V1alpha1 => sandbox_spec["replicas"] = json!(1),
        Version::V1beta1 => {
            sandbox_spec["operatingMode"] = json!("Running");
            sandbox_spec["service"] = json!(true);
        }
    }
    let mut object = DynamicObject::new(name, &version.api_resource()).within(namespace);
    object.metadata.labels = Some(labels);
    object.data = json!({"spec": sandbox_spec});
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentSpec, EndpointMode, HarnessKind, Resources, SandboxApiVersion};
    use std::time::Duration;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            session_id: uuid::Uuid::now_v7(),
            team: "Platform".into(),
            agent: AgentSpec {
                id: "coder".into(),
                name: "Coder".into(),
                harness: HarnessKind::Opencode,
                model: "litellm/mock-gpt".into(),
                system_prompt: None,
                image: Some("ghcr.io/x/agent:1".into()),
                resources: Resources {
                    cpu: Some("500m".into()),
                    memory: Some("1Gi".into()),
                    cpu_limit: None,
                    memory_limit: Some("2Gi".into()),
                },
                command: vec![
                    "opencode".into(),
                    "serve".into(),
                    "--hostname".into(),
                    "{host}".into(),
                    "--port".into(),
                    "{port}".into(),
                ],
                env: BTreeMap::new(),
                idle_timeout: Duration::from_secs(60),
                permission: Default::default(),
                budget: None,
                warm: 0,
            },
            env: BTreeMap::from([("GITHUB_TOKEN".to_string(), "ghp_supersecret".to_string())]),
            files: BTreeMap::from([("opencode.json".to_string(), "{\"model\":\"x\"}".to_string())]),
        }
    }

    fn config() -> KubernetesConfig {
        KubernetesConfig {
            context: None,
            namespace: "agents".into(),
            team_namespaces: BTreeMap::new(),
            api_version: SandboxApiVersion::Auto,
            endpoint: EndpointMode::Auto,
            harness_port: 4096,
            service_account: Some("sandbox".into()),
            bootstrap: crate::config::BootstrapBinary::Image(crate::config::AGENTDECK_IMAGE.into()),
        }
    }

    #[test]
    fn secrets_go_by_reference_only() -> Result<(), RuntimeError> {
        let s = spec();
        let obj = sandbox(&s, &config(), Version::V1alpha1, "agents", "ad-x")?;
        let text = serde_json::to_string(&obj).unwrap_or_default();
        assert!(!text.contains("ghp_supersecret"), "{text}");
        let c = &obj.data["spec"]["podTemplate"]["spec"]["containers"][0];
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"]["key"],
            "env.GITHUB_TOKEN"
        );
        assert_eq!(
            c["command"],
            json!([
                "opencode",
                "serve",
                "--hostname",
                "0.0.0.0",
                "--port",
                "4096"
            ])
        );
        assert_eq!(c["resources"]["limits"]["memory"], "2Gi");
        // opencode fetches and installs nothing at start or on a first prompt (a sandbox's
        // egress may be closed, and each would wait for its timeout).
        let env_value = |name: &str| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        for name in [
            "OPENCODE_DISABLE_MODELS_FETCH",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS",
            "OPENCODE_DISABLE_LSP_DOWNLOAD",
        ] {
            assert_eq!(env_value(name), Some(json!("1")), "{name}");
        }
        // Ready once it listens: the harness wants a password on every path, and that
        // password never goes into the Sandbox (no httpGet with an Authorization header).
        assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], 4096);
        assert!(c["readinessProbe"].get("httpGet").is_none());
        assert_eq!(
            c["volumeMounts"][1]["mountPath"],
            "/workspace/opencode.json"
        );
        assert_eq!(obj.data["spec"]["replicas"], 1);
        assert_eq!(
            obj.data["spec"]["podTemplate"]["metadata"]["labels"]["agentdeck.dev/team"],
            "Platform"
        );
        let secret = secret(&s, "agents", "ad-x")?;
        assert_eq!(
            secret.data.unwrap_or_default()["env.GITHUB_TOKEN"].0,
            b"ghp_supersecret"
        );
        Ok(())
    }

    #[test]
    fn versions_differ_in_how_they_suspend() -> Result<(), RuntimeError> {
        let obj = sandbox(&spec(), &config(), Version::V1beta1, "agents", "ad-x")?;
        assert_eq!(obj.data["spec"]["operatingMode"], "Running");
        assert!(obj.data["spec"].get("replicas").is_none());
        assert!(Version::V1beta1.wants_running(&obj.data));
        assert!(!Version::V1alpha1.wants_running(&json!({"spec": {"replicas": 0}})));
        assert_eq!(
            Version::V1beta1.running_patch(false),
            json!({"spec": {"operatingMode": "Suspended"}})
        );
        Ok(())
    }

    #[test]
    fn missing_image_and_escaping_files_are_refused() {
        let mut s = spec();
        s.agent.image = None;
        let err = sandbox(&s, &config(), Version::V1alpha1, "a", "b").unwrap_err();
        assert!(err.to_string().contains("has no image"));
        let mut s = spec();
        s.files.insert("../etc/passwd".into(), "x".into());
        assert!(secret(&s, "a", "b").is_err());
    }
}
