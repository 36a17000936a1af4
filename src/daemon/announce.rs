//! `xvsd --announce-dev NAME`: the VIPs a routing daemon (BIRD, FRR) announces, kept as /32
//! addresses on a TUN device that only this xvsd holds. See docs/scale-out.md.
//!
//! A VIP is on the device iff xvsd runs, announcing is on (`xvsadm --announce on`, the
//! default; `off` drains the director) and some service on that address has a real server
//! that can take new connections: weight > 0 and not declared dead by a health checker.
//! The routing daemon exports the device's addresses (BIRD `protocol direct`, FRR
//! `redistribute connected`), so the route follows them.
//!
//! Why a TUN device: it is opened without `IFF_PERSIST`, so the kernel deletes it, and its
//! addresses with it, when the last file descriptor closes: when xvsd exits, however it
//! exits (SIGKILL and a crash included). No stale announcement can outlive the daemon, and
//! no cleanup code has to run. Nothing is ever read from or written to the device.
//!
//! Everything here runs in the daemon's main loop (housekeeping), never on the data path.

use super::neigh::Neighbours;
use crate::service::ServiceRt;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// `_IOW('T', 202, int)` from `linux/if_tun.h`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the name and the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// What the control socket sees of the announcer (`xvsadm --announce`).
#[derive(Debug, Default)]
pub struct AnnounceCtl {
    /// `--announce-dev`, or `None` when xvsd announces nothing.
    pub device: Option<String>,
    /// Cleared by `xvsadm --announce off` (drain): every VIP is withdrawn, forwarding goes on.
    pub enabled: AtomicBool,
    /// The VIPs on the device after the main loop's last pass.
    pub announced: Mutex<Vec<Ipv4Addr>>,
}

impl AnnounceCtl {
    pub fn new(device: Option<String>) -> Self {
        AnnounceCtl {
            device,
            enabled: AtomicBool::new(true),
            announced: Mutex::new(Vec::new()),
        }
    }
}

/// Whether a service lets its VIP be announced: some real server can take new connections
/// (weight > 0 and not declared dead by the health checks). Overload (`-x`) does not count
/// against it: it is transient and announcing would flap with the load.
pub fn service_serves(rt: &ServiceRt) -> bool {
    rt.sched_set()
        .dests
        .iter()
        .any(|d| d.weight() > 0 && !d.is_dead())
}

/// The VIPs to announce, sorted, without duplicates: every address with at least one
/// serving service (a VIP with services on several ports is announced while any of them
/// serves), none when announcing is off.
pub fn wanted(
    services: impl IntoIterator<Item = (Ipv4Addr, bool)>,
    enabled: bool,
) -> Vec<Ipv4Addr> {
    if !enabled {
        return Vec::new();
    }
    let mut v: Vec<Ipv4Addr> = services
        .into_iter()
        .filter_map(|(a, serves)| serves.then_some(a))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The device and the addresses on it.
pub struct Announcer {
    /// Held open for xvsd's lifetime, never read: closing it deletes the device.
    _tun: OwnedFd,
    name: String,
    ifindex: u32,
    nl: Neighbours,
    ctl: Arc<AnnounceCtl>,
    /// The last error, logged once rather than at every retry.
    last_error: Option<String>,
}

impl Announcer {
    /// Creates the TUN device `name` (refused if it exists: another xvsd, or a persistent
    /// device of the same name) and brings it up with no address.
    pub fn open(name: &str, ctl: Arc<AnnounceCtl>) -> Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!("--announce-dev {name:?}: an interface name of 1 to 15 bytes");
        }
        // SAFETY: open(2) on a NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening /dev/net/tun");
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let tun = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq; IfReqFlags has its layout.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("creating TUN device {name} (does it exist already, or is another xvsd running?)")
            });
        }
        set_up(name)?;
        // The device carries no traffic: no IPv6 link-local address or router
        // solicitations on it (best effort; IPv6 may be off altogether).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        let cname = std::ffi::CString::new(name).context("--announce-dev: a NUL in the name")?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("looking up {name}"));
        }
        let nl = Neighbours::open()?;
        tracing::info!(
            dev = name,
            ifindex,
            "announce device up (VIPs appear on it while they serve)"
        );
        Ok(Announcer {
            _tun: tun,
            name: name.to_string(),
            ifindex,
            nl,
            ctl,
            last_error: None,
        })
    }

    /// Makes the device hold exactly `want` (as /32 addresses). Reads what the device has
    /// first, so that an address someone removed by hand comes back at the next pass.
    pub fn sync(&mut self, want: &[Ipv4Addr]) {
        let r = self.try_sync(want);
        match r {
            Ok(changed) => {
                self.last_error = None;
                if changed {
                    tracing::info!(dev = %self.name, vips = ?want, "announced VIPs changed");
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(&msg) {
                    tracing::warn!(dev = %self.name, "announcing VIPs: {msg}");
                    self.last_error = Some(msg);
                }
            }
        }
    }

    fn try_sync(&mut self, want: &[Ipv4Addr]) -> Result<bool> {
        let have = self.nl.addrs_on(self.ifindex)?;
        let mut changed = false;
        for a in have.iter().filter(|a| !want.contains(a)) {
            self.nl.addr_change(self.ifindex, *a, false)?;
            changed = true;
        }
        for a in want.iter().filter(|a| !have.contains(a)) {
            self.nl.addr_change(self.ifindex, *a, true)?;
            changed = true;
        }
        *self.ctl.announced.lock().unwrap_or_else(|e| e.into_inner()) = want.to_vec();
        Ok(changed)
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // Closing the descriptor (OwnedFd's drop, right after this) deletes the device and
        // withdraws every VIP at once.
        self.ctl
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::info!(dev = %self.name, "announce device removed: every VIP withdrawn");
    }
}

