//! Bearer tokens, each mapped to a team. A caller sees and touches only its team's sessions;
//! another team's session does not exist for it (404). With no tokens configured, auth is off,
//! which `serve` allows only on a loopback address.

use super::AppState;
use super::error::ApiError;
use crate::config::ApiToken;
use crate::model::Session;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The team that may be seen by every token mapped to it.
pub const ALL_TEAMS: &str = "*";

/// Who is calling: the team whose sessions it may see (`None`: every team), who holds the
/// token, and whether it may act at all.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    team: Option<String>,
    name: Option<String>,
    read_only: bool,
}

impl Caller {
    /// Auth is off: every team, acting.
    pub fn anyone() -> Caller {
        Caller::default()
    }

    pub fn may_see(&self, session: &Session) -> bool {
        self.team.as_ref().is_none_or(|team| session.team == *team)
    }

    /// The teams a listing is limited to (`None`: all).
    pub fn teams(&self) -> Option<Vec<String>> {
        self.team.clone().map(|t| vec![t])
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Who acts, for the sessions' history: `api:NAME` (the token's holder), `api:TEAM`, or
    /// `api` with auth off.
    pub fn who(&self) -> String {
        match (&self.name, &self.team) {
            (Some(name), _) => format!("api:{name}"),
            (None, Some(team)) => format!("api:{team}"),
            (None, None) => "api".to_string(),
        }
    }

    /// What the caller is, for `GET /api/whoami`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "team": self.team.as_deref().unwrap_or(ALL_TEAMS),
            "name": self.name,
            "read_only": self.read_only,
            "acts_as": self.who(),
        })
    }

    /// The team a new session goes to, given the one asked for.
    pub fn team_for_new(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.team, asked) {
            (None, asked) => Ok(asked),
            (Some(mine), None) => Ok(Some(mine.clone())),
            (Some(mine), Some(asked)) if asked == *mine => Ok(Some(asked)),
            (Some(_), Some(asked)) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token may not create sessions for team {asked:?}"),
            )),
        }
    }
}

/// Compares without leaking, through timing, how much of a token matched.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn caller_for(tokens: &[ApiToken], header: Option<&str>) -> Result<Caller, ApiError> {
    if tokens.is_empty() {
        return Ok(Caller::anyone());
    }
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "missing bearer token: send Authorization: Bearer <token>",
        ));
    };
    let Some(presented) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    let presented = presented.trim();
    let mut found = None;
    for token in tokens {
        if same(&token.token, presented) {
            found = Some(token);
        }
    }
    match found {
        Some(t) => Ok(Caller {
            team: (t.team != ALL_TEAMS).then(|| t.team.clone()),
            name: t.name.clone(),
            read_only: t.read_only,
        }),
        None => Err(ApiError::unauthorized("unknown token")),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let caller = caller_for(&state.core.config().tokens, header)?;
        // A read-only token reads: every route that acts takes another method than GET, or
        // upgrades the connection (the shell's WebSocket), so none can forget to refuse it.
        let reads = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        ) && !parts.headers.contains_key(axum::http::header::UPGRADE);
        if caller.read_only && !reads {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "read_only",
                format!(
                    "this token is read-only: it may read and never act ({} {} refused)",
                    parts.method,
                    parts.uri.path()
                ),
            ));
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<ApiToken> {
        vec![
            ApiToken {
                token: "aaaaaaaaaaaaaaaa".into(),
                team: "red".into(),
                name: Some("alice".into()),
                read_only: false,
            },
            ApiToken {
                token: "bbbbbbbbbbbbbbbb".into(),
                team: ALL_TEAMS.into(),
                name: None,
                read_only: true,
            },
        ]
    }

    #[test]
    fn tokens_map_to_teams() {
        let anyone = caller_for(&[], None).unwrap_or_default();
        assert_eq!((anyone.teams(), anyone.who()), (None, "api".to_string()));
        let red = caller_for(&tokens(), Some("Bearer aaaaaaaaaaaaaaaa")).unwrap_or_default();
        assert_eq!(red.teams(), Some(vec!["red".to_string()]));
        assert_eq!(red.who(), "api:alice");
        assert!(!red.read_only());
        let all = caller_for(&tokens(), Some("Bearer bbbbbbbbbbbbbbbb")).unwrap_or_default();
        assert_eq!(all.teams(), None);
        assert!(all.read_only());
        assert!(caller_for(&tokens(), Some("Bearer nope")).is_err());
        assert!(caller_for(&tokens(), None).is_err());
        assert!(caller_for(&tokens(), Some("Basic aaaa")).is_err());
    }
}
