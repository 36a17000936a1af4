//! `xvs::sync::wire` against byte tables built by hand from the kernel's structs
//! (`net/netfilter/ipvs/ip_vs_sync.c`: `struct ip_vs_sync_mesg`, `struct ip_vs_sync_v4`,
//! `struct ip_vs_sync_v6`, `struct ip_vs_sync_mesg_v0`, `struct ip_vs_sync_conn_v0`,
//! `struct ip_vs_sync_conn_options`), field by field in network order; the rejection rules
//! of `ip_vs_process_message`, `ip_vs_proc_sync_conn` and `ip_vs_process_message_v0`;
//! round trips and never-panic properties; the fuzz target's seed corpus.
//!
//! `cargo test --test sync_wire -- --ignored write_seed_corpus` rewrites
//! `fuzz/corpus/sync_decode/` from the golden tables.

use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use xvs::sync::wire::*;

// ---------------------------------------------------------------------------------------
// The entries of the golden tables
// ---------------------------------------------------------------------------------------

/// TCP, direct routing, established: 192.0.2.1:40000 -> 10.0.0.1:80 -> 10.0.1.10:80.
fn dr_conn() -> SyncConn {
    SyncConn {
        protocol: IPPROTO_TCP,
        flags: IP_VS_CONN_F_DROUTE,
        state: IP_VS_TCP_S_ESTABLISHED,
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        timeout_s: 900,
        caddr: Ipv4Addr::new(192, 0, 2, 1),
        vaddr: Ipv4Addr::new(10, 0, 0, 1),
        daddr: Ipv4Addr::new(10, 0, 1, 10),
        ..SyncConn::default()
    }
}

fn seq() -> SeqOpt {
    SeqOpt {
        in_seq: SeqInfo {
            init_seq: 0x1122_3344,
            delta: 0x10,
            previous_delta: 0x08,
        },
        out_seq: SeqInfo {
            init_seq: 0xaabb_ccdd,
            delta: 0xffff_fff0,
            previous_delta: 0xffff_fff8,
        },
    }
}

/// TCP NAT with both sequence adjustments (an FTP control connection):
/// 198.51.100.7:51000 -> 10.0.0.2:80 -> 192.168.80.10:8080, fwmark 7, 120 s left.
fn nat_seq_conn() -> SyncConn {
    SyncConn {
        protocol: IPPROTO_TCP,
        flags: IP_VS_CONN_F_MASQ | IP_VS_CONN_F_SEQ_MASK,
        state: IP_VS_TCP_S_ESTABLISHED,
        cport: 51000,
        vport: 80,
        dport: 8080,
        fwmark: 7,
        timeout_s: 120,
        caddr: Ipv4Addr::new(198, 51, 100, 7),
        vaddr: Ipv4Addr::new(10, 0, 0, 2),
        daddr: Ipv4Addr::new(192, 168, 80, 10),
        seq: Some(seq()),
        ..SyncConn::default()
    }
}

/// A persistence template (port 443, DR): client port 0, fwmark 0, 360 s.
fn template_conn() -> SyncConn {
    SyncConn {
        protocol: IPPROTO_TCP,
        flags: IP_VS_CONN_F_TEMPLATE | IP_VS_CONN_F_DROUTE,
        state: IP_VS_CTPL_S_NONE,
        cport: 0,
        vport: 443,
        dport: 443,
        fwmark: 0,
        timeout_s: 360,
        caddr: Ipv4Addr::new(192, 0, 2, 1),
        vaddr: Ipv4Addr::new(10, 0, 0, 1),
        daddr: Ipv4Addr::new(10, 0, 1, 10),
        ..SyncConn::default()
    }
}

/// A SIP persistence-engine template (UDP 5060, NAT) with Call-ID "call-1": a 49-byte
/// entry, so the next one is padded by 3.
fn sip_conn() -> SyncConn {
    SyncConn {
        protocol: IPPROTO_UDP,
        flags: IP_VS_CONN_F_TEMPLATE | IP_VS_CONN_F_MASQ,
        state: 0,
        cport: 0,
        vport: 5060,
        dport: 5060,
        fwmark: 0,
        timeout_s: 180,
        caddr: Ipv4Addr::new(203, 0, 113, 9),
        vaddr: Ipv4Addr::new(10, 0, 0, 3),
        daddr: Ipv4Addr::new(192, 168, 80, 20),
        pe: Some(SyncPe {
            name: b"sip".to_vec(),
            data: b"call-1".to_vec(),
        }),
        ..SyncConn::default()
    }
}

