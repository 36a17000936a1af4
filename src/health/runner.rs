//! Runs the checks: one task per checker on a single-threaded tokio runtime in a thread of
//! its own ("xvs-health"), never on a worker's core-pinned thread, with at most
//! `MAX_IN_FLIGHT` checks at once. Each result goes into the `Engine` (keepalived's state
//! machine); when the table keepalived would have changes, the `Sink` applies it.
//!
//! Lock order: the engine's mutex, then whatever the sink takes (the daemon's state). The
//! control socket reads the engine (`--health`) without holding the daemon's state.

use super::engine::{Action, CheckerId, DesiredService, Engine, Outcome};
use crate::kconf::{Checker, KConfig, Script};
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Checks in flight at once, over all checkers: enough for thousands of servers checked
/// every few seconds (a check mostly waits), few enough that a storm of timeouts cannot
/// exhaust file descriptors.
pub const MAX_IN_FLIGHT: usize = 512;

/// keepalived's `BOOTSTRAP_DELAY` (check_api.c): the first check waits one second, plus
/// a random part of `warmup`.
const BOOTSTRAP_DELAY: Duration = Duration::from_secs(1);

/// Runs one check. The real one is `health::check::run`; tests pass their own.
pub type Prober =
    Arc<dyn Fn(Checker, u32) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Where the table goes: the daemon applies the difference to its configuration.
pub trait Sink: Send + 'static {
    fn apply(&mut self, desired: &[DesiredService]);
}

/// Whether an address is configured on this host (`ha_suspend`).
pub type LocalAddrs = Arc<dyn Fn() -> Vec<Ipv4Addr> + Send + Sync>;

enum Cmd {
    Reload(Box<KConfig>, std::sync::mpsc::Sender<()>),
    Stop,
}

pub struct Health {
    pub engine: Arc<Mutex<Engine>>,
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Ctx {
    engine: Arc<Mutex<Engine>>,
    sink: Mutex<Box<dyn Sink>>,
    /// The table last given to the sink, and the engine's change count then.
    applied: Mutex<(Vec<DesiredService>, u64)>,
    prober: Prober,
    local: LocalAddrs,
    permits: tokio::sync::Semaphore,
}

impl Health {
    /// Starts checking `conf`; the sink receives the start-up table before this returns.
    pub fn start(
        conf: KConfig,
        sink: Box<dyn Sink>,
        prober: Prober,
        local: LocalAddrs,
    ) -> std::io::Result<Health> {
        let (engine, actions) = Engine::new(&conf, crate::clock::now_ms());
        let engine = Arc::new(Mutex::new(engine));
        let ctx = Arc::new(Ctx {
            engine: engine.clone(),
            sink: Mutex::new(sink),
            applied: Mutex::new((Vec::new(), 0)),
            prober,
            local,
            permits: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        });
        run_actions(actions);
        ctx.publish(true);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("xvs-health".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = spawn_all(&ctx);
                    while let Some(cmd) = rx.recv().await {
                        tasks.abort_all();
                        match cmd {
                            Cmd::Stop => {
                                let scripts: Vec<Script> = lock(&ctx.engine)
                                    .vss
                                    .iter()
                                    .flat_map(Engine::stopping_scripts)
                                    .collect();
                                run_stopping(&scripts);
                                break;
                            }
                            Cmd::Reload(conf, done) => {
                                let actions = {
                                    let mut e = lock(&ctx.engine);
                                    // Virtual servers the new file drops: omega's scripts.
                                    let gone: Vec<Script> = e
                                        .vss
                                        .iter()
                                        .filter(|v| {
                                            !conf.virtual_servers.iter().any(|n| {
                                                n.services == v.conf.services
                                                    && n.group == v.conf.group
                                            })
                                        })
                                        .flat_map(Engine::stopping_scripts)
                                        .collect();
                                    run_stopping(&gone);
                                    let (next, actions) = Engine::with_previous(
                                        &conf,
                                        Some(&e),
                                        crate::clock::now_ms(),
                                    );
                                    *e = next;
                                    actions
                                };
                                run_actions(actions);
                                ctx.publish(true);
                                tasks = spawn_all(&ctx);
                                let _ = done.send(());
                            }
                        }
                    }
                })
            })?;
        Ok(Health {
            engine,
            cmds: tx,
            thread: Some(thread),
        })
    }

    /// Applies a new configuration: unchanged checkers keep their state. Returns once the
    /// new table has been handed to the sink.
    pub fn reload(&self, conf: KConfig) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.cmds.send(Cmd::Reload(Box::new(conf), tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    /// Hands the table to the sink if it changed (or always, with `force`). The table is
    /// rebuilt only when the engine counted a change since the last time.
    fn publish(&self, force: bool) {
        let mut applied = lock(&self.applied);
        let (desired, changes) = {
            let e = lock(&self.engine);
            let changes = e.changes();
            if !force && changes == applied.1 {
                return;
            }
            (e.desired(), changes)
        };
        if force || applied.0 != desired {
            lock(&self.sink).apply(&desired);
            applied.0 = desired;
        }
        applied.1 = changes;
    }
}

fn spawn_all(ctx: &Arc<Ctx>) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let ids = lock(&ctx.engine).checker_ids();
    for id in ids {
        set.spawn(checker_task(ctx.clone(), id));
    }
    set
}

