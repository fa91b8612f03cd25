//! Agents as last seen in configuration, kept in the store so that every control core and the
//! REST API agree on what exists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub harness: String,
    pub model: String,
    /// The whole agent spec as configured (no secret values: env values are not stored).
    pub spec: serde_json::Value,
    /// False once the agent disappeared from the configuration of the last core that synced.
    pub present: bool,
    pub updated_at: DateTime<Utc>,
}