// ---------------------------------------------------------------------------------------
// Golden tables
// ---------------------------------------------------------------------------------------

/// The DR entry's `struct ip_vs_sync_v4`, 36 bytes.
#[rustfmt::skip]
const DR_V4: [u8; 36] = [
    0x00,                   // type: 0 (IPv4)
    0x06,                   // protocol: TCP
    0x00, 0x24,             // ver_size: version 0, size 36
    0x00, 0x00, 0x00, 0x03, // flags: IP_VS_CONN_F_DROUTE
    0x00, 0x01,             // state: IP_VS_TCP_S_ESTABLISHED
    0x9c, 0x40,             // cport: 40000
    0x00, 0x50,             // vport: 80
    0x00, 0x50,             // dport: 80
    0x00, 0x00, 0x00, 0x00, // fwmark: 0
    0x00, 0x00, 0x03, 0x84, // timeout: 900 s
    192, 0, 2, 1,           // caddr
    10, 0, 0, 1,            // vaddr
    10, 0, 1, 10,           // daddr
];

/// v1, syncid 5, one DR entry.
fn golden_v1_dr() -> Vec<u8> {
    #[rustfmt::skip]
    let mut m = vec![
        0x00,       // reserved: 0 (v0's nr_conns)
        0x05,       // syncid
        0x00, 0x2c, // size: 8 + 36 = 44
        0x01,       // nr_conns
        0x01,       // version: SYNC_PROTO_VER
        0x00, 0x00, // spare
    ];
    m.extend_from_slice(&DR_V4);
    m
}

/// The NAT entry with its SEQ option: 36 + 2 + 24 = 62 bytes.
#[rustfmt::skip]
const NAT_SEQ_V4: [u8; 62] = [
    0x00,                   // type: IPv4
    0x06,                   // protocol: TCP
    0x00, 0x3e,             // ver_size: size 62
    0x00, 0x00, 0x06, 0x00, // flags: MASQ | IN_SEQ | OUT_SEQ
    0x00, 0x01,             // state: ESTABLISHED
    0xc7, 0x38,             // cport: 51000
    0x00, 0x50,             // vport: 80
    0x1f, 0x90,             // dport: 8080
    0x00, 0x00, 0x00, 0x07, // fwmark: 7
    0x00, 0x00, 0x00, 0x78, // timeout: 120 s
    198, 51, 100, 7,        // caddr
    10, 0, 0, 2,            // vaddr
    192, 168, 80, 10,       // daddr
    0x01,                   // option type: IPVS_OPT_SEQ_DATA
    0x18,                   // option length: 24
    0x11, 0x22, 0x33, 0x44, // in_seq.init_seq
    0x00, 0x00, 0x00, 0x10, // in_seq.delta
    0x00, 0x00, 0x00, 0x08, // in_seq.previous_delta
    0xaa, 0xbb, 0xcc, 0xdd, // out_seq.init_seq
    0xff, 0xff, 0xff, 0xf0, // out_seq.delta
    0xff, 0xff, 0xff, 0xf8, // out_seq.previous_delta
];

/// v1, syncid 5, the NAT entry with SEQ.
fn golden_v1_nat_seq() -> Vec<u8> {
    #[rustfmt::skip]
    let mut m = vec![
        0x00, 0x05,
        0x00, 0x46, // size: 8 + 62 = 70
        0x01, 0x01, 0x00, 0x00,
    ];
    m.extend_from_slice(&NAT_SEQ_V4);
    m
}

/// v1, syncid 5, the persistence template.
fn golden_v1_template() -> Vec<u8> {
    #[rustfmt::skip]
    let m = vec![
        0x00, 0x05, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x00, // header: size 44, 1 entry
        0x00,                   // type: IPv4
        0x06,                   // protocol: TCP
        0x00, 0x24,             // ver_size: 36
        0x00, 0x00, 0x10, 0x03, // flags: TEMPLATE | DROUTE
        0x00, 0x00,             // state: IP_VS_CTPL_S_NONE
        0x00, 0x00,             // cport: 0 (templates of port persistence)
        0x01, 0xbb,             // vport: 443
        0x01, 0xbb,             // dport: 443
        0x00, 0x00, 0x00, 0x00, // fwmark: 0
        0x00, 0x00, 0x01, 0x68, // timeout: 360 s
        192, 0, 2, 1,           // caddr
        10, 0, 0, 1,            // vaddr
        10, 0, 1, 10,           // daddr
    ];
    m
}

