//! IPv4 header view (RFC 791).

use super::DropReason;

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// More-fragments flag and fragment-offset mask of the flags/offset field.
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet. `new_checked` validates version, IHL and total length against
/// the buffer, so accessors never panic and `payload` excludes Ethernet padding.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < MIN_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let p = Ipv4Packet { buffer };
        let hl = p.header_len();
        if p.version() != 4 || hl < MIN_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let total = p.total_len();
        if total < hl {
            return Err(DropReason::Malformed);
        }
        if total > p.buffer.as_ref().len() {
            return Err(DropReason::Truncated);
        }
        Ok(p)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL is in 32-bit words).
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    pub fn total_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::TOTAL_LEN];
        u16::from_be_bytes([b[0], b[1]]) as usize
    }

    /// True for any fragment: MF set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        let b = &self.buffer.as_ref()[field::FLAGS_FRAG];
        let v = u16::from_be_bytes([b[0], b[1]]);
        v & (MF | OFFSET_MASK) != 0
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Source address in host order.
    pub fn src_addr(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SRC];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Destination address in host order.
    pub fn dst_addr(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::DST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The transport payload, up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }
}
