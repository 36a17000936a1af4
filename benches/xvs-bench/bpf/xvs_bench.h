/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared between the benchmark XDP programs (xvs_gen.bpf.c, xvs_sink.bpf.c) and
 * the bench tool (benches/xvs-bench/src/). Every struct has a #[repr(C)] mirror in src/maps.rs; a
 * unit test compares sizes and offsets with the skeletons' BTF-generated types.
 */
#ifndef XVS_BENCH_H
#define XVS_BENCH_H

#include <linux/types.h>

/* Largest frame the generator writes: 1514 bytes (1518 on the wire with the FCS), rounded up. */
#define XVS_GEN_MAX_FRAME 1536

/* Fixed header layout of generated frames: Ethernet, IPv4 without options, then TCP/UDP. */
#define XVS_GEN_ETH_LEN 14
#define XVS_GEN_IP_OFF XVS_GEN_ETH_LEN
#define XVS_GEN_L4_OFF (XVS_GEN_IP_OFF + 20)

/* Generated source addresses: host part 1..65534 of a /16; ports from 1024 upwards. */
#define XVS_GEN_HOSTS 65534
#define XVS_GEN_PORT_BASE 1024
#define XVS_GEN_PORTS 64512

#define XVS_GEN_MODE_ESTABLISHED 0 /* cycle over `flows` flows per CPU */
#define XVS_GEN_MODE_NEW 1         /* every frame a flow never sent before */
#define XVS_GEN_MODE_MIX 2         /* every 5th frame a new flow, the others cycle over `flows` */

/*
 * Generator configuration (.rodata, written before load so the verifier sees constants).
 * Checksums are incremental: the template carries host part 0 and source port 0, and the
 * *_sum fields are the 32-bit one's-complement sums (not folded, not inverted) of everything
 * the checksum covers in that template, with the checksum field itself zero. Per frame the
 * program adds the host part and port (both 16-bit words of the header) and folds (RFC 1071).
 */
struct xvs_gen_cfg {
	__u32 len;          /* bytes written per frame (wire size minus the 4-byte FCS), 60..1514 */
	__u32 proto;        /* IPPROTO_UDP or IPPROTO_TCP */
	__u32 mode;         /* XVS_GEN_MODE_* */
	__u32 flows;        /* established mode: flows per CPU (>= 1) */
	__u32 cpu_stride;   /* flow number = per-CPU flow index * cpu_stride + CPU id */
	__u32 burst;        /* pacing: at most this many frames sent back to back to catch up */
	__u64 duration_ns;  /* each CPU stops sending this long after its first frame; 0 = never */
	__u32 ip_sum;       /* IPv4 header sum (template, checksum field 0) */
	__u32 l4_sum;       /* UDP, or TCP with flags tcp_flags_new (pseudo header included) */
	__u32 l4_sum_est;   /* TCP with flags tcp_flags_est */
	__u8 tcp_flags_new; /* SYN: first frame of a flow */
	__u8 tcp_flags_est; /* ACK: later frames of a flow */
	__u16 pad;
};

/*
 * Generator control (.bss), changed by the bench tool while the generator runs: a new rate
 * takes effect when `epoch` changes (each CPU then restarts its pacing from that moment).
 */
struct xvs_gen_ctl {
	__u64 rate;  /* frames per second per CPU; 0 = as fast as possible */
	__u64 epoch; /* bumped after every change of rate */
};

/* Per-CPU generator state and counters (index 0 of a per-CPU array). */
struct xvs_gen_state {
	__u64 start_ns; /* bpf_ktime_get_ns() of this CPU's first run, 0 before */
	__u64 last_ns;  /* time of the last frame sent */
	__u64 sent;     /* frames returned with XDP_TX; also the per-CPU flow counter */
	__u64 bytes;    /* their bytes (without FCS) */
	__u64 epoch;    /* pacing: the control epoch this CPU paces for */
	__u64 pace_ns;  /* pacing: when that epoch started on this CPU */
	__u64 paced;    /* pacing: send slots of this epoch used (sent + skipped) */
	__u64 skipped;  /* pacing: slots given up because the CPU fell more than `burst` behind */
	__u64 idle;     /* runs that dropped the frame because it was not yet time (pacing) */
};

/* Sink: what a received frame is counted under. */
#define XVS_SINK_KIND_OTHER 0 /* not IPv4 (daddr 0) */
#define XVS_SINK_KIND_IPV4 4  /* IPv4: daddr is the destination address */
#define XVS_SINK_KIND_IPIP 94 /* IPv4 in IPv4: daddr is the outer destination (TUN real server) */

#define XVS_SINK_MAX_KEYS 4096

struct xvs_sink_key {
	__u8 mac[6]; /* destination MAC: with DR, TUN and NAT one per real server */
	__u8 kind;   /* XVS_SINK_KIND_* */
	__u8 pad;    /* must be zero: the hash compares all key bytes */
	__u32 daddr; /* IPv4 destination (outer for IPIP), network order; 0 for other frames */
};

struct xvs_sink_val {
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU totals, including frames whose key did not fit into the full hash. */
struct xvs_sink_total {
	__u64 packets;
	__u64 bytes;
	__u64 unkeyed; /* counted here only: the key map was full */
};

#endif
