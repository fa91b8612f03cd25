//! Session, message and agent routes.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::core::CreateSession;
use crate::model::{
    Answer, Ask, AskKind, Message, PermissionReply, Session, SessionQuery, SessionStatus,
};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A JSON body whose every rejection is a JSON error saying what is wrong.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// Query parameters whose rejection is a JSON error.
pub struct Params<T>(pub T);

/// The path's segments (a session's id, an ask's, an action), with a JSON error when they
/// cannot be read (not UTF-8, say), like every other error of the API.
pub struct Segments<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Segments<T>
where
    Path<T>: axum::extract::FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Segments(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "cannot read the path {}: {}",
                parts.uri.path(),
                e.body_text()
            ))),
        }
    }
}

impl<S, T> axum::extract::FromRequestParts<S> for Params<T>
where
    Query<T>: axum::extract::FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// The session, if the caller may see it; 404 otherwise (another team's session does not
/// exist for the caller).
pub(super) async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Session, ApiError> {
    let teams = caller.teams();
    let session = state.core.find_session(id, teams.as_deref()).await?;
    if !caller.may_see(&session) {
        return Err(crate::core::CoreError::SessionNotFound(session.id).into());
    }
    Ok(session)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    agent_id: Option<String>,
    title: Option<String>,
    initial_prompt: Option<String>,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    team: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    let team = caller.team_for_new(body.team)?;
    let session = state
        .core
        .create_session(CreateSession {
            agent_id: body.agent_id,
            title: body.title,
            initial_prompt: body.initial_prompt,
            env: body.env_vars,
            team,
        })
        .await?;
    let location = format!("/api/sessions/{}", session.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(session),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    team: Option<String>,
    agent: Option<String>,
    /// Comma-separated statuses.
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct SessionPage {
    sessions: Vec<Session>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<Uuid>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(p): Params<ListParams>,
) -> Result<Json<SessionPage>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let statuses = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| s.trim().parse::<SessionStatus>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
    };
    let teams = match (caller.teams(), p.team) {
        (None, asked) => asked.map(|t| vec![t]),
        (Some(mine), None) => Some(mine),
        (Some(mine), Some(asked)) => Some(mine.into_iter().filter(|t| *t == asked).collect()),
    };
    let before = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::bad_request(format!("invalid cursor {c:?}")))?,
        ),
    };
    let sessions = state
        .core
        .list_sessions(&SessionQuery {
            teams,
            agent_id: p.agent,
            statuses,
            before,
            limit: Some(limit + 1),
            ..Default::default()
        })
        .await?;
    let mut sessions = sessions;
    let next_cursor = if sessions.len() as i64 > limit {
        sessions.truncate(limit as usize);
        sessions.last().map(|s| s.id)
    } else {
        None
    };
    Ok(Json(SessionPage {
        sessions,
        next_cursor,
    }))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(visible(&state, &caller, &id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AsksQuery {
    /// `pending`: only what still waits for a person.
    status: Option<String>,
}

fn pending_only(q: &AsksQuery) -> Result<bool, ApiError> {
    match q.status.as_deref() {
        None | Some("") => Ok(false),
        Some("pending") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown status filter {other:?}; use status=pending or leave it out"
        ))),
    }
}

/// A visible session's asks of `kind`, as the query filters them.
async fn asks_of(
    state: &AppState,
    caller: &Caller,
    id: &str,
    q: &AsksQuery,
    kind: AskKind,
) -> Result<Vec<Ask>, ApiError> {
    let session = visible(state, caller, id).await?;
    Ok(state
        .core
        .asks(session.id, Some(kind), pending_only(q)?)
        .await?)
}

/// Gives `answer` to ask `ask` of a session the caller sees, recorded as the caller's.
async fn answer_as_caller(
    state: &AppState,
    caller: &Caller,
    id: &str,
    ask: &str,
    answer: Answer,
) -> Result<Json<Ask>, ApiError> {
    let session = visible(state, caller, id).await?;
    Ok(Json(
        state
            .core
            .answer(session.id, ask, answer, &answerer(caller))
            .await?,
    ))
}

/// Who answers through the API, for the audit trail.
fn answerer(caller: &Caller) -> String {
    caller.who()
}

/// `GET /api/sessions/{id}/permissions`: the agent's permission requests, oldest first, with
/// who answered what and when.
pub async fn permissions(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(q): Params<AsksQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let asks = asks_of(&state, &caller, &id, &q, AskKind::Permission).await?;
    Ok(Json(serde_json::json!({ "permissions": asks })))
}

