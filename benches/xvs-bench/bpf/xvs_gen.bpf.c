// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xvs load generator: an XDP program run with BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES
 * (see benches/xvs-bench/src/gen.rs). Every run gets a live frame on the generator's veth; returning
 * XDP_TX sends it out of that veth, XDP_DROP recycles it unsent.
 *
 * The bench tool makes one long call per CPU (a short call costs ~20 ms of teardown here)
 * and stops it with a signal; pacing happens in here, on bpf_ktime_get_ns(): when it is not
 * yet time for the next frame the run returns XDP_DROP at once.
 *
 * Live-frame pages are recycled without being re-initialised (and a receiver may have
 * rewritten headers in place, e.g. the kernel's DNAT), so every sent frame is written whole
 * from the template, then the per-flow fields are patched: the low 16 bits of the source
 * address, the source port, TCP flags, and the IPv4 and TCP/UDP checksums, updated
 * incrementally from sums precomputed for the template (RFC 1071 one's-complement sums).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xvs_bench.h"

/* Written by the bench tool before load; constants for the verifier once loaded. */
const volatile struct xvs_gen_cfg xvs_gen_cfg = {};
const volatile __u8 xvs_gen_tmpl[XVS_GEN_MAX_FRAME] = {};

/* Written by the bench tool at any time (memory-mapped .bss). */
volatile struct xvs_gen_ctl xvs_gen_ctl = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xvs_gen_state);
} xvs_gen_state SEC(".maps");

#define NSEC_PER_SEC 1000000000ULL

/* Offsets of the patched fields in the frame (fixed layout, see xvs_bench.h). */
#define OFF_IP_CSUM (XVS_GEN_IP_OFF + 10)
#define OFF_SADDR_LO (XVS_GEN_IP_OFF + 14) /* low 16 bits of the source address */
#define OFF_SPORT XVS_GEN_L4_OFF
#define OFF_UDP_CSUM (XVS_GEN_L4_OFF + 6)
#define OFF_TCP_FLAGS (XVS_GEN_L4_OFF + 13)
#define OFF_TCP_CSUM (XVS_GEN_L4_OFF + 16)

/* Folds a 64-bit accumulation of 16-bit words and inverts it (RFC 1071). */
static __always_inline __u16 csum_finish(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s & 0xffff;
}

/*
 * Pacing. Slot k (k = 0, 1, ...) of this CPU is due at pace_ns + k / rate, pace_ns being when
 * this CPU first saw the current control epoch. Returns 1 when a frame may go now. A CPU that
 * fell more than `burst` slots behind (it was preempted) gives the missed slots up instead of
 * sending them back to back, which would overflow the receiver's ring and show up as loss
 * that the director did not cause.
 */
static __always_inline int pace(struct xvs_gen_state *st, __u64 now)
{
	__u64 rate = xvs_gen_ctl.rate, epoch = xvs_gen_ctl.epoch, due, burst = xvs_gen_cfg.burst;

	if (st->epoch != epoch || !st->pace_ns) {
		st->epoch = epoch;
		st->pace_ns = now;
		st->paced = 0;
	}
	if (!rate)
		return 1;
	/* Slots due by now; rel * rate stays below 2^64 for rate <= 2e7 and rel <= 600 s. */
	due = (now - st->pace_ns) * rate / NSEC_PER_SEC + 1;
	if (st->paced >= due) {
		st->idle++;
		return 0;
	}
	if (due - st->paced > burst) {
		st->skipped += due - st->paced - burst;
		st->paced = due - burst;
	}
	st->paced++;
	return 1;
}

SEC("xdp")
int xvs_gen(struct xdp_md *ctx)
{
	__u32 zero = 0, len = xvs_gen_cfg.len, host, port, cpu;
	struct xvs_gen_state *st;
	__u64 now, flow, g, l4_sum;
	void *data, *data_end;
	__u8 flags = 0, opening = 1;

	st = bpf_map_lookup_elem(&xvs_gen_state, &zero);
	if (!st)
		return XDP_ABORTED;
	now = bpf_ktime_get_ns();
	if (!st->start_ns)
		st->start_ns = now;
	if (xvs_gen_cfg.duration_ns && now - st->start_ns >= xvs_gen_cfg.duration_ns)
		return XDP_DROP;
	if (!pace(st, now))
		return XDP_DROP;

	/* The whole frame, every time (see the top of this file). */
	if (len < 60 || len > XVS_GEN_MAX_FRAME)
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, (void *)xvs_gen_tmpl, len))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + XVS_GEN_L4_OFF + 20 > data_end)
		return XDP_ABORTED;

	/*
	 * The flow number: CPUs use disjoint flows (g = f * stride + cpu). Established mode
	 * cycles over `flows` per CPU; new mode never repeats (65534 hosts x 64512 ports per
	 * CPU before it wraps: about 4e9 frames). Mix mode: of every 5 frames, 4 cycle over
	 * `flows` established flows (numbers 0..flows-1) and the 5th opens a new one (numbers
	 * from `flows` on, never repeated). `opening`: the flow's first frame (TCP: a SYN).
	 * Mirrored by flow_number and opening in src/frame.rs.
	 */
	cpu = bpf_get_smp_processor_id();
	flow = st->sent;
	if (xvs_gen_cfg.mode == XVS_GEN_MODE_ESTABLISHED) {
		opening = flow < xvs_gen_cfg.flows;
		flow = flow % xvs_gen_cfg.flows;
	} else if (xvs_gen_cfg.mode == XVS_GEN_MODE_MIX) {
		__u64 k = flow / 5, r = flow % 5;

		if (r == 4) {
			flow = xvs_gen_cfg.flows + k;
		} else {
			flow = k * 4 + r;
			opening = flow < xvs_gen_cfg.flows;
			flow = flow % xvs_gen_cfg.flows;
		}
	}
	g = flow * xvs_gen_cfg.cpu_stride + cpu;
	host = g % XVS_GEN_HOSTS + 1;
	port = XVS_GEN_PORT_BASE + (g / XVS_GEN_HOSTS) % XVS_GEN_PORTS;

	*(__u16 *)(data + OFF_SADDR_LO) = bpf_htons(host);
	*(__u16 *)(data + OFF_IP_CSUM) = bpf_htons(csum_finish((__u64)xvs_gen_cfg.ip_sum + host));
	*(__u16 *)(data + OFF_SPORT) = bpf_htons(port);
	if (xvs_gen_cfg.proto == IPPROTO_TCP) {
		/* SYN opens the flow (new mode: every frame; established: the first pass). */
		if (opening) {
			flags = xvs_gen_cfg.tcp_flags_new;
			l4_sum = xvs_gen_cfg.l4_sum;
		} else {
			flags = xvs_gen_cfg.tcp_flags_est;
			l4_sum = xvs_gen_cfg.l4_sum_est;
		}
		*(__u8 *)(data + OFF_TCP_FLAGS) = flags;
		*(__u16 *)(data + OFF_TCP_CSUM) = bpf_htons(csum_finish(l4_sum + host + port));
	} else {
		__u16 c = csum_finish((__u64)xvs_gen_cfg.l4_sum + host + port);

		/* A computed UDP checksum of 0 is sent as all ones (RFC 768). */
		*(__u16 *)(data + OFF_UDP_CSUM) = bpf_htons(c ? c : 0xffff);
	}

	st->sent++;
	st->bytes += len;
	st->last_ns = now;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
