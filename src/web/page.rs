//! The status page: owned by the status-page work (branch helper-page). The web router
//! asks `route` first for `/`, `/page/*` and `/api/history`; `start` is called once when
//! the listener starts (for a history sampler, if the page keeps one).

use super::{HttpResponse, WebCtx};

/// The page's answer for `path`, or `None` (the router then answers 404).
pub fn route(_path: &str, _ctx: &WebCtx) -> Option<HttpResponse> {
    None
}

/// Called once when the web listener starts.
pub fn start(_ctx: &WebCtx) {}
