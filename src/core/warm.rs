//! Warm pools, the core's side: what each agent's pool is (`[agents.X] warm = N`), keeping
//! them (a fleet role: one process at a time), and claiming a warm sandbox for a new session,
//! with what the session hands it (its password, gateway key and environment; see
//! [`crate::bootstrap`]). A session that finds its pool empty starts cold, and its history says
//! which it was.

use super::Core;
use crate::bootstrap::handover::Claim;
use crate::config::AgentSpec;
use crate::model::{NewEvent, env};
use crate::runtime::{SandboxRef, WarmPool};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use uuid::Uuid;

/// How a session's sandbox came to be, for its history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Launch {
    Warm { sandbox: String, took_ms: u64 },
    Cold { why: String },
}

impl Launch {
    pub(crate) fn event(&self) -> NewEvent {
        match self {
            Launch::Warm { sandbox, took_ms } => NewEvent::new(
                "session.launch",
                serde_json::json!({ "launch": "warm", "sandbox": sandbox, "claim_ms": took_ms }),
            ),
            Launch::Cold { why } => NewEvent::new(
                "session.launch",
                serde_json::json!({ "launch": "cold", "why": why }),
            ),
        }
    }
}

impl Core {
    /// The warm pool of `agent`, when it has one.
    pub(crate) async fn warm_pool(&self, agent: &AgentSpec) -> Option<WarmPool> {
        if agent.warm == 0 {
            return None;
        }
        let config = self.config();
        let gateway = config
            .gateway
            .sandbox_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:4000".to_string());
        // Quietly: this is asked every few seconds (the price is cached by the gateway client).
        let price = match self.gateway() {
            Some(g) => g.price(&agent.model).await.ok().flatten(),
            None => None,
        };
        let mut pool_env =
            env::sandbox_env(&self.inner.container_env, &agent.env, &BTreeMap::new());
        // The harness's own key is a stand-in: the bootstrap puts the session's on every call.
        pool_env
            .entry(super::GATEWAY_KEY_ENV.to_string())
            .or_insert_with(|| "sk-agentdeck-no-key".to_string());
        let harness = self.harness().clone();
        let for_files = agent.clone();
        let files: crate::runtime::warm::FilesFor = Arc::new(move |door: &str| {
            harness.sandbox_files(
                &for_files,
                &crate::harness::GatewayAccess {
                    base_url: door.to_string(),
                    key_env: super::GATEWAY_KEY_ENV.to_string(),
                    price,
                },
            )
        });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &agent.command,
            &agent.model,
            &agent.image,
            &pool_env,
            files("{door}"),
            &gateway,
        )
            .hash(&mut hasher);
        Some(WarmPool {
            agent: agent.clone(),
            want: agent.warm as usize,
            env: pool_env,
            files,
            gateway,
            fingerprint: format!("{:016x}", hasher.finish()),
        })
    }

    /// How the agents' warm pools are doing (as this process's runtime knows them), with how
    /// many each agent wants; an agent whose pool has nothing yet is there too.
    pub async fn pool_health(&self) -> Vec<crate::model::PoolHealth> {
        if !self.runtime().keeps_warm_pools() {
            return Vec::new();
        }
        let mut pools = self.runtime().pool_health().await;
        for agent in self.config().agents.values() {
            let label = crate::runtime::kubernetes::names::label_value(&agent.id);
            match pools
                .iter_mut()
                .find(|p| p.agent == agent.id || p.agent == label)
            {
                Some(pool) => {
                    pool.agent = agent.id.clone();
                    pool.want = agent.warm as usize;
                }
                None if agent.warm > 0 => pools.push(crate::model::PoolHealth {
                    agent: agent.id.clone(),
                    want: agent.warm as usize,
                    ..Default::default()
                }),
                None => {}
            }
        }
        pools.sort_by(|a, b| a.agent.cmp(&b.agent));
        pools
    }

    /// Waits until a warm sandbox is claimed (in this process).
    pub(crate) async fn warm_claimed(&self) {
        self.inner.claimed.notified().await;
    }

    /// Keeps every agent's warm pool (and removes the pools of agents that have none now).
    pub(crate) async fn keep_warm_pools(&self) {
        if !self.runtime().keeps_warm_pools() {
            return;
        }
        let mut pools = Vec::new();
        for agent in self.config().agents.values() {
            if let Some(pool) = self.warm_pool(agent).await {
                pools.push(pool);
            }
        }
        if let Err(e) = self.runtime().keep_warm(&pools).await {
            tracing::warn!(error = %e, "cannot keep the warm pools");
        }
    }

    /// A warm sandbox for session `id`, handed its password, gateway key and environment; or
    /// why the session starts cold.
    pub(crate) async fn claim_warm(
        &self,
        id: Uuid,
        team: &str,
        agent: &AgentSpec,
        password: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(SandboxRef, Launch), Launch> {
        if agent.warm > 0 && !self.runtime().keeps_warm_pools() {
            return Err(Launch::Cold {
                why: format!(
                    "the {} runtime keeps no warm pools yet",
                    self.runtime().kind()
                ),
            });
        }
        let Some(pool) = self.warm_pool(agent).await else {
            return Err(Launch::Cold {
                why: "the agent has no warm pool".into(),
            });
        };
        let claim = claim_of(id, password, env);
        let started = std::time::Instant::now();
        match self.runtime().claim_warm(&pool, team, &claim).await {
            Ok(Some(sandbox)) => {
                self.inner.claimed.notify_one();
                let launch = Launch::Warm {
                    sandbox: sandbox.name.clone(),
                    took_ms: started.elapsed().as_millis() as u64,
                };
                Ok((sandbox, launch))
            }
            Ok(None) => Err(Launch::Cold {
                why: "the warm pool had no sandbox ready".into(),
            }),
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "cannot claim a warm sandbox; starting cold");
                Err(Launch::Cold {
                    why: format!("claiming a warm sandbox failed: {e}"),
                })
            }
        }
    }
}

/// What a warm sandbox is handed for session `id`: its harness password, its gateway key (out
/// of its environment: the bootstrap puts it on the harness's model calls) and its environment.
fn claim_of(id: Uuid, password: &str, env: &BTreeMap<String, String>) -> Claim {
    let mut env = env.clone();
    let gateway_key = env.remove(super::GATEWAY_KEY_ENV);
    Claim {
        session: id,
        password: password.to_string(),
        gateway_key,
        env,
    }
}

impl Core {
    /// Hands a session's sandbox taken from a warm pool its claim again when its bootstrap
    /// was started afresh (a new pod); nothing for any other sandbox.
    pub(crate) async fn hand_over_again(
        &self,
        id: Uuid,
        agent: &AgentSpec,
        sandbox: &SandboxRef,
    ) -> Result<(), crate::runtime::RuntimeError> {
        if !self.runtime().keeps_warm_pools() {
            return Ok(());
        }
        let mut session_env = self
            .store()
            .session_env(id)
            .await
            .map_err(|e| crate::runtime::RuntimeError::Transient(e.to_string()))?;
        let Some(password) = session_env.remove(super::HARNESS_PASSWORD_ENV) else {
            return Ok(()); // never started: nothing was handed over before
        };
        let env = env::sandbox_env(&self.inner.container_env, &agent.env, &session_env);
        let claim = claim_of(id, &password, &env);
        if self.runtime().reclaim(sandbox, &claim).await? {
            tracing::info!(session = %id, sandbox = %sandbox.name, "the warm sandbox's new pod was handed its claim again");
        }
        Ok(())
    }
}
