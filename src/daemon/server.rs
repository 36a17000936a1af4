//! The control socket: a root-only Unix socket speaking `control::proto`.

use super::state::DaemonState;
use super::DataPathView;
use crate::control::proto;
use crate::dest::DestRt;
use crate::model::{Request, Response};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Binds the control socket with mode 0600, refusing to steal a live daemon's socket.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another xvsd is already serving {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Create the socket already private: no window where others could connect.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let r = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = r.with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

/// Serves requests one connection at a time (they are short) forever; `-L -c` listings,
/// which take seconds on a full table, each run on a thread of their own so that changes
/// are not held up behind them.
pub fn serve(listener: UnixListener, state: Arc<Mutex<DaemonState>>, view: Arc<DataPathView>) {
    let listings = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if let Err(e) = handle(stream, &state, &view, &listings) {
            tracing::warn!("control connection: {e:#}");
        }
    }
}

/// Concurrent `-L -c` listings at most (each holds a few chunk buffers, about a megabyte).
const MAX_LISTINGS: usize = 4;

/// How long a listing waits for its client to take the next chunk before giving up: long
/// enough for a slow pipe (`xvsadm -Lcn | less` paused for a while).
const LISTING_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

fn handle(
    stream: UnixStream,
    state: &Mutex<DaemonState>,
    view: &Arc<DataPathView>,
    listings: &Arc<AtomicUsize>,
) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let req: Request = match proto::read_message(&mut r) {
        Ok(req) => req,
        Err(e) => {
            let _ = proto::write_message(&mut w, &Response::Error(format!("{e:#}")));
            return Err(e);
        }
    };
    let mut added = Vec::new();
    let resp = match &req {
        Request::DataPath => Response::DataPath(Box::new(view.stats())),
        Request::Health => Response::Health(view.health.as_ref().map(|e| {
            super::kconf::health_rows(
                &e.lock().unwrap_or_else(|e| e.into_inner()),
                crate::clock::now_ms(),
            )
        })),
        Request::Daemons => Response::Daemons(view.sync.status()),
        Request::Reload => request_reload(view),
        Request::Announce { set } => announce(view, *set),
        Request::StartDaemon { config } => {
            let r = view.sync.start(config.clone());
            tracing::info!(?config, result = ?r, "start-daemon");
            r.map_or_else(Response::Error, |()| Response::Ok)
        }
        Request::StopDaemon { role } => {
            let r = view.sync.stop(*role);
            tracing::info!(?role, result = ?r, "stop-daemon");
            r.map_or_else(Response::Error, |()| Response::Ok)
        }
        Request::Connections => {
            let services = state.lock().unwrap_or_else(|e| e.into_inner()).services();
            return start_listing(w, services, view.clone(), listings.clone());
        }
        other => {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let before = st.dests();
            let resp = st.apply(other);
            if !matches!(other, Request::Status { .. }) {
                match &resp {
                    Response::Error(e) => tracing::info!(?other, error = %e, "request refused"),
                    _ => tracing::info!(?other, "configuration changed"),
                }
            }
            if resp == Response::Ok {
                added = added_servers(&before, &st.dests());
            }
            resp
        }
    };
    wait_for_neighbours(&added, NEIGHBOUR_WAIT);
    proto::write_message(&mut w, &resp)
}

/// How long `--reload` waits for the main loop (which looks every 50 ms; a keepalived.conf
/// is parsed in milliseconds, a large rules file in well under a second).
const RELOAD_WAIT: Duration = Duration::from_secs(20);

/// `xvsadm --reload`: the main loop reloads, as on SIGHUP, and says how it went.
fn request_reload(view: &DataPathView) -> Response {
    let (tx, rx) = std::sync::mpsc::channel();
    if view.reload.send(tx).is_err() {
        return Response::Error("xvsd is stopping: no reload".into());
    }
    match rx.recv_timeout(RELOAD_WAIT) {
        Ok(Ok(summary)) => Response::Reloaded(summary),
        Ok(Err(e)) => Response::Error(e),
        Err(_) => Response::Error(format!(
            "the reload did not finish within {} s",
            RELOAD_WAIT.as_secs()
        )),
    }
}

