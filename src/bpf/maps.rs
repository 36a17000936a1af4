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
    /// Frames the fast path forwarded itself.
    #[serde(default)]
    pub fast: u64,
    /// Flow-map hits sent to the workers (SYN/FIN/RST, fragment, TTL, MTU).
    #[serde(default)]
    pub fast_punt: u64,
    /// Flow-map hits of an older generation (server removed, dead, ...): to the workers.
    #[serde(default)]
    pub fast_stale: u64,
}

/// `struct xvs_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpConfig {
    /// CLOCK_MONOTONIC nanoseconds; see `bpf/xvs_shared.h`.
    pub hold_until_ns: u64,
    /// Non-zero: the fast path is on.
    pub fast_path: u32,
    pub pad: u32,
}

impl XdpConfig {
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.hold_until_ns.to_ne_bytes());
        b[8..12].copy_from_slice(&self.fast_path.to_ne_bytes());
        b
    }
}

/// Views a plain-old-data `#[repr(C)]` value as its bytes.
fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only used on the repr(C) structs below, whose fields are integers and byte
    // arrays laid out without padding holes (explicit pad fields; checked by the BTF test).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// `XVS_MAX_STAT_SLOTS`: counter slots (and generations) of services and servers.
pub const MAX_STAT_SLOTS: u32 = 65536;
/// `XVS_FAST_DR`, `XVS_FAST_TUN`, `XVS_FAST_NAT_IN`, `XVS_FAST_NAT_OUT`.
pub const FAST_DR: u8 = 1;
pub const FAST_TUN: u8 = 2;
pub const FAST_NAT_IN: u8 = 3;
pub const FAST_NAT_OUT: u8 = 4;

/// The one's complement sum (RFC 1624: `~old + new` over the changed 16-bit words, folded,
/// not complemented) of replacing address `old_addr` and port `old_port` by `new_addr` and
/// `new_port` (host order), in the byte order the XDP program reads packet words in: the
/// deltas of a NAT entry, `(IP header, L4 checksum)`. The sum of byte-swapped words is the
/// byte-swapped sum (RFC 1071 2(B)), so a delta computed on big-endian values is stored in
/// network order.
pub fn nat_csum_deltas(old_addr: u32, new_addr: u32, old_port: u16, new_port: u16) -> (u16, u16) {
    let fold = |mut s: u32| {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    };
    let ip = (!(old_addr >> 16) & 0xffff)
        + (!old_addr & 0xffff)
        + (new_addr >> 16)
        + (new_addr & 0xffff);
    let l4 = ip + (!old_port) as u32 + new_port as u32;
    (fold(ip).to_be(), fold(l4).to_be())
}

/// `struct xvs_flow_key`: a 5-tuple in network byte order as the frame carries it (the
/// client's, or a NAT reply's from the real server).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKeyC {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

impl FlowKeyC {
    /// From the workers' host-order key (`packet::FlowKey`).
    pub fn of(k: &crate::packet::FlowKey) -> Self {
        FlowKeyC {
            saddr: k.saddr.to_be(),
            daddr: k.daddr.to_be(),
            sport: k.sport.to_be(),
            dport: k.dport.to_be(),
            proto: k.proto,
            pad: [0; 3],
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

/// `struct xvs_flow`: one established flow's forwarding decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowVal {
    pub method: u8,
    pub pad0: u8,
    pub mtu: u16,
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Network order.
    pub tun_saddr: u32,
    /// Network order.
    pub tun_daddr: u32,
    pub dest_slot: u32,
    pub svc_slot: u32,
    pub gen: u32,
    /// NAT: the address written, network order.
    pub nat_addr: u32,
    /// NAT: the port written, network order.
    pub nat_port: u16,
    /// NAT: checksum deltas (`nat_csum_deltas`).
    pub ip_csum_delta: u16,
    pub l4_csum_delta: u16,
    pub pad1: u16,
    pub pad2: u32,
    pub last_seen_ns: u64,
}

impl FlowVal {
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }

    /// Decodes a value read from the map (zeros for a short read).
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut v = FlowVal::default();
        let n = b.len().min(std::mem::size_of::<Self>());
        // SAFETY: FlowVal is plain old data (every bit pattern valid); at most its size is
        // copied.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), &mut v as *mut Self as *mut u8, n);
        }
        v
    }
}

/// `struct xvs_fast_ctr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FastCtr {
    pub pkts: u64,
    pub bytes: u64,
    /// NAT replies (server to client).
    pub out_pkts: u64,
    pub out_bytes: u64,
}

impl FastCtr {
    pub fn from_bytes(b: &[u8]) -> Self {
        let f = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
        };
        FastCtr {
            pkts: f(0),
            bytes: f(1),
            out_pkts: f(2),
            out_bytes: f(3),
        }
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
            fast: f(6),
            fast_punt: f(7),
            fast_stale: f(8),
        }
    }

    pub fn add(&mut self, o: &XdpStats) {
        self.redirected += o.redirected;
        self.passed += o.passed;
        self.malformed += o.malformed;
        self.no_socket += o.no_socket;
        self.fragments += o.fragments;
        self.held += o.held;
        self.fast += o.fast;
        self.fast_punt += o.fast_punt;
        self.fast_stale += o.fast_stale;
    }
}
