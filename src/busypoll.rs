//! Preferred busy polling (`xvsd --busy-poll`, Linux 5.11+): the worker, not the kernel's
//! NAPI thread or softirq, runs the interface's receive processing, from its own
//! `recvfrom`/`sendto`/`poll` calls on the AF_XDP socket.
//!
//! Why: when the worker and the interface's NAPI share a core, the scheduler splits the core
//! between them whatever the load; under overload the NAPI side spends its half receiving
//! frames the worker has no time for and the kernel drops at the socket (receive livelock).
//! Driven from the worker, NAPI runs only when the worker asks for more, so the split follows
//! the work. Three things make it so:
//! - on each socket `SO_BUSY_POLL` (how long one call may poll, µs), `SO_PREFER_BUSY_POLL`
//!   (while the application polls, the kernel keeps its own processing off) and
//!   `SO_BUSY_POLL_BUDGET` (frames per NAPI poll);
//! - on the interface `napi_defer_hard_irqs` and `gro_flush_timeout`: after a busy poll the
//!   device's interrupt (for veth: the peer's wake-up) stays masked and a timer of
//!   `gro_flush_timeout` ns takes over, so the kernel's NAPI only runs if the worker stops
//!   polling for that long (idle, or a stalled worker: traffic is never stranded).
//!
//! xvsd writes the two interface settings when `--busy-poll` is given and puts the old values
//! back when it stops ([`IfaceTuning`]); they apply to the whole interface.

