//! Warm pools as the runtimes see them: per agent, how many sandboxes to keep started ahead of
//! any session and what each is started with (nothing of a session's: that is handed over when
//! one claims it, see [`crate::bootstrap`]), and how a pool is doing.

use crate::config::AgentSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The harness's files for a warm sandbox, given where its model calls go (the bootstrap's
/// gateway door, which differs per sandbox on the local runtime).
pub type FilesFor = Arc<dyn Fn(&str) -> BTreeMap<String, String> + Send + Sync>;

/// One agent's warm pool, as the core wants it.
#[derive(Clone)]
pub struct WarmPool {
    pub agent: AgentSpec,
    /// How many unclaimed sandboxes to keep.
    pub want: usize,
    /// Every warm sandbox's environment: the agent's and the runtime's own (no session's).
    pub env: BTreeMap<String, String>,
    pub files: FilesFor,
    /// The LLM gateway's base URL as sandboxes reach it.
    pub gateway: String,
    /// What the pool's sandboxes are made from: one made from anything else (an agent whose
    /// command or model changed) is replaced, never claimed.
    pub fingerprint: String,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("agent", &self.agent.id)
            .field("want", &self.want)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

pub use crate::model::PoolHealth;

/// What a pool's claims found since this process started (each runtime counts its own).
#[derive(Debug, Default, Clone)]
pub struct ClaimStats {
    pub claims: u64,
    pub misses: u64,
    /// How long the last claim took.
    pub last_claim: Option<std::time::Duration>,
}

impl ClaimStats {
    pub fn claimed(&mut self, took: std::time::Duration) {
        self.claims += 1;
        self.last_claim = Some(took);
    }
}

/// Pools' health by agent as a runtime tallies it: each agent's entry, made on first use.
#[derive(Default)]
pub struct Tally(std::collections::HashMap<String, PoolHealth>);

impl Tally {
    pub fn agent(&mut self, agent: &str) -> &mut PoolHealth {
        self.0
            .entry(agent.to_string())
            .or_insert_with(|| PoolHealth {
                agent: agent.to_string(),
                ..Default::default()
            })
    }

    /// Writes what the claims of `agent`'s pool found.
    pub fn claims(&mut self, agent: &str, stats: &ClaimStats) {
        let pool = self.agent(agent);
        pool.claims = stats.claims;
        pool.misses = stats.misses;
        pool.last_claim_ms = stats.last_claim.map(|d| d.as_millis() as u64);
    }

    /// The pools, by agent.
    pub fn into_sorted(self) -> Vec<PoolHealth> {
        let mut out: Vec<PoolHealth> = self.0.into_values().collect();
        out.sort_by(|a, b| a.agent.cmp(&b.agent));
        out
    }
}
