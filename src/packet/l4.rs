//! TCP and UDP header views: only what scheduling and connection tracking read.

use super::DropReason;

pub const TCP_MIN_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// TCP header view (RFC 9293). `new_checked` validates the data offset.
#[derive(Debug)]
pub struct TcpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < TCP_MIN_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let doff = ((b[12] >> 4) as usize) * 4;
        if doff < TCP_MIN_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        if doff > b.len() {
            return Err(DropReason::Truncated);
        }
        Ok(TcpHeader { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The low 8 flag bits (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
}

/// UDP header view (RFC 768). `new_checked` validates the length field.
#[derive(Debug)]
pub struct UdpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpHeader<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < UDP_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let len = be16(b, 4) as usize;
        if len < UDP_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        if len > b.len() {
            return Err(DropReason::Truncated);
        }
        Ok(UdpHeader { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
}