use anyhow::{Context, Result};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// `SO_BUSY_POLL` (asm-generic/socket.h).
const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL` (Linux 5.11).
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET` (Linux 5.11).
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Busy-poll settings of one socket and its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL`: µs one call may spend polling NAPI for frames.
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: frames one NAPI poll may process (above 64 needs CAP_NET_ADMIN).
    pub budget: u32,
    /// `napi_defer_hard_irqs` of the interface: how many empty polls keep the IRQ masked.
    pub defer_hard_irqs: u32,
    /// `gro_flush_timeout` of the interface, ns: how long the kernel waits for the
    /// application's next poll before it runs NAPI itself.
    pub gro_flush_timeout_ns: u64,
}

impl Default for BusyPoll {
    /// The values of the preferred-busy-polling series' measurements (Töpel, 5.11):
    /// defer 2, timeout 200 µs; budget 64 = the worker's RX batch.
    fn default() -> Self {
        BusyPoll {
            usecs: 20,
            budget: 64,
            defer_hard_irqs: 2,
            gro_flush_timeout_ns: 200_000,
        }
    }
}

fn setsockopt_u32(fd: RawFd, opt: libc::c_int, v: u32) -> std::io::Result<()> {
    let v = v as libc::c_int;
    // SAFETY: passes a valid c_int and its size; fd is only read by the kernel.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Turns preferred busy polling on for one (AF_XDP) socket.
pub fn set_socket(fd: RawFd, bp: &BusyPoll) -> Result<()> {
    setsockopt_u32(fd, SO_PREFER_BUSY_POLL, 1).context("SO_PREFER_BUSY_POLL (Linux 5.11+)")?;
    setsockopt_u32(fd, SO_BUSY_POLL, bp.usecs).context("SO_BUSY_POLL")?;
    setsockopt_u32(fd, SO_BUSY_POLL_BUDGET, bp.budget).context("SO_BUSY_POLL_BUDGET")?;
    Ok(())
}

/// Interface settings xvsd changed, with their old values, put back by [`restore`] (or on
/// drop). Files are those of `ROOT/IFNAME/` (ROOT is /sys/class/net for real use).
///
/// [`restore`]: IfaceTuning::restore
#[derive(Debug, Default)]
pub struct IfaceTuning {
    saved: Vec<(PathBuf, String)>,
}

impl IfaceTuning {
    /// Writes `napi_defer_hard_irqs` and `gro_flush_timeout` of each interface. On an error
    /// what was written so far is put back, and the error names the file.
    pub fn apply(root: &Path, ifnames: &[String], bp: &BusyPoll) -> Result<IfaceTuning> {
        let mut t = IfaceTuning::default();
        for ifname in ifnames {
            for (file, value) in [
                ("napi_defer_hard_irqs", bp.defer_hard_irqs as u64),
                ("gro_flush_timeout", bp.gro_flush_timeout_ns),
            ] {
                let path = root.join(ifname).join(file);
                let old = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let old = old.trim().to_string();
                if old == value.to_string() {
                    // Already so (set by the operator, e.g. under a unit with a read-only
                    // /sys): nothing to write or to restore.
                    continue;
                }
                std::fs::write(&path, value.to_string())
                    .with_context(|| format!("writing {value} to {}", path.display()))?;
                t.saved.push((path, old));
            }
        }
        Ok(t)
    }

    /// Puts the old values back (once; later calls do nothing). Returns the files it could
    /// not restore, for the log.
    pub fn restore(&mut self) -> Vec<(PathBuf, std::io::Error)> {
        let mut failed = Vec::new();
        // Reverse order: an interface named twice ends with its first old value.
        while let Some((path, old)) = self.saved.pop() {
            if let Err(e) = std::fs::write(&path, &old) {
                failed.push((path, e));
            }
        }
        failed
    }

    /// Settings currently held (to be restored).
    pub fn len(&self) -> usize {
        self.saved.len()
    }

    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }
}

impl Drop for IfaceTuning {
    fn drop(&mut self) {
        for (path, e) in self.restore() {
            tracing::warn!(file = %path.display(), error = %e, "could not restore a busy-poll interface setting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/class/net with the two files per interface.
    fn fake_sysfs(ifs: &[(&str, &str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "xvs-busypoll-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        for (name, defer, timeout) in ifs {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("napi_defer_hard_irqs"), format!("{defer}\n")).unwrap();
            std::fs::write(d.join("gro_flush_timeout"), format!("{timeout}\n")).unwrap();
        }
        root
    }

    fn read(root: &Path, ifname: &str, file: &str) -> String {
        std::fs::read_to_string(root.join(ifname).join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn settings_are_written_and_restored() {
        let root = fake_sysfs(&[("eth0", "0", "0"), ("eth1", "1", "5000")]);
        let bp = BusyPoll::default();
        let mut t =
            IfaceTuning::apply(&root, &["eth0".to_string(), "eth1".to_string()], &bp).unwrap();
        assert_eq!(t.len(), 4);
        for i in ["eth0", "eth1"] {
            assert_eq!(read(&root, i, "napi_defer_hard_irqs"), "2");
            assert_eq!(read(&root, i, "gro_flush_timeout"), "200000");
        }
        assert!(t.restore().is_empty());
        assert!(t.is_empty());
        assert_eq!(read(&root, "eth0", "napi_defer_hard_irqs"), "0");
        assert_eq!(read(&root, "eth0", "gro_flush_timeout"), "0");
        assert_eq!(read(&root, "eth1", "napi_defer_hard_irqs"), "1");
        assert_eq!(read(&root, "eth1", "gro_flush_timeout"), "5000");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn values_already_set_are_left_alone() {
        let root = fake_sysfs(&[("eth0", "2", "200000")]);
        let t = IfaceTuning::apply(&root, &["eth0".to_string()], &BusyPoll::default()).unwrap();
        assert!(t.is_empty(), "nothing written, nothing to restore");
        // Read-only files with the right values do not fail either.
        for f in ["napi_defer_hard_irqs", "gro_flush_timeout"] {
            let path = root.join("eth0").join(f);
            let mut perm = std::fs::metadata(&path).unwrap().permissions();
            perm.set_readonly(true);
            std::fs::set_permissions(&path, perm).unwrap();
        }
        assert!(IfaceTuning::apply(&root, &["eth0".to_string()], &BusyPoll::default()).is_ok());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn dropping_restores_and_a_failure_undoes_what_was_written() {
        let root = fake_sysfs(&[("eth0", "0", "20000")]);
        let bp = BusyPoll {
            defer_hard_irqs: 10,
            gro_flush_timeout_ns: 1000,
            ..BusyPoll::default()
        };
        {
            let _t = IfaceTuning::apply(&root, &["eth0".to_string()], &bp).unwrap();
            assert_eq!(read(&root, "eth0", "napi_defer_hard_irqs"), "10");
        }
        assert_eq!(read(&root, "eth0", "napi_defer_hard_irqs"), "0");
        assert_eq!(read(&root, "eth0", "gro_flush_timeout"), "20000");
        // eth9 does not exist: eth0's values are put back before the error returns.
        let e =
            IfaceTuning::apply(&root, &["eth0".to_string(), "eth9".to_string()], &bp).unwrap_err();
        assert!(format!("{e:#}").contains("eth9"), "{e:#}");
        assert_eq!(read(&root, "eth0", "napi_defer_hard_irqs"), "0");
        assert_eq!(read(&root, "eth0", "gro_flush_timeout"), "20000");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn socket_options_reach_a_real_socket() {
        // A UDP socket takes the same SOL_SOCKET options as an AF_XDP one.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let fd = s.as_raw_fd();
        set_socket(fd, &BusyPoll::default()).unwrap();
        let get = |opt| {
            let mut v: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: v and len are valid for writing, len holds v's size.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &mut v as *mut libc::c_int as *mut libc::c_void,
                    &mut len,
                )
            };
            (r == 0).then_some(v)
        };
        assert_eq!(get(SO_BUSY_POLL), Some(20));
        // Not every kernel reads these two back (setting them succeeded above).
        assert!(matches!(get(SO_PREFER_BUSY_POLL), None | Some(1)));
        assert!(matches!(get(SO_BUSY_POLL_BUDGET), None | Some(64)));
    }
}