/// v1, syncid 5, three entries: SIP template (49 bytes, then 3 of padding), NAT with SEQ
/// (62, then 2 of padding), DR (36, last: no padding). 8 + 52 + 64 + 36 = 160.
fn golden_v1_multi() -> Vec<u8> {
    #[rustfmt::skip]
    let mut m = vec![
        0x00, 0x05,
        0x00, 0xa0,             // size: 160
        0x03,                   // nr_conns
        0x01, 0x00, 0x00,
        // entry 1 at offset 8
        0x00,                   // type: IPv4
        0x11,                   // protocol: UDP
        0x00, 0x31,             // ver_size: 36 + 8 + 5 = 49
        0x00, 0x00, 0x10, 0x00, // flags: TEMPLATE | MASQ
        0x00, 0x00,             // state
        0x00, 0x00,             // cport: 0
        0x13, 0xc4,             // vport: 5060
        0x13, 0xc4,             // dport: 5060
        0x00, 0x00, 0x00, 0x00, // fwmark
        0x00, 0x00, 0x00, 0xb4, // timeout: 180 s
        203, 0, 113, 9,         // caddr
        10, 0, 0, 3,            // vaddr
        192, 168, 80, 20,       // daddr
        0x02, 0x06,             // option IPVS_OPT_PE_DATA, length 6
        b'c', b'a', b'l', b'l', b'-', b'1',
        0x03, 0x03,             // option IPVS_OPT_PE_NAME, length 3
        b's', b'i', b'p',
        0x00, 0x00, 0x00,       // padding: 57 -> 60
    ];
    m.extend_from_slice(&NAT_SEQ_V4); // entry 2 at offset 60
    m.extend_from_slice(&[0x00, 0x00]); // padding: 122 -> 124
    m.extend_from_slice(&DR_V4); // entry 3 at offset 124
    m
}

/// v0, syncid 5, the DR entry (`struct ip_vs_sync_conn_v0`, 24 bytes).
fn golden_v0_dr() -> Vec<u8> {
    #[rustfmt::skip]
    let m = vec![
        0x01,                   // nr_conns
        0x05,                   // syncid
        0x00, 0x1c,             // size: 4 + 24 = 28
        0x00,                   // reserved
        0x06,                   // protocol: TCP
        0x9c, 0x40,             // cport
        0x00, 0x50,             // vport
        0x00, 0x50,             // dport
        192, 0, 2, 1,           // caddr
        10, 0, 0, 1,            // vaddr
        10, 0, 1, 10,           // daddr
        0x00, 0x03,             // flags (16 bits): DROUTE
        0x00, 0x01,             // state: ESTABLISHED
    ];
    m
}

/// v0, syncid 5, the NAT entry with its sequence options (FULL_CONN_SIZE, 48 bytes). The
/// options are a raw copy of the kernel's host-order `struct ip_vs_seq`: little-endian.
fn golden_v0_nat_seq() -> Vec<u8> {
    #[rustfmt::skip]
    let m = vec![
        0x01, 0x05,
        0x00, 0x34,             // size: 4 + 48 = 52
        0x00,                   // reserved
        0x06,                   // protocol
        0xc7, 0x38,             // cport: 51000
        0x00, 0x50,             // vport: 80
        0x1f, 0x90,             // dport: 8080
        198, 51, 100, 7,        // caddr
        10, 0, 0, 2,            // vaddr
        192, 168, 80, 10,       // daddr
        0x06, 0x00,             // flags: MASQ | IN_SEQ | OUT_SEQ
        0x00, 0x01,             // state
        0x44, 0x33, 0x22, 0x11, // in_seq.init_seq (host order, LE)
        0x10, 0x00, 0x00, 0x00, // in_seq.delta
        0x08, 0x00, 0x00, 0x00, // in_seq.previous_delta
        0xdd, 0xcc, 0xbb, 0xaa, // out_seq.init_seq
        0xf0, 0xff, 0xff, 0xff, // out_seq.delta
        0xf8, 0xff, 0xff, 0xff, // out_seq.previous_delta
    ];
    m
}

