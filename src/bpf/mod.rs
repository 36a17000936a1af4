//! The XDP steering program: loading, attaching (through a BPF link) and its maps.
//!
//! The program only decides "service frame or not"; see `bpf/xvs.bpf.c`.

pub mod maps;
pub mod pinned;

#[allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    unused_imports,
    unsafe_op_in_unsafe_fn
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/xvs.skel.rs"));
}

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};
use maps::{IfaceVal, SvcKey, SvcVal, XdpStats};
use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (veth, most NICs): the fast path.
    Native,
    /// Generic XDP on the skb: works everywhere, much slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// What [`Steering::attach_pinned`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub mode: XdpMode,
    /// The id of the program the pinned link ran before (a restart or an upgrade); `None`
    /// for a fresh attach.
    pub replaced_prog: Option<u32>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Queues per interface slot in the XSKMAP (`XVS_MAX_QUEUES`).
pub const MAX_QUEUES: u32 = 256;
/// Interfaces the program can serve at once (`XVS_MAX_IFACES`).
pub const MAX_IFACES: u32 = 4;

/// The loaded program and its maps, attached to one or more interfaces.
pub struct Steering {
    skel: skel::XvsSkel<'static>,
    /// What `xvs_config` holds (the restart hold and the fast-path switch are written
    /// together).
    config: maps::XdpConfig,
    /// The BPF links: closing them (also when the process dies) detaches the program.
    links: Vec<OwnedFd>,
}

impl Steering {
    /// Loads the program into the kernel (not yet attached).
    pub fn load() -> Result<Self> {
        Self::load_with(0)
    }

    /// Loads the program with a flow map (the fast path's cache) of `flow_max` entries
    /// (0: the program's default, 65536). The fast path starts off: `set_fast_path`.
    pub fn load_with(flow_max: u32) -> Result<Self> {
        // The skeleton borrows its object storage for its whole life; the daemon keeps one
        // Steering for its lifetime, so leaking this small allocation once is the simple,
        // sound way to get the 'static borrow.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::XvsSkelBuilder::default()
            .open(storage)
            .context("opening the XDP steering object")?;
        if flow_max > 0 {
            open.maps
                .xvs_flows
                .set_max_entries(flow_max)
                .context("sizing the fast path's flow map")?;
        }
        let skel = open
            .load()
            .context("loading the XDP steering program (is BPF available, are we root?)")?;
        Ok(Steering {
            skel,
            config: maps::XdpConfig::default(),
            links: Vec::new(),
        })
    }

    /// Attaches to `ifindex` as interface `slot` (its XSKMAP range) in native mode, falling
    /// back to generic mode with a warning.
    pub fn attach(
        &mut self,
        slot: u32,
        ifindex: u32,
        ifname: &str,
        mac: [u8; 6],
    ) -> Result<XdpMode> {
        self.set_iface(slot, ifindex, ifname, mac)?;
        let (fd, mode) = self.new_link(ifindex, ifname)?;
        self.links.push(fd);
        Ok(mode)
    }

    /// A new XDP link of this program on `ifindex`: native mode, else generic with a warning.
    fn new_link(&self, ifindex: u32, ifname: &str) -> Result<(OwnedFd, XdpMode)> {
        let prog_fd = self.skel.progs.xvs_steer.as_fd().as_raw_fd();
        match link_xdp(prog_fd, ifindex, libbpf_sys::XDP_FLAGS_DRV_MODE) {
            Ok(fd) => Ok((fd, XdpMode::Native)),
            Err(native_err) => {
                tracing::warn!(
                    interface = ifname,
                    error = %native_err,
                    "native XDP attach failed; falling back to generic (skb) mode, which is much slower"
                );
                let fd = link_xdp(prog_fd, ifindex, libbpf_sys::XDP_FLAGS_SKB_MODE).with_context(
                    || {
                        format!(
                            "attaching XDP to {ifname} (native: {native_err}; generic failed too)"
                        )
                    },
                )?;
                Ok((fd, XdpMode::Generic))
            }
        }
    }

