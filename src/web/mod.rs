//! The web listener (`xvsd --web-listen ADDR:PORT`): Prometheus `/metrics`, a read-only
//! JSON API (`/api/status`, `/api/health`, `/api/datapath`) and the status page
//! (`page.rs`). It runs on threads of its own, never on a worker's core, and only reads
//! what the control socket would answer. See docs/architecture.md, "Metrics and web".

pub mod history;
pub mod page;

use crate::daemon::state::DaemonState;
use crate::daemon::DataPathView;
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

/// Answers one GET (or HEAD) for `path` (without the query string). The status page is
/// asked first for its paths, so it can be developed apart from the API.
pub fn route(path: &str, ctx: &WebCtx) -> HttpResponse {
    if path == "/" || path.starts_with("/page/") || path == "/api/history" {
        if let Some(r) = page::route(path, ctx) {
            return r;
        }
    }
    HttpResponse::text(404, "404 page not found\n")
}
