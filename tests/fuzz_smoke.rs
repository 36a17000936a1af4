//! The fuzz target bodies (`xvs::fuzzing`) on stable, so that CI exercises them without
//! nightly or libFuzzer: every file of the seed corpus under `fuzz/corpus/<target>/`, then
//! 20 000 inputs per target from a fixed-seed generator, half random bytes and half
//! mutations of the seeds (which is what reaches the deep paths: random bytes rarely
//! carry an IPv4 ethertype).
//!
//! `cargo test --test fuzz_smoke -- --ignored write_seed_corpus` regenerates the seed
//! corpus (see fuzz/README.md).

use etherparse::{IpHeaders, Ipv4Header, Ipv4Options, PacketBuilder};
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use xvs::fuzzing::{self, fixture::*, BUF_LEN};

const RANDOM_INPUTS: usize = 20_000;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fixed-seed, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The seed corpus of `target`, sorted by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("directory entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("reading a seed"))
        })
        .collect();
    v.sort();
    v
}

/// A seed changed the way a fuzzer would: a few bytes flipped (often in the headers),
/// truncated, extended, or a header byte set to an edge value.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len().min(64));
                v[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => {
                let n = rng.below(v.len() + 1);
                v.truncate(n);
            }
            3 => {
                let n = rng.below(64);
                v.extend(rng.bytes(n));
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    v
}

/// Runs `body` on `input`, naming the input if it panics.
fn run_one(target: &str, what: &str, body: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
        panic!("fuzz body `{target}` panicked on {what}: {input:02x?}");
    }
}

fn exercise(target: &str, body: fn(&[u8])) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for (name, s) in &seeds {
        run_one(target, &format!("seed {name}"), body, s);
    }
    let mut rng = Rng(0x7876_735f_6675_7a7a ^ target.len() as u64);
    for i in 0..RANDOM_INPUTS {
        let input = if i % 2 == 0 {
            // Mostly short; now and then longer than a UMEM frame.
            let n = if rng.below(50) == 0 {
                rng.below(BUF_LEN + 200)
            } else {
                rng.below(160)
            };
            let mut v = rng.bytes(n);
            if n >= 14 && rng.below(2) == 0 {
                v[12..14].copy_from_slice(&[0x08, 0x00]); // IPv4 ethertype
                if n > 14 {
                    v[14] = 0x45;
                }
            }
            v
        } else {
            let (_, s) = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, s)
        };
        run_one(target, &format!("generated input {i}"), body, &input);
    }
}

#[test]
fn fuzz_parse_flow() {
    exercise("parse_flow", fuzzing::parse_flow);
}

#[test]
fn fuzz_forward() {
    exercise("forward", fuzzing::forward);
}

#[test]
fn fuzz_xmit() {
    exercise("xmit", fuzzing::xmit);
}