/// v1, syncid 5, one IPv6 TCP DR entry (`struct ip_vs_sync_v6`, 72 bytes).
fn golden_v1_v6() -> Vec<u8> {
    #[rustfmt::skip]
    let mut m = vec![
        0x00, 0x05,
        0x00, 0x50,             // size: 8 + 72 = 80
        0x01, 0x01, 0x00, 0x00,
        0x01,                   // type: STYPE_F_INET6
        0x06,                   // protocol
        0x00, 0x48,             // ver_size: 72
        0x00, 0x00, 0x00, 0x03, // flags: DROUTE
        0x00, 0x01,             // state
        0x9c, 0x40,             // cport
        0x00, 0x50,             // vport
        0x00, 0x50,             // dport
        0x00, 0x00, 0x00, 0x00, // fwmark
        0x00, 0x00, 0x03, 0x84, // timeout: 900
    ];
    m.extend_from_slice(&v6("2001:db8::1").octets()); // caddr
    m.extend_from_slice(&v6("2001:db8:1::1").octets()); // vaddr
    m.extend_from_slice(&v6("2001:db8:2::a").octets()); // daddr
    m
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn v6_conn() -> SyncConn {
    SyncConn {
        v6: true,
        caddr: Ipv4Addr::UNSPECIFIED,
        vaddr: Ipv4Addr::UNSPECIFIED,
        daddr: Ipv4Addr::UNSPECIFIED,
        v6_addrs: Some(V6Addrs {
            caddr: v6("2001:db8::1"),
            vaddr: v6("2001:db8:1::1"),
            daddr: v6("2001:db8:2::a"),
        }),
        ..dr_conn()
    }
}

/// v0 never carries fwmark and timeout: they come back as 0.
fn as_v0(c: SyncConn) -> SyncConn {
    SyncConn {
        fwmark: 0,
        timeout_s: 0,
        ..c
    }
}

fn goldens() -> Vec<(&'static str, u8, Vec<u8>, Vec<SyncConn>)> {
    vec![
        ("v1-dr", 1, golden_v1_dr(), vec![dr_conn()]),
        ("v1-nat-seq", 1, golden_v1_nat_seq(), vec![nat_seq_conn()]),
        (
            "v1-template",
            1,
            golden_v1_template(),
            vec![template_conn()],
        ),
        (
            "v1-multi-padded",
            1,
            golden_v1_multi(),
            vec![sip_conn(), nat_seq_conn(), dr_conn()],
        ),
        ("v1-ipv6", 1, golden_v1_v6(), vec![v6_conn()]),
        ("v0-dr", 0, golden_v0_dr(), vec![as_v0(dr_conn())]),
        (
            "v0-nat-seq",
            0,
            golden_v0_nat_seq(),
            vec![as_v0(nat_seq_conn())],
        ),
    ]
}

#[test]
fn golden_encode() {
    for (name, version, bytes, conns) in goldens() {
        let grams = if version == 1 {
            encode(5, 1472, &conns).unwrap()
        } else {
            encode_v0(5, 1472, &conns).unwrap()
        };
        assert_eq!(grams, vec![bytes], "{name}");
    }
}

#[test]
fn golden_decode() {
    for (name, version, bytes, conns) in goldens() {
        for own in [0, 5] {
            let d = decode(&bytes, own).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(d.version, version, "{name}");
            assert_eq!(d.syncid, 5, "{name}");
            assert_eq!(d.nr_conns as usize, conns.len(), "{name}");
            assert_eq!(d.conns, conns, "{name}");
            assert!(d.skipped.is_empty(), "{name}");
        }
    }
}

#[test]
fn golden_accessors() {
    let d = decode(&golden_v1_multi(), 0).unwrap();
    assert!(d.conns[0].is_template());
    assert_eq!(d.conns[0].fwd_method(), FwdMethod::Masq);
    assert!(!d.conns[2].is_template());
    assert_eq!(d.conns[2].fwd_method(), FwdMethod::DirectRoute);
    assert_eq!(
        backup_flags(d.version, d.conns[1].flags),
        IP_VS_CONN_F_SEQ_MASK | IP_VS_CONN_F_SYNC
    );
    let d6 = decode(&golden_v1_v6(), 0).unwrap();
    assert!(d6.conns[0].v6);
}

// ---------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------

/// `base` with bytes replaced at the given offsets.
fn with(base: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    let mut m = base;
    for &(at, b) in edits {
        m[at] = b;
    }
    m
}

/// Sets the v1/v0 header's size to the datagram's length.
fn fix_size(mut m: Vec<u8>) -> Vec<u8> {
    let n = m.len() as u16;
    m[2..4].copy_from_slice(&n.to_be_bytes());
    m
}

/// A v1 datagram of the given raw entries (each padded to 4 as the kernel does).
fn v1_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![0, 5, 0, 0, entries.len() as u8, 1, 0, 0];
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            while m.len() % 4 != 0 {
                m.push(0);
            }
        }
        m.extend_from_slice(e);
    }
    fix_size(m)
}

