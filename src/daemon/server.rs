//! The control socket: a root-only Unix socket speaking `control::proto`.

use super::state::DaemonState;
use super::DataPathView;
use crate::control::proto;
use crate::model::{Request, Response};
use anyhow::{bail, Context, Result};
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
    let resp = match &req {
        Request::DataPath => Response::DataPath(view.stats()),
        Request::Connections => {
            let services = state.lock().unwrap_or_else(|e| e.into_inner()).services();
            return start_listing(w, services, view.clone(), listings.clone());
        }
        other => {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let resp = st.apply(other);
            if !matches!(other, Request::Status { .. }) {
                match &resp {
                    Response::Error(e) => tracing::info!(?other, error = %e, "request refused"),
                    _ => tracing::info!(?other, "configuration changed"),
                }
            }
            resp
        }
    };
    if resp == Response::Ok && !matches!(req, Request::Zero { .. }) {
        wait_for_neighbours(state);
    }
    proto::write_message(&mut w, &resp)
}

/// Runs one `-L -c` listing on its own thread (see `listing`).
fn start_listing(
    mut w: UnixStream,
    services: Vec<Arc<crate::runtime::ServiceRt>>,
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
            match super::listing::stream(&mut w, &services, &workers, &view.nat) {
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

/// After a change, gives the neighbour refresher up to 500 ms to resolve new real servers, so
/// that `xvsadm -a` returns with the server ready to forward (the first packets of a flow
/// would otherwise be dropped as `no_neighbour`). Unresolvable servers just take the time.
fn wait_for_neighbours(state: &Mutex<DaemonState>) {
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        let dests = state.lock().unwrap_or_else(|e| e.into_inner()).dests();
        if dests.iter().all(|d| d.mac().is_some()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
