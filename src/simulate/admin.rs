//! The control endpoints under `/_sim`: `GET health`, `GET accounting` (JSON
//! [`Accounting`](super::Accounting)), `POST reset` (accounting, rate windows, quotas,
//! report memory and fault counters; the configuration stays), `GET config` and
//! `PUT config` (a JSON [`SimConfig`](super::SimConfig), validated; a changed
//! `data_csv` is loaded before the switch, so a bad file leaves the old config live).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::config::SimConfig;
use super::data::Dataset;
use super::state::SimState;

/// The routes under `/_sim`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/accounting",
            get(|State(s): State<Arc<SimState>>| async move { Json(s.accounting()) }),
        )
        .route(
            "/reset",
            post(|State(s): State<Arc<SimState>>| async move {
                s.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/config",
            get(|State(s): State<Arc<SimState>>| async move { Json((*s.config()).clone()) })
                .put(put_config),
        )
}

fn rejected(message: String) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": message })),
    )
        .into_response()
}

async fn put_config(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    let config: SimConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return rejected(format!("invalid simulator config: {e}")),
    };
    if let Err(e) = config.validate() {
        return rejected(e.to_string());
    }
    let data = if config.data_csv != s.config().data_csv {
        let loaded = match &config.data_csv {
            Some(path) => Dataset::with_csv(path),
            None => Ok(Dataset::builtin()),
        };
        match loaded {
            Ok(d) => Some(d),
            Err(e) => return rejected(e.to_string()),
        }
    } else {
        None
    };
    tracing::info!("simulator config replaced");
    s.set_config(config, data);
    StatusCode::NO_CONTENT.into_response()
}