/// The DR entry followed by `opts`, with `ver_size` covering them.
fn dr_with_opts(opts: &[u8]) -> Vec<u8> {
    let mut e = DR_V4.to_vec();
    e.extend_from_slice(opts);
    let n = e.len() as u16;
    e[2..4].copy_from_slice(&n.to_be_bytes());
    e
}

fn seq_opt_bytes(ptype: u8) -> Vec<u8> {
    NAT_SEQ_V4[36..]
        .iter()
        .enumerate()
        .map(|(i, &b)| if i == 0 { ptype } else { b })
        .collect()
}

#[test]
fn rejections() {
    use WireError::*;
    let dr = golden_v1_dr();
    let mut longer = dr.clone();
    longer.push(0);
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        ("empty", vec![], HeaderTooShort),
        ("3 bytes", vec![0, 5, 0], HeaderTooShort),
        ("size says 45", with(dr.clone(), &[(3, 45)]), SizeMismatch),
        ("size says 43", with(dr.clone(), &[(3, 43)]), SizeMismatch),
        ("one byte more than size", longer, SizeMismatch),
        ("version 2", with(dr.clone(), &[(5, 2)]), BadVersion),
        ("version 0", with(dr.clone(), &[(5, 0)]), BadVersion),
        ("spare set", with(dr.clone(), &[(7, 1)]), BadVersion),
        // nr_conns 2, one entry there.
        (
            "second entry missing",
            with(dr.clone(), &[(4, 2)]),
            ConnTruncated,
        ),
        (
            "entry size 40 > left",
            with(dr.clone(), &[(11, 40)]),
            ConnPastEnd,
        ),
        (
            "entry size 32 < 36",
            with(dr.clone(), &[(11, 32)]),
            ConnTooShort,
        ),
        ("entry size 0", with(dr.clone(), &[(11, 0)]), ConnTooShort),
        (
            "entry version 1",
            with(dr.clone(), &[(10, 0x10)]),
            ConnVersion,
        ),
        ("type 2", with(dr.clone(), &[(8, 2)]), ConnType),
        ("type 0x80", with(dr.clone(), &[(8, 0x80)]), ConnType),
        // The v6 bit with a v4-sized entry.
        (
            "v6 entry of 36 bytes",
            with(dr.clone(), &[(8, 1)]),
            ConnTooShort,
        ),
        (
            "SEQ option past the entry",
            // ver_size 56 cuts the 26-byte option at 20; the datagram still holds it all.
            with(golden_v1_nat_seq(), &[(11, 56)]),
            OptLength,
        ),
        (
            "option header cut",
            v1_of(&[dr_with_opts(&[0x01])]),
            OptTruncated,
        ),
        (
            "option length 0",
            v1_of(&[dr_with_opts(&[0x45, 0x00])]),
            OptLength,
        ),
        (
            "option longer than entry",
            v1_of(&[dr_with_opts(&[0x45, 0x03, 0xaa, 0xbb])]),
            OptLength,
        ),
        (
            "SEQ of 20 bytes",
            v1_of(&[dr_with_opts(&[&[0x01, 20][..], &[0u8; 20]].concat())]),
            SeqOpt,
        ),
        (
            "SEQ twice",
            v1_of(&[dr_with_opts(&[seq_opt_bytes(1), seq_opt_bytes(1)].concat())]),
            SeqOpt,
        ),
        (
            "PE_DATA twice",
            v1_of(&[dr_with_opts(&[
                2, 1, b'a', 2, 1, b'b', 3, 3, b's', b'i', b'p',
            ])]),
            PeData,
        ),
        (
            "PE_NAME of 17 bytes",
            v1_of(&[dr_with_opts(
                &[&[2, 1, b'a', 3, 17][..], &[b'x'; 17]].concat(),
            )]),
            PeName,
        ),
        (
            "PE_NAME twice",
            v1_of(&[dr_with_opts(&[2, 1, b'a', 3, 1, b's', 3, 1, b's'])]),
            PeName,
        ),
        // v0
        (
            "v0 entry missing",
            with(golden_v0_dr(), &[(0, 2)]),
            ConnTruncated,
        ),
        (
            "v0 SEQ flags without options",
            with(golden_v0_dr(), &[(24, 0x06)]),
            ConnPastEnd,
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode(&bytes, 0).map(|d| d.conns), Err(want), "{name}");
        assert_eq!(decode_partial(&bytes, 0).error, Some(want), "{name}");
    }
}

