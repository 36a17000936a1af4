//! The IPVS connection-sync datagram, byte for byte as Linux's
//! `net/netfilter/ipvs/ip_vs_sync.c` writes and reads it (protocol version 1, and the old
//! version 0 that `net.ipv4.vs.sync_version=0` still selects).
//!
//! Reimplemented from the kernel's struct definitions and from `ip_vs_sync_conn`,
//! `ip_vs_sync_conn_v0` (encoders), `ip_vs_process_message`, `ip_vs_process_message_v0`,
//! `ip_vs_proc_sync_conn`, `ip_vs_proc_seqopt` and `ip_vs_proc_str` (decoder). Every
//! multi-byte field is network order, except the v0 sequence option (see [`SyncWriter::new_v0`]).
//!
//! Version 1 datagram (`struct ip_vs_sync_mesg`, 8 bytes, then `nr_conns` entries):
//!
//! ```text
//! 0        1        2        3        4        5        6        7
//! reserved syncid   size (be16, whole  nr_conns version  spare (be16,
//! = 0               datagram)                   = 1      = 0)
//! ```
//!
//! Each entry (`struct ip_vs_sync_v4`, 36 bytes, or `struct ip_vs_sync_v6`, 72 bytes):
//! `type` (bit 0 = IPv6), `protocol`, `ver_size` (be16: 4-bit entry version 0, 12-bit size
//! of this entry with its options but without padding), `flags` (be32), `state` (be16),
//! `cport`, `vport`, `dport` (be16 each), `fwmark` (be32), `timeout` (be32, seconds),
//! `caddr`, `vaddr`, `daddr`; then options as type/length/value (type 1 SEQ with 24 bytes
//! of `struct ip_vs_sync_conn_options`, 2 PE_DATA, 3 PE_NAME; bit 0x40 marks an option a
//! receiver may skip). The next entry starts at the next multiple of 4 from the message
//! start; the padding is zeros and is not counted in `ver_size`, but it is in the header's
//! `size`. The last entry is not padded.
//!
//! Version 0 datagram (`struct ip_vs_sync_mesg_v0`, 4 bytes: `nr_conns`, `syncid`, `size`
//! be16), then `struct ip_vs_sync_conn_v0` entries of 24 bytes, 48 when the flags carry
//! `IP_VS_CONN_F_SEQ_MASK` (the options follow, unmarked). A v1 message starts with a zero
//! byte, which a v0 receiver reads as "no connections".
//!
//! Read from the Linux tree at github.com/gregkh/linux (`ip_vs_sync.c` at commit
//! b051dc3b1d1ad7a2110f12c3d2229b30fd69d90e, a 6.x kernel; `include/net/ip_vs.h` and
//! `include/uapi/linux/ip_vs.h` of the same tree; `num_states` from
//! `ip_vs_proto_{tcp,udp,ah_esp}.c` of torvalds/linux).
//!
//! Where the kernel applies entries one by one and then gives up on the rest of a bad
//! datagram, [`decode_partial`] says exactly that; [`decode`] is the all-or-nothing view.
//! Entries the kernel skips singly (unknown mandatory option, unsupported protocol, state
//! out of range, PE data without a name) are listed in [`Decoded::skipped`], not errors.
//! IPv6 entries are decoded (as a kernel with CONFIG_IP_VS_IPV6 does) and marked `v6`.
//!
//! The decoder never panics and does bounded work: at most 255 entries, each walked once.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

// ---------------------------------------------------------------------------------------
// Daemon defaults (`ip_vs_sync.c`: IP_VS_SYNC_GROUP, IP_VS_SYNC_PORT; start_sync_thread)
// ---------------------------------------------------------------------------------------

/// IP_VS_SYNC_GROUP: 224.0.0.81.
pub const DEFAULT_MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// IP_VS_SYNC_PORT; with `sync_ports` N the threads use ports 8848..8848+N-1.
pub const DEFAULT_MCAST_PORT: u16 = 8848;
/// start_sync_thread: a TTL of 0 means 1.
pub const DEFAULT_MCAST_TTL: u8 = 1;
/// SYNC_PROTO_VER, the header's `version` byte.
pub const SYNC_PROTO_VER: u8 = 1;

/// sizeof(struct iphdr) + sizeof(struct udphdr).
const UDP4_HLEN: usize = 28;
/// sizeof(struct ipv6hdr) + sizeof(struct udphdr).
const UDP6_HLEN: usize = 48;

/// The master's `sync_maxlen` as start_sync_thread computes it: the configured value
/// clamped to `1..=65535-hlen`, or when 0 (not configured) a 1500-byte MTU minus the IP and
/// UDP headers (1472 over IPv4) whatever the interface's MTU.
pub fn master_maxlen(configured: usize, mcast_v6: bool) -> usize {
    let hlen = if mcast_v6 { UDP6_HLEN } else { UDP4_HLEN };
    if configured == 0 {
        1500 - hlen
    } else {
        configured.clamp(1, 65535 - hlen)
    }
}

/// The backup's `sync_maxlen` (its receive buffer; longer datagrams are truncated by the
/// receive and then fail the size check): the configured value clamped to
/// `1024..=65535-hlen`, or when 0 the interface MTU clamped to 1500..=65535 minus the
/// headers.
pub fn backup_maxlen(configured: usize, dev_mtu: usize, mcast_v6: bool) -> usize {
    let hlen = if mcast_v6 { UDP6_HLEN } else { UDP4_HLEN };
    if configured == 0 {
        dev_mtu.clamp(1500, 65535) - hlen
    } else {
        configured.clamp(1024, 65535 - hlen)
    }
}

// ---------------------------------------------------------------------------------------
// Sizes and type codes (ip_vs_sync.c)
// ---------------------------------------------------------------------------------------

/// sizeof(struct ip_vs_sync_mesg_v0).
pub const MESG_V0_HEADER_LEN: usize = 4;
/// sizeof(struct ip_vs_sync_mesg).
pub const MESG_HEADER_LEN: usize = 8;
/// SIMPLE_CONN_SIZE: sizeof(struct ip_vs_sync_conn_v0).
pub const CONN_V0_LEN: usize = 24;
/// sizeof(struct ip_vs_sync_conn_options): two `struct ip_vs_seq` of three u32.
pub const CONN_OPTIONS_LEN: usize = 24;
/// FULL_CONN_SIZE: a v0 entry followed by its sequence options.
pub const CONN_V0_FULL_LEN: usize = CONN_V0_LEN + CONN_OPTIONS_LEN;
/// sizeof(struct ip_vs_sync_v4).
pub const CONN_V4_LEN: usize = 36;
/// sizeof(struct ip_vs_sync_v6).
pub const CONN_V6_LEN: usize = 72;

