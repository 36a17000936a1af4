//! `xvsd --config keepalived.conf`: what the health engine says the table should be,
//! turned into the same requests `xvsadm` sends, applied as one batch.
//!
//! The file owns the services it declares: a health change or a reload replaces their
//! real servers and options with what keepalived would have configured, as keepalived
//! overwrites hand-made `ipvsadm` changes to its services. Services added with `xvsadm`
//! are left alone. Only the difference is applied, so untouched services and servers keep
//! their runtime objects: connections, counters, scheduler state.

use super::config::{ConfigModel, ServiceConf};
use super::state::DaemonState;
use crate::health::engine::{DesiredService, Engine};
use crate::health::runner::Sink;
use crate::kconf::{ConfError, KConfig};
use crate::model::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The requests that turn `current` into `desired` for the services the file owns
/// (`owned`, from the previous application; services no longer desired are deleted).
pub fn requests(
    current: &ConfigModel,
    owned: &HashSet<ServiceKey>,
    desired: &[DesiredService],
) -> Vec<Request> {
    let mut reqs = Vec::new();
    let want: HashSet<ServiceKey> = desired.iter().map(|d| d.key).collect();
    for k in owned {
        if !want.contains(k) && current.services.iter().any(|s| s.key == *k) {
            reqs.push(Request::DeleteService { key: *k });
        }
    }
    for d in desired {
        match current.services.iter().find(|s| s.key == d.key) {
            None => {
                reqs.push(Request::AddService {
                    key: d.key,
                    opts: d.opts.clone(),
                });
                for spec in &d.dests {
                    reqs.push(Request::AddDest {
                        service: d.key,
                        dest: *spec,
                    });
                }
            }
            Some(cur) => dest_requests(cur, d, &mut reqs),
        }
    }
    reqs
}

fn dest_requests(cur: &ServiceConf, d: &DesiredService, reqs: &mut Vec<Request>) {
    if cur.opts != d.opts {
        reqs.push(Request::EditService {
            key: d.key,
            opts: d.opts.clone(),
        });
    }
    // The port a DR/TUN server really has is the service's (IPVS forces it).
    let port_of = |s: &DestSpec| match s.forward {
        Forward::Masq => s.port.unwrap_or(d.key.port),
        _ => d.key.port,
    };
    for c in &cur.dests {
        if !d
            .dests
            .iter()
            .any(|s| s.addr == c.addr && port_of(s) == c.port)
        {
            reqs.push(Request::DeleteDest {
                service: d.key,
                addr: c.addr,
                port: Some(c.port),
            });
        }
    }
    for s in &d.dests {
        match cur
            .dests
            .iter()
            .find(|c| c.addr == s.addr && c.port == port_of(s))
        {
            None => reqs.push(Request::AddDest {
                service: d.key,
                dest: *s,
            }),
            Some(c) => {
                if c.weight != s.weight
                    || c.forward != s.forward
                    || c.u_threshold != s.u_threshold
                    || c.l_threshold != s.l_threshold
                {
                    reqs.push(Request::EditDest {
                        service: d.key,
                        dest: DestEdit {
                            addr: s.addr,
                            port: Some(c.port),
                            forward: Some(s.forward),
                            weight: Some(s.weight),
                            u_threshold: Some(s.u_threshold),
                            l_threshold: Some(s.l_threshold),
                        },
                    });
                }
            }
        }
    }
}