    /// `--state-dir`: puts this program on `ifindex` through the BPF link pinned at
    /// `pin/<ifname>/link`. With a live pinned link (a previous xvsd, this or another
    /// version) the link's program is replaced atomically (`BPF_LINK_UPDATE`): the interface
    /// never runs without a steering program, and from this call on the frames use this
    /// program's maps. Without one (first start; the interface was re-created; the pin is of
    /// another interface) the program is attached afresh and the link pinned. The pin keeps
    /// the link, so the program stays attached when this process exits. Call it last,
    /// when the maps and the sockets are ready: [`set_iface`](Self::set_iface) first.
    pub fn attach_pinned(&mut self, ifindex: u32, ifname: &str, pin: &Path) -> Result<Attached> {
        let dir = pin.join(ifname);
        let path = dir.join("link");
        let prog_fd = self.skel.progs.xvs_steer.as_fd().as_raw_fd();
        if let Some(old) = pinned::open(&path)? {
            match pinned::xdp_ifindex(&old) {
                Ok(Some(i)) if i == ifindex => {
                    let old_prog = pinned::prog_id(&old).unwrap_or(0);
                    pinned::update(&old, prog_fd).with_context(|| {
                        format!(
                            "replacing the steering program in the pinned link {}",
                            path.display()
                        )
                    })?;
                    let mode = pinned::mode(ifindex).unwrap_or(XdpMode::Native);
                    self.links.push(old);
                    return Ok(Attached {
                        mode,
                        replaced_prog: Some(old_prog),
                    });
                }
                found => {
                    // Not ours to update: the interface was deleted (the link is defunct,
                    // ifindex 0) or this is another interface's link under this name.
                    tracing::warn!(
                        pin = %path.display(),
                        interface = ifname,
                        found = ?found,
                        "pinned XDP link is not attached to {ifname} (ifindex {ifindex}); removing it and attaching afresh"
                    );
                    drop(old);
                    pinned::remove(&dir)?;
                }
            }
        }
        let (fd, mode) = self.new_link(ifindex, ifname)?;
        pinned::pin(&fd, &dir, &path)?;
        self.links.push(fd);
        Ok(Attached {
            mode,
            replaced_prog: None,
        })
    }

    /// Sets the restart hold (see `struct xvs_config`): until CLOCK_MONOTONIC `until_ns`
    /// (0: none) service frames without a socket are dropped rather than passed.
    pub fn set_hold(&mut self, until_ns: u64) -> Result<()> {
        self.config.hold_until_ns = until_ns;
        self.write_config()
            .context("setting the restart hold in the steering program's config map")
    }

    /// Turns the fast path (flow-map hits forwarded by the program) on or off.
    pub fn set_fast_path(&mut self, on: bool) -> Result<()> {
        self.config.fast_path = on as u32;
        self.write_config()
            .context("switching the fast path in the steering program's config map")
    }

    fn write_config(&self) -> Result<()> {
        Ok(self.skel.maps.xvs_config.update(
            &0u32.to_ne_bytes(),
            &self.config.to_bytes(),
            MapFlags::ANY,
        )?)
    }

    /// The fast path's maps (flows, counters, generations), as duplicated fds that outlive
    /// no kernel object: the maps live while any fd or the program holds them.
    pub fn fast_maps(&self) -> Result<crate::fastpath::FastMaps> {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
        Ok(crate::fastpath::FastMaps {
            flows: dup(self.skel.maps.xvs_flows.as_fd())?,
            ctr: dup(self.skel.maps.xvs_fast_ctr.as_fd())?,
            gen: dup(self.skel.maps.xvs_fast_gen.as_fd())?,
        })
    }