/// STYPE_F_INET6: bit 0 of an entry's `type`.
pub const STYPE_F_INET6: u8 = 1 << 0;
/// SVER_SHIFT: the entry version is the top 4 bits of `ver_size`.
pub const SVER_SHIFT: u16 = 12;
/// SVER_MASK: the entry size is the low 12 bits of `ver_size`.
pub const SVER_MASK: u16 = 0x0fff;

/// IPVS_OPT_SEQ_DATA: `struct ip_vs_sync_conn_options`, network order.
pub const IPVS_OPT_SEQ_DATA: u8 = 1;
/// IPVS_OPT_PE_DATA: persistence-engine data (the SIP Call-ID).
pub const IPVS_OPT_PE_DATA: u8 = 2;
/// IPVS_OPT_PE_NAME: persistence-engine name ("sip").
pub const IPVS_OPT_PE_NAME: u8 = 3;
/// IPVS_OPT_PARAM (7) gives IPVS_OPT_F_PARAM = 1 << 6: an option with this bit set may be
/// skipped by a receiver that does not know it; without it an unknown option drops the entry.
pub const IPVS_OPT_F_PARAM: u8 = 1 << 6;

/// IP_VS_PENAME_MAXLEN (uapi ip_vs.h).
pub const IP_VS_PENAME_MAXLEN: usize = 16;
/// IP_VS_PEDATA_MAXLEN (uapi ip_vs.h).
pub const IP_VS_PEDATA_MAXLEN: usize = 255;

// ---------------------------------------------------------------------------------------
// Connection flags (uapi linux/ip_vs.h; "only flags 0..15 are sent to backup server")
// ---------------------------------------------------------------------------------------

/// Mask of the forwarding method.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
/// Masquerading (NAT).
pub const IP_VS_CONN_F_MASQ: u32 = 0x0000;
/// Local node.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
/// IP-in-IP tunnelling.
pub const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
/// Direct routing.
pub const IP_VS_CONN_F_DROUTE: u32 = 0x0003;
/// Cache bypass.
pub const IP_VS_CONN_F_BYPASS: u32 = 0x0004;
/// The entry was created by sync (a backup sets it on everything it receives).
pub const IP_VS_CONN_F_SYNC: u32 = 0x0020;
/// Hashed in the connection table; the master clears it before sending.
pub const IP_VS_CONN_F_HASHED: u32 = 0x0040;
/// No output packets.
pub const IP_VS_CONN_F_NOOUTPUT: u32 = 0x0080;
/// Not established (counts in the destination's inactive connections).
pub const IP_VS_CONN_F_INACTIVE: u32 = 0x0100;
/// Output sequence adjustment (NAT with an application helper).
pub const IP_VS_CONN_F_OUT_SEQ: u32 = 0x0200;
/// Input sequence adjustment.
pub const IP_VS_CONN_F_IN_SEQ: u32 = 0x0400;
/// Either sequence flag: the entry carries the SEQ option (v1) or the 48-byte form (v0).
pub const IP_VS_CONN_F_SEQ_MASK: u32 = 0x0600;
/// No client port yet (FTP data templates).
pub const IP_VS_CONN_F_NO_CPORT: u32 = 0x0800;
/// A persistence template, not a connection.
pub const IP_VS_CONN_F_TEMPLATE: u32 = 0x1000;
/// One-packet scheduling; such entries are never synced.
pub const IP_VS_CONN_F_ONE_PACKET: u32 = 0x2000;
/// IP_VS_CONN_F_BACKUP_MASK: the received bits a backup keeps on a new entry (v1).
pub const IP_VS_CONN_F_BACKUP_MASK: u32 = IP_VS_CONN_F_FWD_MASK
    | IP_VS_CONN_F_NOOUTPUT
    | IP_VS_CONN_F_INACTIVE
    | IP_VS_CONN_F_SEQ_MASK
    | IP_VS_CONN_F_NO_CPORT
    | IP_VS_CONN_F_TEMPLATE;
/// IP_VS_CONN_F_BACKUP_UPD_MASK: the bits an update may change on an existing entry.
pub const IP_VS_CONN_F_BACKUP_UPD_MASK: u32 = IP_VS_CONN_F_INACTIVE | IP_VS_CONN_F_SEQ_MASK;

/// The flags a backup gives a new entry from a received one: `ip_vs_proc_sync_conn` (v1)
/// keeps `IP_VS_CONN_F_BACKUP_MASK` and adds SYNC; `ip_vs_process_message_v0` keeps all 16
/// received bits but HASHED and adds SYNC.
pub fn backup_flags(version: u8, wire_flags: u32) -> u32 {
    if version == 0 {
        (wire_flags | IP_VS_CONN_F_SYNC) & !IP_VS_CONN_F_HASHED
    } else {
        (wire_flags & IP_VS_CONN_F_BACKUP_MASK) | IP_VS_CONN_F_SYNC
    }
}

/// The flags of an existing backup entry after an update (`ip_vs_proc_conn`): only
/// `IP_VS_CONN_F_BACKUP_UPD_MASK` comes from the (already [`backup_flags`]-masked) message.
pub fn updated_flags(existing: u32, incoming: u32) -> u32 {
    (incoming & IP_VS_CONN_F_BACKUP_UPD_MASK) | (existing & !IP_VS_CONN_F_BACKUP_UPD_MASK)
}

// ---------------------------------------------------------------------------------------
// Protocol numbers and state numbers (include/net/ip_vs.h)
// ---------------------------------------------------------------------------------------

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_SCTP: u8 = 132;

pub const IP_VS_TCP_S_NONE: u16 = 0;
pub const IP_VS_TCP_S_ESTABLISHED: u16 = 1;
pub const IP_VS_TCP_S_SYN_SENT: u16 = 2;
pub const IP_VS_TCP_S_SYN_RECV: u16 = 3;
pub const IP_VS_TCP_S_FIN_WAIT: u16 = 4;
pub const IP_VS_TCP_S_TIME_WAIT: u16 = 5;
pub const IP_VS_TCP_S_CLOSE: u16 = 6;
pub const IP_VS_TCP_S_CLOSE_WAIT: u16 = 7;
pub const IP_VS_TCP_S_LAST_ACK: u16 = 8;
pub const IP_VS_TCP_S_LISTEN: u16 = 9;
pub const IP_VS_TCP_S_SYNACK: u16 = 10;
/// IP_VS_TCP_S_LAST: TCP's `num_states`.
pub const IP_VS_TCP_S_LAST: u16 = 11;

