//! What a warm pool is in the cluster, agent-sandbox's own way (its extensions, group
//! `extensions.agents.x-k8s.io`): per agent a `SandboxTemplate` whose pods run
//! `agentdeck bootstrap` in front of the agent's harness, a `SandboxWarmPool` keeping N of them
//! started, and a `Secret` with what every sandbox of the pool gets (the agent's env and the
//! harness's files; nothing of any session). A session takes one with a `SandboxClaim`; what is
//! its own (password, gateway key, env) is handed to the claimed pod afterwards through
//! `pods/exec`, never written into any object.

use super::names::{self, CONTAINER, WORKDIR};
use super::template::{env_key, file_key, fixed_env, image_of, resources, safe_path};
use crate::bootstrap;
use crate::config::{BootstrapBinary, KubernetesConfig};
use crate::runtime::{RuntimeError, WarmPool};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The kinds of agent-sandbox's extensions agentdeck uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Template,
    WarmPool,
    Claim,
}

impl Extension {
    pub fn api_resource(self) -> ApiResource {
        let (kind, plural) = match self {
            Extension::Template => ("SandboxTemplate", "sandboxtemplates"),
            Extension::WarmPool => ("SandboxWarmPool", "sandboxwarmpools"),
            Extension::Claim => ("SandboxClaim", "sandboxclaims"),
        };
        ApiResource {
            group: names::EXTENSIONS_GROUP.to_string(),
            version: names::EXTENSIONS_VERSION.to_string(),
            api_version: format!("{}/{}", names::EXTENSIONS_GROUP, names::EXTENSIONS_VERSION),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// The labels of a pool's objects and of its pods.
pub fn pool_labels(pool: &WarmPool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::LABEL_MANAGED.to_string(),
            names::MANAGED_BY.to_string(),
        ),
        (
            names::LABEL_AGENT.to_string(),
            names::label_value(&pool.agent.id),
        ),
        (
            names::LABEL_POOL.to_string(),
            names::pool_name(&pool.agent.id),
        ),
        (
            names::LABEL_FINGERPRINT.to_string(),
            names::label_value(&pool.fingerprint),
        ),
    ])
}

/// The harness's files of every sandbox of the pool, in the order their Secret keys number
/// them; `{gateway_door}` stands where the bootstrap's gateway door is (chosen in the pod).
fn pool_files(pool: &WarmPool) -> BTreeMap<String, String> {
    (pool.files)(bootstrap::DOOR_MARK)
}

/// The pool's Secret: its env (`env.NAME`) and the harness's files (`file.N`).
pub fn secret(pool: &WarmPool, namespace: &str) -> Result<Secret, RuntimeError> {
    let name = names::pool_name(&pool.agent.id);
    let mut data = BTreeMap::new();
    for (key, value) in &pool.env {
        data.insert(env_key(key), ByteString(value.clone().into_bytes()));
    }
    for (i, (path, content)) in pool_files(pool).iter().enumerate() {
        safe_path(path)?;
        data.insert(file_key(i), ByteString(content.clone().into_bytes()));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(names::secret_name(&name)),
            namespace: Some(namespace.to_string()),
            labels: Some(pool_labels(pool)),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    })
}

/// The agentdeck binary in a pool's pod.
pub fn program(config: &KubernetesConfig) -> String {
    match &config.bootstrap {
        BootstrapBinary::Path(path) => path.clone(),
        BootstrapBinary::Image(_) => format!("{}/agentdeck", names::BIN_DIR),
    }
}

/// The pool's container command: the bootstrap, then the agent's harness.
fn command(pool: &WarmPool, config: &KubernetesConfig) -> Result<Vec<String>, RuntimeError> {
    let agent = &pool.agent;
    if agent.command.first().is_none_or(|c| c.trim().is_empty()) {
        return Err(RuntimeError::Failed(format!(
            "agent {:?} has no command: a warm sandbox starts its harness itself; set \
             command = [...] under [agents.{}]",
            agent.id, agent.id
        )));
    }
    let mut argv = vec![
        program(config),
        "bootstrap".to_string(),
        "--listen".to_string(),
        format!("0.0.0.0:{}", config.harness_port),
        // Loopback, on a port the bootstrap picks: the harness's config is rendered with it.
        "--gateway-listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--gateway".to_string(),
        pool.gateway.clone(),
        "--dir".to_string(),
        names::HANDOVER_DIR.to_string(),
        "--model".to_string(),
        agent.model.clone(),
    ];
    for (i, path) in pool_files(pool).keys().enumerate() {
        argv.push("--render".to_string());
        argv.push(format!("{}/{}", names::POOL_FILES_DIR, file_key(i)));
        argv.push(format!("{WORKDIR}/{}", safe_path(path)?));
    }
    argv.push("--".to_string());
    argv.extend(agent.command.iter().map(|a| {
        a.replace("{host}", bootstrap::HOST_MARK)
            .replace("{port}", bootstrap::PORT_MARK)
            .replace("{workdir}", WORKDIR)
    }));
    Ok(argv)
}