#[test]
fn syncid_filter() {
    let dr = golden_v1_dr();
    assert_eq!(decode(&dr, 6), Err(WireError::ForeignSyncid));
    assert!(decode(&dr, 0).is_ok());
    assert!(decode(&dr, 5).is_ok());
    // The filter comes after the size check, as in ip_vs_process_message.
    assert_eq!(
        decode(&with(dr, &[(3, 0)]), 6),
        Err(WireError::SizeMismatch)
    );
    assert_eq!(decode(&golden_v0_dr(), 6), Err(WireError::ForeignSyncid));
}

#[test]
fn options_optional_and_mandatory() {
    // An unknown option with IPVS_OPT_F_PARAM is skipped over.
    let optional = v1_of(&[dr_with_opts(&[0x45, 0x02, 0xaa, 0xbb])]);
    assert_eq!(decode(&optional, 0).unwrap().conns, vec![dr_conn()]);
    // SEQ with the optional bit is still SEQ (the bit is masked before the switch).
    let seq41 = v1_of(&[dr_with_opts(&seq_opt_bytes(0x41))]);
    assert_eq!(
        decode(&seq41, 0).unwrap().conns[0].seq,
        Some(seq()),
        "0x41 is SEQ"
    );
    // An unknown mandatory option skips that entry only, even when a bad option follows.
    let mandatory = v1_of(&[
        dr_with_opts(&[0x05, 0x01, 0xaa, 0x01, 0x00]),
        DR_V4.to_vec(),
    ]);
    let d = decode(&mandatory, 0).unwrap();
    assert_eq!(d.conns, vec![dr_conn()]);
    assert_eq!(
        d.skipped,
        vec![Skipped {
            index: 0,
            reason: SkipReason::UnknownMandatoryOption
        }]
    );
    // 0x85: high bit set, 0x40 clear: unknown and mandatory.
    let high = v1_of(&[dr_with_opts(&[0x85, 0x01, 0xaa])]);
    assert_eq!(
        decode(&high, 0).unwrap().skipped[0].reason,
        SkipReason::UnknownMandatoryOption
    );
}

#[test]
fn persistence_engine_rules() {
    // PE_DATA without PE_NAME: that entry is skipped ("Invalid PE parameters").
    let no_name = v1_of(&[dr_with_opts(&[2, 1, b'a']), DR_V4.to_vec()]);
    let d = decode(&no_name, 0).unwrap();
    assert_eq!(d.conns.len(), 1);
    assert_eq!(d.skipped[0].reason, SkipReason::PeWithoutName);
    // PE_NAME alone is ignored.
    let name_only = v1_of(&[dr_with_opts(&[3, 3, b's', b'i', b'p'])]);
    assert_eq!(decode(&name_only, 0).unwrap().conns, vec![dr_conn()]);
    // Name before data is fine.
    let reversed = v1_of(&[dr_with_opts(&[3, 3, b's', b'i', b'p', 2, 1, b'a'])]);
    assert_eq!(
        decode(&reversed, 0).unwrap().conns[0].pe,
        Some(SyncPe {
            name: b"sip".to_vec(),
            data: b"a".to_vec()
        })
    );
}

#[test]
fn protocol_and_state_checks() {
    let icmp = with(golden_v1_dr(), &[(9, 1)]);
    let d = decode(&icmp, 0).unwrap();
    assert!(d.conns.is_empty());
    assert_eq!(d.skipped[0].reason, SkipReason::UnsupportedProtocol);
    // TCP state 11 (IP_VS_TCP_S_LAST) is out of range; 10 (SYNACK) is not.
    let st11 = with(golden_v1_dr(), &[(17, 11)]);
    assert_eq!(
        decode(&st11, 0).unwrap().skipped[0].reason,
        SkipReason::BadState
    );
    assert_eq!(
        decode(&with(golden_v1_dr(), &[(17, 10)]), 0)
            .unwrap()
            .conns
            .len(),
        1
    );
    // UDP has one state.
    let udp1 = with(golden_v1_dr(), &[(9, 17), (17, 1)]);
    assert_eq!(
        decode(&udp1, 0).unwrap().skipped[0].reason,
        SkipReason::BadState
    );
    // Templates are not checked: protocol 1, state 9.
    let tpl = with(golden_v1_template(), &[(9, 1), (17, 9)]);
    assert_eq!(decode(&tpl, 0).unwrap().conns.len(), 1);
    // v0 applies the same checks with `continue`.
    let v0 = with(golden_v0_dr(), &[(5, 1)]);
    let d = decode(&v0, 0).unwrap();
    assert_eq!(d.skipped[0].reason, SkipReason::UnsupportedProtocol);
}