/// UDP has one state; `num_states` is IP_VS_UDP_S_LAST = 1.
pub const IP_VS_UDP_S_NORMAL: u16 = 0;
pub const IP_VS_UDP_S_LAST: u16 = 1;

/// SCTP's `num_states` (IP_VS_SCTP_S_LAST of `enum ip_vs_sctp_states`).
pub const IP_VS_SCTP_S_LAST: u16 = 14;

/// Template states (IP_VS_CTPL_S_*); a larger value is only logged by the backup.
pub const IP_VS_CTPL_S_NONE: u16 = 0;
pub const IP_VS_CTPL_S_ASSURED: u16 = 1;
pub const IP_VS_CTPL_S_LAST: u16 = 2;

/// `ip_vs_proto_get(protocol)->num_states` for the protocols IPVS registers (TCP, UDP,
/// SCTP, AH, ESP; AH and ESP have one state). `None`: the backup skips such an entry unless
/// it is a template.
pub fn num_states(protocol: u8) -> Option<u16> {
    match protocol {
        IPPROTO_TCP => Some(IP_VS_TCP_S_LAST),
        IPPROTO_UDP => Some(IP_VS_UDP_S_LAST),
        IPPROTO_SCTP => Some(IP_VS_SCTP_S_LAST),
        IPPROTO_AH | IPPROTO_ESP => Some(1),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------------------------

/// `struct ip_vs_seq`: one direction's TCP sequence adjustment (NAT with helpers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqInfo {
    pub init_seq: u32,
    pub delta: u32,
    pub previous_delta: u32,
}

/// `struct ip_vs_sync_conn_options`: the SEQ option (v1) or the v0 tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqOpt {
    pub in_seq: SeqInfo,
    pub out_seq: SeqInfo,
}

/// Persistence-engine data (PE_DATA) and the engine's name (PE_NAME), e.g. "sip" and a
/// Call-ID. Bytes, as the kernel treats them (the name is not NUL-terminated on the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncPe {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

/// The three addresses of an IPv6 entry (`struct ip_vs_sync_v6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct V6Addrs {
    pub caddr: Ipv6Addr,
    pub vaddr: Ipv6Addr,
    pub daddr: Ipv6Addr,
}

/// One synced connection or template, in host order.
///
/// `flags` are the flags as on the wire (see [`backup_flags`] for what a backup keeps).
/// For an IPv6 entry (`v6`, type bit STYPE_F_INET6) the addresses are in `v6_addrs` and the
/// IPv4 ones are unspecified; xvs has no IPv6 yet, so callers count and skip those.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConn {
    pub v6: bool,
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    /// v1 only (v0 has no fwmark; received as 0).
    pub fwmark: u32,
    /// The connection's remaining timeout in seconds (`cp->timeout / HZ`); v1 only. 0 (and
    /// every v0 entry) makes the backup use its per-state timeout, 3 minutes for templates.
    pub timeout_s: u32,
    pub caddr: Ipv4Addr,
    pub vaddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub v6_addrs: Option<V6Addrs>,
    pub seq: Option<SeqOpt>,
    /// v1 only.
    pub pe: Option<SyncPe>,
}

impl Default for SyncConn {
    fn default() -> Self {
        SyncConn {
            v6: false,
            protocol: IPPROTO_TCP,
            flags: 0,
            state: 0,
            cport: 0,
            vport: 0,
            dport: 0,
            fwmark: 0,
            timeout_s: 0,
            caddr: Ipv4Addr::UNSPECIFIED,
            vaddr: Ipv4Addr::UNSPECIFIED,
            daddr: Ipv4Addr::UNSPECIFIED,
            v6_addrs: None,
            seq: None,
            pe: None,
        }
    }
}

/// The forwarding method in `flags & IP_VS_CONN_F_FWD_MASK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwdMethod {
    Masq,
    LocalNode,
    Tunnel,
    DirectRoute,
    Bypass,
    /// 5..=7: no method the kernel defines.
    Other(u8),
}

impl SyncConn {
    /// IP_VS_CONN_F_TEMPLATE: a persistence template (client address to real server), not a
    /// connection. Its protocol and state are not checked by the backup.
    pub fn is_template(&self) -> bool {
        self.flags & IP_VS_CONN_F_TEMPLATE != 0
    }

