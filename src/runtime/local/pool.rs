//! Warm pools on the local runtime: sandboxes started ahead of any session, each running
//! `agentdeck bootstrap` in front of its agent's harness ([`crate::bootstrap`]). A session
//! claims a ready one: the claim (its password, gateway key and environment) is put in the
//! sandbox's folder, readable by its owner only, and the sandbox is the session's once the
//! bootstrap took it. The bootstrap keeps the claim there (mode 0600, like `launch.json`), so
//! that the sandbox started again is the session's at once.

use super::LocalRuntime;
use super::launch::LaunchSpec;
use super::record::PoolMember;
use super::sandbox::Sandbox;
use super::workdir;
use crate::bootstrap::{self, handover};
use crate::runtime::{HealthPhase, PoolHealth, RuntimeError, SandboxRef, SandboxSpec, WarmPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The bootstrap's hand-over folder in a sandbox's folder (left out of its git history).
pub const HANDOVER_DIR: &str = ".agentdeck";
/// How long a bootstrap may take to take a claim before its sandbox is given up.
const TAKE_WITHIN: Duration = Duration::from_secs(5);
/// A failed pool sandbox is replaced no sooner than this after the last one started, so that
/// an agent that cannot start does not restart in a tight loop.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a pool did since this process started.
#[derive(Debug, Default, Clone)]
pub struct PoolStats {
    pub found: crate::runtime::warm::ClaimStats,
    /// When one of its sandboxes last failed.
    pub last_failure: Option<Instant>,
}

/// An unclaimed sandbox of a pool, as it is now.
struct Unclaimed {
    sandbox: Arc<Sandbox>,
    agent: String,
    fingerprint: String,
    phase: HealthPhase,
}

impl LocalRuntime {
    /// The agentdeck binary warm sandboxes run as their bootstrap.
    fn program(&self) -> Result<std::path::PathBuf, RuntimeError> {
        if let Some(program) = &self.program {
            return Ok(program.clone());
        }
        std::env::current_exe().map_err(|e| {
            RuntimeError::Failed(format!(
                "warm pools run this agentdeck binary in each sandbox, and its path is unknown \
                 ({e}); set program = \"/path/to/agentdeck\" under [local]"
            ))
        })
    }

    fn unclaimed(&self) -> Vec<Unclaimed> {
        let sandboxes: Vec<Arc<Sandbox>> = self.map().values().cloned().collect();
        sandboxes
            .into_iter()
            .filter_map(|sandbox| {
                let state = sandbox.state();
                let member = state.pool.as_ref()?;
                if member.claimed_by.is_some() || state.removed || !state.exists {
                    return None;
                }
                let unclaimed = Unclaimed {
                    agent: member.agent.clone(),
                    fingerprint: member.fingerprint.clone(),
                    phase: state.health.phase,
                    sandbox: sandbox.clone(),
                };
                drop(state);
                Some(unclaimed)
            })
            .collect()
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, HashMap<String, PoolStats>> {
        self.pool_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn keep(&self, pools: &[WarmPool]) -> Result<(), RuntimeError> {
        let wanted: HashMap<&str, &WarmPool> =
            pools.iter().map(|p| (p.agent.id.as_str(), p)).collect();
        let mut alive: HashMap<String, usize> = HashMap::new();
        for u in self.unclaimed() {
            let pool = wanted.get(u.agent.as_str());
            let current = pool.is_some_and(|p| p.fingerprint == u.fingerprint);
            let count = alive.entry(u.agent.clone()).or_default();
            let too_many = pool.is_none_or(|p| *count >= p.want);
            let failed = matches!(u.phase, HealthPhase::Failed | HealthPhase::Gone);
            if !current || too_many || failed {
                let why = if !current {
                    "its agent changed (or has no pool any more)"
                } else if failed {
                    "it failed"
                } else {
                    "the pool is smaller now"
                };
                tracing::info!(sandbox = %u.sandbox.id, agent = %u.agent, why, "removing a warm sandbox");
                if failed {
                    self.stats()
                        .entry(u.agent.clone())
                        .or_default()
                        .last_failure = Some(Instant::now());
                }
                if let Err(e) = self.destroy_sandbox(u.sandbox.id).await {
                    tracing::warn!(sandbox = %u.sandbox.id, error = %e, "cannot remove a warm sandbox");
                }
                continue;
            }
            *count += 1;
        }
        for pool in pools {
            let have = alive.get(&pool.agent.id).copied().unwrap_or(0);
            if have >= pool.want {
                continue;
            }
            // A pool starts all it misses at once, unless one of its sandboxes failed lately:
            // an agent that cannot start does not restart in a tight loop.
            let failed_lately = self
                .stats()
                .get(&pool.agent.id)
                .and_then(|s| s.last_failure)
                .is_some_and(|at| at.elapsed() < RETRY_AFTER);
            if failed_lately {
                continue;
            }
            for _ in have..pool.want {
                if let Err(e) = self.start_warm(pool) {
                    tracing::warn!(agent = %pool.agent.id, error = %e, "cannot start a warm sandbox");
                    self.stats()
                        .entry(pool.agent.id.clone())
                        .or_default()
                        .last_failure = Some(Instant::now());
                    break;
                }
            }
        }
        Ok(())
    }

    /// Starts one sandbox of `pool`: the bootstrap, in front of the agent's harness.
    fn start_warm(&self, pool: &WarmPool) -> Result<(), RuntimeError> {
        let agent = &pool.agent;
        if agent.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(super::launch::empty_command(&agent.id));
        }
        let program = self.program()?;
        let id = Uuid::now_v7();
        let sandbox = self
            .entry(id, true)
            .ok_or_else(|| RuntimeError::Transient("the new sandbox vanished".into()))?;
        let door = workdir::free_port(None, &self.ports_in_use(id))?;
        let files = (pool.files)(&format!("http://{}:{door}", super::launch::HOST));
        let mut command = vec![
            program.to_string_lossy().to_string(),
            "bootstrap".to_string(),
            "--listen".to_string(),
            format!("{}:{{port}}", super::launch::HOST),
            "--gateway-listen".to_string(),
            format!("{}:{door}", super::launch::HOST),
            "--gateway".to_string(),
            pool.gateway.clone(),
            "--dir".to_string(),
            format!("{{workdir}}/{HANDOVER_DIR}"),
            "--model".to_string(),
            agent.model.clone(),
            "--".to_string(),
        ];
        command.extend(agent.command.iter().map(|a| {
            a.replace("{host}", bootstrap::HOST_MARK)
                .replace("{port}", bootstrap::PORT_MARK)
        }));
        let launch = LaunchSpec {
            agent_id: agent.id.clone(),
            command,
            env: pool.env.clone(),
        };
        let spec = SandboxSpec {
            session_id: id,
            team: String::new(),
            agent: agent.clone(),
            env: pool.env.clone(),
            files,
        };
        sandbox.state().pool = Some(PoolMember {
            agent: agent.id.clone(),
            fingerprint: pool.fingerprint.clone(),
            claimed_by: None,
            claimed_at: None,
        });
        tracing::info!(sandbox = %id, agent = %agent.id, "starting a warm sandbox");
        self.create(&sandbox, &spec, launch)
    }

    pub(super) async fn claim(
        &self,
        pool: &WarmPool,
        claim: &handover::Claim,
    ) -> Result<Option<SandboxRef>, RuntimeError> {
        let started = Instant::now();
        let mut tried = std::collections::HashSet::new();
        loop {
            // Ready ones first; one still starting whose bootstrap already says it is warm (its
            // monitor has not heard it yet, as on a loaded machine) is as good: the pool's
            // health counts it ready too.
            let mut candidates: Vec<Unclaimed> = self
                .unclaimed()
                .into_iter()
                .filter(|u| {
                    u.agent == pool.agent.id
                        && u.fingerprint == pool.fingerprint
                        && matches!(u.phase, HealthPhase::Ready | HealthPhase::Starting)
                        && !tried.contains(&u.sandbox.id)
                })
                .collect();
            candidates.sort_by_key(|u| u.phase != HealthPhase::Ready);
            let mut pick = None;
            for u in candidates {
                if u.phase == HealthPhase::Ready || self.says_warm(&u.sandbox).await {
                    pick = Some(u.sandbox);
                    break;
                }
            }
            let Some(sandbox) = pick else {
                self.stats()
                    .entry(pool.agent.id.clone())
                    .or_default()
                    .found
                    .misses += 1;
                return Ok(None);
            };
            tried.insert(sandbox.id);
            let _guard = sandbox.op_lock().await;
            {
                let mut state = sandbox.state();
                let free = state.pool.as_ref().is_some_and(|m| m.claimed_by.is_none());
                let up = matches!(
                    state.health.phase,
                    HealthPhase::Ready | HealthPhase::Starting
                );
                if state.removed || !free || !up {
                    continue; // taken (or gone) meanwhile: the next one
                }
                if let Some(member) = state.pool.as_mut() {
                    member.claimed_by = Some(claim.session);
                    member.claimed_at = Some(chrono::Utc::now());
                }
                state.event(false, "Claimed", format!("by session {}", claim.session));
                sandbox.commit(&mut state);
            }
            match hand_over(&sandbox, claim).await {
                Ok(()) => {
                    let took = started.elapsed();
                    self.stats()
                        .entry(pool.agent.id.clone())
                        .or_default()
                        .found
                        .claimed(took);
                    tracing::info!(sandbox = %sandbox.id, session = %claim.session, ?took, "warm sandbox claimed");
                    return Ok(Some(sandbox.reference()));
                }
                Err(why) => {
                    tracing::warn!(sandbox = %sandbox.id, %why, "a warm sandbox did not take its claim; removing it");
                    drop(_guard);
                    if let Err(e) = self.destroy_sandbox(sandbox.id).await {
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot remove it");
                    }
                }
            }
        }
    }

    pub(super) async fn pools(&self) -> Vec<PoolHealth> {
        let mut out = crate::runtime::warm::Tally::default();
        for u in self.unclaimed() {
            // One this process found running (and has not heard answer yet) is asked.
            let phase = match u.phase {
                HealthPhase::Starting if self.says_warm(&u.sandbox).await => HealthPhase::Ready,
                phase => phase,
            };
            let pool = out.agent(&u.agent);
            match phase {
                HealthPhase::Ready => pool.ready += 1,
                HealthPhase::Failed | HealthPhase::Gone => {}
                _ => pool.starting += 1,
            }
        }
        for (agent, stats) in self.stats().iter() {
            out.claims(agent, &stats.found);
        }
        out.into_sorted()
    }
}

impl LocalRuntime {
    /// Whether the bootstrap of a running pool sandbox says it is warm.
    async fn says_warm(&self, sandbox: &Sandbox) -> bool {
        let Some(port) = sandbox.state().running().map(|r| r.port) else {
            return false;
        };
        let url = format!("http://{}:{port}/agentdeck/warm", super::launch::HOST);
        match self.shared.http.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => resp
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["stage"] == "warm"),
            _ => false,
        }
    }
}

/// Puts the claim in the sandbox's folder and waits until its bootstrap took it; gives up at
/// once when the sandbox's process ends first (killed before its claim reached it).
async fn hand_over(sandbox: &Sandbox, claim: &handover::Claim) -> Result<(), String> {
    let dir = sandbox.dir.join(HANDOVER_DIR);
    let generation = sandbox.state().running().map(|r| r.generation);
    handover::put(&dir, &claim.to_bytes())
        .map_err(|e| format!("cannot hand the claim over: {e}"))?;
    let deadline = Instant::now() + TAKE_WITHIN;
    while handover::waiting(&dir) {
        let why = if sandbox.state().running().map(|r| r.generation) != generation {
            Some("its process ended before it took the claim".to_string())
        } else if Instant::now() > deadline {
            Some(format!(
                "its bootstrap did not take the claim within {TAKE_WITHIN:?}"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = std::fs::remove_file(dir.join(handover::CLAIM_FILE));
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