#[test]
fn kernel_keeps_entries_before_a_fault() {
    // Two entries; the second has type 2: the kernel has applied the first already.
    let bad = v1_of(&[DR_V4.to_vec(), with(DR_V4.to_vec(), &[(0, 2)])]);
    let p = decode_partial(&bad, 0);
    assert_eq!(p.error, Some(WireError::ConnType));
    assert_eq!(p.decoded.conns, vec![dr_conn()]);
    assert_eq!(decode(&bad, 0), Err(WireError::ConnType));
}

#[test]
fn odd_but_accepted() {
    // Bytes after the announced entries are not looked at (size still has to match).
    let mut m = golden_v1_dr();
    m.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let d = decode(&fix_size(m), 0).unwrap();
    assert_eq!(d.conns, vec![dr_conn()]);
    // Padding bytes are not checked.
    let mut m = golden_v1_multi();
    m[57] = 0xff;
    assert_eq!(decode(&m, 0).unwrap().conns.len(), 3);
    // An empty v1 message, and an empty v0 one.
    assert_eq!(decode(&[0, 5, 0, 8, 0, 1, 0, 0], 0).unwrap().conns, vec![]);
    let d = decode(&[0, 5, 0, 4], 0).unwrap();
    assert_eq!((d.version, d.conns.len()), (0, 0));
    // Type 0x03 has the v6 bit: an IPv6 entry.
    let m = with(golden_v1_v6(), &[(8, 3)]);
    assert_eq!(decode(&m, 0).unwrap().conns, vec![v6_conn()]);
    // HASHED on the wire is kept in `flags`; backup_flags drops it.
    let m = with(golden_v1_dr(), &[(15, 0x43)]);
    let c = &decode(&m, 0).unwrap().conns[0];
    assert_eq!(c.flags, 0x43);
    assert_eq!(backup_flags(1, c.flags), 0x23);
}

#[test]
fn encoder_clears_hashed() {
    let c = SyncConn {
        flags: IP_VS_CONN_F_DROUTE | IP_VS_CONN_F_HASHED,
        ..dr_conn()
    };
    assert_eq!(
        encode(5, 1472, std::slice::from_ref(&c)).unwrap(),
        vec![golden_v1_dr()]
    );
    assert_eq!(encode_v0(5, 1472, &[c]).unwrap(), vec![golden_v0_dr()]);
}