    /// IP_VS_FWD_METHOD: the forwarding method from the flags.
    pub fn fwd_method(&self) -> FwdMethod {
        match self.flags & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => FwdMethod::Masq,
            IP_VS_CONN_F_LOCALNODE => FwdMethod::LocalNode,
            IP_VS_CONN_F_TUNNEL => FwdMethod::Tunnel,
            IP_VS_CONN_F_DROUTE => FwdMethod::DirectRoute,
            IP_VS_CONN_F_BYPASS => FwdMethod::Bypass,
            other => FwdMethod::Other(other as u8),
        }
    }

    /// IP_VS_CONN_F_INACTIVE.
    pub fn is_inactive(&self) -> bool {
        self.flags & IP_VS_CONN_F_INACTIVE != 0
    }

    /// The v1 entry's size as `ip_vs_sync_conn` computes it (`ver_size`, without padding).
    pub fn v1_len(&self) -> Result<usize, EncodeError> {
        let mut len = if self.v6 { CONN_V6_LEN } else { CONN_V4_LEN };
        if self.seq.is_some() {
            len += 2 + CONN_OPTIONS_LEN;
        }
        if let Some(pe) = &self.pe {
            if pe.data.len() > IP_VS_PEDATA_MAXLEN {
                return Err(EncodeError::PeDataTooLong);
            }
            if pe.name.len() > IP_VS_PENAME_MAXLEN {
                return Err(EncodeError::PeNameTooLong);
            }
            // The name goes only with data (`cp->pe_data_len` gates both options).
            if !pe.data.is_empty() {
                len += 2 + pe.data.len();
                if !pe.name.is_empty() {
                    len += 2 + pe.name.len();
                }
            }
        }
        Ok(len)
    }

    /// The v0 entry's size (`ip_vs_sync_conn_v0`: FULL_CONN_SIZE when the flags ask for
    /// sequence adjustment, else SIMPLE_CONN_SIZE).
    pub fn v0_len(&self) -> usize {
        if self.flags & IP_VS_CONN_F_SEQ_MASK != 0 {
            CONN_V0_FULL_LEN
        } else {
            CONN_V0_LEN
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a datagram, or the rest of it, is dropped. Each is a `return` in
/// `ip_vs_process_message*` or a negative result of `ip_vs_proc_sync_conn`; entries before
/// the failing one have been applied by the kernel (see [`decode_partial`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WireError {
    /// Shorter than the 4-byte v0 header ("message header too short").
    HeaderTooShort,
    /// The header's `size` is not the datagram's length ("bogus message size").
    SizeMismatch,
    /// Another sync group's message, while ours is non-zero ("Ignoring syncid").
    ForeignSyncid,
    /// Starts with a zero byte (v1's `reserved`) but `version` is not 1 or `spare` is not
    /// 0: the kernel takes it for a v0 message with no connections, so nothing is applied.
    BadVersion,
    /// Less than a fixed entry part (36 bytes v1, 24 v0) left for the next announced
    /// entry ("Dropping buffer, too small", "bogus conn").
    ConnTruncated,
    /// The entry's `ver_size` size (v1) or its v0 sequence options run past the datagram
    /// ("msg > buffer", "bogus conn options").
    ConnPastEnd,
    /// The entry's 4-bit version is not 0 ("Unknown version").
    ConnVersion,
    /// `type` is neither 0 nor has the IPv6 bit (-10).
    ConnType,
    /// `ver_size` is smaller than the fixed part for the entry's family (-20).
    ConnTooShort,
    /// One byte left for an option's type and length (-30).
    OptTruncated,
    /// An option of length 0, or running past the entry (-40).
    OptLength,
    /// A SEQ option of length other than 24, or a second one (-50).
    SeqOpt,
    /// PE_DATA longer than 255 (cannot happen, the length is a byte) or twice (-60).
    PeData,
    /// PE_NAME longer than 16, or twice (-70).
    PeName,
}

impl WireError {
    pub const ALL: [WireError; 14] = [
        WireError::HeaderTooShort,
        WireError::SizeMismatch,
        WireError::ForeignSyncid,
        WireError::BadVersion,
        WireError::ConnTruncated,
        WireError::ConnPastEnd,
        WireError::ConnVersion,
        WireError::ConnType,
        WireError::ConnTooShort,
        WireError::OptTruncated,
        WireError::OptLength,
        WireError::SeqOpt,
        WireError::PeData,
        WireError::PeName,
    ];

    /// A dense index into [`WireError::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short stable name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WireError::HeaderTooShort => "header_too_short",
            WireError::SizeMismatch => "size_mismatch",
            WireError::ForeignSyncid => "foreign_syncid",
            WireError::BadVersion => "bad_version",
            WireError::ConnTruncated => "conn_truncated",
            WireError::ConnPastEnd => "conn_past_end",
            WireError::ConnVersion => "conn_version",
            WireError::ConnType => "conn_type",
            WireError::ConnTooShort => "conn_too_short",
            WireError::OptTruncated => "opt_truncated",
            WireError::OptLength => "opt_length",
            WireError::SeqOpt => "seq_opt",
            WireError::PeData => "pe_data",
            WireError::PeName => "pe_name",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

/// Why one entry is skipped while the rest of the datagram is still read (a positive
/// result of `ip_vs_proc_sync_conn`, a `continue` in `ip_vs_process_message_v0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SkipReason {
    /// An unknown option without IPVS_OPT_F_PARAM (20). Options after it are not read.
    UnknownMandatoryOption,
    /// Not a template and the protocol is not one IPVS registers (30).
    UnsupportedProtocol,
    /// Not a template and `state >= num_states` of its protocol (40).
    BadState,
    /// PE_DATA without PE_NAME (50, "Invalid PE parameters"). Whether a named engine is
    /// loaded is the caller's check (the kernel skips the entry too when it is not).
    PeWithoutName,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] = [
        SkipReason::UnknownMandatoryOption,
        SkipReason::UnsupportedProtocol,
        SkipReason::BadState,
        SkipReason::PeWithoutName,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnknownMandatoryOption => "unknown_mandatory_option",
            SkipReason::UnsupportedProtocol => "unsupported_protocol",
            SkipReason::BadState => "bad_state",
            SkipReason::PeWithoutName => "pe_without_name",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Entries the encoder refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// `ip_vs_sync_conn*` never sends IP_VS_CONN_F_ONE_PACKET entries.
    OnePacket,
    /// v0 carries IPv4 only (`ip_vs_sync_conn_v0` returns for other families).
    V0Ipv6,
    /// PE data is at most IP_VS_PEDATA_MAXLEN (255) bytes (`pe_data_len` is a byte).
    PeDataTooLong,
    /// A PE name is at most IP_VS_PENAME_MAXLEN (16) bytes.
    PeNameTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::OnePacket => "one-packet entries are not synced",
            EncodeError::V0Ipv6 => "sync version 0 carries IPv4 only",
            EncodeError::PeDataTooLong => "persistence-engine data longer than 255 bytes",
            EncodeError::PeNameTooLong => "persistence-engine name longer than 16 bytes",
        })
    }
}

impl std::error::Error for EncodeError {}

// ---------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------

/// The largest `sync_maxlen` the kernel accepts (65535 minus the IPv4 and UDP headers).
const MAXLEN_MAX: usize = 65535 - UDP4_HLEN;

/// Packs entries into datagrams the way the master's `ip_vs_sync_conn` (v1) or
/// `ip_vs_sync_conn_v0` fill `struct ip_vs_sync_buff`.
///
/// A buffer is created for the first entry with room for `max(entry + header, maxlen)`
/// bytes (`ip_vs_sync_buff_create*`), so one entry larger than `maxlen` still travels, alone.
/// Before each further entry, v1 pads to 4 bytes; when the padded entry would pass the
/// buffer's end, the buffer is finished and the entry starts a new one. The kernel also
/// sends a buffer after 2 s (IPVS_SYNC_FLUSH_TIME): that is the caller's [`flush`].
///
/// This is the packing of current kernels. Older ones (3.x) differ in packing only, not in
/// format: their buffers were exactly `sync_maxlen`, and v0 sent a buffer as soon as fewer
/// than 48 bytes were left. Receivers do not depend on the packing.
///
/// One divergence: `nr_conns` is a byte the kernel increments without a check, which wraps
/// with a `maxlen` above about 9 KB of 36-byte entries; this writer finishes a datagram at
/// 255 entries instead.
///
/// [`flush`]: SyncWriter::flush
#[derive(Clone, Debug)]
pub struct SyncWriter {
    version: u8,
    syncid: u8,
    maxlen: usize,
    /// The datagram being filled; empty when there is none (`ms->sync_buff == NULL`).
    buf: Vec<u8>,
    /// Where the current buffer ends (`sb->end`).
    cap: usize,
    nr_conns: u8,
}

