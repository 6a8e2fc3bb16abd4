//! Failure injection and per-request bookkeeping, as one middleware per provider:
//! record the arrival, add the configured latency, then maybe reset the connection,
//! answer a 5xx in the provider's error shape, or answer 200 with a truncated JSON body;
//! otherwise run the real handler, and hold its answer for the answer latency (the
//! request took effect, the client still waits). Faults are decided by the arrival's sequence number
//! (see [`super::config::FaultConfig`]), so a run is reproducible; injected faults cost
//! no quota because the handler never runs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::config::Provider;
use super::server::ConnCtx;
use super::state::SimState;
use super::{cloudflare, ipgeolocation, ipinsights, iptrust, openipapi};

/// `true` when a fault of `rate` fires on request `n` (1-based): exactly
/// `floor(N * rate)` of the first `N` requests, evenly spread. Integer parts-per-million
/// keep it exact (`0.1` fires on 10, 20, 30, ...).
pub fn fires(n: u64, rate: f64) -> bool {
    let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u128;
    n > 0 && (u128::from(n) * ppm) / 1_000_000 > (u128::from(n - 1) * ppm) / 1_000_000
}

/// The middleware; state is the shared state and the provider it guards.
pub async fn inject(
    State((state, provider)): State<(Arc<SimState>, Provider)>,
    req: Request,
    next: Next,
) -> Response {
    let n = state.arrive(provider);
    let cfg = state.config();
    let pc = cfg.provider(provider);
    let f = pc.faults.clone();
    if f.latency_ms > 0 {
        state.account(provider, |a| a.faults.delayed += 1);
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    if fires(n, f.reset_rate) {
        if let Some(ConnectInfo(conn)) = req.extensions().get::<ConnectInfo<ConnCtx>>() {
            state.account(provider, |a| a.faults.resets += 1);
            tracing::debug!(provider = provider.as_str(), request = n, "simulated reset");
            conn.kill();
            // Never written: the killed stream fails the write and hyper drops it.
            return StatusCode::OK.into_response();
        }
    }
    let response = if fires(n, f.server_error_rate) {
        state.account(provider, |a| a.faults.server_errors += 1);
        let status = StatusCode::from_u16(pc.server_error_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        server_error(provider, status)
    } else if fires(n, f.malformed_rate) {
        state.account(provider, |a| a.faults.malformed += 1);
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            MALFORMED_BODY,
        )
            .into_response()
    } else {
        next.run(req).await
    };
    let status = response.status().as_u16();
    state.account(provider, |a| {
        *a.responses_by_status.entry(status).or_insert(0) += 1
    });
    if f.answer_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.answer_latency_ms)).await;
    }
    response
}

/// A JSON document cut off mid-value.
pub const MALFORMED_BODY: &str =
    r#"{"success": true, "data": {"ip": "8.8.8.8", "as_number": "AS15"#;

fn server_error(provider: Provider, status: StatusCode) -> Response {
    match provider {
        Provider::Ipinsights => ipinsights::error(status, "Internal server error"),
        Provider::Openipapi => openipapi::error(
            status,
            "internal_error",
            "An unexpected server error occurred. Contact support if this persists.",
        ),
        Provider::Iptrust => iptrust::error(
            status,
            "Internal server error. Please retry or contact support.",
        ),
        Provider::Ipgeolocation => {
            let message = match status.as_u16() {
                502 => "Upstream service error. Please try again later.",
                503 => "Service temporarily unavailable. Please try again later.",
                504 => "The server timed out while processing the request.",
                505 => "HTTP version not supported.",
                _ => "Something went wrong on the server side.",
            };
            ipgeolocation::error(status, message)
        }
        Provider::Cloudflare => cloudflare::error(status, 10000, "Internal Server Error"),
    }
}

#[cfg(test)]
mod tests {
    use super::fires;

    #[test]
    fn rates_fire_exactly_and_evenly() {
        let hits: Vec<u64> = (1..=20).filter(|&n| fires(n, 0.25)).collect();
        assert_eq!(hits, vec![4, 8, 12, 16, 20]);
        assert_eq!((1..=1000).filter(|&n| fires(n, 0.1)).count(), 100);
        assert!((1..=50).all(|n| fires(n, 1.0)));
        assert!(!(1..=50).any(|n| fires(n, 0.0)));
        assert_eq!((1..=7).filter(|&n| fires(n, 1.0 / 3.0)).count(), 2);
    }
}