/// Everything `--config-test` checks beyond the syntax: that each virtual server's
/// services and real servers are ones xvs would accept (scheduler known, thresholds in
/// order, ...), reported at the virtual server's or real server's line. Nothing is
/// touched: the check runs on an empty scratch model.
pub fn validate(conf: &KConfig) -> Result<(), ConfError> {
    let (engine, _) = Engine::new(conf, 0);
    let mut model = ConfigModel::default();
    let mut seen: HashSet<ServiceKey> = HashSet::new();
    for vs in &engine.vss {
        for key in &vs.conf.services {
            if !seen.insert(*key) {
                return Err(ConfError {
                    loc: vs.conf.loc.clone(),
                    msg: format!("virtual server {key} is declared twice"),
                });
            }
        }
        // Every real server as if alive, so that each is checked.
        let mut all = vs.clone();
        for r in &mut all.rs {
            r.alive = true;
        }
        all.quorum_up = true;
        all.sorry_alive = false;
        let one = Engine { vss: vec![all] };
        for d in one.desired() {
            let add = Request::AddService {
                key: d.key,
                opts: d.opts.clone(),
            };
            model.apply(&add).map_err(|msg| ConfError {
                loc: vs.conf.loc.clone(),
                msg: format!("virtual server {}: {msg}", d.key),
            })?;
            for spec in &d.dests {
                let loc = vs
                    .conf
                    .real_servers
                    .iter()
                    .find(|r| r.addr == spec.addr)
                    .map_or(vs.conf.loc.clone(), |r| r.loc.clone());
                model
                    .apply(&Request::AddDest {
                        service: d.key,
                        dest: *spec,
                    })
                    .map_err(|msg| ConfError {
                        loc,
                        msg: format!("real server {}: {msg}", spec.addr),
                    })?;
            }
        }
        if let Some(s) = &vs.conf.sorry_server {
            for key in &vs.conf.services {
                let mut m = ConfigModel::default();
                let _ = m.apply(&Request::AddService {
                    key: *key,
                    opts: ServiceOpts::default(),
                });
                m.apply(&Request::AddDest {
                    service: *key,
                    dest: DestSpec {
                        addr: s.addr,
                        port: s.port,
                        forward: s.method,
                        weight: 1,
                        u_threshold: 0,
                        l_threshold: 0,
                    },
                })
                .map_err(|msg| ConfError {
                    loc: s.loc.clone(),
                    msg: format!("sorry server {}: {msg}", s.addr),
                })?;
            }
        }
    }
    Ok(())
}

/// Reads and checks a keepalived.conf (`xvsd --config`, `--config-test`, SIGHUP).
pub fn load(path: &std::path::Path) -> Result<KConfig, ConfError> {
    let conf = crate::kconf::load(path)?;
    validate(&conf)?;
    Ok(conf)
}

/// Logs what keepalived would have warned about, and the blocks left to keepalived.
pub fn log_loaded(conf: &KConfig) {
    for w in &conf.warnings {
        tracing::warn!("{w}");
    }
    let mut seen = HashSet::new();
    for (kw, loc) in &conf.ignored {
        if seen.insert(kw.as_str()) {
            tracing::info!("{loc}: {kw} ignored by xvsd (VRRP and globals are keepalived's: run keepalived -P on this file)");
        }
    }
}

/// Applies the engine's tables to the daemon's configuration.
pub struct ConfigSink {
    pub state: Arc<Mutex<DaemonState>>,
    /// Services the file created (deleted when it no longer declares them).
    pub owned: HashSet<ServiceKey>,
}

impl Sink for ConfigSink {
    fn apply(&mut self, desired: &[DesiredService]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let reqs = requests(&st.model, &self.owned, desired);
        if !reqs.is_empty() {
            match st.apply(&Request::Batch(reqs.clone())) {
                Response::Error(e) => {
                    tracing::error!(error = %e, "applying the health checks' table failed; configuration unchanged")
                }
                _ => tracing::info!(
                    changes = reqs.len(),
                    "configuration follows the health checks"
                ),
            }
        }
        self.owned = desired.iter().map(|d| d.key).collect();
        // Servers the checks declare dead but that stay configured (inhibit_on_failure):
        // their connections follow the service's on-dead policy.
        for d in desired {
            for s in &d.dests {
                let port = match s.forward {
                    Forward::Masq => s.port.unwrap_or(d.key.port),
                    _ => d.key.port,
                };
                let dead = d.dead.iter().any(|x| x.addr == s.addr && x.port == s.port);
                st.set_dead(&d.key, s.addr, port, dead);
            }
        }
    }
}

/// The rows of `xvsadm -L --health`.
pub fn health_rows(e: &Engine, now_ms: u64) -> Vec<HealthRow> {
    let mut rows = Vec::new();
    for vs in &e.vss {
        let Some(service) = vs.conf.services.first().copied() else {
            continue;
        };
        for rs in &vs.rs {
            let port = rs.conf.port.unwrap_or(service.port);
            for c in &rs.checkers {
                rows.push(HealthRow {
                    service,
                    group: vs.conf.group.clone().unwrap_or_default(),
                    addr: rs.conf.addr,
                    port,
                    alive: rs.alive,
                    checker: crate::health::checker_name(&c.conf.kind).to_string(),
                    target: format!("{}:{}", c.conf.connect_ip, c.conf.connect_port),
                    up: c.is_up,
                    has_run: c.has_run,
                    failures: c.failures,
                    last_error: c.last_error.clone(),
                    since_secs: now_ms.saturating_sub(c.since_ms) / 1000,
                    last_latency_ms: c.last_latency_ms,
                    checks: c.checks,
                });
            }
        }
    }
    rows
}