#[test]
fn default_maxlen_packing() {
    // 1472 bytes: 8 + 40 * 36 = 1448; a 41st entry would need 1484.
    let grams = encode(1, master_maxlen(0, false), &vec![dr_conn(); 41]).unwrap();
    assert_eq!(grams.len(), 2);
    assert_eq!((grams[0].len(), grams[0][4]), (1448, 40));
    assert_eq!((grams[1].len(), grams[1][4]), (44, 1));
    // v0: 4 + 61 * 24 = 1468.
    let grams = encode_v0(1, 1472, &vec![dr_conn(); 62]).unwrap();
    assert_eq!((grams[0].len(), grams[0][0]), (1468, 61));
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn arb_seq() -> impl Strategy<Value = SeqOpt> {
    (any::<[u32; 6]>()).prop_map(|v| SeqOpt {
        in_seq: SeqInfo {
            init_seq: v[0],
            delta: v[1],
            previous_delta: v[2],
        },
        out_seq: SeqInfo {
            init_seq: v[3],
            delta: v[4],
            previous_delta: v[5],
        },
    })
}

/// Entries a backup accepts whole: no HASHED/ONE_PACKET; valid protocol and state unless a
/// template; PE with both name and data.
fn arb_conn() -> impl Strategy<Value = SyncConn> {
    let addrs = (any::<[u32; 3]>(), any::<[u128; 3]>());
    let pe = proptest::option::of((
        proptest::collection::vec(any::<u8>(), 1..=16),
        proptest::collection::vec(any::<u8>(), 1..=255),
    ));
    (
        (
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
        ),
        (any::<[u16; 3]>(), any::<u32>(), any::<u32>()),
        addrs,
        proptest::option::of(arb_seq()),
        pe,
    )
        .prop_map(
            |((v6, tpl, proto, state, flags), (ports, fwmark, timeout), (a4, a6), seq, pe)| {
                const PROTOS: [u8; 5] = [
                    IPPROTO_TCP,
                    IPPROTO_UDP,
                    IPPROTO_SCTP,
                    IPPROTO_AH,
                    IPPROTO_ESP,
                ];
                let (protocol, state) = if tpl {
                    (proto, state)
                } else {
                    let p = PROTOS[proto as usize % PROTOS.len()];
                    (p, state % num_states(p).unwrap())
                };
                let mut flags = flags
                    & !(IP_VS_CONN_F_HASHED | IP_VS_CONN_F_ONE_PACKET | IP_VS_CONN_F_TEMPLATE);
                if tpl {
                    flags |= IP_VS_CONN_F_TEMPLATE;
                }
                let mut c = SyncConn {
                    v6,
                    protocol,
                    flags,
                    state,
                    cport: ports[0],
                    vport: ports[1],
                    dport: ports[2],
                    fwmark,
                    timeout_s: timeout,
                    seq,
                    pe: pe.map(|(name, data)| SyncPe { name, data }),
                    ..SyncConn::default()
                };
                if v6 {
                    c.v6_addrs = Some(V6Addrs {
                        caddr: Ipv6Addr::from(a6[0]),
                        vaddr: Ipv6Addr::from(a6[1]),
                        daddr: Ipv6Addr::from(a6[2]),
                    });
                } else {
                    c.caddr = Ipv4Addr::from(a4[0]);
                    c.vaddr = Ipv4Addr::from(a4[1]);
                    c.daddr = Ipv4Addr::from(a4[2]);
                }
                c
            },
        )
}

/// What survives v0: IPv4, 16 bits of flags, seq exactly when the flags ask for it.
fn to_v0(c: SyncConn) -> SyncConn {
    let flags = c.flags & 0xffff;
    SyncConn {
        v6: false,
        v6_addrs: None,
        flags,
        fwmark: 0,
        timeout_s: 0,
        pe: None,
        seq: (flags & IP_VS_CONN_F_SEQ_MASK != 0).then(|| c.seq.unwrap_or_default()),
        caddr: c.caddr,
        vaddr: c.vaddr,
        daddr: c.daddr,
        ..c
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v1_round_trip(
        syncid in any::<u8>(),
        maxlen in 1usize..4000,
        conns in proptest::collection::vec(arb_conn(), 0..40),
    ) {
        let grams = encode(syncid, maxlen, &conns).unwrap();
        let mut back = Vec::new();
        for g in &grams {
            prop_assert!(g.len() <= maxlen.max(8 + 373));
            let d = decode(g, syncid).unwrap();
            prop_assert_eq!(d.version, 1);
            prop_assert_eq!(d.syncid, syncid);
            prop_assert!(d.nr_conns >= 1);
            prop_assert!(d.skipped.is_empty());
            back.extend(d.conns);
        }
        prop_assert_eq!(back, conns);
    }

    #[test]
    fn v0_round_trip(
        syncid in any::<u8>(),
        maxlen in 1usize..2000,
        conns in proptest::collection::vec(arb_conn().prop_map(|c| SyncConn { v6: false, ..c }), 0..40),
    ) {
        let conns: Vec<SyncConn> = conns.into_iter().map(to_v0).collect();
        let grams = encode_v0(syncid, maxlen, &conns).unwrap();
        let mut back = Vec::new();
        for g in &grams {
            let d = decode(g, 0).unwrap();
            prop_assert_eq!(d.version, 0);
            back.extend(d.conns);
        }
        prop_assert_eq!(back, conns);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_decode(&data);
    }

    #[test]
    fn mutated_goldens_never_panic(
        which in 0usize..7,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        keep_size in any::<bool>(),
    ) {
        let mut m = goldens()[which].2.clone();
        for (at, b) in edits {
            let i = at % m.len();
            m[i] = b;
        }
        m.truncate(cut % (m.len() + 1));
        if keep_size && m.len() >= 4 {
            m = fix_size(m);
        }
        fuzz_decode(&m);
    }
}

// ---------------------------------------------------------------------------------------
// The fuzz target's seed corpus
// ---------------------------------------------------------------------------------------

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sync_decode")
}

#[test]
fn seed_corpus_is_the_golden_tables() {
    for (name, _, bytes, _) in goldens() {
        let path = corpus_dir().join(format!("{name}.bin"));
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            file, bytes,
            "{name}: regenerate with --ignored write_seed_corpus"
        );
    }
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        fuzz_decode(&std::fs::read(entry.unwrap().path()).unwrap());
    }
}

#[test]
#[ignore]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    for (name, _, bytes, _) in goldens() {
        std::fs::write(corpus_dir().join(format!("{name}.bin")), bytes).unwrap();
    }
}
