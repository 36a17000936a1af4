//! `#[repr(C)]` mirrors of `bpf/xvs_shared.h` (checked against the program's BTF in a test).

use crate::model::ServiceKey;

/// `struct xvs_svc_key`: address and port in network byte order, as in the packet.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

impl SvcKey {
    pub fn new(k: &ServiceKey) -> Self {
        SvcKey {
            addr: u32::from_ne_bytes(k.addr.octets()),
            port: k.port.to_be(),
            proto: k.proto.number(),
            pad: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) plain-old-data with no padding holes (4 + 2 + 1 + 1 bytes).
        unsafe {
            std::slice::from_raw_parts(self as *const _ as *const u8, std::mem::size_of::<Self>())
        }
    }
}

/// `struct xvs_svc_val`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcVal {
    pub flags: u32,
}

impl SvcVal {
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) single u32.
        unsafe {
            std::slice::from_raw_parts(self as *const _ as *const u8, std::mem::size_of::<Self>())
        }
    }
}

/// `struct xvs_iface`: an interface's XSKMAP slot and MAC.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfaceVal {
    pub slot: u32,
    pub mac: [u8; 6],
    pub pad: [u8; 2],
}

impl IfaceVal {
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) plain-old-data without padding holes (4 + 6 + 2 bytes).
        unsafe {
            std::slice::from_raw_parts(self as *const _ as *const u8, std::mem::size_of::<Self>())
        }
    }
}

/// `struct xvs_xdp_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct XdpStats {
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub no_socket: u64,
    pub fragments: u64,
    pub held: u64,
}

/// `struct xvs_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpConfig {
    /// CLOCK_MONOTONIC nanoseconds; see `bpf/xvs_shared.h`.
    pub hold_until_ns: u64,
}

impl XdpConfig {
    pub fn to_bytes(self) -> [u8; 8] {
        self.hold_until_ns.to_ne_bytes()
    }
}

impl XdpStats {
    /// Decodes one per-CPU value; short input yields zeros for the missing fields.
    pub fn from_bytes(b: &[u8]) -> Self {
        let f = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
        };
        XdpStats {
            redirected: f(0),
            passed: f(1),
            malformed: f(2),
            no_socket: f(3),
            fragments: f(4),
            held: f(5),
        }
    }

    pub fn add(&mut self, o: &XdpStats) {
        self.redirected += o.redirected;
        self.passed += o.passed;
        self.malformed += o.malformed;
        self.no_socket += o.no_socket;
        self.fragments += o.fragments;
        self.held += o.held;
    }
}
