//! Helpers shared by the parser's unit tests: a fixed port-name table and shorthands.

use super::{parse_with, Command, Invocation, ParseError};
use crate::cli::services::PortNames;
use crate::model::{Protocol, Request, ServiceKey, ServiceOpts};
use std::net::Ipv4Addr;

pub(super) fn names() -> PortNames {
    PortNames::parse("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\n")
}

pub(super) fn p(args: &str) -> Result<Invocation, ParseError> {
    let v: Vec<&str> = args.split_whitespace().collect();
    parse_with(&v, &names())
}

pub(super) fn req(args: &str) -> Request {
    match p(args) {
        Ok(Invocation {
            command: Command::Change(r),
            ..
        }) => r,
        other => panic!("{args}: expected a change, got {other:?}"),
    }
}

pub(super) fn err(args: &str) -> ParseError {
    match p(args) {
        Err(e) => e,
        Ok(i) => panic!("{args}: expected an error, got {i:?}"),
    }
}

pub(super) fn key(proto: Protocol, s: &str) -> ServiceKey {
    let (a, port) = s.split_once(':').unwrap();
    ServiceKey {
        proto,
        addr: a.parse().unwrap(),
        port: port.parse().unwrap(),
    }
}

pub(super) fn tcp(s: &str) -> ServiceKey {
    key(Protocol::Tcp, s)
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn opts(sched: &str) -> ServiceOpts {
    ServiceOpts {
        scheduler: sched.to_string(),
        ..ServiceOpts::default()
    }
}
