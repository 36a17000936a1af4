//! The sink: `bpf/xvs_sink.bpf.c` attached in XDP where forwarded frames arrive, counting
//! them per (destination MAC, IPv4 destination) and dropping them.
//!
//! The sink is attached through netlink (not a BPF link), so it stays attached after
//! `xvs-bench sink attach` exits; `read` finds it again through the interface (program id,
//! then its maps by name) and `detach` removes it. Only a program named `xvs_sink` is ever
//! replaced or detached.

use super::maps::{Pod, SinkKey, SinkTotal, SinkVal, KIND_IPIP, KIND_IPV4};
use super::sink_skel::XvsSinkSkelBuilder;
use super::sys::{self, NetnsGuard, NsIf};
use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

const PROG_NAME: &str = "xvs_sink";
const CNT_MAP: &str = "xvs_sink_cnt";
const TOT_MAP: &str = "xvs_sink_tot";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Id and name of the XDP program attached to `ifindex`, if any.
fn attached(ifindex: u32) -> Result<Option<(u32, String)>> {
    let mut id = 0u32;
    // SAFETY: id is a valid out pointer for the call.
    let r = unsafe { libbpf_sys::bpf_xdp_query_id(ifindex as i32, 0, &mut id) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(-r)).context("querying the XDP program");
    }
    if id == 0 {
        return Ok(None);
    }
    let (name, _) = prog_info(id)?;
    Ok(Some((id, name)))
}

/// Name and map ids of program `id`.
fn prog_info(id: u32) -> Result<(String, Vec<u32>)> {
    // SAFETY: plain syscall wrapper; a negative return is an error code.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .with_context(|| format!("opening BPF program {id}"));
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut map_ids = [0u32; 16];
    let mut info = libbpf_sys::bpf_prog_info {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a bpf_prog_info of the size passed; map_ids points at room for
    // nr_map_ids ids, all alive for the duration of the call.
    let r = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(-r))
            .with_context(|| format!("reading BPF program {id}'s info"));
    }
    let name: String = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let n = (info.nr_map_ids as usize).min(map_ids.len());
    Ok((name, map_ids[..n].to_vec()))
}

/// Loads the sink program (not attached).
fn load(
    storage: &mut MaybeUninit<libbpf_rs::OpenObject>,
    pass: bool,
) -> Result<super::sink_skel::XvsSinkSkel<'_>> {
    let mut open = XvsSinkSkelBuilder::default()
        .open(storage)
        .context("opening the sink BPF object")?;
    open.maps
        .rodata_data
        .as_deref_mut()
        .context("sink object has no .rodata")?
        .xvs_sink_action = if pass { XDP_PASS } else { XDP_DROP };
    open.load().context("loading the sink XDP program")
}

/// Loads the sink and attaches it (native XDP) to `at`, replacing an earlier sink there.
/// `pass`: hand frames on to the kernel after counting instead of dropping them.
/// Returns the program id.
pub fn attach(at: &NsIf, pass: bool) -> Result<u32> {
    let _ns = NetnsGuard::enter(at.netns.as_deref())?;
    let ifindex = sys::ifindex(&at.ifname)?;
    if let Some((id, name)) = attached(ifindex)? {
        if name != PROG_NAME {
            bail!("{at} already has XDP program {id} ({name}); not replacing it");
        }
    }
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, pass)?;
    let fd = skel.progs.xvs_sink.as_fd();
    // SAFETY: plain syscall wrapper with a loaded program's fd and default options.
    let r = unsafe {
        libbpf_sys::bpf_xdp_attach(
            ifindex as i32,
            fd.as_raw_fd(),
            libbpf_sys::XDP_FLAGS_DRV_MODE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(-r))
            .with_context(|| format!("attaching the sink to {at} (native XDP)"));
    }
    let id = attached(ifindex)?
        .map(|(id, _)| id)
        .ok_or_else(|| anyhow!("sink not attached to {at} after attaching it"))?;
    // Dropping the skeleton closes our fds; the attachment keeps program and maps alive.
    Ok(id)
}

