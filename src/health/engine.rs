//! keepalived's health state machine, without I/O: checker results in, the IPVS table
//! keepalived would have made out, plus the scripts it would have run.
//!
//! A port of keepalived 2.2's `check/ipwrapper.c` (`update_svr_checker_state`,
//! `perform_svr_state`, `update_quorum_state`, `update_svr_wgt`, `init_service_rs`) and the
//! retry rule every checker's epilog shares (`check_tcp.c` `tcp_epilog`). Instead of issuing
//! `ipvs_cmd` calls as it goes, the engine keeps keepalived's state (`alive`, the failed-checker
//! count, the quorum state, whether the sorry server is in) and `desired()` derives the table
//! from it; the daemon applies the difference. The two agree because keepalived's calls are a
//! function of that same state:
//! - a live real server is in the pool at `real_weight(effective_weight)`, unless the sorry
//!   server replaced the pool (then only `inhibit_on_failure` servers stay, at weight 0);
//! - a dead one is absent, or at weight 0 with `inhibit_on_failure` (`ipvswrapper.c`
//!   turns DEL_DEST into a weight-0 edit for them);
//! - the sorry server is in while quorum is lost, at weight 0 with `sorry_server_inhibit`
//!   otherwise.

use crate::kconf::{Checker, KConfig, Script, VirtualServer};
use crate::model::{DestSpec, ServiceKey, ServiceOpts};
use std::time::Duration;

/// keepalived's `IPVS_WEIGHT_LIMIT`... the largest weight IPVS takes.
const WEIGHT_LIMIT: i64 = crate::model::MAX_WEIGHT as i64;

/// `real_weight()` in check_data.h: the effective weight clamped into IPVS's range.
fn real_weight(w: i64) -> u32 {
    w.clamp(0, WEIGHT_LIMIT) as u32
}

/// What one check found (see `health::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; `weight`: the new absolute weight (`misc_dynamic`, FILE_CHECK).
    Up {
        weight: Option<u32>,
    },
    Down(String),
}

