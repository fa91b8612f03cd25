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

/// Who is calling, as far as sessions go.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off, or the token is mapped to `*`: every team.
    Anyone,
    Team(String),
}

impl Caller {
    pub fn may_see(&self, session: &Session) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Team(team) => session.team == *team,
        }
    }

    /// The teams a listing is limited to (`None`: all).
    pub fn teams(&self) -> Option<Vec<String>> {
        match self {
            Caller::Anyone => None,
            Caller::Team(team) => Some(vec![team.clone()]),
        }
    }

    /// The team a new session goes to, given the one asked for.
    pub fn team_for_new(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        match (self, asked) {
            (Caller::Anyone, asked) => Ok(asked),
            (Caller::Team(mine), None) => Ok(Some(mine.clone())),
            (Caller::Team(mine), Some(asked)) if asked == *mine => Ok(Some(asked)),
            (Caller::Team(_), Some(asked)) => Err(ApiError::new(
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
        return Ok(Caller::Anyone);
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
        Some(t) if t.team == ALL_TEAMS => Ok(Caller::Anyone),
        Some(t) => Ok(Caller::Team(t.team.clone())),
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
        caller_for(&state.core.config().tokens, header)
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
            },
            ApiToken {
                token: "bbbbbbbbbbbbbbbb".into(),
                team: ALL_TEAMS.into(),
            },
        ]
    }

    #[test]
    fn tokens_map_to_teams() {
        assert!(matches!(caller_for(&[], None), Ok(Caller::Anyone)));
        assert!(
            matches!(caller_for(&tokens(), Some("Bearer aaaaaaaaaaaaaaaa")), Ok(Caller::Team(t)) if t == "red")
        );
        assert!(matches!(
            caller_for(&tokens(), Some("Bearer bbbbbbbbbbbbbbbb")),
            Ok(Caller::Anyone)
        ));
        assert!(caller_for(&tokens(), Some("Bearer nope")).is_err());
        assert!(caller_for(&tokens(), None).is_err());
        assert!(caller_for(&tokens(), Some("Basic aaaa")).is_err());
    }
}