/// Detaches the sink from `at`. Ok(false) when no sink was attached.
pub fn detach(at: &NsIf) -> Result<bool> {
    let _ns = NetnsGuard::enter(at.netns.as_deref())?;
    let ifindex = sys::ifindex(&at.ifname)?;
    match attached(ifindex)? {
        None => Ok(false),
        Some((id, name)) if name != PROG_NAME => {
            bail!("{at} has XDP program {id} ({name}), not the sink; leaving it")
        }
        Some(_) => {
            // SAFETY: plain syscall wrapper; no options.
            let r = unsafe {
                libbpf_sys::bpf_xdp_detach(
                    ifindex as i32,
                    libbpf_sys::XDP_FLAGS_DRV_MODE,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(std::io::Error::from_raw_os_error(-r))
                    .with_context(|| format!("detaching the sink from {at}"));
            }
            Ok(true)
        }
    }
}

/// Counters of one sink at one moment.
#[derive(Debug, Clone, Default)]
pub struct SinkReading {
    pub at: Option<Instant>,
    pub total: SinkTotal,
    pub keys: BTreeMap<SinkKey, SinkVal>,
}

impl SinkReading {
    /// Frames counted under an IPv4 key (forwarded traffic; not ARP or other noise).
    pub fn ipv4_packets(&self) -> u64 {
        self.keys
            .iter()
            .filter(|(k, _)| k.kind == KIND_IPV4 || k.kind == KIND_IPIP)
            .map(|(_, v)| v.packets)
            .sum()
    }
}

/// An attached sink's maps, opened once (then readable from any namespace).
pub struct Sink {
    pub at: NsIf,
    cnt: MapHandle,
    tot: MapHandle,
}

impl Sink {
    /// Finds the sink attached to `at`.
    pub fn open(at: &NsIf) -> Result<Sink> {
        let _ns = NetnsGuard::enter(at.netns.as_deref())?;
        let ifindex = sys::ifindex(&at.ifname)?;
        let (id, name) = attached(ifindex)?
            .ok_or_else(|| anyhow!("no sink attached to {at} (run: xvs-bench sink attach)"))?;
        if name != PROG_NAME {
            bail!("{at} has XDP program {id} ({name}), not the sink");
        }
        let (_, ids) = prog_info(id)?;
        let (mut cnt, mut tot) = (None, None);
        for mid in ids {
            let m = MapHandle::from_map_id(mid)
                .with_context(|| format!("opening map {mid} of the sink on {at}"))?;
            let n = m.name().to_string_lossy().to_string();
            if n == CNT_MAP {
                cnt = Some(m);
            } else if n == TOT_MAP {
                tot = Some(m);
            }
        }
        Ok(Sink {
            at: at.clone(),
            cnt: cnt.ok_or_else(|| anyhow!("sink on {at} has no {CNT_MAP} map"))?,
            tot: tot.ok_or_else(|| anyhow!("sink on {at} has no {TOT_MAP} map"))?,
        })
    }

    /// Reads all counters, summed over CPUs.
    pub fn read(&self) -> Result<SinkReading> {
        let mut r = SinkReading {
            at: Some(Instant::now()),
            ..Default::default()
        };
        for v in self
            .tot
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("reading the sink totals on {}", self.at))?
            .unwrap_or_default()
        {
            r.total.add(&SinkTotal::from_bytes(&v));
        }
        // At most XVS_SINK_MAX_KEYS keys; the iterator is bounded by the map.
        for k in self.cnt.keys() {
            let Some(vals) = self.cnt.lookup_percpu(&k, MapFlags::ANY).ok().flatten() else {
                continue; // deleted meanwhile (never happens: nobody deletes)
            };
            let e = r.keys.entry(SinkKey::from_bytes(&k)).or_default();
            for v in vals {
                e.add(&SinkVal::from_bytes(&v));
            }
        }
        Ok(r)
    }
}

/// One key's rate over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRate {
    pub sink: String,
    pub mac: String,
    pub kind: String,
    pub daddr: String,
    pub packets: u64,
    pub pps: f64,
}