/// One checker's loop: wait, check, record, repeat at the delay keepalived would use.
async fn checker_task(ctx: Arc<Ctx>, id: CheckerId) {
    let Some((conf, weight, suspend_addrs)) = ({
        let e = lock(&ctx.engine);
        e.checker(id).map(|c| {
            let vs = &e.vss[id.0];
            let addrs: Vec<Ipv4Addr> = if vs.conf.ha_suspend {
                vs.conf.services.iter().map(|k| k.addr).collect()
            } else {
                Vec::new()
            };
            (c.conf.clone(), vs.rs[id.1].conf.weight, addrs)
        })
    }) else {
        return;
    };
    let warmup = conf.timing.warmup;
    let jitter = if warmup.is_zero() {
        Duration::ZERO
    } else {
        warmup.mul_f64(rand::random::<f64>())
    };
    tokio::time::sleep(BOOTSTRAP_DELAY + jitter).await;
    loop {
        // ha_suspend: no checks while none of the service's addresses is on this host
        // (the backup director of a VRRP pair).
        if !suspend_addrs.is_empty() {
            let local = (ctx.local)();
            if !suspend_addrs.iter().any(|a| local.contains(a)) {
                tokio::time::sleep(conf.timing.delay_loop).await;
                continue;
            }
        }
        let outcome = {
            let Ok(_permit) = ctx.permits.acquire().await else {
                return;
            };
            let t0 = Instant::now();
            // The checker bounds itself; this is the backstop (a MISC script gets its
            // own timeout plus the 2 s keepalived allows after SIGTERM).
            let limit =
                conf.timing.connect_timeout.max(misc_timeout(&conf)) + Duration::from_secs(3);
            let out = match tokio::time::timeout(limit, (ctx.prober)(conf.clone(), weight)).await {
                Ok(o) => o,
                Err(_) => Outcome::Down(format!("timeout after {}s", limit.as_secs())),
            };
            (out, t0.elapsed())
        };
        let (delay, actions) = lock(&ctx.engine).record(
            id,
            &outcome.0,
            outcome.1.as_millis() as u64,
            crate::clock::now_ms(),
        );
        run_actions(actions);
        ctx.publish(false);
        tokio::time::sleep(delay).await;
    }
}

fn misc_timeout(c: &Checker) -> Duration {
    match &c.kind {
        crate::kconf::CheckKind::Misc(m) => m.timeout,
        _ => Duration::ZERO,
    }
}

/// Logs and scripts. Scripts run as keepalived's `notify_exec` runs them: the configured
/// words as argv (no shell), not waited for; a reaper thread collects the exit status.
fn run_actions(actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Log(m) => tracing::info!("{m}"),
            Action::Run(s) => run_script(&s),
        }
    }
}

