//! UDP_CHECK (keepalived/check/check_udp.c, keepalived/core/layer4.c `udp_bind_connect`,
//! `udp_socket_state`, `udp_socket_error`).
//!
//! As keepalived: a connected UDP socket with `IP_RECVERR`, bound as configured, sends the
//! `payload` (without one, keepalived's 32-byte filler `keepalived check - keepalived ch`),
//! then waits up to connect_timeout:
//! - an ICMP destination unreachable (port, host, net, ...) for the datagram: down;
//! - no answer: up, unless `require_reply` is set, then down;
//! - an answer: up, but with `require_reply HEX` its length must be within
//!   `min_reply_length`..=`max_reply_length` (default 0..=255) and its first bytes must
//!   equal the given ones (compared over the shorter of the two, as `check_udp_reply`).
//!
//! Difference: keepalived's `require_reply` hex may carry a per-nibble mask, which kconf
//! does not model; the bytes are compared exactly.

use super::{bound_socket, fmt_dur, io_msg, target, Outcome, UP};
use crate::kconf::{Checker, UdpCheck};
use std::os::fd::AsRawFd;
use tokio::time::Instant;

/// layer4.c `set_buf` over a 32-byte buffer (UDP_BUFSIZE): what keepalived sends when no
/// payload is configured.
pub(crate) fn filler(len: usize) -> Vec<u8> {
    b"keepalived check - "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

pub(super) async fn check(c: &Checker, u: &UdpCheck, deadline: Instant) -> Outcome {
    match probe(c, u, deadline).await {
        Ok(o) => o,
        Err(e) => Outcome::Down(e),
    }
}

async fn probe(c: &Checker, u: &UdpCheck, deadline: Instant) -> Result<Outcome, String> {
    let s = bound_socket(c, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    set_recverr(&s)?;
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))
        .map_err(|e| format!("socket: {}", io_msg(&e)))?;
    sock.connect(target(c))
        .await
        .map_err(|e| format!("connect: {}", io_msg(&e)))?;
    let payload = if u.payload.is_empty() {
        filler(32)
    } else {
        u.payload.clone()
    };
    match sock.send(&payload).await {
        Ok(n) if n == payload.len() => {}
        Ok(n) => return Err(format!("send: {n} of {} bytes sent", payload.len())),
        Err(e) => return Err(format!("send: {}", io_msg(&e))),
    }
    let max = u.max_reply_length.unwrap_or(255);
    // One byte more than the maximum, so that a longer reply is seen as too long.
    let mut buf = vec![0u8; max + 1];
    let total = c.timing.connect_timeout;
    match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
        Err(_) if u.require_reply.is_some() => {
            Err(format!("no reply: timeout after {}", fmt_dur(total)))
        }
        Err(_) => Ok(UP),
        Ok(Ok(n)) => match &u.require_reply {
            Some(want) if !want.is_empty() => reply_matches(&buf[..n], want, u, max).map(|()| UP),
            _ => Ok(UP),
        },
        Ok(Err(e)) => match icmp_error(&sock) {
            Some(IcmpErr::Unreachable(code)) => Err(unreach_text(code).into()),
            // keepalived's `udp_socket_error`: other ICMP errors do not fail the check.
            Some(IcmpErr::Other) => Ok(UP),
            None => Err(format!("recv: {}", io_msg(&e))),
        },
    }
}

/// check_udp.c `check_udp_reply`: length bounds, then the expected bytes over the shorter
/// of the reply and the expectation.
pub(crate) fn reply_matches(
    got: &[u8],
    want: &[u8],
    u: &UdpCheck,
    max: usize,
) -> Result<(), String> {
    if got.len() < u.min_reply_length || got.len() > max {
        return Err(format!(
            "reply of {} bytes, outside {}..={max}",
            got.len(),
            u.min_reply_length
        ));
    }
    let n = got.len().min(want.len());
    if got[..n] != want[..n] {
        return Err("reply data mismatch".into());
    }
    Ok(())
}

fn set_recverr(s: &socket2::Socket) -> Result<(), String> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a c_int option value of the given size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_RECVERR,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("setsockopt IP_RECVERR: {}", io_msg(&e)));
    }
    Ok(())
}

enum IcmpErr {
    Unreachable(u8),
    Other,
}

const ICMP_DEST_UNREACH: u8 = 3;

fn unreach_text(code: u8) -> &'static str {
    match code {
        0 => "ICMP network unreachable",
        1 => "ICMP host unreachable",
        2 => "ICMP protocol unreachable",
        3 => "ICMP port unreachable",
        4 => "ICMP fragmentation needed",
        9 | 10 | 13 => "ICMP destination administratively prohibited",
        _ => "ICMP destination unreachable",
    }
}

/// Reads the socket's error queue (MSG_ERRQUEUE) for the ICMP error behind a failed recv.
fn icmp_error(sock: &tokio::net::UdpSocket) -> Option<IcmpErr> {
    let fd = sock.as_raw_fd();
    let mut data = [0u8; 64];
    let mut name = [0u8; 128];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer of
    // the length given, and recvmsg writes within those lengths.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = name.as_mut_ptr() as *mut libc::c_void;
        msg.msg_namelen = name.len() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control);
        if libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) < 0 {
            return None;
        }
        let mut found = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR {
                let ee = std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err
                );
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP && ee.ee_type == ICMP_DEST_UNREACH {
                    return Some(IcmpErr::Unreachable(ee.ee_code));
                }
                found = Some(IcmpErr::Other);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(min: usize, max: Option<usize>) -> UdpCheck {
        UdpCheck {
            payload: vec![],
            require_reply: Some(vec![1, 2]),
            min_reply_length: min,
            max_reply_length: max,
        }
    }

    #[test]
    fn filler_is_keepalived_set_buf() {
        assert_eq!(
            filler(32),
            b"keepalived check - keepalived c"
                .iter()
                .chain(b"h")
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(filler(32).len(), 32);
    }

    #[test]
    fn reply_checks() {
        let c = u(0, None);
        assert!(reply_matches(&[1, 2, 3], &[1, 2], &c, 255).is_ok());
        // Compared over the shorter: a one-byte reply matching the first byte passes.
        assert!(reply_matches(&[1], &[1, 2], &c, 255).is_ok());
        assert_eq!(
            reply_matches(&[1, 3], &[1, 2], &c, 255),
            Err("reply data mismatch".into())
        );
        let c = u(3, Some(4));
        assert!(reply_matches(&[1, 2], &[1, 2], &c, 4).is_err());
        assert!(reply_matches(&[1, 2, 0, 0, 0], &[1, 2], &c, 4).is_err());
        assert!(reply_matches(&[1, 2, 0, 0], &[1, 2], &c, 4).is_ok());
    }
}