/// Differences between two readings of the same sink: (per-key rates, IPv4 packets, all
/// packets, seconds).
pub fn diff(sink: &str, a: &SinkReading, b: &SinkReading) -> (Vec<KeyRate>, u64, u64, f64) {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    let mut v = Vec::new();
    for (k, vb) in &b.keys {
        let pa = a.keys.get(k).map_or(0, |x| x.packets);
        let d = vb.packets.saturating_sub(pa);
        if d == 0 {
            continue;
        }
        v.push(KeyRate {
            sink: sink.to_string(),
            mac: k.mac().to_string(),
            kind: k.kind_name().to_string(),
            daddr: k.daddr().to_string(),
            packets: d,
            pps: if secs > 0.0 { d as f64 / secs } else { 0.0 },
        });
    }
    let ipv4 = b.ipv4_packets().saturating_sub(a.ipv4_packets());
    let all = b.total.packets.saturating_sub(a.total.packets);
    (v, ipv4, all, secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameSpec, Proto};
    use std::net::Ipv4Addr;

    fn run(fd: i32, frame: &[u8]) -> u32 {
        let mut o = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            data_in: frame.as_ptr().cast(),
            data_size_in: frame.len() as u32,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: frame outlives the call; its size is passed with it.
        let r = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut o) };
        assert_eq!(r, 0, "BPF_PROG_RUN");
        o.retval
    }

    /// The sink program as the kernel runs it: counts per (MAC, destination), drops.
    #[test]
    fn sink_counts_per_destination() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        let mut storage = MaybeUninit::uninit();
        let skel = load(&mut storage, false).unwrap();
        let fd = skel.progs.xvs_sink.as_fd().as_raw_fd();
        let mk = |mac: &str, dst: Ipv4Addr| {
            FrameSpec {
                dst_mac: mac.parse().unwrap(),
                src_mac: "02:00:0a:00:00:0c".parse().unwrap(),
                src_net: Ipv4Addr::new(10, 1, 0, 0),
                dst_ip: dst,
                dst_port: 80,
                proto: Proto::Udp,
                wire_size: 64,
            }
            .build()
            .unwrap()
            .bytes
        };
        let a = mk("02:00:0a:00:00:15", Ipv4Addr::new(10, 0, 0, 88));
        let b = mk("02:00:0a:00:00:16", Ipv4Addr::new(10, 0, 0, 88));
        let mut ipip = mk("02:00:0a:00:00:1f", Ipv4Addr::new(10, 0, 0, 31));
        ipip[23] = 4; // protocol IPIP
        let arp: Vec<u8> = [
            &[0xffu8; 6][..],
            &[2, 0, 10, 0, 0, 12],
            &[0x08, 0x06],
            &[0u8; 46],
        ]
        .concat();
        for _ in 0..3 {
            assert_eq!(run(fd, &a), XDP_DROP);
        }
        assert_eq!(run(fd, &b), XDP_DROP);
        assert_eq!(run(fd, &ipip), XDP_DROP);
        assert_eq!(run(fd, &arp), XDP_DROP);
        let sink = Sink {
            at: "test".parse().unwrap(),
            cnt: MapHandle::try_from(&skel.maps.xvs_sink_cnt).unwrap(),
            tot: MapHandle::try_from(&skel.maps.xvs_sink_tot).unwrap(),
        };
        let r = sink.read().unwrap();
        assert_eq!(r.total.packets, 6);
        assert_eq!(r.total.bytes, 6 * 60);
        assert_eq!(r.ipv4_packets(), 5);
        let get = |mac: &str, kind: u8| {
            r.keys
                .iter()
                .find(|(k, _)| k.mac().to_string() == mac && k.kind == kind)
                .map(|(_, v)| v.packets)
        };
        assert_eq!(get("02:00:0a:00:00:15", KIND_IPV4), Some(3));
        assert_eq!(get("02:00:0a:00:00:16", KIND_IPV4), Some(1));
        assert_eq!(get("02:00:0a:00:00:1f", KIND_IPIP), Some(1));
        assert_eq!(get("ff:ff:ff:ff:ff:ff", 0), Some(1));
        let (d, ipv4, all, _) = diff("t", &SinkReading::default(), &r);
        assert_eq!((ipv4, all, d.len()), (5, 6, 4));
    }
}