/// Something keepalived would do besides changing IPVS: run a script, log a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run(Script),
    Log(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckerState {
    pub conf: Checker,
    /// keepalived's `is_up`: starts true, false with `alpha`.
    pub is_up: bool,
    pub has_run: bool,
    /// Failures so far in this retry round (`retry_it`).
    pub retry_it: u32,
    /// Consecutive failed checks (for `--health`; keepalived only keeps `retry_it`).
    pub failures: u32,
    pub last_error: Option<String>,
    /// When `is_up` last changed (or the checker started), ms on `clock::now_ms`.
    pub since_ms: u64,
    /// Duration of the last check, ms.
    pub last_latency_ms: Option<u64>,
    pub checks: u64,
    /// What this checker adds to the configured weight (`misc_dynamic`, FILE_CHECK):
    /// keepalived sums every checker's offset into the effective weight.
    pub weight_offset: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RsState {
    pub conf: crate::kconf::RealServer,
    /// keepalived's `ISALIVE(rs)`.
    pub alive: bool,
    /// Configured weight, then what `misc_dynamic` / FILE_CHECK set (`effective_weight`).
    pub effective_weight: i64,
    /// `num_failed_checkers`.
    pub num_failed: u32,
    pub checkers: Vec<CheckerState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VsState {
    pub conf: VirtualServer,
    pub quorum_up: bool,
    /// The sorry server is in the pool (`ISALIVE(vs->s_svr)`).
    pub sorry_alive: bool,
    pub rs: Vec<RsState>,
    /// Bumped whenever something `desired()` reads changes (a server's state or weight,
    /// the quorum), so that the runner rebuilds the table only then, not after every
    /// check: with thousands of servers that rebuild is the costly part.
    pub changes: u64,
}

/// One service as the daemon should configure it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    pub key: ServiceKey,
    pub opts: ServiceOpts,
    /// In the order keepalived adds them (configuration order).
    pub dests: Vec<DestSpec>,
    /// Servers the checks declare dead but that stay configured (inhibit_on_failure).
    pub dead: Vec<DestSpec>,
}

/// Indices of one checker: virtual server, real server, checker.
pub type CheckerId = (usize, usize, usize);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Engine {
    pub vss: Vec<VsState>,
}

impl Engine {
    /// The state keepalived starts in (`init_services`, `set_quorum_states`), with the
    /// scripts that start-up runs.
    pub fn new(conf: &KConfig, now_ms: u64) -> (Engine, Vec<Action>) {
        Self::with_previous(conf, None, now_ms)
    }

    /// Like `new`, but a reload: every checker equal to one of `prev` (same virtual
    /// server, real server and parameters) keeps its state, as keepalived's reload keeps
    /// unchanged checkers and "does not re-add failed real servers instantly".
    pub fn with_previous(
        conf: &KConfig,
        prev: Option<&Engine>,
        now_ms: u64,
    ) -> (Engine, Vec<Action>) {
        let mut actions = Vec::new();
        let mut vss = Vec::new();
        for vc in &conf.virtual_servers {
            let pvs = prev.and_then(|p| p.vss.iter().find(|v| same_vs(&v.conf, vc)));
            let mut rss = Vec::new();
            for rc in &vc.real_servers {
                let prs = pvs.and_then(|v| {
                    v.rs.iter()
                        .find(|r| r.conf.addr == rc.addr && r.conf.port == rc.port)
                });
                let checkers: Vec<CheckerState> = rc
                    .checkers
                    .iter()
                    .map(|c| {
                        let old =
                            prs.and_then(|r| r.checkers.iter().find(|o| same_checker(&o.conf, c)));
                        match old {
                            Some(o) => CheckerState {
                                conf: c.clone(),
                                ..o.clone()
                            },
                            None => CheckerState {
                                conf: c.clone(),
                                is_up: !c.alpha,
                                has_run: false,
                                retry_it: 0,
                                failures: 0,
                                last_error: None,
                                since_ms: now_ms,
                                last_latency_ms: None,
                                checks: 0,
                                weight_offset: 0,
                            },
                        }
                    })
                    .collect();
                let num_failed = checkers.iter().filter(|c| !c.is_up).count() as u32;
                let weight_changed = prs.is_some_and(|p| p.conf.weight != rc.weight);
                let rs = RsState {
                    conf: rc.clone(),
                    // init_service_rs: a server with no failed checker is added and alive.
                    alive: num_failed == 0,
                    effective_weight: match prs {
                        // A changed configured weight replaces what a checker set.
                        Some(p) if !weight_changed => p.effective_weight,
                        _ => rc.weight as i64,
                    },
                    num_failed,
                    checkers,
                };
                rss.push(rs);
            }
            let mut vs = VsState {
                conf: vc.clone(),
                quorum_up: false,
                sorry_alive: false,
                rs: rss,
                changes: 0,
            };
            match pvs {
                Some(p) => {
                    vs.quorum_up = p.quorum_up;
                    vs.sorry_alive = p.sorry_alive && vs.conf.sorry_server.is_some();
                }
                None => {
                    // set_quorum_states: up when the live weight reaches quorum + hysteresis.
                    vs.quorum_up = vs.weight_sum() >= vs.quorum() as i64 + vs.hysteresis() as i64;
                }
            }
            vs.update_quorum(true, &mut actions);
            vss.push(vs);
        }
        (Engine { vss }, actions)
    }

    /// Changes to the table so far (see `VsState::changes`).
    pub fn changes(&self) -> u64 {
        self.vss.iter().map(|v| v.changes).sum()
    }

    pub fn checker(&self, id: CheckerId) -> Option<&CheckerState> {
        self.vss.get(id.0)?.rs.get(id.1)?.checkers.get(id.2)
    }

    /// Every checker's id, in configuration order.
    pub fn checker_ids(&self) -> Vec<CheckerId> {
        let mut out = Vec::new();
        for (v, vs) in self.vss.iter().enumerate() {
            for (r, rs) in vs.rs.iter().enumerate() {
                for c in 0..rs.checkers.len() {
                    out.push((v, r, c));
                }
            }
        }
        out
    }

    /// One check's result. Returns the delay until that checker's next check and what
    /// keepalived would do besides changing IPVS. The retry rule is `tcp_epilog`'s:
    /// a live checker that fails retries `retry` times, `delay_before_retry` apart, and goes
    /// down at the failure after that (retry + 1 in a row); one success brings it back.
    pub fn record(
        &mut self,
        id: CheckerId,
        outcome: &Outcome,
        latency_ms: u64,
        now_ms: u64,
    ) -> (Duration, Vec<Action>) {
        let mut actions = Vec::new();
        let Some(vs) = self.vss.get_mut(id.0) else {
            return (Duration::from_secs(60), actions);
        };
        let Some(ck) = vs.rs.get_mut(id.1).and_then(|r| r.checkers.get_mut(id.2)) else {
            return (Duration::from_secs(60), actions);
        };
        let t = ck.conf.timing;
        ck.checks += 1;
        ck.last_latency_ms = Some(latency_ms);
        let success = matches!(outcome, Outcome::Up { .. });
        match outcome {
            Outcome::Up { .. } => {
                ck.failures = 0;
                ck.last_error = None;
            }
            Outcome::Down(e) => {
                ck.failures += 1;
                ck.last_error = Some(e.clone());
            }
        }
        let mut delay = t.delay_loop;
        let mut change = None;
        if success || ((ck.is_up || !ck.has_run) && ck.retry_it >= t.retry) {
            ck.retry_it = 0;
            if success && (!ck.is_up || !ck.has_run) {
                change = Some(true);
            } else if !success && (ck.is_up || !ck.has_run) {
                change = Some(false);
            }
        } else if ck.is_up {
            delay = t.delay_before_retry;
            ck.retry_it += 1;
        }
        let first = !ck.has_run;
        ck.has_run = true;
        if let Some(alive) = change {
            vs.update_checker_state(id.1, id.2, alive, first, now_ms, &mut actions);
        }
        // misc_dynamic / FILE_CHECK: the weight follows the check at once, whether or not
        // the state changed (update_svr_wgt); each checker contributes its offset from the
        // configured weight.
        if let Outcome::Up { weight: Some(w) } = outcome {
            let rs = &mut vs.rs[id.1];
            let base = rs.conf.weight as i64;
            rs.checkers[id.2].weight_offset = *w as i64 - base;
            let total = base + rs.checkers.iter().map(|c| c.weight_offset).sum::<i64>();
            vs.update_weight(id.1, total, &mut actions);
        }
        (delay, actions)
    }

    /// The scripts keepalived runs when it stops serving a virtual server (shutdown, or
    /// a reload that removes it): with `omega`, `notify_down` of each live real server
    /// then `quorum_down` (`clear_service_rs`, `update_vs_notifies` with `stopping`).
    pub fn stopping_scripts(vs: &VsState) -> Vec<Script> {
        if !vs.conf.omega {
            return Vec::new();
        }
        let mut out: Vec<Script> = vs
            .rs
            .iter()
            .filter(|r| r.alive)
            .filter_map(|r| r.conf.notify_down.clone())
            .collect();
        out.extend(vs.conf.quorum_down.clone());
        out
    }

    /// The services and real servers keepalived's IPVS table would hold now.
    pub fn desired(&self) -> Vec<DesiredService> {
        let mut out = Vec::new();
        for vs in &self.vss {
            for key in &vs.conf.services {
                out.push(vs.desired(*key));
            }
        }
        out
    }
}

/// Same virtual server across a reload: keepalived's `vs_iseq` (same group name, or same
/// protocol and address).
fn same_vs(a: &VirtualServer, b: &VirtualServer) -> bool {
    match (&a.group, &b.group) {
        (Some(x), Some(y)) => {
            x == y && a.services.first().map(|s| s.port) == b.services.first().map(|s| s.port)
        }
        (None, None) => a.protocol == b.protocol && a.services == b.services,
        _ => false,
    }
}

/// Same checker across a reload: every parameter equal, wherever it was written.
fn same_checker(a: &Checker, b: &Checker) -> bool {
    let strip = |c: &Checker| Checker {
        loc: Default::default(),
        ..c.clone()
    };
    strip(a) == strip(b)
}

impl VsState {
    fn quorum(&self) -> u32 {
        self.conf.quorum
    }

    /// keepalived caps the hysteresis at quorum - 1 (check_data.c).
    fn hysteresis(&self) -> u32 {
        self.conf.hysteresis.min(self.conf.quorum.saturating_sub(1))
    }

    /// `weigh_live_realservers`.
    pub fn weight_sum(&self) -> i64 {
        self.rs
            .iter()
            .filter(|r| r.alive)
            .map(|r| real_weight(r.effective_weight) as i64)
            .sum()
    }

    fn rs_name(&self, r: usize) -> String {
        let rs = &self.rs[r].conf;
        match rs.port {
            Some(p) => format!("[{}]:{}", rs.addr, p),
            None => format!("[{}]", rs.addr),
        }
    }

    fn vs_name(&self) -> String {
        match (&self.conf.group, self.conf.services.first()) {
            (Some(g), _) => format!("group {g}"),
            (None, Some(k)) => format!("[{}]:{}:{}", k.addr, k.proto.list_name(), k.port),
            (None, None) => "?".into(),
        }
    }

    /// `update_svr_checker_state` + `set_checker_state`.
    fn update_checker_state(
        &mut self,
        r: usize,
        c: usize,
        alive: bool,
        first: bool,
        now_ms: u64,
        actions: &mut Vec<Action>,
    ) {
        let ck = &self.rs[r].checkers[c];
        if ck.is_up == alive {
            // The first result confirms the start state: keepalived notifies only for a
            // failure under alpha.
            if first && (ck.conf.alpha || !alive) {
                self.rs_notify(r, actions);
            }
            return;
        }
        let failed = self.rs[r].num_failed;
        if alive {
            // Up only when this was the last failing checker (checkers are ANDed).
            if failed <= 1 {
                self.perform_svr_state(r, true, actions);
            }
        } else if failed == 0 {
            self.perform_svr_state(r, false, actions);
        }
        let rs = &mut self.rs[r];
        let ck = &mut rs.checkers[c];
        ck.is_up = alive;
        ck.since_ms = now_ms;
        if !alive {
            rs.num_failed += 1;
        } else {
            rs.num_failed = rs.num_failed.saturating_sub(1);
        }
    }

    /// `perform_svr_state`: the server enters or leaves the pool.
    fn perform_svr_state(&mut self, r: usize, alive: bool, actions: &mut Vec<Action>) {
        if self.rs[r].alive == alive {
            return;
        }
        let inhibit = self.rs[r].conf.inhibit_on_failure;
        actions.push(Action::Log(format!(
            "{}ing service {} {} VS {}",
            match (alive, inhibit) {
                (true, true) => "Enabl",
                (true, false) => "Add",
                (false, true) => "Disabl",
                (false, false) => "Remov",
            },
            self.rs_name(r),
            if inhibit {
                "of"
            } else if alive {
                "to"
            } else {
                "from"
            },
            self.vs_name()
        )));
        self.rs[r].alive = alive;
        self.changes += 1;
        self.rs_notify(r, actions);
        self.update_quorum(false, actions);
    }

    /// `do_rs_notifies`: notify_up or notify_down, by the server's state.
    fn rs_notify(&self, r: usize, actions: &mut Vec<Action>) {
        let rs = &self.rs[r];
        let s = if rs.alive {
            &rs.conf.notify_up
        } else {
            &rs.conf.notify_down
        };
        if let Some(s) = s {
            actions.push(Action::Run(s.clone()));
        }
    }

    /// `update_svr_wgt`.
    fn update_weight(&mut self, r: usize, w: i64, actions: &mut Vec<Action>) {
        let old = real_weight(self.rs[r].effective_weight);
        self.rs[r].effective_weight = w;
        if real_weight(w) != old {
            self.changes += 1;
            actions.push(Action::Log(format!(
                "Changing weight from {old} to {} for {}active service {} of VS {}",
                real_weight(w),
                if self.rs[r].alive { "" } else { "in" },
                self.rs_name(r),
                self.vs_name()
            )));
            self.update_quorum(false, actions);
        }
    }

    /// `update_quorum_state`.
    fn update_quorum(&mut self, init: bool, actions: &mut Vec<Action>) {
        let sum = self.weight_sum();
        let (q, h) = (self.quorum() as i64, self.hysteresis() as i64);
        let threshold = q + if self.quorum_up { -h } else { h };
        let has_sorry = self.conf.sorry_server.is_some();
        if !self.quorum_up && sum >= threshold {
            self.quorum_up = true;
            self.changes += 1;
            actions.push(Action::Log(format!(
                "Gained quorum {q}+{h}={threshold} <= {sum} for VS {}",
                self.vs_name()
            )));
            // The sorry server leaves, the live servers come back (desired() does both).
            self.sorry_alive = false;
            if let Some(s) = &self.conf.quorum_up {
                actions.push(Action::Run(s.clone()));
            }
        } else if (self.quorum_up && (sum == 0 || sum < threshold))
            || (init && !self.quorum_up && has_sorry && !self.sorry_alive)
        {
            self.quorum_up = false;
            self.changes += 1;
            actions.push(Action::Log(format!(
                "{} {q}-{h}={threshold} > {sum} for VS {}",
                if init {
                    "Starting with quorum down"
                } else {
                    "Lost quorum"
                },
                self.vs_name()
            )));
            if has_sorry {
                self.sorry_alive = true;
            }
            if let Some(s) = &self.conf.quorum_down {
                actions.push(Action::Run(s.clone()));
            }
        }
    }

    fn desired(&self, key: ServiceKey) -> DesiredService {
        let c = &self.conf;
        let opts = ServiceOpts {
            scheduler: c.scheduler.clone(),
            persistent: c.persistence,
            netmask: c.granularity,
            sched_flags: c.sched_flags.clone(),
            on_dead: c.on_dead,
            ..ServiceOpts::default()
        };
        let sorry_in = self.sorry_alive && c.sorry_server.is_some();
        let mut dests = Vec::new();
        let mut dead = Vec::new();
        for rs in &self.rs {
            let spec = |weight: u32| DestSpec {
                addr: rs.conf.addr,
                port: Some(rs.conf.port.unwrap_or(key.port)),
                forward: rs.conf.method,
                weight,
                u_threshold: rs.conf.u_threshold,
                l_threshold: rs.conf.l_threshold,
            };
            let inhibit = rs.conf.inhibit_on_failure;
            if rs.alive && !sorry_in {
                dests.push(spec(real_weight(rs.effective_weight)));
            } else if inhibit {
                // DEL_DEST with inhibit_on_failure is an edit to weight 0.
                dests.push(spec(0));
                if !rs.alive {
                    dead.push(spec(0));
                }
            }
        }
        if let Some(s) = &c.sorry_server {
            let spec = |weight: u32| DestSpec {
                addr: s.addr,
                port: Some(s.port.unwrap_or(key.port)),
                forward: s.method,
                weight,
                u_threshold: 0,
                l_threshold: 0,
            };
            // The sorry server is not also a real server of this service (keepalived's
            // s_svr_duplicates_rs: then the real server's entry is the one used).
            if !dests
                .iter()
                .any(|d| d.addr == s.addr && d.port == Some(s.port.unwrap_or(key.port)))
            {
                if sorry_in {
                    dests.push(spec(1));
                } else if c.sorry_server_inhibit {
                    dests.push(spec(0));
                }
            }
        }
        DesiredService {
            key,
            opts,
            dests,
            dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconf::*;
    use crate::model::Forward;

    use crate::health::fixture::*;

    fn conf(v: VirtualServer) -> KConfig {
        KConfig {
            virtual_servers: vec![v],
            ..Default::default()
        }
    }

    /// The table as `(address, weight)` pairs.
    fn table(e: &Engine) -> Vec<(String, u32)> {
        e.desired()[0]
            .dests
            .iter()
            .map(|d| (d.addr.to_string(), d.weight))
            .collect()
    }

    fn down() -> Outcome {
        Outcome::Down("connect: Connection refused".into())
    }

    fn up() -> Outcome {
        Outcome::Up { weight: None }
    }

    fn ran(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run(s) => Some(s.argv.join(" ")),
                Action::Log(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_seed_lab_server_goes_down_after_retry_plus_one_failures_and_back_after_one_success() {
        // The seeds' lab: TCP_CHECK nb_get_retry 3, delay_before_retry 3, delay_loop 6.
        let c = conf(vs(vec![
            rs("192.168.0.18", 1, vec![tcp_check(3)]),
            rs("192.168.0.28", 1, vec![tcp_check(3)]),
        ]));
        let (mut e, start) = Engine::new(&c, 0);
        assert!(ran(&start).is_empty(), "{start:?}");
        assert_eq!(table(&e).len(), 2);
        // Start state: up, no script, next check after delay_loop.
        let (d, a) = e.record((0, 0, 0), &up(), 1, 0);
        assert_eq!((d, ran(&a)), (Duration::from_secs(6), vec![]));
        // Three failures are retries, 3 s apart; the server stays in.
        for i in 1..=3 {
            let (d, a) = e.record((0, 0, 0), &down(), 1, i);
            assert_eq!(d, Duration::from_secs(3), "failure {i}");
            assert!(a.is_empty());
            assert_eq!(table(&e).len(), 2);
        }
        // The fourth (retry + 1) takes it out and runs notify_down.
        let (d, a) = e.record((0, 0, 0), &down(), 1, 4);
        assert_eq!(d, Duration::from_secs(6));
        assert_eq!(ran(&a), vec!["/down 192.168.0.18"]);
        assert_eq!(table(&e), vec![("192.168.0.28".into(), 1)]);
        assert_eq!(e.checker((0, 0, 0)).unwrap().failures, 4);
        let changes = e.changes();
        assert!(changes > 0);
        // While down, failures change nothing and keep the delay_loop pace.
        let (d, a) = e.record((0, 0, 0), &down(), 1, 5);
        assert_eq!((d, a.len()), (Duration::from_secs(6), 0));
        assert_eq!(e.changes(), changes, "no change, no table rebuild");
        // One success brings it back.
        let (d, a) = e.record((0, 0, 0), &up(), 1, 6);
        assert_eq!(d, Duration::from_secs(6));
        assert_eq!(ran(&a), vec!["/up 192.168.0.18"]);
        assert_eq!(table(&e).len(), 2);
        // A success between failures restarts the retry count.
        e.record((0, 0, 0), &down(), 1, 7);
        e.record((0, 0, 0), &up(), 1, 8);
        for i in 0..3 {
            e.record((0, 0, 0), &down(), 1, 9 + i);
        }
        assert_eq!(table(&e).len(), 2);
    }

    #[test]
    fn retry_zero_removes_at_the_first_failure() {
        let c = conf(vs(vec![rs("10.0.0.1", 1, vec![tcp_check(0)])]));
        let (mut e, _) = Engine::new(&c, 0);
        let (_, a) = e.record((0, 0, 0), &down(), 1, 0);
        assert_eq!(ran(&a)[0], "/down 10.0.0.1");
        assert!(table(&e).is_empty());
    }

    #[test]
    fn alpha_starts_failed_and_adds_after_the_first_success() {
        let mut r = rs("10.0.0.1", 2, vec![tcp_check(1)]);
        r.alpha = true;
        r.checkers[0].alpha = true;
        let (mut e, _) = Engine::new(&conf(vs(vec![r.clone()])), 0);
        assert!(table(&e).is_empty());
        // A failure under alpha with retry 1: nothing (tcp_epilog neither retries a
        // checker that is not up nor declares it down before retry failures).
        let (_, a) = e.record((0, 0, 0), &down(), 1, 0);
        assert!(a.is_empty());
        assert!(table(&e).is_empty());
        let (_, a) = e.record((0, 0, 0), &up(), 1, 1);
        assert_eq!(ran(&a), vec!["/up 10.0.0.1", "/qup"]);
        assert_eq!(table(&e), vec![("10.0.0.1".into(), 2)]);
    }

    #[test]
    fn alpha_with_retry_zero_notifies_the_first_failure() {
        let mut r = rs("10.0.0.1", 2, vec![tcp_check(0)]);
        r.alpha = true;
        r.checkers[0].alpha = true;
        let (mut e, _) = Engine::new(&conf(vs(vec![r])), 0);
        let (_, a) = e.record((0, 0, 0), &down(), 1, 0);
        assert_eq!(ran(&a), vec!["/down 10.0.0.1"]);
        let (_, a) = e.record((0, 0, 0), &down(), 1, 1);
        assert!(a.is_empty());
    }

    #[test]
    fn omega_runs_the_down_scripts_when_the_service_stops() {
        let mut v = vs(vec![
            rs("10.0.0.1", 1, vec![]),
            rs("10.0.0.2", 1, vec![tcp_check(0)]),
        ]);
        let (e, _) = Engine::new(&conf(v.clone()), 0);
        assert!(Engine::stopping_scripts(&e.vss[0]).is_empty());
        v.omega = true;
        let (mut e, _) = Engine::new(&conf(v), 0);
        e.record((0, 1, 0), &down(), 1, 0);
        let s: Vec<String> = Engine::stopping_scripts(&e.vss[0])
            .iter()
            .map(|s| s.argv.join(" "))
            .collect();
        assert_eq!(s, vec!["/down 10.0.0.1", "/qdown"]);
    }

    #[test]
    fn several_checkers_are_anded() {
        let c = conf(vs(vec![rs(
            "10.0.0.1",
            1,
            vec![tcp_check(0), tcp_check(0)],
        )]));
        let (mut e, _) = Engine::new(&c, 0);
        e.record((0, 0, 0), &down(), 1, 0);
        assert!(table(&e).is_empty(), "down on the first failing checker");
        let (_, a) = e.record((0, 0, 1), &down(), 1, 1);
        assert!(ran(&a).is_empty(), "already down: no second notify");
        e.record((0, 0, 0), &up(), 1, 2);
        assert!(table(&e).is_empty(), "one checker still failing");
        let (_, a) = e.record((0, 0, 1), &up(), 1, 3);
        assert_eq!(ran(&a)[0], "/up 10.0.0.1");
        assert_eq!(table(&e).len(), 1);
    }

    #[test]
    fn inhibit_on_failure_sets_weight_zero_instead_of_removing() {
        let mut r = rs("10.0.0.1", 5, vec![tcp_check(0)]);
        r.inhibit_on_failure = true;
        let (mut e, _) = Engine::new(&conf(vs(vec![r, rs("10.0.0.2", 1, vec![])])), 0);
        e.record((0, 0, 0), &down(), 1, 0);
        assert_eq!(
            table(&e),
            vec![("10.0.0.1".into(), 0), ("10.0.0.2".into(), 1)]
        );
        assert_eq!(e.desired()[0].dead.len(), 1);
        e.record((0, 0, 0), &up(), 1, 1);
        assert_eq!(table(&e)[0], ("10.0.0.1".into(), 5));
        assert!(e.desired()[0].dead.is_empty());
    }

    #[test]
    fn quorum_loss_swaps_in_the_sorry_server_with_hysteresis() {
        let mut v = vs(vec![
            rs("10.0.0.1", 2, vec![tcp_check(0)]),
            rs("10.0.0.2", 2, vec![tcp_check(0)]),
        ]);
        v.quorum = 3;
        v.hysteresis = 1;
        v.sorry_server = Some(SorryServer {
            loc: Loc::default(),
            addr: "10.0.0.99".parse().unwrap(),
            port: None,
            method: Forward::Route,
        });
        let (mut e, a) = Engine::new(&conf(v), 0);
        // Live weight 4 >= quorum + hysteresis: up at start, no sorry server.
        assert!(ran(&a).is_empty());
        assert_eq!(table(&e).len(), 2);
        // 2 left: not below quorum - hysteresis = 2, still up.
        e.record((0, 0, 0), &down(), 1, 0);
        assert_eq!(table(&e), vec![("10.0.0.2".into(), 2)]);
        // 0 left: lost, the sorry server replaces the pool, quorum_down runs.
        let (_, a) = e.record((0, 1, 0), &down(), 1, 1);
        assert_eq!(ran(&a), vec!["/down 10.0.0.2", "/qdown"]);
        assert_eq!(table(&e), vec![("10.0.0.99".into(), 1)]);
        // 2 back: below quorum + hysteresis = 4, the sorry server stays; the real
        // server is not put in while it is active.
        e.record((0, 0, 0), &up(), 1, 2);
        assert_eq!(table(&e), vec![("10.0.0.99".into(), 1)]);
        // 4: gained, the pool returns and the sorry server leaves.
        let (_, a) = e.record((0, 1, 0), &up(), 1, 3);
        assert_eq!(ran(&a), vec!["/up 10.0.0.2", "/qup"]);
        assert_eq!(table(&e).len(), 2);
    }

    #[test]
    fn starting_without_quorum_puts_the_sorry_server_in_and_inhibit_keeps_it_at_zero() {
        let mut v = vs(vec![]);
        v.sorry_server = Some(SorryServer {
            loc: Loc::default(),
            addr: "10.0.0.99".parse().unwrap(),
            port: Some(8080),
            method: Forward::Masq,
        });
        let (e, a) = Engine::new(&conf(v.clone()), 0);
        assert_eq!(ran(&a), vec!["/qdown"]);
        assert_eq!(table(&e), vec![("10.0.0.99".into(), 1)]);
        assert_eq!(e.desired()[0].dests[0].port, Some(8080));
        v.real_servers = vec![rs("10.0.0.1", 1, vec![])];
        v.sorry_server_inhibit = true;
        let (e, _) = Engine::new(&conf(v), 0);
        assert_eq!(
            table(&e),
            vec![("10.0.0.1".into(), 1), ("10.0.0.99".into(), 0)]
        );
    }

    #[test]
    fn misc_dynamic_weights_follow_the_exit_code_and_count_for_quorum() {
        let mut v = vs(vec![rs("10.0.0.1", 1, vec![tcp_check(0)])]);
        v.quorum = 5;
        let (mut e, _) = Engine::new(&conf(v), 0);
        assert!(!e.vss[0].quorum_up);
        let (_, a) = e.record((0, 0, 0), &Outcome::Up { weight: Some(7) }, 1, 0);
        assert_eq!(table(&e), vec![("10.0.0.1".into(), 7)]);
        assert_eq!(ran(&a), vec!["/qup"]);
        e.record((0, 0, 0), &Outcome::Up { weight: Some(0) }, 1, 1);
        assert_eq!(table(&e), vec![("10.0.0.1".into(), 0)]);
        assert!(!e.vss[0].quorum_up);
    }

    #[test]
    fn two_dynamic_checkers_add_their_offsets() {
        let (mut e, _) = Engine::new(
            &conf(vs(vec![rs(
                "10.0.0.1",
                10,
                vec![tcp_check(0), tcp_check(1)],
            )])),
            0,
        );
        e.record((0, 0, 0), &Outcome::Up { weight: Some(13) }, 1, 0);
        assert_eq!(table(&e), vec![("10.0.0.1".into(), 13)]);
        e.record((0, 0, 1), &Outcome::Up { weight: Some(8) }, 1, 1);
        assert_eq!(table(&e), vec![("10.0.0.1".into(), 11)]);
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_checkers_only() {
        let c = conf(vs(vec![
            rs("10.0.0.1", 1, vec![tcp_check(0)]),
            rs("10.0.0.2", 1, vec![tcp_check(0)]),
        ]));
        let (mut e, _) = Engine::new(&c, 0);
        e.record((0, 0, 0), &down(), 1, 0);
        e.record((0, 1, 0), &down(), 1, 0);
        assert!(table(&e).is_empty());
        // Reload: .1 unchanged (stays down, not re-added instantly), .2's checker
        // changed (fresh, up), .3 new (up).
        let mut c2 = c.clone();
        c2.virtual_servers[0].real_servers[1].checkers[0].connect_port = 8080;
        c2.virtual_servers[0]
            .real_servers
            .push(rs("10.0.0.3", 1, vec![tcp_check(0)]));
        let (e2, _) = Engine::with_previous(&c2, Some(&e), 10);
        assert_eq!(
            table(&e2),
            vec![("10.0.0.2".into(), 1), ("10.0.0.3".into(), 1)]
        );
        assert_eq!(e2.checker((0, 0, 0)).unwrap().failures, 1);
    }
}