    /// `test_run` that also returns the frame as the program left it (rewritten,
    /// encapsulated), for the fast-path packet tables.
    pub fn test_run_frame(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        rx_queue: u32,
    ) -> Result<(u32, Vec<u8>)> {
        let mut ctx = libbpf_sys::xdp_md {
            data: 0,
            data_end: frame.len() as u32,
            data_meta: 0,
            ingress_ifindex,
            rx_queue_index: rx_queue,
            egress_ifindex: 0,
        };
        // SAFETY: as in `test_run`.
        let ctx_bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut ctx as *mut libbpf_sys::xdp_md).cast::<u8>(),
                std::mem::size_of::<libbpf_sys::xdp_md>(),
            )
        };
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            context_in: Some(ctx_bytes),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = self
            .skel
            .progs
            .xvs_steer
            .test_run(input)
            .context("BPF_PROG_RUN of the steering program")?;
        let v = r.return_value;
        let data = r.data.map(|d| d.to_vec()).unwrap_or_default();
        Ok((v, data))
    }

    /// The links are pinned (`attach_pinned`): dropping them leaves the program attached.
    /// Used on exit instead of [`detach`](Self::detach).
    pub fn leave_attached(&mut self) {
        self.links.clear();
    }

    /// Registers interface `ifindex` (MAC `mac`) as slot `slot`: its frames addressed to
    /// `mac` use XSKMAP entries `slot * MAX_QUEUES + queue`. [`attach`](Self::attach) does
    /// this first.
    pub fn set_iface(&self, slot: u32, ifindex: u32, ifname: &str, mac: [u8; 6]) -> Result<()> {
        anyhow::ensure!(slot < MAX_IFACES, "at most {MAX_IFACES} interfaces");
        let v = IfaceVal {
            slot,
            mac,
            pad: [0; 2],
        };
        self.skel
            .maps
            .xvs_ifaces
            .update(&ifindex.to_ne_bytes(), v.as_bytes(), MapFlags::ANY)
            .with_context(|| format!("registering {ifname} in the interface map"))
    }

    /// Runs the program once on `frame` with `BPF_PROG_RUN`, as if it had arrived on RX
    /// queue `rx_queue` of interface `ingress_ifindex` (which must exist and have that queue),
    /// and returns its verdict (`XDP_PASS`, `XDP_REDIRECT`, ...). The redirect itself is not
    /// carried out: only live-frame runs do that. The kernel refuses frames shorter than an
    /// Ethernet header (EINVAL). For the packet tables in `tests/steer_table.rs`.
    pub fn test_run(&self, frame: &[u8], ingress_ifindex: u32, rx_queue: u32) -> Result<u32> {
        // The kernel wants data 0 and data_end = the frame's length (no metadata).
        let mut ctx = libbpf_sys::xdp_md {
            data: 0,
            data_end: frame.len() as u32,
            data_meta: 0,
            ingress_ifindex,
            rx_queue_index: rx_queue,
            egress_ifindex: 0,
        };
        // SAFETY: xdp_md is a plain C struct of u32 fields without padding; viewing it as
        // bytes while `ctx` lives (the rest of this function) is sound.
        let ctx_bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut ctx as *mut libbpf_sys::xdp_md).cast::<u8>(),
                std::mem::size_of::<libbpf_sys::xdp_md>(),
            )
        };
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            context_in: Some(ctx_bytes),
            ..Default::default()
        };
        let out = self
            .skel
            .progs
            .xvs_steer
            .test_run(input)
            .context("BPF_PROG_RUN of the steering program")?;
        Ok(out.return_value)
    }

    /// Detaches the program (also happens on drop and when the process exits).
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// Puts the AF_XDP socket of interface `slot`, RX queue `queue` into the XSKMAP.
    pub fn set_xsk(&self, slot: u32, queue: u32, fd: RawFd) -> Result<()> {
        anyhow::ensure!(
            queue < MAX_QUEUES,
            "queue {queue}: at most {MAX_QUEUES} queues"
        );
        let idx = slot * MAX_QUEUES + queue;
        let fd = fd as u32;
        self.skel
            .maps
            .xvs_xsks
            .update(&idx.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| {
                format!("registering the AF_XDP socket of queue {queue} in the XSKMAP")
            })
    }

    /// Takes the sockets of interface slots `0..slots`, queues `0..queues` out of the XSKMAP:
    /// from now on their frames take the no-socket path (held or passed), and the workers
    /// see no new frames. A restart does this before saving the tables, so the saved
    /// connections are the ones the next xvsd will see packets for.
    pub fn clear_xsks(&self, slots: u32, queues: u32) {
        for slot in 0..slots.min(MAX_IFACES) {
            for q in 0..queues.min(MAX_QUEUES) {
                let idx = slot * MAX_QUEUES + q;
                // An empty entry answers ENOENT: nothing to do.
                let _ = self.skel.maps.xvs_xsks.delete(&idx.to_ne_bytes());
            }
        }
    }

    /// Steers NAT replies from this real server address and port to the workers.
    pub fn add_nat_rs(&self, key: &SvcKey) -> Result<()> {
        self.skel
            .maps
            .xvs_nat_rs
            .update(key.as_bytes(), SvcVal::default().as_bytes(), MapFlags::ANY)
            .map_err(|e| anyhow!("adding a real server to the NAT reply map: {e}"))
    }

    pub fn remove_nat_rs(&self, key: &SvcKey) -> Result<()> {
        self.skel
            .maps
            .xvs_nat_rs
            .delete(key.as_bytes())
            .map_err(|e| anyhow!("removing a real server from the NAT reply map: {e}"))
    }

    /// Replaces the set of the director's own addresses.
    pub fn set_local_addrs(&self, addrs: &[std::net::Ipv4Addr]) -> Result<()> {
        let map = &self.skel.maps.xvs_local;
        let want: Vec<[u8; 4]> = addrs.iter().map(|a| a.octets()).collect();
        let have: Vec<Vec<u8>> = map.keys().collect();
        for k in &have {
            if !want.iter().any(|w| w[..] == k[..]) {
                let _ = map.delete(k);
            }
        }
        for w in &want {
            map.update(w, &1u32.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| anyhow!("updating the local address map: {e}"))?;
        }
        Ok(())
    }

    /// Starts steering frames for this service to the workers.
    pub fn add_service(&self, key: &SvcKey) -> Result<()> {
        self.skel
            .maps
            .xvs_services
            .update(key.as_bytes(), SvcVal::default().as_bytes(), MapFlags::ANY)
            .map_err(|e| anyhow!("adding a service to the XDP services map: {e}"))
    }

    /// Stops steering frames for this service.
    pub fn remove_service(&self, key: &SvcKey) -> Result<()> {
        self.skel
            .maps
            .xvs_services
            .delete(key.as_bytes())
            .map_err(|e| anyhow!("removing a service from the XDP services map: {e}"))
    }

    /// Verdict counters, summed over CPUs.
    pub fn stats(&self) -> Result<XdpStats> {
        let per_cpu = self
            .skel
            .maps
            .xvs_stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading XDP stats")?
            .unwrap_or_default();
        let mut total = XdpStats::default();
        for v in per_cpu {
            total.add(&XdpStats::from_bytes(&v));
        }
        Ok(total)
    }
}