impl SyncWriter {
    /// A v1 writer (`sync_version` 1, the default). `maxlen` is the master's `sync_maxlen`
    /// ([`master_maxlen`]), clamped to 1..=65507 as the kernel does.
    pub fn new(syncid: u8, maxlen: usize) -> Self {
        Self::with_version(1, syncid, maxlen)
    }

    /// A v0 writer, for very old peers. v0 has no fwmark, timeout, PE data or IPv6; flags
    /// are cut to 16 bits. Its sequence options are a raw copy of the kernel's
    /// `cp->sync_conn_opt`, i.e. in the sender's host order: written here little-endian,
    /// the order of x86 and arm64 kernels (a big-endian peer would differ).
    pub fn new_v0(syncid: u8, maxlen: usize) -> Self {
        Self::with_version(0, syncid, maxlen)
    }

    fn with_version(version: u8, syncid: u8, maxlen: usize) -> Self {
        SyncWriter {
            version,
            syncid,
            maxlen: maxlen.clamp(1, MAXLEN_MAX),
            buf: Vec::new(),
            cap: 0,
            nr_conns: 0,
        }
    }

    /// Protocol version written (0 or 1).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Entries in the unfinished datagram.
    pub fn pending(&self) -> usize {
        self.nr_conns as usize
    }

    fn header_len(&self) -> usize {
        if self.version == 0 {
            MESG_V0_HEADER_LEN
        } else {
            MESG_HEADER_LEN
        }
    }

    /// Appends one entry. Returns the datagram this entry did not fit into, finished, if any.
    /// A refused entry leaves the writer unchanged.
    pub fn push(&mut self, conn: &SyncConn) -> Result<Option<Vec<u8>>, EncodeError> {
        if conn.flags & IP_VS_CONN_F_ONE_PACKET != 0 {
            return Err(EncodeError::OnePacket);
        }
        let len = if self.version == 0 {
            if conn.v6 {
                return Err(EncodeError::V0Ipv6);
            }
            conn.v0_len()
        } else {
            conn.v1_len()?
        };

        let mut done = None;
        if !self.buf.is_empty() {
            let pad = self.pad();
            if self.buf.len() + pad + len > self.cap || self.nr_conns == u8::MAX {
                done = self.flush();
            }
        }
        if self.buf.is_empty() {
            self.cap = (len + self.header_len()).max(self.maxlen);
            self.buf.reserve(self.cap);
            self.write_header_start();
        }
        let pad = self.pad();
        self.buf.resize(self.buf.len() + pad, 0);
        let start = self.buf.len();
        if self.version == 0 {
            write_conn_v0(&mut self.buf, conn);
        } else {
            write_conn_v1(&mut self.buf, conn, len);
        }
        debug_assert_eq!(self.buf.len() - start, len);
        self.nr_conns += 1;
        self.write_header_counts();
        Ok(done)
    }

    /// Finishes the current datagram, if it has any entry.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        self.nr_conns = 0;
        self.cap = 0;
        Some(std::mem::take(&mut self.buf))
    }

    /// `(4 - head) & 3`: v1 aligns each entry to 4 bytes from the message start (the
    /// kernel's buffer is kmalloc-aligned, so the pointer and the offset agree).
    fn pad(&self) -> usize {
        if self.version == 0 {
            0
        } else {
            (4 - self.buf.len() % 4) % 4
        }
    }

    /// `ip_vs_sync_buff_create` / `_v0`: size = header alone, nr_conns 0.
    fn write_header_start(&mut self) {
        if self.version == 0 {
            // struct ip_vs_sync_mesg_v0: nr_conns, syncid, size.
            self.buf.extend_from_slice(&[0, self.syncid, 0, 0]);
        } else {
            // struct ip_vs_sync_mesg: reserved = 0 (a v0 receiver sees no entries), syncid,
            // size, nr_conns, version, spare.
            self.buf
                .extend_from_slice(&[0, self.syncid, 0, 0, 0, SYNC_PROTO_VER, 0, 0]);
        }
    }

    /// `m->nr_conns++; m->size = htons(ntohs(m->size) + pad + len)`.
    fn write_header_counts(&mut self) {
        let size = (self.buf.len() as u16).to_be_bytes();
        self.buf[2..4].copy_from_slice(&size);
        if self.version == 0 {
            self.buf[0] = self.nr_conns;
        } else {
            self.buf[4] = self.nr_conns;
        }
    }
}

/// All of `conns` through one v1 [`SyncWriter`], every datagram finished.
pub fn encode(syncid: u8, maxlen: usize, conns: &[SyncConn]) -> Result<Vec<Vec<u8>>, EncodeError> {
    encode_with(SyncWriter::new(syncid, maxlen), conns)
}

/// All of `conns` through one v0 [`SyncWriter`], every datagram finished.
pub fn encode_v0(
    syncid: u8,
    maxlen: usize,
    conns: &[SyncConn],
) -> Result<Vec<Vec<u8>>, EncodeError> {
    encode_with(SyncWriter::new_v0(syncid, maxlen), conns)
}

fn encode_with(mut w: SyncWriter, conns: &[SyncConn]) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut out = Vec::new();
    for c in conns {
        out.extend(w.push(c)?);
    }
    out.extend(w.flush());
    Ok(out)
}

fn put_seq_be(out: &mut Vec<u8>, s: &SeqInfo) {
    // hton_seq: each u32 of struct ip_vs_seq in network order.
    out.extend_from_slice(&s.init_seq.to_be_bytes());
    out.extend_from_slice(&s.delta.to_be_bytes());
    out.extend_from_slice(&s.previous_delta.to_be_bytes());
}

fn put_seq_le(out: &mut Vec<u8>, s: &SeqInfo) {
    out.extend_from_slice(&s.init_seq.to_le_bytes());
    out.extend_from_slice(&s.delta.to_le_bytes());
    out.extend_from_slice(&s.previous_delta.to_le_bytes());
}

