//! Agents: as configured ([`AgentSpec`], what a sandbox runs and on which model) and as last
//! seen in configuration ([`AgentRecord`], kept in the store so that every control core and the
//! REST API agree on what exists).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HarnessKind {
    Opencode,
}

impl HarnessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HarnessKind::Opencode => "opencode",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// An agent as configured: what it runs, on which model, in what sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub id: String,
    pub name: String,
    pub harness: HarnessKind,
    pub model: String,
    pub system_prompt: Option<String>,
    pub image: Option<String>,
    pub resources: Resources,
    pub command: Vec<String>,
    /// Environment for this agent's sandboxes (may hold secrets; never shown or stored).
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    #[serde(
        serialize_with = "serialize_duration",
        deserialize_with = "deserialize_duration"
    )]
    pub idle_timeout: Duration,
    /// What the agent may do without asking, per tool (`bash`, `edit`, `webfetch` …): tools
    /// not listed are allowed, as they always were.
    pub permission: BTreeMap<String, ToolRule>,
    /// What one session of it may spend (USD), when limited: at 80% the session is flagged, at
    /// 100% it takes no new turn until an operator raises its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// How many sandboxes of this agent are kept started ahead of any session (a warm pool);
    /// 0 starts each session's sandbox when it is created.
    #[serde(default)]
    pub warm: u32,
}

text_enum!(
    /// Whether an agent may use a tool: freely, after a person allows it, or never.
    ToolPolicy, "tool policy" {
        Allow => "allow",
        Ask => "ask",
        Deny => "deny",
    }
);

/// How an agent may use one tool: one policy for every call (`bash = "ask"`), or policies by
/// pattern on what the call is given (`bash = { "*" = "allow", "git push *" = "ask" }`,
/// opencode's object syntax: `*` is any run of characters, `?` one, and the LAST pattern that
/// matches wins, so the catch-all comes first). Patterns keep the order they were written in.
///
/// Written as a string, or as `[{"pattern", "policy"}, …]` in order (a JSON object's order is
/// not kept by every reader); read from either, or from a table (TOML) in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolRule {
    Every(ToolPolicy),
    Patterns(Vec<(String, ToolPolicy)>),
}

impl Serialize for ToolRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self {
            ToolRule::Every(policy) => serializer.serialize_str(policy.as_str()),
            ToolRule::Patterns(rules) => {
                let mut seq = serializer.serialize_seq(Some(rules.len()))?;
                for (pattern, policy) in rules {
                    seq.serialize_element(&PatternRule {
                        pattern: pattern.clone(),
                        policy: *policy,
                    })?;
                }
                seq.end()
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternRule {
    pattern: String,
    policy: ToolPolicy,
}

impl<'de> Deserialize<'de> for ToolRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ToolRule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "allow, ask or deny, or a table of patterns to those (\"*\" = \"allow\", \
                     \"git push *\" = \"ask\")",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ToolRule, E> {
                v.parse().map(ToolRule::Every).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ToolRule, A::Error> {
                let mut rules = Vec::new();
                while let Some((pattern, policy)) = map.next_entry::<String, String>()? {
                    let policy = policy.parse().map_err(serde::de::Error::custom)?;
                    rules.push((pattern, policy));
                }
                ToolRule::patterns(rules).map_err(serde::de::Error::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ToolRule, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<PatternRule>()? {
                    rules.push((rule.pattern, rule.policy));
                }
                ToolRule::patterns(rules).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl ToolRule {
    fn patterns(rules: Vec<(String, ToolPolicy)>) -> Result<ToolRule, String> {
        if rules.is_empty() {
            return Err("a tool's table of patterns is empty: give at least \"*\"".to_string());
        }
        if let Some((pattern, _)) = rules.iter().find(|(p, _)| p.is_empty()) {
            return Err(format!("an empty pattern ({pattern:?}) matches nothing"));
        }
        Ok(ToolRule::Patterns(rules))
    }
}

impl AgentSpec {
    /// What the store keeps of the agent: everything but the values of its env.
    pub fn to_record(&self) -> AgentRecord {
        let mut spec = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = spec.as_object_mut() {
            map.insert(
                "env_keys".to_string(),
                serde_json::json!(self.env.keys().collect::<Vec<_>>()),
            );
        }
        AgentRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            harness: self.harness.as_str().to_string(),
            model: self.model.clone(),
            spec,
            present: true,
            updated_at: chrono::Utc::now(),
        }
    }
}

/// A duration as the configuration writes it ("30m", "90s").
fn deserialize_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// A model's price as the gateway knows it, in USD per token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}
