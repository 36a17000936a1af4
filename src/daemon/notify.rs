//! systemd's notify protocol (`Type=notify`, sd_notify(3)) through the `sd-notify` crate.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (a terminal, a test harness, another
//! supervisor), and a failed send is logged at debug level only: the service manager going
//! away must never stop a load balancer. None of this runs on a worker.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// `READY=1` with the first status line: the control socket serves and the configuration
/// (`--state-dir`, `--config` or `--rules`) is applied.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` and `MONOTONIC_USEC` (systemd 253+ terminates a service that sends the
/// first without the second; 252 ignores the second), before a reload starts. `ready`
/// follows when it ends, whatever the outcome.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::debug!("CLOCK_MONOTONIC: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `STATUS=`: the one line `systemctl status xvsd` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// `STOPPING=1`, as the stop begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// What the status line counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub services: usize,
    pub real_servers: usize,
    pub active: u64,
    pub inactive: u64,
    pub master: bool,
    pub backup: bool,
}

impl Summary {
    /// One line, e.g. `3 services, 7 real servers, 1204 active + 88 inactive connections,
    /// sync master`.
    pub fn line(&self) -> String {
        let sync = match (self.master, self.backup) {
            (true, true) => "master+backup",
            (true, false) => "master",
            (false, true) => "backup",
            (false, false) => "none",
        };
        format!(
            "{} service{}, {} real server{}, {} active + {} inactive connections, sync {sync}",
            self.services,
            if self.services == 1 { "" } else { "s" },
            self.real_servers,
            if self.real_servers == 1 { "" } else { "s" },
            self.active,
            self.inactive,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        let s = Summary {
            services: 1,
            real_servers: 3,
            active: 12,
            inactive: 2,
            master: true,
            backup: false,
        };
        assert_eq!(
            s.line(),
            "1 service, 3 real servers, 12 active + 2 inactive connections, sync master"
        );
        assert_eq!(
            Summary::default().line(),
            "0 services, 0 real servers, 0 active + 0 inactive connections, sync none"
        );
    }
}