/// `ip_vs_sync_conn`: `struct ip_vs_sync_v4`/`_v6`, then SEQ, PE_DATA, PE_NAME.
fn write_conn_v1(out: &mut Vec<u8>, c: &SyncConn, len: usize) {
    out.push(if c.v6 { STYPE_F_INET6 } else { 0 });
    out.push(c.protocol);
    // Version 0 in the top 4 bits; len is below 4096 (at most 72 + 26 + 257 + 18).
    out.extend_from_slice(&((len as u16) & SVER_MASK).to_be_bytes());
    out.extend_from_slice(&(c.flags & !IP_VS_CONN_F_HASHED).to_be_bytes());
    out.extend_from_slice(&c.state.to_be_bytes());
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&c.fwmark.to_be_bytes());
    out.extend_from_slice(&c.timeout_s.to_be_bytes());
    if c.v6 {
        let a = c.v6_addrs.unwrap_or(V6Addrs {
            caddr: Ipv6Addr::UNSPECIFIED,
            vaddr: Ipv6Addr::UNSPECIFIED,
            daddr: Ipv6Addr::UNSPECIFIED,
        });
        out.extend_from_slice(&a.caddr.octets());
        out.extend_from_slice(&a.vaddr.octets());
        out.extend_from_slice(&a.daddr.octets());
    } else {
        out.extend_from_slice(&c.caddr.octets());
        out.extend_from_slice(&c.vaddr.octets());
        out.extend_from_slice(&c.daddr.octets());
    }
    if let Some(seq) = &c.seq {
        out.push(IPVS_OPT_SEQ_DATA);
        out.push(CONN_OPTIONS_LEN as u8);
        put_seq_be(out, &seq.in_seq);
        put_seq_be(out, &seq.out_seq);
    }
    if let Some(pe) = &c.pe {
        if !pe.data.is_empty() {
            out.push(IPVS_OPT_PE_DATA);
            out.push(pe.data.len() as u8);
            out.extend_from_slice(&pe.data);
            if !pe.name.is_empty() {
                out.push(IPVS_OPT_PE_NAME);
                out.push(pe.name.len() as u8);
                out.extend_from_slice(&pe.name);
            }
        }
    }
}

/// `ip_vs_sync_conn_v0`: `struct ip_vs_sync_conn_v0` and, with SEQ flags, the raw
/// `struct ip_vs_sync_conn_options` (host order, see [`SyncWriter::new_v0`]).
fn write_conn_v0(out: &mut Vec<u8>, c: &SyncConn) {
    out.push(0); // reserved
    out.push(c.protocol);
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&c.caddr.octets());
    out.extend_from_slice(&c.vaddr.octets());
    out.extend_from_slice(&c.daddr.octets());
    // htons(cp->flags & ~IP_VS_CONN_F_HASHED): the low 16 bits.
    out.extend_from_slice(&((c.flags & !IP_VS_CONN_F_HASHED) as u16).to_be_bytes());
    out.extend_from_slice(&c.state.to_be_bytes());
    if c.flags & IP_VS_CONN_F_SEQ_MASK != 0 {
        let seq = c.seq.unwrap_or_default();
        put_seq_le(out, &seq.in_seq);
        put_seq_le(out, &seq.out_seq);
    }
}

// ---------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------

/// One entry the backup skips, by its position among the header's `nr_conns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Skipped {
    pub index: u8,
    pub reason: SkipReason,
}

/// A datagram as the backup reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// 1, or 0 for the old format.
    pub version: u8,
    pub syncid: u8,
    /// The header's count.
    pub nr_conns: u8,
    /// The entries the backup applies, in order (IPv6 ones included, marked `v6`).
    pub conns: Vec<SyncConn>,
    /// The entries it skips.
    pub skipped: Vec<Skipped>,
}

/// The kernel's reading of a datagram: entries are applied one by one, so when an entry
/// makes it drop the rest, those before it stay applied. `error` is why the rest (or, for
/// the header checks, the whole datagram, `decoded` then empty) was dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    pub decoded: Decoded,
    pub error: Option<WireError>,
}

/// Decodes one sync datagram received by a backup whose syncid is `own_syncid` (0: take
/// every group). All or nothing: any reason the kernel would drop the datagram or its rest
/// is an error. Entries the kernel skips one by one are listed in `skipped`.
pub fn decode(datagram: &[u8], own_syncid: u8) -> Result<Decoded, WireError> {
    let p = decode_partial(datagram, own_syncid);
    match p.error {
        Some(e) => Err(e),
        None => Ok(p.decoded),
    }
}

fn be16(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

fn be32(d: &[u8], at: usize) -> u32 {
    match d.get(at..at + 4) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    match d.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn ipv4(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(d, at))
}

fn ipv6(d: &[u8], at: usize) -> Ipv6Addr {
    match d.get(at..at + 16) {
        Some(b) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ipv6Addr::from(o)
        }
        None => Ipv6Addr::UNSPECIFIED,
    }
}

fn seq_info(d: &[u8], at: usize, big_endian: bool) -> SeqInfo {
    let get = if big_endian { be32 } else { le32 };
    SeqInfo {
        init_seq: get(d, at),
        delta: get(d, at + 4),
        previous_delta: get(d, at + 8),
    }
}

fn seq_opt(d: &[u8], at: usize, big_endian: bool) -> SeqOpt {
    SeqOpt {
        in_seq: seq_info(d, at, big_endian),
        out_seq: seq_info(d, at + 12, big_endian),
    }
}

/// `ip_vs_process_message`: the header checks, then v1 or v0 entries.
///
/// Order as in the kernel: length at least the v0 header; `size` equal to the length (for
/// either version); the syncid filter; then v1 when `version == 1`, `reserved == 0` and
/// `spare == 0`, else the v0 reader. A v1 header is 8 bytes: a shorter datagram is read as
/// v0 (the kernel would read `version` past the datagram, from its receive buffer, and find
/// no room for an entry either way).
pub fn decode_partial(datagram: &[u8], own_syncid: u8) -> Partial {
    let d = datagram;
    let mut out = Partial::default();
    if d.len() < MESG_V0_HEADER_LEN {
        out.error = Some(WireError::HeaderTooShort);
        return out;
    }
    if be16(d, 2) as usize != d.len() {
        out.error = Some(WireError::SizeMismatch);
        return out;
    }
    out.decoded.syncid = d[1];
    if own_syncid != 0 && d[1] != own_syncid {
        out.error = Some(WireError::ForeignSyncid);
        return out;
    }
    if d.len() >= MESG_HEADER_LEN && d[0] == 0 {
        if d[5] == SYNC_PROTO_VER && d[6] == 0 && d[7] == 0 {
            out.decoded.version = 1;
            out.decoded.nr_conns = d[4];
            out.error = decode_v1_entries(d, &mut out.decoded).err();
        } else {
            // The kernel's v0 reader with nr_conns 0: nothing happens. Say why.
            out.error = Some(WireError::BadVersion);
        }
        return out;
    }
    out.decoded.version = 0;
    out.decoded.nr_conns = d[0];
    out.error = decode_v0_entries(d, &mut out.decoded).err();
    out
}

