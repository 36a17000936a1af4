//! Small system helpers of the bench tool: network namespaces, interfaces, CPU pinning.

use super::frame::Mac;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::str::FromStr;

/// `NETNS:IFNAME`, or just `IFNAME` for the current namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsIf {
    pub netns: Option<String>,
    pub ifname: String,
}

impl FromStr for NsIf {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ns, ifname) = match s.split_once(':') {
            Some((ns, i)) => (Some(ns.to_string()), i.to_string()),
            None => (None, s.to_string()),
        };
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') {
            return Err(format!("bad interface name in '{s}' (want [NETNS:]IFNAME)"));
        }
        if let Some(n) = &ns {
            if n.is_empty() || n.contains('/') {
                return Err(format!("bad namespace name in '{s}' (want [NETNS:]IFNAME)"));
            }
        }
        Ok(NsIf { netns: ns, ifname })
    }
}

impl fmt::Display for NsIf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.netns {
            Some(n) => write!(f, "{n}:{}", self.ifname),
            None => f.write_str(&self.ifname),
        }
    }
}

/// While alive, the calling thread is in another network namespace; dropping it goes back.
pub struct NetnsGuard {
    orig: Option<File>,
}

impl NetnsGuard {
    /// Enters `/run/netns/NAME` (as `ip netns exec` does, minus the /sys remount); `None`
    /// stays where we are.
    pub fn enter(name: Option<&str>) -> Result<NetnsGuard> {
        let Some(name) = name else {
            return Ok(NetnsGuard { orig: None });
        };
        let orig =
            File::open("/proc/thread-self/ns/net").context("opening our network namespace")?;
        let path = format!("/run/netns/{name}");
        let target =
            File::open(&path).with_context(|| format!("opening network namespace {path}"))?;
        // SAFETY: setns with a namespace fd we own; it changes only this thread's namespace.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("entering network namespace {name}"));
        }
        Ok(NetnsGuard { orig: Some(orig) })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Some(f) = &self.orig {
            // SAFETY: as above, with the fd of the namespace we came from.
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        }
    }
}

/// The ifindex of `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).context("interface name contains NUL")?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!(
            "no interface {ifname} here: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(i)
}

/// The MAC address of `ifname` (SIOCGIFHWADDR; works without /sys, which `ip netns exec`
/// remounts).
pub fn if_mac(ifname: &str) -> Result<Mac> {
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFHWADDR");
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: fd is open, req is a properly initialised ifreq the kernel fills in.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(err).with_context(|| format!("reading the MAC address of {ifname}"));
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(Mac(m))
}

/// Pins thread `tid` (0 = the caller) to one CPU.
pub fn pin(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (cpu < CPU_SETSIZE checked).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} out of range");
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid} to CPU {cpu}"));
    }
    Ok(())
}

/// Gives task `tid` the real-time SCHED_FIFO policy at `prio` (1..=99).
pub fn set_fifo(tid: i32, prio: i32) -> Result<()> {
    if !(1..=99).contains(&prio) {
        bail!("SCHED_FIFO priority must be 1..=99 (got {prio})");
    }
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: p is a valid sched_param for the duration of the call.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &p) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("SCHED_FIFO {prio} for task {tid}"));
    }
    Ok(())
}

/// Parses a CPU list such as `1`, `0,1` or `0-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("bad CPU list '{s}' (want e.g. 1 or 0,1 or 0-3)");
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.parse().map_err(|_| bad())?;
            let b: usize = b.parse().map_err(|_| bad())?;
            if a > b || b >= 1024 {
                return Err(bad());
            }
            v.extend(a..=b);
        } else {
            let c: usize = part.parse().map_err(|_| bad())?;
            if c >= 1024 {
                return Err(bad());
            }
            v.push(c);
        }
    }
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return Err(format!("empty CPU list '{s}'"));
    }
    Ok(v)
}

/// Number of possible CPUs (what per-CPU maps are sized by).
pub fn possible_cpus() -> Result<usize> {
    libbpf_rs::num_possible_cpus().context("counting possible CPUs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsif_parse() {
        let a: NsIf = "xb-gen:g0".parse().unwrap();
        assert_eq!(a.netns.as_deref(), Some("xb-gen"));
        assert_eq!(a.ifname, "g0");
        assert_eq!(a.to_string(), "xb-gen:g0");
        let b: NsIf = "eth0".parse().unwrap();
        assert_eq!(b.netns, None);
        assert!(":g0".parse::<NsIf>().is_err());
        assert!("ns:".parse::<NsIf>().is_err());
        assert!("ns:averyveryverylongname".parse::<NsIf>().is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert_eq!(parse_cpus("1,0").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpus("0-3,2").unwrap(), vec![0, 1, 2, 3]);
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