/// `ip link set NAME up`, through the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
fn set_up(name: &str) -> Result<()> {
    // SAFETY: socket(2); the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCSIFFLAGS");
    }
    // SAFETY: s is a fresh descriptor that nothing else owns.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: both ioctls take a struct ifreq, which IfReqFlags lays out.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("bringing {name} up"));
        }
    }
    Ok(())
}

/// The announcer's view of every service: (VIP, serves).
pub fn service_view(services: &[Arc<ServiceRt>]) -> Vec<(Ipv4Addr, bool)> {
    services
        .iter()
        .map(|rt| (rt.key.addr, service_serves(rt)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestRt;
    use std::sync::atomic::Ordering::Relaxed;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_vip_is_wanted_while_any_of_its_services_serves() {
        let v = wanted(
            [
                (ip("10.0.0.2"), true),
                (ip("10.0.0.1"), false),
                (ip("10.0.0.2"), false),
                (ip("10.0.0.3"), false),
                (ip("10.0.0.3"), true),
            ],
            true,
        );
        assert_eq!(v, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    }

    #[test]
    fn drain_wants_nothing() {
        assert!(wanted([(ip("10.0.0.2"), true)], false).is_empty());
    }

    #[test]
    fn a_service_serves_while_a_server_has_weight_and_is_alive() {
        use crate::model::{Forward, Protocol, ServiceKey};
        let key = ServiceKey {
            proto: Protocol::Tcp,
            addr: ip("10.0.0.88"),
            port: 80,
        };
        let rt = ServiceRt::new(key, crate::sched::by_name("mh").unwrap());
        assert!(!service_serves(&rt), "no real server");
        let a = Arc::new(DestRt::new(ip("10.0.0.9"), 80, Forward::Route, 1));
        let b = Arc::new(DestRt::new(ip("10.0.0.20"), 80, Forward::Route, 0));
        rt.set_dests(vec![a.clone(), b.clone()], None);
        assert!(service_serves(&rt));
        a.set_dead(true);
        assert!(!service_serves(&rt), "one dead, one at weight 0");
        b.weight.store(2, Relaxed);
        assert!(service_serves(&rt));
        b.weight.store(0, Relaxed);
        a.set_dead(false);
        assert!(service_serves(&rt), "back from the dead");
        assert_eq!(service_view(&[Arc::new(rt)]), vec![(ip("10.0.0.88"), true)]);
    }

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(std::mem::offset_of!(IfReqFlags, flags), 16);
    }
}
