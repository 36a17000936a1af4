//! Port names from `/etc/services`, the local file `getservbyname(3)`/`getservbyport(3)` read.
//!
//! ipvsadm accepts `-t 10.0.0.88:http` and, without `-n`, prints `10.0.0.88:http`. Reading the
//! file ourselves gives the same answers without going through NSS (and so never through DNS).

use crate::model::Protocol;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Where the system's table lives.
pub const SERVICES_FILE: &str = "/etc/services";

/// A port-name table for TCP and UDP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortNames {
    by_name: HashMap<(Protocol, String), u16>,
    by_port: HashMap<(Protocol, u16), String>,
}

impl PortNames {
    /// A table that knows no names: every port prints as a number.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses `/etc/services` syntax: `name port/proto [aliases...] [# comment]`.
    /// Malformed lines are skipped, as the C library does. The first entry for a port wins,
    /// matching `getservbyport`.
    pub fn parse(text: &str) -> Self {
        let mut t = Self::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let proto = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            t.by_port
                .entry((proto, port))
                .or_insert_with(|| name.to_string());
            for n in std::iter::once(name).chain(fields) {
                t.by_name.entry((proto, n.to_string())).or_insert(port);
            }
        }
        t
    }

    /// The system table, read once per process; empty if the file is missing or unreadable
    /// (ports then print as numbers and only numeric ports are accepted).
    pub fn system() -> &'static PortNames {
        static SYSTEM: OnceLock<PortNames> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            std::fs::read_to_string(SERVICES_FILE)
                .map(|s| PortNames::parse(&s))
                .unwrap_or_default()
        })
    }

    /// Port number for a service name.
    pub fn port(&self, proto: Protocol, name: &str) -> Option<u16> {
        self.by_name.get(&(proto, name.to_string())).copied()
    }

    /// Official service name for a port.
    pub fn name(&self, proto: Protocol, port: u16) -> Option<&str> {
        self.by_port.get(&(proto, port)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_comments() {
        let t = PortNames::parse(
            "# comment\nhttp\t80/tcp\t\twww # WWW\nhttp-alt 80/tcp\nhttps 443/tcp\nhttps 443/udp\n\
             bogus 99999/tcp\nnoproto 5\nddp 7/ddp\n",
        );
        assert_eq!(t.port(Protocol::Tcp, "http"), Some(80));
        assert_eq!(t.port(Protocol::Tcp, "www"), Some(80));
        assert_eq!(t.port(Protocol::Udp, "http"), None);
        assert_eq!(t.port(Protocol::Udp, "https"), Some(443));
        assert_eq!(t.name(Protocol::Tcp, 80), Some("http"));
        assert_eq!(t.name(Protocol::Tcp, 8080), None);
        assert_eq!(t.port(Protocol::Tcp, "bogus"), None);
        assert_eq!(t.port(Protocol::Tcp, "WWW"), None);
    }
}