/// Scripts at shutdown: keepalived gives each one second (`system_call_script` with
/// TIMER_HZ) before going on.
fn run_stopping(scripts: &[Script]) {
    for s in scripts {
        let Some((prog, args)) = s.argv.split_first() else {
            continue;
        };
        tracing::info!(script = %s.argv.join(" "), "running stop script");
        if let Ok(mut c) = std::process::Command::new(prog).args(args).spawn() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_script(s: &Script) {
    let Some((prog, args)) = s.argv.split_first() else {
        return;
    };
    tracing::info!(script = %s.argv.join(" "), "running notify script");
    match std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            let name = s.argv.join(" ");
            let _ =
                std::thread::Builder::new()
                    .name("xvs-notify".into())
                    .spawn(move || match child.wait() {
                        Ok(st) if !st.success() => {
                            tracing::warn!(script = %name, %st, "notify script failed")
                        }
                        Err(e) => tracing::warn!(script = %name, "waiting for notify script: {e}"),
                        _ => {}
                    });
        }
        Err(e) => {
            tracing::warn!(script = %s.argv.join(" "), loc = %s.loc, "cannot run notify script: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fixture::*;
    use crate::kconf::*;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    struct Tables(Arc<Mutex<Vec<Vec<DesiredService>>>>);
    impl Sink for Tables {
        fn apply(&mut self, d: &[DesiredService]) {
            self.0.lock().unwrap().push(d.to_vec());
        }
    }

    /// One TCP service on 10.0.0.88:80 with a 20 ms TCP_CHECK on each of `addrs`.
    fn conf(addrs: &[&str]) -> KConfig {
        let mut v = vs(addrs
            .iter()
            .map(|a| {
                let mut c = tcp_check(1);
                c.timing.delay_loop = Duration::from_millis(20);
                c.timing.delay_before_retry = Duration::from_millis(20);
                c.timing.connect_timeout = Duration::from_millis(100);
                let mut r = rs(a, 1, vec![c]);
                (r.notify_up, r.notify_down) = (None, None);
                r
            })
            .collect());
        v.services[0].addr = "10.0.0.88".parse().unwrap();
        (v.quorum_up, v.quorum_down) = (None, None);
        KConfig {
            virtual_servers: vec![v],
            ..Default::default()
        }
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn results_reach_the_sink_and_a_reload_keeps_state() {
        // A prober answering from a flag: "the service is up".
        let healthy = Arc::new(AtomicBool::new(true));
        let prober: Prober = {
            let healthy = healthy.clone();
            Arc::new(move |_c, _w| {
                let up = healthy.load(Relaxed);
                Box::pin(async move {
                    if up {
                        Outcome::Up { weight: None }
                    } else {
                        Outcome::Down("refused".into())
                    }
                })
            })
        };
        let tables = Arc::new(Mutex::new(Vec::new()));
        let last = |t: &Arc<Mutex<Vec<Vec<DesiredService>>>>| {
            t.lock()
                .unwrap()
                .last()
                .map(|d: &Vec<DesiredService>| d[0].dests.len())
        };
        let h = Health::start(
            conf(&["10.0.0.9"]),
            Box::new(Tables(tables.clone())),
            prober,
            Arc::new(Vec::new),
        )
        .unwrap();
        // The start-up table is there before start returns.
        assert_eq!(last(&tables), Some(1));
        // Checks run (after the one-second bootstrap delay) and a failure removes the server.
        wait("a first check", || {
            h.engine.lock().unwrap().checker((0, 0, 0)).unwrap().checks > 0
        });
        healthy.store(false, Relaxed);
        wait("the server to leave", || last(&tables) == Some(0));
        // A reload adding a server keeps the failed one out (its checker is unchanged)
        // and puts the new one in.
        h.reload(conf(&["10.0.0.9", "10.0.0.20"]));
        assert_eq!(last(&tables), Some(1));
        let t = tables.lock().unwrap().last().unwrap()[0].dests[0].addr;
        assert_eq!(t.to_string(), "10.0.0.20");
        healthy.store(true, Relaxed);
        wait("both servers in", || last(&tables) == Some(2));
        drop(h);
    }

    #[test]
    fn ha_suspend_checks_only_while_the_vip_is_here() {
        let prober: Prober = Arc::new(|_c, _w| Box::pin(async { Outcome::Up { weight: None } }));
        let mut c = conf(&["10.0.0.9"]);
        c.virtual_servers[0].ha_suspend = true;
        // Shorter than the first check's bootstrap delay, so the suspended loop is seen.
        for rs in &mut c.virtual_servers[0].real_servers {
            rs.checkers[0].timing.delay_loop = Duration::from_millis(50);
        }
        let here = Arc::new(AtomicBool::new(false));
        let local: LocalAddrs = {
            let here = here.clone();
            Arc::new(move || {
                if here.load(Relaxed) {
                    vec!["10.0.0.88".parse().unwrap()]
                } else {
                    Vec::new()
                }
            })
        };
        let tables = Arc::new(Mutex::new(Vec::new()));
        let h = Health::start(c, Box::new(Tables(tables)), prober, local).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            h.engine.lock().unwrap().checker((0, 0, 0)).unwrap().checks,
            0
        );
        // The VIP arrives (VRRP made this director the master): checks start.
        here.store(true, Relaxed);
        wait("a check once the VIP is here", || {
            h.engine.lock().unwrap().checker((0, 0, 0)).unwrap().checks > 0
        });
    }
}