/// BPF_LINK_CREATE for XDP with explicit mode flags (libbpf's attach_xdp takes none).
fn link_xdp(prog_fd: RawFd, ifindex: u32, flags: u32) -> Result<OwnedFd> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags,
        ..Default::default()
    };
    // SAFETY: prog_fd is a loaded program's fd, opts is a properly sized options struct that
    // outlives the call.
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd).into());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::maps::*;
    use super::skel::types;
    use std::mem::{offset_of, size_of};

    /// The Rust mirrors must match the C structs (as described by the program's BTF).
    #[test]
    fn shared_structs_match_c() {
        assert_eq!(size_of::<SvcKey>(), size_of::<types::xvs_svc_key>());
        assert_eq!(
            offset_of!(SvcKey, addr),
            offset_of!(types::xvs_svc_key, addr)
        );
        assert_eq!(
            offset_of!(SvcKey, port),
            offset_of!(types::xvs_svc_key, port)
        );
        assert_eq!(
            offset_of!(SvcKey, proto),
            offset_of!(types::xvs_svc_key, proto)
        );
        assert_eq!(offset_of!(SvcKey, pad), offset_of!(types::xvs_svc_key, pad));
        assert_eq!(size_of::<SvcVal>(), size_of::<types::xvs_svc_val>());
        assert_eq!(size_of::<IfaceVal>(), size_of::<types::xvs_iface>());
        assert_eq!(
            offset_of!(IfaceVal, slot),
            offset_of!(types::xvs_iface, slot)
        );
        assert_eq!(offset_of!(IfaceVal, mac), offset_of!(types::xvs_iface, mac));
        assert_eq!(size_of::<XdpStats>(), size_of::<types::xvs_xdp_stats>());
        assert_eq!(
            offset_of!(XdpStats, redirected),
            offset_of!(types::xvs_xdp_stats, redirected)
        );
        assert_eq!(
            offset_of!(XdpStats, passed),
            offset_of!(types::xvs_xdp_stats, passed)
        );
        assert_eq!(
            offset_of!(XdpStats, malformed),
            offset_of!(types::xvs_xdp_stats, malformed)
        );
        assert_eq!(
            offset_of!(XdpStats, no_socket),
            offset_of!(types::xvs_xdp_stats, no_socket)
        );
        assert_eq!(
            offset_of!(XdpStats, fragments),
            offset_of!(types::xvs_xdp_stats, fragments)
        );
        assert_eq!(
            offset_of!(XdpStats, held),
            offset_of!(types::xvs_xdp_stats, held)
        );
        for (a, b) in [
            (
                offset_of!(XdpStats, fast),
                offset_of!(types::xvs_xdp_stats, fast),
            ),
            (
                offset_of!(XdpStats, fast_punt),
                offset_of!(types::xvs_xdp_stats, fast_punt),
            ),
            (
                offset_of!(XdpStats, fast_stale),
                offset_of!(types::xvs_xdp_stats, fast_stale),
            ),
            (
                offset_of!(XdpConfig, fast_path),
                offset_of!(types::xvs_config, fast_path),
            ),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(size_of::<FlowKeyC>(), size_of::<types::xvs_flow_key>());
        assert_eq!(
            [
                offset_of!(FlowKeyC, saddr),
                offset_of!(FlowKeyC, daddr),
                offset_of!(FlowKeyC, sport),
                offset_of!(FlowKeyC, dport),
                offset_of!(FlowKeyC, proto),
                offset_of!(FlowKeyC, pad),
            ],
            [
                offset_of!(types::xvs_flow_key, saddr),
                offset_of!(types::xvs_flow_key, daddr),
                offset_of!(types::xvs_flow_key, sport),
                offset_of!(types::xvs_flow_key, dport),
                offset_of!(types::xvs_flow_key, proto),
                offset_of!(types::xvs_flow_key, pad),
            ]
        );
        assert_eq!(size_of::<FlowVal>(), size_of::<types::xvs_flow>());
        assert_eq!(
            [
                offset_of!(FlowVal, method),
                offset_of!(FlowVal, mtu),
                offset_of!(FlowVal, ifindex),
                offset_of!(FlowVal, dmac),
                offset_of!(FlowVal, smac),
                offset_of!(FlowVal, tun_saddr),
                offset_of!(FlowVal, tun_daddr),
                offset_of!(FlowVal, dest_slot),
                offset_of!(FlowVal, svc_slot),
                offset_of!(FlowVal, gen),
                offset_of!(FlowVal, nat_addr),
                offset_of!(FlowVal, nat_port),
                offset_of!(FlowVal, ip_csum_delta),
                offset_of!(FlowVal, l4_csum_delta),
                offset_of!(FlowVal, pad1),
                offset_of!(FlowVal, pad2),
                offset_of!(FlowVal, last_seen_ns),
            ],
            [
                offset_of!(types::xvs_flow, method),
                offset_of!(types::xvs_flow, mtu),
                offset_of!(types::xvs_flow, ifindex),
                offset_of!(types::xvs_flow, dmac),
                offset_of!(types::xvs_flow, smac),
                offset_of!(types::xvs_flow, tun_saddr),
                offset_of!(types::xvs_flow, tun_daddr),
                offset_of!(types::xvs_flow, dest_slot),
                offset_of!(types::xvs_flow, svc_slot),
                offset_of!(types::xvs_flow, gen),
                offset_of!(types::xvs_flow, nat_addr),
                offset_of!(types::xvs_flow, nat_port),
                offset_of!(types::xvs_flow, ip_csum_delta),
                offset_of!(types::xvs_flow, l4_csum_delta),
                offset_of!(types::xvs_flow, pad1),
                offset_of!(types::xvs_flow, pad2),
                offset_of!(types::xvs_flow, last_seen_ns),
            ]
        );
        assert_eq!(size_of::<FastCtr>(), size_of::<types::xvs_fast_ctr>());
        assert_eq!(
            [
                offset_of!(FastCtr, bytes),
                offset_of!(FastCtr, out_pkts),
                offset_of!(FastCtr, out_bytes),
            ],
            [
                offset_of!(types::xvs_fast_ctr, bytes),
                offset_of!(types::xvs_fast_ctr, out_pkts),
                offset_of!(types::xvs_fast_ctr, out_bytes),
            ]
        );
        assert_eq!(size_of::<XdpConfig>(), size_of::<types::xvs_config>());
        assert_eq!(
            offset_of!(XdpConfig, hold_until_ns),
            offset_of!(types::xvs_config, hold_until_ns)
        );
    }
}
