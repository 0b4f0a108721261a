//! The console's HTTP side: the page, its live feed, the chaos button's endpoint, the state
//! as JSON and the console's own metrics.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use immune_nats::{ChaosRequest, Event, FaultKind, ServiceName};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::telemetry::Seen;
use crate::Shared;

/// The page: one file, vanilla JavaScript, inline SVG; it fetches nothing from elsewhere.
pub const PAGE: &str = include_str!("page.html");

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/chaos", post(chaos))
        .route("/api/state", get(state))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(shared)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    match shared.view.lock() {
        Ok(view) => Json(view.snapshot()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "view lock poisoned").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.telemetry.render(),
    )
        .into_response()
}

/// What the page's chaos buttons send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosForm {
    pub service: String,
    pub fault: String,
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ChaosAccepted {
    run_id: String,
}

#[derive(Debug, Serialize)]
struct Problem {
    error: String,
}

fn problem(status: StatusCode, error: String) -> Response {
    (status, Json(Problem { error })).into_response()
}

/// Checks a form and turns it into a request; the error names the bad field.
pub fn chaos_request(form: ChaosForm, limits: &crate::ChaosLimits) -> Result<ChaosRequest, String> {
    let service = ServiceName::new(form.service).map_err(|e| format!("service: {e}"))?;
    let fault: FaultKind = form.fault.parse().map_err(|e| format!("fault: {e}"))?;
    let duration_ms = form.duration_ms.unwrap_or(limits.default_duration_ms);
    if duration_ms == 0 || duration_ms > limits.max_duration_ms {
        return Err(format!(
            "duration_ms: {duration_ms} is not between 1 and {}",
            limits.max_duration_ms
        ));
    }
    Ok(ChaosRequest {
        run_id: Some(uuid::Uuid::now_v7().to_string()),
        service,
        fault,
        duration_ms,
        params: form.params,
    })
}

/// `POST /api/chaos`: JSON only, so a form on another site cannot post here without the
/// browser asking first.
async fn chaos(
    State(shared): State<Arc<Shared>>,
    form: Result<Json<ChaosForm>, JsonRejection>,
) -> Response {
    let form = match form {
        Ok(Json(form)) => form,
        Err(rejection) => {
            let reason = rejection.body_text();
            shared
                .telemetry
                .observe(Seen::ChaosRefused { reason: &reason });
            return problem(rejection.status(), reason);
        }
    };
    let request = match chaos_request(form, &shared.chaos) {
        Ok(r) => r,
        Err(reason) => {
            shared
                .telemetry
                .observe(Seen::ChaosRefused { reason: &reason });
            return problem(StatusCode::BAD_REQUEST, reason);
        }
    };
    let run_id = request.run_id.clone().unwrap_or_default();
    let service = request.service.to_string();
    let fault = request.fault.as_str();
    match shared
        .bus
        .publish(Some(run_id.clone()), Event::ChaosRequest(request))
        .await
    {
        Ok(_) => {
            shared.telemetry.observe(Seen::ChaosRequested {
                service: &service,
                fault,
                run_id: &run_id,
            });
            (StatusCode::ACCEPTED, Json(ChaosAccepted { run_id })).into_response()
        }
        Err(e) => {
            let error = e.to_string();
            shared
                .telemetry
                .observe(Seen::ChaosFailed { error: &error });
            problem(StatusCode::SERVICE_UNAVAILABLE, error)
        }
    }
}

/// Counts the page out when its stream ends, however it ends.
struct Connected(Arc<Shared>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.telemetry.observe(Seen::PageLeft);
    }
}

struct Feed {
    first: Option<String>,
    deltas: broadcast::Receiver<Arc<str>>,
    connected: Connected,
}

/// A snapshot and a receiver of what comes after it, taken under the view's lock.
fn snapshot_and_follow(
    shared: &Shared,
    follow: impl FnOnce() -> broadcast::Receiver<Arc<str>>,
) -> Option<(String, broadcast::Receiver<Arc<str>>)> {
    let view = shared.view.lock().ok()?;
    let json = serde_json::to_string(&view.snapshot()).ok()?;
    Some((json, follow()))
}

/// `GET /events`: `snapshot` first, then every `delta`; a page that falls behind gets a fresh
/// snapshot instead of a gap. Ends when the console shuts down.
async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    shared.telemetry.observe(Seen::PageConnected);
    let connected = Connected(shared.clone());
    let start = snapshot_and_follow(&shared, || shared.deltas.subscribe());
    let (first, deltas) = match start {
        Some((json, rx)) => (Some(json), rx),
        None => (None, shared.deltas.subscribe()),
    };
    let feed = Feed {
        first,
        deltas,
        connected,
    };
    let shutdown = shared.shutdown.clone();
    let stream = futures::stream::unfold(feed, move |mut feed| {
        let mut shutdown = shutdown.clone();
        async move {
            if let Some(json) = feed.first.take() {
                return Some((Ok(SseEvent::default().event("snapshot").data(json)), feed));
            }
            loop {
                let next = tokio::select! {
                    _ = shutdown.wait() => return None,
                    next = feed.deltas.recv() => next,
                };
                match next {
                    Ok(json) => {
                        return Some((Ok(SseEvent::default().event("delta").data(&*json)), feed))
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let shared = feed.connected.0.clone();
                        shared.telemetry.observe(Seen::PageLagged { missed });
                        let old = &feed.deltas;
                        if let Some((json, rx)) = snapshot_and_follow(&shared, || old.resubscribe())
                        {
                            feed.deltas = rx;
                            return Some((
                                Ok(SseEvent::default().event("snapshot").data(json)),
                                feed,
                            ));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChaosLimits;

    fn form(service: &str, fault: &str, duration_ms: Option<u64>) -> ChaosForm {
        ChaosForm {
            service: service.into(),
            fault: fault.into(),
            duration_ms,
            params: BTreeMap::new(),
        }
    }

    #[test]
    fn a_chaos_form_becomes_a_request_or_a_reason_naming_the_field() {
        let limits = ChaosLimits::default();
        let r = chaos_request(form("orders", "crash", None), &limits).expect("valid");
        assert_eq!(r.fault, FaultKind::Crash);
        assert_eq!(r.duration_ms, limits.default_duration_ms);
        assert!(r.run_id.is_some());
        let err = chaos_request(form("orders", "meteor", None), &limits).expect_err("fault");
        assert!(err.starts_with("fault:"), "{err}");
        let err =
            chaos_request(form("no such/service", "crash", None), &limits).expect_err("service");
        assert!(err.starts_with("service:"), "{err}");
        let err = chaos_request(form("orders", "hang", Some(0)), &limits).expect_err("zero");
        assert!(err.starts_with("duration_ms:"), "{err}");
        let err =
            chaos_request(form("orders", "hang", Some(600_001)), &limits).expect_err("too long");
        assert!(err.starts_with("duration_ms:"), "{err}");
    }
}
