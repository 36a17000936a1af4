//! `#[repr(C)]` mirrors of the structs in `bpf/xvs_bench.h` that the bench tool reads from
//! map values (a test checks them against the skeletons' BTF-generated types).

use super::frame::Mac;
use std::net::Ipv4Addr;

/// `struct xvs_gen_state`: one CPU's generator counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenState {
    pub start_ns: u64,
    pub last_ns: u64,
    pub sent: u64,
    pub bytes: u64,
    pub epoch: u64,
    pub pace_ns: u64,
    pub paced: u64,
    pub skipped: u64,
    pub idle: u64,
}

/// `struct xvs_sink_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkKey {
    pub mac: [u8; 6],
    pub kind: u8,
    pub pad: u8,
    /// Network order, as in the packet.
    pub daddr: u32,
}

/// `struct xvs_sink_val`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkVal {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct xvs_sink_total`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkTotal {
    pub packets: u64,
    pub bytes: u64,
    pub unkeyed: u64,
}

/// `XVS_SINK_KIND_*`.
pub const KIND_OTHER: u8 = 0;
pub const KIND_IPV4: u8 = 4;
pub const KIND_IPIP: u8 = 94;

/// Plain-old-data structs that can be read from map value bytes.
pub trait Pod: Copy + Default {
    /// Reads `Self` from the start of `b` (missing bytes stay zero: short values never panic).
    fn from_bytes(b: &[u8]) -> Self {
        let mut v = Self::default();
        let n = b.len().min(std::mem::size_of::<Self>());
        // SAFETY: Self is a #[repr(C)] struct of integers (every bit pattern is valid); at
        // most size_of::<Self>() bytes are copied into it from a slice at least n long.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), &mut v as *mut Self as *mut u8, n);
        }
        v
    }
    /// The struct's bytes (for map keys).
    fn to_bytes(&self) -> Vec<u8> {
        // SAFETY: Self is #[repr(C)] plain data without padding holes that matter to callers
        // (padding, if any, is part of the initialised value built from Default/from_bytes).
        unsafe {
            std::slice::from_raw_parts(
                self as *const Self as *const u8,
                std::mem::size_of::<Self>(),
            )
        }
        .to_vec()
    }
}

impl Pod for GenState {}
impl Pod for SinkKey {}
impl Pod for SinkVal {}
impl Pod for SinkTotal {}

impl GenState {
    pub fn add(&mut self, o: &GenState) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.paced += o.paced;
        self.skipped += o.skipped;
        self.idle += o.idle;
        if o.start_ns != 0 && (self.start_ns == 0 || o.start_ns < self.start_ns) {
            self.start_ns = o.start_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
    }
}

impl SinkVal {
    pub fn add(&mut self, o: &SinkVal) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

impl SinkTotal {
    pub fn add(&mut self, o: &SinkTotal) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.unkeyed += o.unkeyed;
    }
}

impl SinkKey {
    pub fn mac(&self) -> Mac {
        Mac(self.mac)
    }
    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.daddr.to_ne_bytes())
    }
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            KIND_IPV4 => "ipv4",
            KIND_IPIP => "ipip",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{gen_skel::types as g, sink_skel::types as s};
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Asserts that a Rust mirror has the size of its C struct and each named field's offset.
    macro_rules! assert_mirror {
        ($rust:ty, $c:ty, $($field:ident),+ $(,)?) => {
            assert_eq!(size_of::<$rust>(), size_of::<$c>(), "size of {}", stringify!($rust));
            $(assert_eq!(
                offset_of!($rust, $field),
                offset_of!($c, $field),
                "offset of {}.{}",
                stringify!($rust),
                stringify!($field)
            );)+
        };
    }

    #[test]
    fn mirrors_match_c() {
        assert_mirror!(
            GenState,
            g::xvs_gen_state,
            start_ns,
            last_ns,
            sent,
            bytes,
            epoch,
            pace_ns,
            paced,
            skipped,
            idle,
        );
        assert_mirror!(SinkKey, s::xvs_sink_key, mac, kind, pad, daddr);
        assert_mirror!(SinkVal, s::xvs_sink_val, packets, bytes);
        assert_mirror!(SinkTotal, s::xvs_sink_total, unkeyed);
    }

    #[test]
    fn pod_round_trip_and_short_input() {
        let k = SinkKey {
            mac: [2, 0, 10, 0, 0, 21],
            kind: KIND_IPV4,
            pad: 0,
            daddr: u32::from_ne_bytes([10, 0, 0, 88]),
        };
        assert_eq!(SinkKey::from_bytes(&k.to_bytes()), k);
        assert_eq!(k.daddr(), Ipv4Addr::new(10, 0, 0, 88));
        assert_eq!(k.mac().to_string(), "02:00:0a:00:00:15");
        // Short input: the rest stays zero, no panic.
        let v = SinkVal::from_bytes(&[1, 0, 0]);
        assert_eq!(
            v,
            SinkVal {
                packets: 1,
                bytes: 0
            }
        );
    }
}
