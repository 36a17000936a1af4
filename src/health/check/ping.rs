//! PING_CHECK (keepalived/check/check_ping.c; the sequence check is keepalived's after
//! 2.2, 2.2.7 accepts any echo reply on its socket).
//!
//! As keepalived: one ICMP echo request (128 bytes of keepalived's `set_buf` filler after
//! the ICMP header) from an unprivileged `SOCK_DGRAM` ICMP socket, bound to `bindto`; up when
//! the first packet received is an echo reply with our sequence number, down on any other
//! first packet, on a send or receive error, or when nothing comes within connect_timeout.
//!
//! Differences: keepalived widens `net.ipv4.ping_group_range` to allow its `SOCK_DGRAM`
//! socket; xvs leaves that system setting alone and, when the range does not include its
//! group, uses a raw ICMP socket (root or CAP_NET_RAW). A raw socket sees every ICMP packet
//! of the host, so there only packets about our echo (its reply, or an ICMP error quoting
//! it) are considered. keepalived keeps one socket open between checks; xvs opens one per
//! check (a fresh random sequence number each time).

use super::{bound_socket, fmt_dur, io_msg, target, Outcome, UP};
use crate::kconf::Checker;
use std::io::Read;
use std::net::Ipv4Addr;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// check_ping.c ICMP_BUFSIZE: payload bytes after the 8-byte ICMP header.
const ICMP_BUFSIZE: usize = 128;
const ECHO_REPLY: u8 = 0;
const DEST_UNREACH: u8 = 3;
const ECHO_REQUEST: u8 = 8;

pub(super) async fn check(c: &Checker, deadline: Instant) -> Outcome {
    match probe(c, deadline).await {
        Ok(()) => UP,
        Err(e) => Outcome::Down(e),
    }
}

/// The echo request: type 8, code 0, checksum, identifier, sequence, filler.
pub(crate) fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&super::udp::filler(ICMP_BUFSIZE));
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a packet on a `SOCK_DGRAM` ICMP socket means (check_ping.c `recv_it`): the kernel
/// delivers only replies to this socket's identifier, without the IP header.
pub(crate) fn dgram_verdict(icmp: &[u8], seq: u16) -> Result<(), String> {
    if icmp.len() < 8 {
        return Err(format!("short ICMP packet of {} bytes", icmp.len()));
    }
    if icmp[0] != ECHO_REPLY {
        return Err(format!("ICMP type {} instead of an echo reply", icmp[0]));
    }
    let got = u16::from_be_bytes([icmp[6], icmp[7]]);
    if got != seq {
        return Err(format!("echo reply with sequence {got}, expected {seq}"));
    }
    Ok(())
}

/// What a packet on a raw ICMP socket means: `None` when it is not about our echo.
pub(crate) fn raw_verdict(
    ip: &[u8],
    from: Ipv4Addr,
    ident: u16,
    seq: u16,
) -> Option<Result<(), String>> {
    let icmp = skip_ip_header(ip)?;
    if icmp.len() < 8 {
        return None;
    }
    let ours = |h: &[u8]| {
        h.len() >= 8
            && h[0] == ECHO_REQUEST
            && h[4..6] == ident.to_be_bytes()
            && h[6..8] == seq.to_be_bytes()
    };
    match icmp[0] {
        ECHO_REPLY
            if ip[12..16] == from.octets()
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes() =>
        {
            Some(Ok(()))
        }
        // An error quotes the IP header and first 8 bytes of the packet that caused it.
        DEST_UNREACH if skip_ip_header(&icmp[8..]).is_some_and(ours) => Some(Err(format!(
            "ICMP destination unreachable (code {})",
            icmp[1]
        ))),
        _ => None,
    }
}

fn skip_ip_header(ip: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip.len() < 20 || ihl < 20 || ip.len() < ihl || ip[0] >> 4 != 4 {
        return None;
    }
    Some(&ip[ihl..])
}