/// `GET /api/sessions/{id}/questions`: the agent's questions, oldest first.
pub async fn questions(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(q): Params<AsksQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let asks = asks_of(&state, &caller, &id, &q, AskKind::Question).await?;
    Ok(Json(serde_json::json!({ "questions": asks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionBody {
    reply: String,
    message: Option<String>,
}

/// `POST /api/sessions/{id}/permissions/{pid}` `{"reply": "once"|"always"|"reject", "message"?}`.
pub async fn answer_permission(
    State(state): State<AppState>,
    caller: Caller,
    Segments((id, ask)): Segments<(String, String)>,
    Body(body): Body<PermissionBody>,
) -> Result<Json<Ask>, ApiError> {
    let reply = body
        .reply
        .parse::<PermissionReply>()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let answer = Answer::Permission {
        reply,
        message: body.message,
    };
    answer_as_caller(&state, &caller, &id, &ask, answer).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionBody {
    answers: Option<Vec<Vec<String>>>,
    #[serde(default)]
    reject: bool,
}

/// `POST /api/sessions/{id}/questions/{qid}` `{"answers": [["label", …], …]}` or
/// `{"reject": true}`.
pub async fn answer_question(
    State(state): State<AppState>,
    caller: Caller,
    Segments((id, ask)): Segments<(String, String)>,
    Body(body): Body<QuestionBody>,
) -> Result<Json<Ask>, ApiError> {
    let answer = match (body.answers, body.reject) {
        (Some(answers), false) => Answer::Question { answers },
        (None, true) => Answer::RejectQuestion,
        _ => {
            return Err(ApiError::bad_request(
                "give either answers (one list of labels per question) or \"reject\": true",
            ));
        }
    };
    answer_as_caller(&state, &caller, &id, &ask, answer).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    message_seq: i64,
}

/// `POST /api/sessions/{id}/fork` `{"message_seq": N}`: a new session whose conversation is
/// this one's up to message N; 201 with it.
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Body(body): Body<ForkBody>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let session = visible(&state, &caller, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(state.core.fork(session.id, body.message_seq).await?),
    ))
}

/// `GET /api/sessions/{id}/forks`: the sessions forked from this one, newest first.
pub async fn forks(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let forks = state.core.forks(session.id).await?;
    Ok(Json(serde_json::json!({ "forks": forks })))
}

/// `GET /api/sessions/{id}/diagnosis`: everything about the session and what to do.
pub async fn diagnosis(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    Ok(Json(state.core.diagnose(session.id).await?.to_json()))
}

pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let session = visible(&state, &caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state.core.end(session.id).await?),
    ))
}

pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Segments((id, action)): Segments<(String, String)>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let core = &state.core;
    // Check the action before the session so that a typo says so even for a valid id.
    if !matches!(action.as_str(), "restart" | "suspend" | "resume" | "abort") {
        return Err(ApiError::not_found(format!(
            "unknown action {action:?}; use restart, suspend, resume or abort"
        )));
    }
    let session = visible(&state, &caller, &id).await?;
    let session = match action.as_str() {
        "restart" => core.restart(session.id).await?,
        "suspend" => core.suspend(session.id).await?,
        "resume" => core.resume(session.id).await?,
        _ => core.abort(session.id).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(session)))
}

/// `GET /api/sessions/{id}/diff`: what the agent changed, turn by turn
/// (`{"turns": [{"seq", "asked", "files": [{"file", "patch", "additions", "deletions",
/// "status"}]}]}`).
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let turns = state.core.diffs(session.id).await?;
    Ok(Json(serde_json::json!({ "turns": turns })))
}

/// `GET /api/usage`: tokens and cost by team and agent (the caller's teams), and each team's
/// spend this month against its budget.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mine = caller.teams();
    let totals = state.core.usage_totals(mine.as_deref()).await?;
    let mut teams: Vec<String> = totals.iter().map(|t| t.team.clone()).collect();
    teams.extend(mine.unwrap_or_default());
    teams.sort();
    teams.dedup();
    let mut months = Vec::new();
    for team in teams {
        let (spent, budget) = state.core.team_spend(&team).await?;
        months.push(serde_json::json!({
            "team": team, "spent_this_month_usd": spent, "budget_usd": budget,
        }));
    }
    Ok(Json(
        serde_json::json!({ "totals": totals, "teams": months }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    title: String,
}

/// `PATCH /api/sessions/{id}` `{"title": "…"}`: a new title, recorded in the session's history
/// with the token's holder.
pub async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Body(body): Body<RenameBody>,
) -> Result<Json<Session>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let session = state
        .core
        .rename(session.id, &body.title, &caller.who())
        .await?;
    Ok(Json(session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// USD; `null` lifts the session's own budget.
    usd: Option<f64>,
}

/// `POST /api/sessions/{id}/budget` `{"usd": 25.0}`: the session's own budget (an operator
/// raising a budget that stopped it), recorded in its history with the token's holder.
pub async fn budget(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Body(body): Body<BudgetBody>,
) -> Result<Json<Session>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let session = state
        .core
        .set_budget(session.id, body.usd, &caller.who())
        .await?;
    Ok(Json(session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    text: String,
}

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Body(body): Body<SendBody>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let message = state.core.send_message(session.id, &body.text).await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    after_seq: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct MessagePage {
    messages: Vec<Message>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    next_after_seq: Option<i64>,
}

pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(p): Params<MessageParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after = p.after_seq.unwrap_or(0).max(0);
    let messages = state.core.messages(session.id, after, limit).await?;
    let next_after_seq = match messages.last() {
        Some(last) if messages.len() as i64 == limit => Some(last.seq),
        _ => None,
    };
    Ok(Json(MessagePage {
        messages,
        next_after_seq,
    }))
}

#[derive(Serialize)]
pub struct AgentList {
    agents: Vec<crate::config::AgentSpec>,
}

pub async fn agents(State(state): State<AppState>, _caller: Caller) -> Json<AgentList> {
    Json(AgentList {
        agents: state.core.agents(),
    })
}