/// The `forward` and `xmit` seeds are frames the data path accepts, so that mutations
/// start from the deep paths; the `bad-*` seeds of `parse_flow` are each rejected.
#[test]
fn seeds_are_what_their_names_say() {
    for target in ["forward", "xmit"] {
        for (name, s) in corpus(target) {
            assert!(
                xvs::packet::parse_flow(&s).is_ok(),
                "{target} seed {name} does not parse"
            );
        }
    }
    for (name, s) in corpus("parse_flow") {
        if name.starts_with("icmp-") {
            // ICMP errors: not flows, but what the ICMP branch parses.
            assert!(
                xvs::packet::parse_flow(&s).is_err(),
                "parse_flow seed {name}"
            );
            assert!(
                xvs::packet::icmp::parse_error(&s).is_ok(),
                "parse_flow seed {name} is not an ICMP error"
            );
            continue;
        }
        assert_eq!(
            xvs::packet::parse_flow(&s).is_err(),
            name.starts_with("bad-"),
            "parse_flow seed {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Seed corpus generation
// ---------------------------------------------------------------------------------------

const CIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

enum Kind {
    Tcp(u8),
    Udp,
}

struct Seed {
    dst: Ipv4Addr,
    dport: u16,
    src: Ipv4Addr,
    sport: u16,
    kind: Kind,
    payload: usize,
    df: bool,
    options: &'static [u8],
    frame_len: usize,
}

fn seed(dst: Ipv4Addr, kind: Kind) -> Seed {
    Seed {
        dst,
        dport: VPORT,
        src: CIP,
        sport: 40000,
        kind,
        payload: 0,
        df: true,
        options: &[],
        frame_len: 0,
    }
}

impl Seed {
    fn frame(&self) -> Vec<u8> {
        let mut h = Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::TCP,
            self.src.octets(),
            self.dst.octets(),
        )
        .unwrap();
        h.dont_fragment = self.df;
        h.options = Ipv4Options::try_from(self.options).unwrap();
        let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
            .ip(IpHeaders::Ipv4(h, Default::default()));
        let payload: Vec<u8> = (0..self.payload).map(|i| i as u8).collect();
        let mut out = Vec::new();
        match self.kind {
            Kind::Tcp(flags) => {
                let mut t = b.tcp(self.sport, self.dport, 1000, 64240);
                if flags & 0x02 != 0 {
                    t = t.syn();
                }
                if flags & 0x10 != 0 {
                    t = t.ack(1);
                }
                t.write(&mut out, &payload).unwrap();
            }
            Kind::Udp => b
                .udp(self.sport, self.dport)
                .write(&mut out, &payload)
                .unwrap(),
        }
        if out.len() < self.frame_len {
            out.resize(self.frame_len, 0);
        }
        out
    }
}

/// Valid frames for every path of the `forward` fixture (see `xvs::fuzzing::fixture`).
fn valid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let big = INT_MTU as usize; // an IP datagram this long does not fit once encapsulated
    vec![
        ("dr-tcp-syn", seed(DR_VIP, Kind::Tcp(SYN)).frame()),
        (
            "dr-udp-min-padded",
            Seed {
                payload: 2,
                frame_len: 60,
                ..seed(DR_VIP, Kind::Udp)
            }
            .frame(),
        ),
        (
            "dr-all-ports-tcp-syn",
            Seed {
                dport: 443,
                ..seed(DR_VIP, Kind::Tcp(SYN))
            }
            .frame(),
        ),
        ("nat-tcp-syn", seed(NAT_VIP, Kind::Tcp(SYN)).frame()),
        (
            "nat-tcp-ack-data",
            Seed {
                payload: 19,
                ..seed(NAT_VIP, Kind::Tcp(ACK))
            }
            .frame(),
        ),
        (
            "nat-udp",
            Seed {
                payload: 5,
                ..seed(NAT_VIP, Kind::Udp)
            }
            .frame(),
        ),
        ("nat-udp-no-checksum", {
            let mut f = Seed {
                payload: 4,
                ..seed(NAT_VIP, Kind::Udp)
            }
            .frame();
            f[40..42].fill(0);
            f
        }),
        (
            "nat-tcp-syn-ip-options",
            Seed {
                options: &[0x94, 0x04, 0, 0, 1, 1, 1, 0],
                ..seed(NAT_VIP, Kind::Tcp(SYN))
            }
            .frame(),
        ),
        (
            "nat-reply-tcp-syn-ack",
            Seed {
                src: NAT_RIP,
                sport: NAT_RPORT,
                dst: CIP,
                dport: 40000,
                ..seed(CIP, Kind::Tcp(SYN | ACK))
            }
            .frame(),
        ),
        ("tun-tcp-syn-df", seed(TUN_VIP, Kind::Tcp(SYN)).frame()),
        (
            "tun-udp-no-df-padded",
            Seed {
                df: false,
                payload: 2,
                frame_len: 64,
                ..seed(TUN_VIP, Kind::Udp)
            }
            .frame(),
        ),
        (
            "tun-udp-too-big-df",
            Seed {
                payload: big - 28,
                ..seed(TUN_VIP, Kind::Udp)
            }
            .frame(),
        ),
        (
            "tun-udp-too-big-no-df",
            Seed {
                df: false,
                payload: big - 28,
                ..seed(TUN_VIP, Kind::Udp)
            }
            .frame(),
        ),
        (
            "tun-tcp-syn-exactly-fits",
            Seed {
                payload: big - 20 - 40,
                ..seed(TUN_VIP, Kind::Tcp(SYN))
            }
            .frame(),
        ),
    ]
}

/// Frames `parse_flow` must reject, each for one reason.
fn invalid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = seed(NAT_VIP, Kind::Tcp(0x02)).frame();
    let with = |at: usize, v: u8| {
        let mut f = base.clone();
        f[at] = v;
        f
    };
    vec![
        ("bad-truncated-tcp", base[..50].to_vec()),
        ("bad-arp-ethertype", with(13, 0x06)),
        ("bad-ihl-4", with(14, 0x44)),
        ("bad-more-fragments", with(20, 0x20)),
        ("bad-total-length", with(16, 0xff)),
        ("bad-tcp-data-offset", with(14 + 20 + 12, 0x10)),
        ("bad-icmp", with(14 + 9, 1)),
        ("bad-udp-length", {
            let mut f = Seed {
                payload: 4,
                ..seed(NAT_VIP, Kind::Udp)
            }
            .frame();
            f[38..40].copy_from_slice(&4u16.to_be_bytes());
            f
        }),
    ]
}

/// ICMP errors of each kind the ICMP branch relays (see src/forward/icmp.rs): ICMP type 3
/// quoting a TCP reply from a VIP, a UDP request to a NAT real server, and an IPIP packet.
fn icmp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type};
    let icmp = |to: Ipv4Addr, t: Icmpv4Type, quote: &[u8]| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xaa], EXT_MAC)
            .ipv4([198, 51, 100, 1], to.octets(), 64)
            .icmpv4(t)
            .write(&mut f, quote)
            .unwrap();
        f
    };
    let frag = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
    let reply = Seed {
        src: DR_VIP,
        sport: VPORT,
        dst: CIP,
        dport: 40000,
        ..seed(CIP, Kind::Tcp(0x12))
    }
    .frame();
    let request = Seed {
        dst: NAT_RIP,
        dport: NAT_RPORT,
        payload: 4,
        ..seed(NAT_VIP, Kind::Udp)
    }
    .frame();
    let tunnelled = seed(TUN_VIP, Kind::Tcp(0x02)).frame(); // SYN
    let mut ipip = Vec::new();
    PacketBuilder::ipv4(TUN_SRC.octets(), TUN_RIP.octets(), 64)
        .write(&mut ipip, etherparse::IpNumber::IPV4, &tunnelled[14..])
        .unwrap();
    vec![
        (
            "icmp-frag-needed-about-dr-reply",
            icmp(DR_VIP, frag.clone(), &reply[14..14 + 28]),
        ),
        (
            "icmp-port-unreachable-from-nat-rs",
            icmp(
                CIP,
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port),
                &request[14..],
            ),
        ),
        ("icmp-frag-needed-about-ipip", icmp(TUN_SRC, frag, &ipip)),
    ]
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    let valid = valid_seeds();
    let mut all = valid.clone();
    all.extend(invalid_seeds());
    all.extend(icmp_seeds());
    write_seeds("parse_flow", &all);
    write_seeds("forward", &valid);
    write_seeds("xmit", &valid);
}