/// The v1 loop of `ip_vs_process_message`.
fn decode_v1_entries(d: &[u8], out: &mut Decoded) -> Result<(), WireError> {
    let mut next = MESG_HEADER_LEN;
    for i in 0..out.nr_conns {
        let p = next;
        // Room for the fixed v4 part, whatever the type ("too small").
        if p + CONN_V4_LEN > d.len() {
            return Err(WireError::ConnTruncated);
        }
        let ver_size = be16(d, p + 2);
        let size = (ver_size & SVER_MASK) as usize;
        let end = p + size;
        if end > d.len() {
            return Err(WireError::ConnPastEnd);
        }
        if ver_size >> SVER_SHIFT != 0 {
            return Err(WireError::ConnVersion);
        }
        match decode_conn_v1(d, p, end)? {
            Ok(c) => out.conns.push(c),
            Err(reason) => out.skipped.push(Skipped { index: i, reason }),
        }
        // "Make sure we have 32 bit alignment".
        next = p + ((size + 3) & !3);
    }
    Ok(())
}

/// `ip_vs_proc_sync_conn` on the entry at `p` whose `ver_size` ends it at `end` (both
/// already within `d`, and `p + 36 <= d.len()`). The outer `Err` drops the rest of the
/// datagram; the inner one skips this entry.
fn decode_conn_v1(
    d: &[u8],
    p: usize,
    end: usize,
) -> Result<Result<SyncConn, SkipReason>, WireError> {
    let stype = d[p];
    let v6 = stype & STYPE_F_INET6 != 0;
    let fixed = if v6 {
        CONN_V6_LEN
    } else if stype == 0 {
        CONN_V4_LEN
    } else {
        return Err(WireError::ConnType);
    };
    if p + fixed > end {
        return Err(WireError::ConnTooShort);
    }

    // Options, walked in order; the first fault decides.
    let mut seq = None;
    let mut pe_data: Option<&[u8]> = None;
    let mut pe_name: Option<&[u8]> = None;
    let mut q = p + fixed;
    while q < end {
        if q + 2 > end {
            return Err(WireError::OptTruncated);
        }
        let ptype = d[q];
        let plen = d[q + 1] as usize;
        q += 2;
        if plen == 0 || q + plen > end {
            return Err(WireError::OptLength);
        }
        let body = &d[q..q + plen];
        // The optional bit is masked off before the switch: 0x41 is still SEQ.
        match ptype & !IPVS_OPT_F_PARAM {
            IPVS_OPT_SEQ_DATA => {
                // ip_vs_proc_seqopt
                if plen != CONN_OPTIONS_LEN || seq.is_some() {
                    return Err(WireError::SeqOpt);
                }
                seq = Some(seq_opt(d, q, true));
            }
            IPVS_OPT_PE_DATA => {
                // ip_vs_proc_str
                if plen > IP_VS_PEDATA_MAXLEN || pe_data.is_some() {
                    return Err(WireError::PeData);
                }
                pe_data = Some(body);
            }
            IPVS_OPT_PE_NAME => {
                if plen > IP_VS_PENAME_MAXLEN || pe_name.is_some() {
                    return Err(WireError::PeName);
                }
                pe_name = Some(body);
            }
            _ => {
                if ptype & IPVS_OPT_F_PARAM == 0 {
                    return Ok(Err(SkipReason::UnknownMandatoryOption));
                }
            }
        }
        q += plen;
    }

    let flags = be32(d, p + 4);
    let state = be16(d, p + 8);
    let protocol = d[p + 1];
    if flags & IP_VS_CONN_F_TEMPLATE == 0 {
        match num_states(protocol) {
            None => return Ok(Err(SkipReason::UnsupportedProtocol)),
            Some(n) if state >= n => return Ok(Err(SkipReason::BadState)),
            Some(_) => {}
        }
    }
    // ip_vs_conn_fill_param_sync: data needs a name; a name alone is ignored.
    let pe = match (pe_data, pe_name) {
        (Some(_), None) => return Ok(Err(SkipReason::PeWithoutName)),
        (Some(data), Some(name)) => Some(SyncPe {
            name: name.to_vec(),
            data: data.to_vec(),
        }),
        (None, _) => None,
    };

    let mut c = SyncConn {
        v6,
        protocol,
        flags,
        state,
        cport: be16(d, p + 10),
        vport: be16(d, p + 12),
        dport: be16(d, p + 14),
        fwmark: be32(d, p + 16),
        timeout_s: be32(d, p + 20),
        seq,
        pe,
        ..SyncConn::default()
    };
    if v6 {
        c.v6_addrs = Some(V6Addrs {
            caddr: ipv6(d, p + 24),
            vaddr: ipv6(d, p + 40),
            daddr: ipv6(d, p + 56),
        });
    } else {
        c.caddr = ipv4(d, p + 24);
        c.vaddr = ipv4(d, p + 28);
        c.daddr = ipv4(d, p + 32);
    }
    Ok(Ok(c))
}