/// The pool's SandboxTemplate.
pub fn template(
    pool: &WarmPool,
    config: &KubernetesConfig,
    namespace: &str,
) -> Result<DynamicObject, RuntimeError> {
    let agent = &pool.agent;
    let image = image_of(agent)?;
    let name = names::pool_name(&agent.id);
    let secret = names::secret_name(&name);
    let port = config.harness_port;

    let mut env: Vec<Value> = pool
        .env
        .keys()
        .map(|k| {
            json!({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": env_key(k)}}})
        })
        .collect();
    for (k, v) in fixed_env() {
        env.push(json!({"name": k, "value": v}));
    }
    let mut mounts = vec![
        json!({"name": "workspace", "mountPath": WORKDIR}),
        json!({"name": "handover", "mountPath": names::HANDOVER_DIR}),
        json!({"name": "pool", "mountPath": names::POOL_FILES_DIR, "readOnly": true}),
    ];
    let mut volumes = vec![
        json!({"name": "workspace", "emptyDir": {}}),
        // The session's claim lives here: memory, never a node's disk.
        json!({"name": "handover", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
        json!({"name": "pool", "secret": {"secretName": secret}}),
    ];
    let mut pod_spec = json!({"automountServiceAccountToken": false});
    if let BootstrapBinary::Image(bootstrap_image) = &config.bootstrap {
        mounts.push(json!({"name": "agentdeck", "mountPath": names::BIN_DIR, "readOnly": true}));
        volumes.push(json!({"name": "agentdeck", "emptyDir": {}}));
        pod_spec["initContainers"] = json!([{
            "name": "agentdeck",
            "image": bootstrap_image,
            "command": ["cp", "/usr/local/bin/agentdeck", format!("{}/agentdeck", names::BIN_DIR)],
            "volumeMounts": [{"name": "agentdeck", "mountPath": names::BIN_DIR}],
        }]);
    }
    pod_spec["containers"] = json!([{
        "name": CONTAINER,
        "image": image,
        "workingDir": WORKDIR,
        "command": command(pool, config)?,
        "ports": [{"name": "harness", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": resources(agent),
        // Ready once the harness is started and warmed up (and from then on): only a ready
        // sandbox is handed to a claim.
        "readinessProbe": {
            "httpGet": {"path": "/agentdeck/warm", "port": port},
            "periodSeconds": 1,
            "failureThreshold": 3
        },
        "volumeMounts": mounts,
    }]);
    pod_spec["volumes"] = json!(volumes);
    if let Some(sa) = &config.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    let labels = pool_labels(pool);
    let mut object =
        DynamicObject::new(&name, &Extension::Template.api_resource()).within(namespace);
    object.metadata.labels = Some(labels.clone());
    object.data = json!({"spec": {
        "podTemplate": {
            "metadata": {"labels": labels, "annotations": {"agentdeck.dev/model": agent.model}},
            "spec": pod_spec
        },
        "service": true,
        // No policy of agent-sandbox's own: it would also point the pods' DNS at public
        // resolvers, and the gateway is a cluster name. Sandboxes made cold have none either.
        "networkPolicyManagement": "Unmanaged",
    }});
    Ok(object)
}

/// The pool's SandboxWarmPool: `want` sandboxes of its template; a changed template replaces
/// the unclaimed ones at once (a stale one is never handed out).
pub fn warm_pool(pool: &WarmPool, namespace: &str) -> DynamicObject {
    let name = names::pool_name(&pool.agent.id);
    let mut object =
        DynamicObject::new(&name, &Extension::WarmPool.api_resource()).within(namespace);
    object.metadata.labels = Some(pool_labels(pool));
    object.data = json!({"spec": {
        "replicas": pool.want,
        "sandboxTemplateRef": {"name": name},
        "updateStrategy": {"type": "Recreate"},
    }});
    object
}

/// A session's SandboxClaim on its agent's pool. Nothing of the session's own rides on it (a
/// claim with `env` skips the pool, and would write the values into the pod spec).
pub fn claim(session: Uuid, team: &str, pool: &WarmPool, namespace: &str) -> DynamicObject {
    let mut object = DynamicObject::new(
        &names::claim_name(session),
        &Extension::Claim.api_resource(),
    )
    .within(namespace);
    object.metadata.labels = Some(session_labels(session, team, &pool.agent.id));
    object.data = json!({"spec": {
        "warmPoolRef": {"name": names::pool_name(&pool.agent.id)},
    }});
    object
}

/// The labels that make a claimed Sandbox a session's (agentdeck's watches select on them).
pub fn session_labels(session: Uuid, team: &str, agent: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::LABEL_MANAGED.to_string(),
            names::MANAGED_BY.to_string(),
        ),
        (names::LABEL_SESSION.to_string(), session.to_string()),
        (names::LABEL_AGENT.to_string(), names::label_value(agent)),
        (names::LABEL_TEAM.to_string(), names::label_value(team)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentSpec, EndpointMode, HarnessKind, SandboxApiVersion};
    use kube::ResourceExt;
    use std::sync::Arc;
    use std::time::Duration;

    fn pool() -> WarmPool {
        WarmPool {
            agent: AgentSpec {
                id: "coder".into(),
                name: "Coder".into(),
                harness: HarnessKind::Opencode,
                model: "litellm/mock-gpt".into(),
                system_prompt: None,
                image: Some("ghcr.io/x/agent:1".into()),
                resources: Default::default(),
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
                warm: 2,
            },
            want: 2,
            env: BTreeMap::from([("TEAM_WIDE".to_string(), "shared-value".to_string())]),
            files: Arc::new(|door: &str| {
                BTreeMap::from([(
                    "opencode.json".to_string(),
                    format!("{{\"baseURL\":\"{door}/v1\"}}"),
                )])
            }),
            gateway: "http://litellm.agentdeck:4000".into(),
            fingerprint: "0123456789abcdef".into(),
        }
    }

    fn config(bootstrap: BootstrapBinary) -> KubernetesConfig {
        KubernetesConfig {
            context: None,
            namespace: "agents".into(),
            team_namespaces: BTreeMap::new(),
            api_version: SandboxApiVersion::Auto,
            endpoint: EndpointMode::Auto,
            harness_port: 4096,
            service_account: None,
            bootstrap,
        }
    }

    #[test]
    fn a_pool_sandbox_runs_the_bootstrap_in_front_of_the_harness() -> Result<(), RuntimeError> {
        let image = config(BootstrapBinary::Image("registry/agentdeck:1".into()));
        let t = template(&pool(), &image, "agents")?;
        let spec = &t.data["spec"];
        assert_eq!(spec["networkPolicyManagement"], "Unmanaged");
        let pod = &spec["podTemplate"]["spec"];
        let c = &pod["containers"][0];
        let argv: Vec<&str> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(argv[..2], ["/agentdeck/bin/agentdeck", "bootstrap"]);
        let dashes = argv.iter().position(|a| *a == "--").unwrap_or(0);
        assert_eq!(
            argv[dashes + 1..],
            [
                "opencode",
                "serve",
                "--hostname",
                "{harness_host}",
                "--port",
                "{harness_port}"
            ]
        );
        let render = argv.iter().position(|a| *a == "--render").unwrap_or(0);
        assert_eq!(
            argv[render + 1..render + 3],
            ["/agentdeck/pool/file.0", "/workspace/opencode.json"]
        );
        assert!(argv.contains(&"0.0.0.0:4096") && argv.contains(&"127.0.0.1:0"));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/agentdeck/warm");
        assert_eq!(pod["initContainers"][0]["image"], "registry/agentdeck:1");
        let handover = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "handover")
            .cloned()
            .unwrap_or_default();
        assert_eq!(handover["emptyDir"]["medium"], "Memory");
        // The pool's env goes by reference; the Secret has the door's mark for the bootstrap.
        assert!(
            !serde_json::to_string(&t)
                .unwrap_or_default()
                .contains("shared-value")
        );
        let secret = secret(&pool(), "agents")?;
        let data = secret.data.unwrap_or_default();
        assert_eq!(data["env.TEAM_WIDE"].0, b"shared-value");
        assert_eq!(data["file.0"].0, b"{\"baseURL\":\"{gateway_door}/v1\"}");

        // With agentdeck in the agent's image: no init container, that path.
        let path = config(BootstrapBinary::Path("/usr/bin/agentdeck".into()));
        let t = template(&pool(), &path, "agents")?;
        let pod = &t.data["spec"]["podTemplate"]["spec"];
        assert!(pod.get("initContainers").is_none());
        assert_eq!(pod["containers"][0]["command"][0], "/usr/bin/agentdeck");
        Ok(())
    }

    #[test]
    fn a_claim_carries_nothing_of_its_session_but_its_name() {
        let session = Uuid::now_v7();
        let c = claim(session, "payments", &pool(), "agents");
        assert_eq!(c.metadata.name, Some(format!("ad-claim-{session}")));
        assert_eq!(
            c.labels().get(names::LABEL_SESSION),
            Some(&session.to_string())
        );
        assert_eq!(
            c.data["spec"],
            json!({"warmPoolRef": {"name": "ad-pool-coder"}})
        );
        let w = warm_pool(&pool(), "agents");
        assert_eq!(w.data["spec"]["replicas"], 2);
        assert_eq!(w.data["spec"]["updateStrategy"]["type"], "Recreate");
    }
}
