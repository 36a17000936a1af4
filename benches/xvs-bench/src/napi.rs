//! NAPI instances of an interface and their threads, over the `netdev` generic netlink
//! family (`NETDEV_CMD_NAPI_GET`, kernel >= 6.8; the thread pid since 6.9).
//!
//! Threaded NAPI kthreads are named `napi/IFNAME-ID`; an interface name alone is ambiguous
//! across namespaces (every lab has an `eth0`), the NAPI id from the interface's own
//! namespace is not.

use super::sys::NetnsGuard;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::Duration;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// include/uapi/linux/netdev.h
const NETDEV_CMD_NAPI_GET: u8 = 11;
const NETDEV_A_NAPI_IFINDEX: u16 = 1;
const NETDEV_A_NAPI_ID: u16 = 2;
const NETDEV_A_NAPI_PID: u16 = 4;

const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;

/// One NAPI instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Napi {
    pub id: u32,
    /// Its kthread when threaded (0 otherwise).
    pub pid: i32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// A generic netlink request: nlmsghdr + genlmsghdr + attributes.
fn request(family: u16, flags: u16, cmd: u8, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + GENL_HDR + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&family.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(cmd);
    b.push(1); // version
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(attrs);
    b
}

/// Attributes (type, payload) of one genl message body (after the genl header).
pub fn parse_attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff; // without NLA_F_NESTED/BYTEORDER
        if len < 4 || len > b.len() {
            break;
        }
        v.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    v
}

fn attr_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages: (type, flags, payload after nlmsghdr).
pub fn split_messages(mut b: &[u8]) -> Vec<(u16, u16, &[u8])> {
    let mut v = Vec::new();
    while b.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let fl = u16::from_ne_bytes([b[6], b[7]]);
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        v.push((ty, fl, &b[NLMSG_HDR..len]));
        b = &b[align4(len).min(b.len())..];
    }
    v
}

struct Genl {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl Genl {
    fn open() -> Result<Genl> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("generic netlink socket");
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: setting a receive timeout (bounded waits) with a valid timeval.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Genl { fd, seq: 1 })
    }

    /// Sends a request and collects the payloads of its answers (until DONE or the ack).
    fn call(&mut self, family: u16, dump: bool, cmd: u8, attrs: &[u8]) -> Result<Vec<Vec<u8>>> {
        use std::os::fd::AsRawFd;
        self.seq += 1;
        let mut flags = libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
        if dump {
            flags |= libc::NLM_F_DUMP as u16;
        }
        let req = request(family, flags, cmd, self.seq, attrs);
        // SAFETY: sending our buffer on our socket (kernel as destination: zeroed address).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a netlink request");
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a dump of one interface's NAPIs is a few messages.
        for _ in 0..1000 {
            // SAFETY: receiving into our buffer of the given size.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error()).context("receiving a netlink answer");
            }
            for (ty, _fl, payload) in split_messages(&buf[..n as usize]) {
                match ty as i32 {
                    libc::NLMSG_DONE => return Ok(out),
                    libc::NLMSG_ERROR => {
                        let err = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
                            .unwrap_or(0);
                        if err == 0 {
                            if !dump {
                                return Ok(out); // the ack
                            }
                            continue;
                        }
                        return Err(std::io::Error::from_raw_os_error(-err))
                            .context("netlink request refused");
                    }
                    _ => out.push(payload.to_vec()),
                }
            }
        }
        bail!("netlink answer did not end")
    }
}

/// The NAPI instances of `ifindex` in the calling thread's namespace.
fn napis_here(ifindex: u32) -> Result<Vec<Napi>> {
    let mut g = Genl::open()?;
    let mut a = Vec::new();
    put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    let fam = g
        .call(GENL_ID_CTRL, false, CTRL_CMD_GETFAMILY, &a)
        .context("resolving the netdev genl family (kernel >= 6.1)")?;
    let family = fam
        .iter()
        .flat_map(|m| parse_attrs(m.get(GENL_HDR..).unwrap_or(&[])))
        .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, p)| p.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
        .context("netdev genl family has no id")?;
    let mut a = Vec::new();
    put_attr(&mut a, NETDEV_A_NAPI_IFINDEX, &ifindex.to_ne_bytes());
    let msgs = g
        .call(family, true, NETDEV_CMD_NAPI_GET, &a)
        .context("listing NAPI instances (netdev napi-get, kernel >= 6.8)")?;
    let mut v = Vec::new();
    for m in &msgs {
        let attrs = parse_attrs(m.get(GENL_HDR..).unwrap_or(&[]));
        let get = |t| {
            attrs
                .iter()
                .find(|(x, _)| *x == t)
                .and_then(|(_, p)| attr_u32(p))
        };
        if get(NETDEV_A_NAPI_IFINDEX) != Some(ifindex) {
            continue;
        }
        if let Some(id) = get(NETDEV_A_NAPI_ID) {
            v.push(Napi {
                id,
                pid: get(NETDEV_A_NAPI_PID).unwrap_or(0) as i32,
            });
        }
    }
    v.sort_by_key(|n| n.id);
    Ok(v)
}

/// The NAPI instances of `ifname` in namespace `netns` (None: ours), with their kthreads.
/// Falls back to the kthread name `napi/IFNAME-ID` when the kernel does not report pids.
pub fn napis(netns: Option<&str>, ifname: &str) -> Result<Vec<Napi>> {
    let mut v = {
        let _ns = NetnsGuard::enter(netns)?;
        let ifindex = super::sys::ifindex(ifname)?;
        napis_here(ifindex)?
    };
    for n in v.iter_mut().filter(|n| n.pid == 0) {
        let want = format!("napi/{ifname}-{}", n.id);
        if let Some(t) = super::cpu::kthreads(&want)
            .into_iter()
            .find(|t| t.name == want)
        {
            n.pid = t.tid;
        }
    }
    Ok(v)
}

/// Waits (bounded) until every NAPI of the interface has a thread, e.g. right after
/// threaded NAPI was switched on.
pub fn napis_threaded(netns: Option<&str>, ifname: &str) -> Result<Vec<Napi>> {
    let mut last = Vec::new();
    for _ in 0..50 {
        last = napis(netns, ifname)?;
        if !last.is_empty() && last.iter().all(|n| n.pid > 0) {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if last.is_empty() {
        bail!(
            "{}{ifname} has no NAPI instance (veth needs GRO on or an XDP program)",
            netns.map(|n| format!("{n}:")).unwrap_or_default()
        );
    }
    bail!(
        "{}{ifname}: NAPI not threaded (echo 1 > /sys/class/net/{ifname}/threaded)",
        netns.map(|n| format!("{n}:")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_and_attr_round_trip() {
        let mut a = Vec::new();
        put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        put_attr(&mut a, NETDEV_A_NAPI_IFINDEX, &7u32.to_ne_bytes());
        assert_eq!(a.len(), 12 + 8); // 4 + 7 padded to 12, then 4 + 4
        let r = request(0x10, 1, CTRL_CMD_GETFAMILY, 5, &a);
        let msgs = split_messages(&r);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, 0x10);
        let attrs = parse_attrs(&msgs[0].2[GENL_HDR..]);
        assert_eq!(attrs[0], (CTRL_ATTR_FAMILY_NAME, &b"netdev\0"[..]));
        assert_eq!(attr_u32(attrs[1].1), Some(7));
    }

    #[test]
    fn parsers_stop_at_garbage() {
        assert!(parse_attrs(&[0xff, 0xff, 1, 0]).is_empty());
        assert!(split_messages(&[1, 2, 3]).is_empty());
        assert!(split_messages(&[200, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_empty());
    }
}
