//! Health checks of real servers with keepalived's semantics, off the data path.
//!
//! - `check`: the probes (TCP_CHECK, HTTP_GET, ...), one check each, bounded in time;
//! - `engine`: keepalived's state machine (retry, alpha, ANDed checkers, inhibit, quorum,
//!   sorry server), pure;
//! - `runner`: schedules the probes on a runtime of its own and feeds the engine.

pub mod check;
pub mod engine;
#[cfg(test)]
pub(crate) mod fixture;
pub mod runner;

use crate::kconf::CheckKind;

/// The keepalived keyword of a checker.
pub fn checker_name(k: &CheckKind) -> &'static str {
    match k {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http(h) if h.tls => "SSL_GET",
        CheckKind::Http(_) => "HTTP_GET",
        CheckKind::Misc(_) => "MISC_CHECK",
        CheckKind::Udp(_) => "UDP_CHECK",
        CheckKind::Dns(_) => "DNS_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::Smtp(_) => "SMTP_CHECK",
        CheckKind::File(_) => "FILE_CHECK",
    }
}

/// The real probes, for the runner.
pub fn prober() -> runner::Prober {
    check::prober()
}
