//! `/healthz` and `/metrics` (Prometheus text format), and the request counter behind them.

use super::AppState;
use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Requests served, by method, route and status.
#[derive(Default)]
pub struct HttpMetrics {
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
}

pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    if let Ok(mut counts) = state.metrics.counts.lock() {
        *counts.entry((method, route, status)).or_default() += 1;
    }
    response
}

pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.core.store_health().await {
        Ok(()) => Json(serde_json::json!({"status": "ok", "store": "ok"})).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "store": err.to_string()})),
        )
            .into_response(),
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let stats = state.core.stats().await;
    let up = i32::from(stats.is_ok());
    let _ = writeln!(out, "# HELP agentdeck_store_up Whether the store answered.");
    let _ = writeln!(out, "# TYPE agentdeck_store_up gauge");
    let _ = writeln!(out, "agentdeck_store_up {up}");
    if let Ok(stats) = stats {
        let _ = writeln!(out, "# HELP agentdeck_sessions Sessions by status.");
        let _ = writeln!(out, "# TYPE agentdeck_sessions gauge");
        for status in crate::model::SessionStatus::ALL {
            let n = stats
                .sessions
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "agentdeck_sessions{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP agentdeck_tasks Worker tasks by status.");
        let _ = writeln!(out, "# TYPE agentdeck_tasks gauge");
        for status in crate::model::TaskStatus::ALL {
            let n = stats
                .tasks
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "agentdeck_tasks{{status=\"{status}\"}} {n}");
        }
    }
    if let Ok(totals) = state.core.usage_totals(None).await {
        let _ = writeln!(
            out,
            "# HELP agentdeck_tokens_total Tokens the agents used, by team, agent and kind."
        );
        let _ = writeln!(out, "# TYPE agentdeck_tokens_total counter");
        for t in &totals {
            let u = &t.usage;
            for (kind, n) in [
                ("input", u.input),
                ("output", u.output),
                ("reasoning", u.reasoning),
                ("cache_read", u.cache_read),
                ("cache_write", u.cache_write),
            ] {
                let _ = writeln!(
                    out,
                    "agentdeck_tokens_total{{team=\"{}\",agent=\"{}\",kind=\"{kind}\"}} {n}",
                    escape(&t.team),
                    escape(&t.agent_id)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP agentdeck_cost_usd_total What the agents cost (USD), by team and agent, where the price is known."
        );
        let _ = writeln!(out, "# TYPE agentdeck_cost_usd_total counter");
        for t in &totals {
            let _ = writeln!(
                out,
                "agentdeck_cost_usd_total{{team=\"{}\",agent=\"{}\"}} {}",
                escape(&t.team),
                escape(&t.agent_id),
                t.usage.cost
            );
        }
        let _ = writeln!(
            out,
            "# HELP agentdeck_unpriced_messages_total Agent messages whose price nobody knows, by team and agent."
        );
        let _ = writeln!(out, "# TYPE agentdeck_unpriced_messages_total counter");
        for t in &totals {
            let _ = writeln!(
                out,
                "agentdeck_unpriced_messages_total{{team=\"{}\",agent=\"{}\"}} {}",
                escape(&t.team),
                escape(&t.agent_id),
                t.usage.unpriced
            );
        }
    }
    if let Ok(fleet) = state.core.fleet().await {
        let _ = writeln!(
            out,
            "# HELP agentdeck_fleet_core_sessions Live sessions whose event stream each core follows."
        );
        let _ = writeln!(out, "# TYPE agentdeck_fleet_core_sessions gauge");
        for core in &fleet.cores {
            let _ = writeln!(
                out,
                "agentdeck_fleet_core_sessions{{core=\"{}\",kind=\"{}\",fleet=\"{}\"}} {}",
                escape(&core.id),
                core.kind,
                core.fleet,
                core.sessions
            );
        }
        let _ = writeln!(
            out,
            "# HELP agentdeck_fleet_this_core Whether this process runs fleet work (1) or not (0)."
        );
        let _ = writeln!(out, "# TYPE agentdeck_fleet_this_core gauge");
        let _ = writeln!(
            out,
            "agentdeck_fleet_this_core{{core=\"{}\"}} {}",
            escape(&fleet.this),
            i32::from(fleet.this_runs_fleet)
        );
    }
    let _ = writeln!(
        out,
        "# HELP agentdeck_http_requests_total HTTP requests served."
    );
    let _ = writeln!(out, "# TYPE agentdeck_http_requests_total counter");
    if let Ok(counts) = state.metrics.counts.lock() {
        for ((method, route, status), n) in counts.iter() {
            let _ = writeln!(
                out,
                "agentdeck_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
