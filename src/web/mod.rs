//! The web listener (`xvsd --web-listen ADDR:PORT`): Prometheus `/metrics`, a read-only
//! JSON API (`/api/status`, `/api/health`, `/api/datapath`) and the status page
//! (`page.rs`). It runs on threads of its own, never on a worker's core, and only reads
//! what the control socket would answer. See docs/architecture.md, "Metrics and web".

pub mod api;
pub mod history;
pub mod metrics;
pub mod page;
pub mod server;

use crate::daemon::state::DaemonState;
use crate::daemon::DataPathView;
use crate::model::{DataPathStats, HealthRow, Status};
use crate::sync::daemon::DaemonStatus;
use std::sync::{Arc, Mutex};

/// What a handler may read: the control thread's state and the data path's view, the same
/// pair the control socket serves from. Handlers hold the state lock only to copy what
/// they need, so a scrape never holds up a configuration change for long.
#[derive(Clone)]
pub struct WebCtx {
    pub state: Arc<Mutex<DaemonState>>,
    pub view: Arc<DataPathView>,
}

/// One HTTP response. The server adds `Content-Length`, `Connection` and `Date`-less
/// framing itself; `headers` carries anything else (`Cache-Control`, `Allow`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (200, 404, ...); the reason phrase is the server's.
    pub status: u16,
    /// The `Content-Type` header value.
    pub content_type: String,
    pub body: Vec<u8>,
    /// Extra headers as (name, value).
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// A response with no extra headers.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text response (errors, 404).
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// A JSON response.
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200, "application/json", body)
    }
}

/// Everything one scrape or API call reports, copied out of the daemon: the answers the
/// control socket gives to `Status`, `DataPath`, `Health` and `Daemons`, computed by the
/// same functions.
#[derive(Debug, Clone)]
pub struct Sample {
    pub status: Status,
    pub datapath: DataPathStats,
    /// `None` without `--config`.
    pub health: Option<Vec<HealthRow>>,
    pub daemons: Vec<DaemonStatus>,
}

impl Sample {
    /// Copies the current figures. The state lock is held only while the status is built
    /// (the per-worker counter lines summed, no I/O); the data-path counters, the health
    /// engine and the sync daemons have locks of their own.
    pub fn take(ctx: &WebCtx) -> Sample {
        let status = {
            let st = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
            // `status(None)` fails only for a named service that does not exist.
            st.status(None).unwrap_or_else(|_| Status {
                conn_table_size: 0,
                timeouts: Default::default(),
                services: Vec::new(),
            })
        };
        Sample {
            status,
            datapath: ctx.view.stats(),
            health: Sample::health(ctx),
            daemons: ctx.view.sync.status(),
        }
    }

    /// The health checkers' rows (`xvsadm -L --health`), `None` without `--config`.
    pub fn health(ctx: &WebCtx) -> Option<Vec<HealthRow>> {
        ctx.view.health.as_ref().map(|e| {
            crate::daemon::kconf::health_rows(
                &e.lock().unwrap_or_else(|e| e.into_inner()),
                crate::clock::now_ms(),
            )
        })
    }
}

/// Answers one GET (or HEAD). The status page is asked first for its paths, so it can be
/// developed apart from the API.
pub fn route(req: &server::Request, ctx: &WebCtx) -> HttpResponse {
    let path = req.path.as_str();
    if path == "/" || path.starts_with("/page/") || path == "/api/history" {
        if let Some(r) = page::route(path, ctx) {
            return r;
        }
    }
    match path {
        // OpenMetrics for Prometheus (it asks for it first), the classic text format for
        // anything else, as node_exporter does.
        "/metrics" if metrics::wants_openmetrics(&req.accept) => HttpResponse::new(
            200,
            metrics::CONTENT_TYPE,
            metrics::encode(Sample::take(ctx)),
        ),
        "/metrics" => HttpResponse::new(
            200,
            metrics::TEXT_CONTENT_TYPE,
            metrics::encode_text(Sample::take(ctx)),
        ),
        "/api/status" => HttpResponse::json(api::status(&Sample::take(ctx))),
        "/api/health" => HttpResponse::json(api::health(Sample::health(ctx).as_deref())),
        "/api/datapath" => HttpResponse::json(api::datapath(&ctx.view.stats())),
        _ => not_found(),
    }
}

/// The answer for an unknown path.
pub fn not_found() -> HttpResponse {
    HttpResponse::text(404, "404 page not found\n")
}
#[cfg(test)]
mod tests;