async fn probe(c: &Checker, deadline: Instant) -> Result<(), String> {
    use socket2::{Protocol, Type};
    let (sock, raw) = match bound_socket(c, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(s) => (s, false),
        // EACCES: our group is outside net.ipv4.ping_group_range.
        Err(e) => match bound_socket(c, Type::RAW, Some(Protocol::ICMPV4)) {
            Ok(s) => (s, true),
            Err(raw_e) => return Err(format!("{e}; raw ICMP {raw_e}")),
        },
    };
    // check_ping.c SOCK_RECV_BUFF.
    let _ = sock.set_recv_buffer_size(128 * 1024);
    // SAFETY: the socket2 Socket owns its descriptor, which nothing else closes or
    // replaces while the AsyncFd holds it.
    let fd = unsafe { AsyncFd::register(sock) }
        .map_err(|e| format!("socket: {}", io_msg(&std::io::Error::from(e))))?;
    let ident: u16 = rand::random();
    let seq: u16 = rand::random::<u16>() | 1;
    let pkt = echo_request(ident, seq);
    let dst: socket2::SockAddr = target(c).into();
    let total = c.timing.connect_timeout;
    let timeout = || format!("no echo reply: timeout after {}", fmt_dur(total));
    let run = async {
        loop {
            let mut g = fd
                .writable()
                .await
                .map_err(|e| format!("send: {}", io_msg(&e)))?;
            match g.try_io(|s| s.get_ref().send_to(&pkt, &dst)) {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => return Err(format!("send: {}", io_msg(&e))),
                Err(_would_block) => continue,
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut g = fd
                .readable()
                .await
                .map_err(|e| format!("recv: {}", io_msg(&e)))?;
            let n = match g.try_io(|s| (&mut s.get_ref()).read(&mut buf)) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(format!("recv: {}", io_msg(&e))),
                Err(_would_block) => continue,
            };
            if !raw {
                return dgram_verdict(&buf[..n], seq);
            }
            if let Some(v) = raw_verdict(&buf[..n], c.connect_ip, ident, seq) {
                return v;
            }
        }
    };
    match tokio::time::timeout_at(deadline, run).await {
        Ok(r) => r,
        Err(_) => Err(timeout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_and_checksum() {
        let p = echo_request(0x1234, 7);
        assert_eq!(p.len(), 8 + ICMP_BUFSIZE);
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(&p[8..27], b"keepalived check - ");
        // A packet with its checksum in place sums to zero.
        assert_eq!(checksum(&p), 0);
        // RFC 1071's example.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn dgram_replies() {
        let mut r = echo_request(1, 9);
        r[0] = ECHO_REPLY;
        assert_eq!(dgram_verdict(&r, 9), Ok(()));
        assert!(dgram_verdict(&r, 10).is_err());
        assert!(dgram_verdict(&r[..4], 9).is_err());
        r[0] = DEST_UNREACH;
        assert!(dgram_verdict(&r, 9).is_err());
    }

    #[test]
    fn raw_packets() {
        let from = Ipv4Addr::new(10, 0, 0, 2);
        let ip = |src: Ipv4Addr, icmp: &[u8]| {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
            h.extend_from_slice(&src.octets());
            h.extend_from_slice(&[10, 0, 0, 1]);
            h.extend_from_slice(icmp);
            h
        };
        let mut reply = echo_request(5, 6);
        reply[0] = ECHO_REPLY;
        assert_eq!(raw_verdict(&ip(from, &reply), from, 5, 6), Some(Ok(())));
        // Another process's reply, another host's, our own request looped back: ignored.
        assert_eq!(raw_verdict(&ip(from, &reply), from, 4, 6), None);
        assert_eq!(
            raw_verdict(&ip(Ipv4Addr::new(1, 1, 1, 1), &reply), from, 5, 6),
            None
        );
        assert_eq!(
            raw_verdict(&ip(from, &echo_request(5, 6)), from, 5, 6),
            None
        );
        // Unreachable quoting our request.
        let mut err = vec![DEST_UNREACH, 1, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&ip(Ipv4Addr::new(10, 0, 0, 1), &echo_request(5, 6)[..8]));
        let v = raw_verdict(&ip(Ipv4Addr::new(10, 0, 0, 254), &err), from, 5, 6);
        assert!(v.unwrap().is_err());
        assert_eq!(raw_verdict(&[0x45, 0], from, 5, 6), None);
        assert_eq!(raw_verdict(&[], from, 5, 6), None);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_packet_is_harmless(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = dgram_verdict(&data, 1);
            let _ = raw_verdict(&data, Ipv4Addr::LOCALHOST, 1, 1);
        }
    }
}
