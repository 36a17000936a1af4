// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xvs benchmark sink: attached in XDP to the interfaces where forwarded frames arrive (the
 * generator's veth for DR/TUN/reflect, the real-server side veth for two-armed NAT). It
 * counts every frame per (destination MAC, IPv4 destination) in a per-CPU hash, so the bench
 * tool reads the forwarded rate and the distribution over real servers where they arrive,
 * then drops the frame (or passes it on when configured so).
 *
 * With DR every real server is one destination MAC; with NAT and TUN the destination address
 * (the outer one for IPIP) names it as well.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xvs_bench.h"

/* XDP_DROP (the default) or XDP_PASS; written by the bench tool before load. */
const volatile __u32 xvs_sink_action = XDP_DROP;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, XVS_SINK_MAX_KEYS);
	__type(key, struct xvs_sink_key);
	__type(value, struct xvs_sink_val);
} xvs_sink_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xvs_sink_total);
} xvs_sink_tot SEC(".maps");

SEC("xdp")
int xvs_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xvs_sink_key key = {};
	struct xvs_sink_total *tot;
	struct xvs_sink_val *v, init;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__u64 len = data_end - data;
	__u32 zero = 0;

	tot = bpf_map_lookup_elem(&xvs_sink_tot, &zero);
	if (!tot) /* cannot happen for a one-entry per-CPU array */
		return xvs_sink_action;
	tot->packets++;
	tot->bytes += len;

	if ((void *)(eth + 1) > data_end)
		return xvs_sink_action;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	iph = (void *)(eth + 1);
	if (eth->h_proto == bpf_htons(ETH_P_IP) && (void *)(iph + 1) <= data_end) {
		key.kind = iph->protocol == IPPROTO_IPIP ? XVS_SINK_KIND_IPIP : XVS_SINK_KIND_IPV4;
		key.daddr = iph->daddr;
	}

	v = bpf_map_lookup_elem(&xvs_sink_cnt, &key);
	if (v) {
		v->packets++;
		v->bytes += len;
		return xvs_sink_action;
	}
	/* First frame of this key on any CPU: sets this CPU's slot, zeroes the others. */
	init.packets = 1;
	init.bytes = len;
	if (bpf_map_update_elem(&xvs_sink_cnt, &key, &init, BPF_NOEXIST)) {
		/* Another CPU inserted it meanwhile, or the map is full. */
		v = bpf_map_lookup_elem(&xvs_sink_cnt, &key);
		if (v) {
			v->packets++;
			v->bytes += len;
		} else {
			tot->unkeyed++;
		}
	}
	return xvs_sink_action;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