/// Runs one `-L -c` listing on its own thread (see `listing`).
fn start_listing(
    mut w: UnixStream,
    services: Vec<Arc<crate::service::ServiceRt>>,
    view: Arc<DataPathView>,
    listings: Arc<AtomicUsize>,
) -> Result<()> {
    if listings.fetch_add(1, SeqCst) >= MAX_LISTINGS {
        listings.fetch_sub(1, SeqCst);
        return proto::write_message(
            &mut w,
            &Response::Error(format!(
                "{MAX_LISTINGS} connection listings are already running; try again later"
            )),
        );
    }
    w.set_write_timeout(Some(LISTING_WRITE_TIMEOUT))?;
    let spawned = std::thread::Builder::new().name("xvs-list".into()).spawn({
        let listings = listings.clone();
        move || {
            let workers: Vec<_> = view.workers.iter().map(|(h, _)| h).collect();
            let t = std::time::Instant::now();
            match super::listing::stream(
                &mut w,
                &services,
                &workers,
                &view.nat,
                view.sync_hooks.parked(),
            ) {
                Ok(n) => {
                    tracing::debug!(entries = n, elapsed = ?t.elapsed(), "connection listing sent")
                }
                Err(e) => tracing::warn!("connection listing: {e:#}"),
            }
            listings.fetch_sub(1, SeqCst);
        }
    });
    if let Err(e) = spawned {
        listings.fetch_sub(1, SeqCst);
        return Err(e).context("spawning a listing thread");
    }
    Ok(())
}

/// How long a change may wait for its new real servers' MACs.
const NEIGHBOUR_WAIT: Duration = Duration::from_millis(500);

/// The real servers a change created: in `after` but not in `before` (by object, so a server
/// re-added with another forwarding method, which gets a fresh object, counts as new).
fn added_servers(before: &[Arc<DestRt>], after: &[Arc<DestRt>]) -> Vec<Arc<DestRt>> {
    let old: HashSet<*const DestRt> = before.iter().map(Arc::as_ptr).collect();
    after
        .iter()
        .filter(|d| !old.contains(&Arc::as_ptr(d)))
        .cloned()
        .collect()
}

/// After a change, gives the neighbour refresher up to `budget` to resolve the servers the
/// change added, so that `xvsadm -a` returns with the server ready to forward (the first
/// packets of a flow would otherwise be dropped as `no_neighbour`). Only those servers are
/// waited for: a dead server elsewhere in the configuration must not slow down every later
/// change. An unresolvable new server just takes the time. Returns whether all resolved.
fn wait_for_neighbours(added: &[Arc<DestRt>], budget: Duration) -> bool {
    let deadline = std::time::Instant::now() + budget;
    loop {
        if added.iter().all(|d| d.mac().is_some()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `xvsadm --announce on|off|show`: the main loop applies a change within 50 ms (it owns the
/// device); the answer is the state before that pass, with `enabled` already the new one.
fn announce(view: &DataPathView, set: Option<bool>) -> Response {
    let a = &view.announce;
    let Some(device) = a.device.clone() else {
        return Response::Error("xvsd runs without --announce-dev: nothing is announced".into());
    };
    if let Some(on) = set {
        let was = a.enabled.swap(on, std::sync::atomic::Ordering::Relaxed);
        if was != on {
            tracing::info!(
                announce = on,
                "{}",
                if on {
                    "announcing the serving VIPs again"
                } else {
                    "drained: every VIP withdrawn, forwarding goes on"
                }
            );
        }
    }
    Response::Announce(crate::model::AnnounceStatus {
        device,
        enabled: a.enabled.load(std::sync::atomic::Ordering::Relaxed),
        announced: a
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Forward;
    use std::time::Instant;

    fn dest(ip: &str, mac: Option<[u8; 6]>) -> Arc<DestRt> {
        let d = Arc::new(DestRt::new(ip.parse().unwrap(), 80, Forward::Route, 1));
        d.set_mac(mac);
        d
    }

    #[test]
    fn a_change_waits_only_for_the_servers_it_adds() {
        // A dead server (never resolves) is configured; a live one is added.
        let dead = dest("10.0.0.77", None);
        let live = dest("10.0.0.20", None);
        let before = vec![dead.clone()];
        let after = vec![dead.clone(), live.clone()];
        let added = added_servers(&before, &after);
        assert_eq!(added.len(), 1);
        assert!(Arc::ptr_eq(&added[0], &live));
        // Edits that add nothing wait for nothing, whatever else is unresolved.
        assert!(added_servers(&after, &after).is_empty());
        assert!(wait_for_neighbours(&[], Duration::from_secs(5)));

        // The live server resolves shortly (as the refresher would set it): the wait ends
        // then, not at the deadline, and regardless of the dead one.
        let setter = {
            let live = live.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                live.set_mac(Some([2, 0, 10, 0, 0, 20]));
            })
        };
        let t = Instant::now();
        assert!(wait_for_neighbours(&added, Duration::from_secs(30)));
        assert!(t.elapsed() < Duration::from_secs(30));
        setter.join().unwrap();

        // An unresolvable new server takes the budget and reports it.
        assert!(!wait_for_neighbours(
            &added_servers(&[], &[dead]),
            Duration::from_millis(30)
        ));
    }
}
