//! Address, port and number parsing with the C library semantics ipvsadm relies on.
//!
//! ipvsadm parses addresses with `inet_aton(3)` and numbers with `strtol(3)`, so it accepts
//! forms such as `10.1` (= 10.0.0.1) or `010.0.0.1` (octal, = 8.0.0.1). Scripts written against
//! ipvsadm get exactly those values, so we reproduce the same rules rather than Rust's stricter
//! `Ipv4Addr::from_str`. Host names are *not* resolved (xvsadm never does DNS lookups).

use super::services::PortNames;
use crate::model::Protocol;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why an `address[:port]` argument was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    /// Not an address ipvsadm would accept (or a host name, which xvsadm does not resolve).
    Invalid,
    /// A valid IPv6 address: accepted by ipvsadm, not implemented by xvs.
    Ipv6,
}

/// `strtol(s, &end, 10)` that must consume the whole string, then a range check: ipvsadm's
/// `string_to_number`. Leading blanks and a sign are accepted, as strtol does.
pub fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Anything that does not fit an i64 is ERANGE for strtol on LP64, hence rejected.
    let magnitude: i64 = digits.parse().ok()?;
    let n = if neg { -magnitude } else { magnitude };
    (min..=max).contains(&n).then_some(n)
}

/// glibc `inet_aton`: 1 to 4 dot-separated parts, each decimal, octal (leading `0`) or hex
/// (leading `0x`); the last part fills the remaining bytes (`a`, `a.b24`, `a.b.c16`, `a.b.c.d`).
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let mut parts: Vec<u64> = Vec::with_capacity(4);
    for part in s.split('.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(parse_c_number(part)?);
    }
    let v: u64 = match parts.as_slice() {
        [a] => *a,
        [a, b] if *a <= 0xff && *b <= 0xff_ffff => (a << 24) | b,
        [a, b, c] if *a <= 0xff && *b <= 0xff && *c <= 0xffff => (a << 24) | (b << 16) | c,
        [a, b, c, d] if [a, b, c, d].iter().all(|x| **x <= 0xff) => {
            (a << 24) | (b << 16) | (c << 8) | d
        }
        _ => return None,
    };
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

/// One `inet_aton` part: must start with a digit; `0x` hex, `0` octal, else decimal.
fn parse_c_number(p: &str) -> Option<u64> {
    let b = p.as_bytes();
    if b.first().is_none_or(|c| !c.is_ascii_digit()) {
        return None;
    }
    let (radix, digits) = if b.len() >= 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        (16, &p[2..])
    } else if b[0] == b'0' {
        (8, &p[1..])
    } else {
        (10, p)
    };
    if digits.is_empty() {
        // "0" and glibc's lenient "0x" both mean zero.
        return Some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Values above 32 bits are rejected by the caller's range checks; saturate to stay total.
    Some(u64::from_str_radix(digits, radix).unwrap_or(u64::MAX))
}

/// A port: a number 0..=65535 or, as `getservbyname(3)` would, a name from `/etc/services`.
pub fn parse_port(s: &str, proto: Protocol, names: &PortNames) -> Option<u16> {
    match string_to_number(s, 0, 65535) {
        Some(n) => u16::try_from(n).ok(),
        None => names.port(proto, s),
    }
}

/// ipvsadm's `parse_service`: `host[:port]` with `proto` used to look port names up.
/// Returns the address and the port if one was given.
pub fn parse_addr_port(
    s: &str,
    proto: Protocol,
    names: &PortNames,
) -> Result<(Ipv4Addr, Option<u16>), AddrError> {
    // An all-digit argument is refused so that it cannot be confused with a fwmark.
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::Invalid);
    }
    if let Some(rest) = s.strip_prefix('[') {
        // `[v6addr]:port`, the only form in which ipvsadm accepts a port with IPv6.
        return match rest.split_once("]:") {
            Some((a, _)) if a.parse::<Ipv6Addr>().is_ok() => Err(AddrError::Ipv6),
            _ => Err(AddrError::Invalid),
        };
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Err(AddrError::Ipv6);
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let addr = inet_aton(host).ok_or(AddrError::Invalid)?;
    let port = match port {
        Some(p) => Some(parse_port(p, proto, names).ok_or(AddrError::Invalid)?),
        None => None,
    };
    Ok((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_semantics() {
        assert_eq!(string_to_number("42", 0, 100), Some(42));
        assert_eq!(string_to_number("+42", 0, 100), Some(42));
        assert_eq!(string_to_number(" 7", 0, 100), Some(7));
        assert_eq!(string_to_number("-1", 0, 100), None);
        assert_eq!(string_to_number("-1", -5, 100), Some(-1));
        assert_eq!(string_to_number("101", 0, 100), None);
        assert_eq!(string_to_number("1x", 0, 100), None);
        assert_eq!(string_to_number("", 0, 100), None);
        assert_eq!(string_to_number("-", 0, 100), None);
        assert_eq!(
            string_to_number("99999999999999999999999", 0, i64::MAX),
            None
        );
    }

    #[test]
    fn inet_aton_forms() {
        let a = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("10.0.0.88").as_deref(), Some("10.0.0.88"));
        assert_eq!(a("10.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1.2").as_deref(), Some("10.1.0.2"));
        assert_eq!(a("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("0x0a.0.0.1").as_deref(), Some("10.0.0.1"));
        // The octal footgun ipvsadm users actually get.
        assert_eq!(a("010.0.0.1").as_deref(), Some("8.0.0.1"));
        assert_eq!(a("10.0.0.256"), None);
        assert_eq!(a("10.0.0.1."), None);
        assert_eq!(a("10..0.1"), None);
        assert_eq!(a("1.2.3.4.5"), None);
        assert_eq!(a("09.0.0.1"), None);
        assert_eq!(a("host.example"), None);
        assert_eq!(a(""), None);
        assert_eq!(a("4294967296"), None);
    }

    #[test]
    fn addr_port() {
        let names = PortNames::parse("http 80/tcp www\ndomain 53/udp\n");
        let p = |s: &str, proto| parse_addr_port(s, proto, &names);
        let ip: Ipv4Addr = "10.0.0.88".parse().unwrap();
        assert_eq!(p("10.0.0.88:80", Protocol::Tcp), Ok((ip, Some(80))));
        assert_eq!(p("10.0.0.88", Protocol::Tcp), Ok((ip, None)));
        assert_eq!(p("10.0.0.88:0", Protocol::Tcp), Ok((ip, Some(0))));
        assert_eq!(p("10.0.0.88:www", Protocol::Tcp), Ok((ip, Some(80))));
        assert_eq!(p("10.0.0.88:domain", Protocol::Udp), Ok((ip, Some(53))));
        assert_eq!(
            p("10.0.0.88:domain", Protocol::Tcp),
            Err(AddrError::Invalid)
        );
        assert_eq!(p("10.0.0.88:65536", Protocol::Tcp), Err(AddrError::Invalid));
        assert_eq!(p("10.0.0.88:", Protocol::Tcp), Err(AddrError::Invalid));
        assert_eq!(p("1234", Protocol::Tcp), Err(AddrError::Invalid));
        assert_eq!(p("", Protocol::Tcp), Err(AddrError::Invalid));
        assert_eq!(p("web1:80", Protocol::Tcp), Err(AddrError::Invalid));
        assert_eq!(p("[2001:db8::1]:80", Protocol::Tcp), Err(AddrError::Ipv6));
        assert_eq!(p("2001:db8::1", Protocol::Tcp), Err(AddrError::Ipv6));
        assert_eq!(p("[2001:db8::1]", Protocol::Tcp), Err(AddrError::Invalid));
    }
}