/// `ip_vs_process_message_v0`.
fn decode_v0_entries(d: &[u8], out: &mut Decoded) -> Result<(), WireError> {
    let mut p = MESG_V0_HEADER_LEN;
    for i in 0..out.nr_conns {
        if p + CONN_V0_LEN > d.len() {
            return Err(WireError::ConnTruncated);
        }
        let s = p;
        let wire_flags = be16(d, s + 20) as u32;
        let has_seq = wire_flags & IP_VS_CONN_F_SEQ_MASK != 0;
        p += if has_seq {
            CONN_V0_FULL_LEN
        } else {
            CONN_V0_LEN
        };
        if p > d.len() {
            return Err(WireError::ConnPastEnd);
        }
        let state = be16(d, s + 22);
        let protocol = d[s + 1];
        if wire_flags & IP_VS_CONN_F_TEMPLATE == 0 {
            let reason = match num_states(protocol) {
                None => Some(SkipReason::UnsupportedProtocol),
                Some(n) if state >= n => Some(SkipReason::BadState),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                out.skipped.push(Skipped { index: i, reason });
                continue;
            }
        }
        out.conns.push(SyncConn {
            v6: false,
            protocol,
            flags: wire_flags,
            state,
            cport: be16(d, s + 2),
            vport: be16(d, s + 4),
            dport: be16(d, s + 6),
            caddr: ipv4(d, s + 8),
            vaddr: ipv4(d, s + 12),
            daddr: ipv4(d, s + 16),
            seq: has_seq.then(|| seq_opt(d, s + CONN_V0_LEN, false)),
            ..SyncConn::default()
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fuzz body
// ---------------------------------------------------------------------------------------

/// Body of `fuzz/fuzz_targets/sync_decode.rs` (and of the stable smoke test): any bytes,
/// as a datagram of at most 64 KiB, through the decoder with and without a syncid filter.
/// Never panics; what it accepts re-encodes and decodes to the same entries.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let data = &data[..data.len().min(65535)];
    for own in [0, data.get(1).copied().unwrap_or(0), 7] {
        let p = decode_partial(data, own);
        let d = &p.decoded;
        assert!(d.conns.len() + d.skipped.len() <= d.nr_conns as usize);
        if p.error.is_some() {
            continue;
        }
        // The master clears HASHED and never sends ONE_PACKET entries.
        let want: Vec<SyncConn> = d
            .conns
            .iter()
            .filter(|c| c.flags & IP_VS_CONN_F_ONE_PACKET == 0)
            .map(|c| SyncConn {
                flags: c.flags & !IP_VS_CONN_F_HASHED,
                ..c.clone()
            })
            .collect();
        let grams = if d.version == 0 {
            encode_v0(d.syncid, MAXLEN_MAX, &want)
        } else {
            encode(d.syncid, MAXLEN_MAX, &want)
        }
        .expect("decoded entries re-encode");
        let mut again = Vec::new();
        for g in &grams {
            let r = decode(g, d.syncid).expect("re-encoded datagram decodes");
            assert_eq!(r.version, d.version);
            assert!(r.skipped.is_empty());
            again.extend(r.conns);
        }
        assert_eq!(again, want);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_dr() -> SyncConn {
        SyncConn {
            protocol: IPPROTO_TCP,
            flags: IP_VS_CONN_F_DROUTE,
            state: IP_VS_TCP_S_ESTABLISHED,
            cport: 40000,
            vport: 80,
            dport: 80,
            timeout_s: 900,
            caddr: Ipv4Addr::new(192, 0, 2, 1),
            vaddr: Ipv4Addr::new(10, 0, 0, 1),
            daddr: Ipv4Addr::new(10, 0, 1, 10),
            ..SyncConn::default()
        }
    }

    #[test]
    fn sync_maxlen_defaults() {
        assert_eq!(master_maxlen(0, false), 1472);
        assert_eq!(master_maxlen(0, true), 1452);
        assert_eq!(master_maxlen(70000, false), 65507);
        assert_eq!(backup_maxlen(0, 9000, false), 8972);
        assert_eq!(backup_maxlen(0, 1280, false), 1472);
        assert_eq!(backup_maxlen(100, 1500, false), 1024);
    }

    #[test]
    fn flags_rules() {
        assert_eq!(IP_VS_CONN_F_BACKUP_MASK, 0x1f87);
        assert_eq!(IP_VS_CONN_F_BACKUP_UPD_MASK, 0x0700);
        let wire = IP_VS_CONN_F_DROUTE | IP_VS_CONN_F_HASHED | IP_VS_CONN_F_ONE_PACKET | 0x10000;
        assert_eq!(
            backup_flags(1, wire),
            IP_VS_CONN_F_DROUTE | IP_VS_CONN_F_SYNC
        );
        assert_eq!(
            backup_flags(0, wire),
            IP_VS_CONN_F_DROUTE | IP_VS_CONN_F_SYNC | IP_VS_CONN_F_ONE_PACKET | 0x10000
        );
        let existing = IP_VS_CONN_F_MASQ | IP_VS_CONN_F_SYNC | IP_VS_CONN_F_INACTIVE;
        assert_eq!(
            updated_flags(existing, IP_VS_CONN_F_TUNNEL | IP_VS_CONN_F_IN_SEQ),
            IP_VS_CONN_F_MASQ | IP_VS_CONN_F_SYNC | IP_VS_CONN_F_IN_SEQ
        );
        let c = tcp_dr();
        assert_eq!(c.fwd_method(), FwdMethod::DirectRoute);
        assert!(!c.is_template());
        assert_eq!(
            SyncConn {
                flags: 7,
                ..c.clone()
            }
            .fwd_method(),
            FwdMethod::Other(7)
        );
    }

    #[test]
    fn writer_splits_at_maxlen() {
        // 8 + 36 + (pad 0) 36 = 80; a third would need 116 > 100.
        let mut w = SyncWriter::new(1, 100);
        assert_eq!(w.push(&tcp_dr()).unwrap(), None);
        assert_eq!(w.push(&tcp_dr()).unwrap(), None);
        let first = w
            .push(&tcp_dr())
            .unwrap()
            .expect("third entry starts a datagram");
        assert_eq!(first.len(), 80);
        assert_eq!(first[4], 2);
        assert_eq!(w.pending(), 1);
        let second = w.flush().unwrap();
        assert_eq!(second.len(), 44);
        assert_eq!(w.flush(), None);
    }

    #[test]
    fn entry_larger_than_maxlen_goes_alone() {
        let mut w = SyncWriter::new(0, 10);
        assert_eq!(w.push(&tcp_dr()).unwrap(), None);
        // The buffer holds exactly the first entry: the next one starts another.
        assert_eq!(w.push(&tcp_dr()).unwrap().map(|g| g.len()), Some(44));
    }

    #[test]
    fn nr_conns_stops_at_255() {
        let conns = vec![tcp_dr(); 300];
        let grams = encode(0, MAXLEN_MAX, &conns).unwrap();
        assert_eq!(grams.len(), 2);
        assert_eq!(grams[0][4], 255);
        assert_eq!(grams[1][4], 45);
        let n: usize = grams
            .iter()
            .map(|g| decode(g, 0).unwrap().conns.len())
            .sum();
        assert_eq!(n, 300);
    }

    #[test]
    fn refused_entries() {
        let mut w = SyncWriter::new(0, 1472);
        let one = SyncConn {
            flags: IP_VS_CONN_F_ONE_PACKET,
            ..tcp_dr()
        };
        assert_eq!(w.push(&one), Err(EncodeError::OnePacket));
        let pe = SyncConn {
            pe: Some(SyncPe {
                name: vec![b'x'; 17],
                data: vec![1],
            }),
            ..tcp_dr()
        };
        assert_eq!(w.push(&pe), Err(EncodeError::PeNameTooLong));
        assert_eq!(w.pending(), 0);
        let v6 = SyncConn {
            v6: true,
            ..tcp_dr()
        };
        assert_eq!(
            SyncWriter::new_v0(0, 1472).push(&v6),
            Err(EncodeError::V0Ipv6)
        );
    }

    #[test]
    fn error_names_are_dense() {
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        for (i, e) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    #[test]
    fn fuzz_body_on_a_valid_datagram() {
        let grams = encode(3, 1472, &[tcp_dr(), tcp_dr()]).unwrap();
        fuzz_decode(&grams[0]);
        let grams = encode_v0(3, 1472, &[tcp_dr()]).unwrap();
        fuzz_decode(&grams[0]);
    }
}
