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
        // The two tables the service can have: every real server alive, and the sorry
        // server in (quorum lost), so that each server is checked.
        let mut alive = vs.clone();
        for r in &mut alive.rs {
            r.alive = true;
        }
        (alive.quorum_up, alive.sorry_alive) = (true, false);
        let mut sorry = alive.clone();
        (sorry.quorum_up, sorry.sorry_alive) = (false, true);
        for variant in [alive, sorry] {
            let mut model = ConfigModel::default();
            for d in (Engine { vss: vec![variant] }).desired() {
                model
                    .apply(&Request::AddService {
                        key: d.key,
                        opts: d.opts.clone(),
                    })
                    .map_err(|msg| ConfError {
                        loc: vs.conf.loc.clone(),
                        msg: format!("virtual server {}: {msg}", d.key),
                    })?;
                for spec in &d.dests {
                    let sorry = vs
                        .conf
                        .sorry_server
                        .as_ref()
                        .filter(|s| s.addr == spec.addr);
                    let (loc, what) =
                        match vs.conf.real_servers.iter().find(|r| r.addr == spec.addr) {
                            Some(r) => (r.loc.clone(), "real server"),
                            None => (
                                sorry.map_or(vs.conf.loc.clone(), |s| s.loc.clone()),
                                "sorry server",
                            ),
                        };
                    model
                        .apply(&Request::AddDest {
                            service: d.key,
                            dest: *spec,
                        })
                        .map_err(|msg| ConfError {
                            loc,
                            msg: format!("{what} {}: {msg}", spec.addr),
                        })?;
                }
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

/// `track_file ... init_file [VALUE] [overwrite]`: keepalived creates a missing tracked
/// file with VALUE while loading, or rewrites it with `overwrite` (not on a reload;
/// track_file.c). Done at start only, never by `--config-test`.
pub fn init_tracked_files(conf: &KConfig) {
    let mut done = HashSet::new();
    for vs in &conf.virtual_servers {
        for rs in &vs.real_servers {
            for c in &rs.checkers {
                let crate::kconf::CheckKind::File(f) = &c.kind else {
                    continue;
                };
                let Some(v) = f.init_value else { continue };
                if !done.insert(f.path.clone()) || (f.path.exists() && !f.init_overwrite) {
                    continue;
                }
                if let Err(e) = std::fs::write(&f.path, format!("{v}\n")) {
                    tracing::warn!(file = %f.path.display(), "track_file init_file: {e}");
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> KConfig {
        crate::kconf::parse_str(text, Path::new("/etc/keepalived/test.conf")).unwrap()
    }

    const TWO: &str = "virtual_server 10.0.0.88 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server 10.0.0.9 80 {\n    weight 2\n  }\n  real_server 10.0.0.20 80 {\n  }\n}\n";

    fn applied(
        model: &mut ConfigModel,
        owned: &mut HashSet<ServiceKey>,
        c: &KConfig,
    ) -> Vec<Request> {
        let (e, _) = Engine::new(c, 0);
        let d = e.desired();
        let reqs = requests(model, owned, &d);
        model.apply(&Request::Batch(reqs.clone())).unwrap();
        *owned = d.iter().map(|d| d.key).collect();
        reqs
    }

    #[test]
    fn only_the_difference_is_requested() {
        let mut model = ConfigModel::default();
        // A service the operator added by hand, not the file's.
        let other = ServiceKey {
            proto: Protocol::Udp,
            addr: "10.0.0.99".parse().unwrap(),
            port: 53,
        };
        model
            .apply(&Request::AddService {
                key: other,
                opts: ServiceOpts::default(),
            })
            .unwrap();
        let mut owned = HashSet::new();
        let first = applied(&mut model, &mut owned, &conf(TWO));
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(matches!(first[0], Request::AddService { .. }));
        // Nothing changed: nothing requested.
        assert!(applied(&mut model, &mut owned, &conf(TWO)).is_empty());
        // One weight changed: one edit.
        let edited = applied(
            &mut model,
            &mut owned,
            &conf(&TWO.replace("weight 2", "weight 7")),
        );
        assert!(
            matches!(&edited[..], [Request::EditDest { dest, .. }] if dest.weight == Some(7)),
            "{edited:?}"
        );
        // A server gone: one delete.
        let gone = TWO
            .replace("weight 2", "weight 7")
            .replace("  real_server 10.0.0.20 80 {\n  }\n", "");
        let del = applied(&mut model, &mut owned, &conf(&gone));
        assert!(matches!(&del[..], [Request::DeleteDest { .. }]), "{del:?}");
        // The file's service gone: deleted; the operator's stays.
        let none = applied(&mut model, &mut owned, &KConfig::default());
        assert!(
            matches!(&none[..], [Request::DeleteService { .. }]),
            "{none:?}"
        );
        assert_eq!(model.services.len(), 1);
        assert_eq!(model.services[0].key, other);
    }

    #[test]
    fn validation_reports_the_virtual_server_line() {
        let c = conf(&TWO.replace(
            "lb_algo rr",
            "lb_algo rr\n  persistence_timeout 30\n  persistence_granularity 255.0.255.0",
        ));
        let e = validate(&c).unwrap_err();
        assert_eq!(e.loc.line, 1, "{e}");
        assert!(
            e.to_string().starts_with("/etc/keepalived/test.conf:1: "),
            "{e}"
        );
        assert!(validate(&conf(TWO)).is_ok());
    }

    #[test]
    fn tracked_files_are_created_once_and_overwritten_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("xvs-kconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("w");
        let _ = std::fs::remove_file(&f);
        let text = |ow: &str| {
            format!(
                "track_file tf {{\n  file {}\n  init_file 5 {ow}\n}}\n\
                 virtual_server 10.0.0.88 80 {{\n  protocol TCP\n  real_server 10.0.0.9 80 {{\n    FILE_CHECK {{\n      track_file tf\n    }}\n  }}\n}}\n",
                f.display()
            )
        };
        init_tracked_files(&conf(&text("")));
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "5");
        std::fs::write(&f, "9\n").unwrap();
        init_tracked_files(&conf(&text("")));
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "9");
        init_tracked_files(&conf(&text("overwrite")));
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "5");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
