//! Facts about the interface xvsd serves, read from the kernel.

use anyhow::{bail, Context, Result};
use std::ffi::CString;

#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Number of RX queues: one worker each.
    pub rx_queues: u32,
    /// IP MTU.
    pub mtu: u16,
}

impl Iface {
    pub fn lookup(name: &str) -> Result<Self> {
        let c = CString::new(name).context("interface name contains NUL")?;
        // SAFETY: c is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            bail!("no interface named {name} (in this network namespace)");
        }
        let sys = format!("/sys/class/net/{name}");
        let mac_s = std::fs::read_to_string(format!("{sys}/address"))
            .with_context(|| format!("reading the MAC address of {name}"))?;
        let mac = parse_mac(mac_s.trim())
            .with_context(|| format!("parsing the MAC address of {name}: {mac_s:?}"))?;
        let rx_queues = std::fs::read_dir(format!("{sys}/queues"))
            .with_context(|| format!("listing the queues of {name}"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count() as u32;
        let mtu = std::fs::read_to_string(format!("{sys}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse::<u16>().ok())
            .unwrap_or(1500);
        Ok(Iface {
            name: name.to_string(),
            index,
            mac,
            rx_queues: rx_queues.max(1),
            mtu,
        })
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mac() {
        assert_eq!(
            super::parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 10, 255, 0, 1])
        );
        assert_eq!(super::parse_mac("02:00"), None);
        assert_eq!(super::parse_mac("02:00:0a:ff:00:01:02"), None);
    }
}
