// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The in-kernel reference row of scripts/bench.sh: a minimal DR-style forwarder done
 * entirely in XDP, attached to the director's eth0 in place of xvsd. For every IPv4 frame
 * to the VIP it picks one of the four real servers of scripts/bench-topo.sh by a hash of
 * the source address and ports (so one flow always goes to one server, as DR would), writes
 * that server's MAC as the destination and the director's as the source, and sends the
 * frame back out of eth0 with XDP_TX. No connection table, no scheduler, no counters: the
 * ceiling of what this machine forwards per core on this path, to put xvs's rows against.
 *
 * The real servers' MACs follow bench-topo.sh's rule (02:00 + the IPv4 address):
 * 10.0.0.21-24 -> 02:00:0a:00:00:15..18. Everything else is passed to the kernel.
 *
 * Built by scripts/bench.sh with clang -target bpf and attached with `ip link set dev eth0
 * xdpdrv obj ... sec xdp` (iproute2 loads it through libbpf).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define VIP 0x0a000058 /* 10.0.0.88 */
#define RS_FIRST 0x15  /* last octet of 10.0.0.21, the first real server */
#define RS_COUNT 4

SEC("xdp")
int bench_xdp_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 h;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->ihl != 5 || iph->daddr != bpf_htonl(VIP))
		return XDP_PASS;
	h = iph->saddr;
	if (iph->protocol == IPPROTO_UDP || iph->protocol == IPPROTO_TCP) {
		udp = (void *)(iph + 1);
		if ((void *)(udp + 1) > data_end)
			return XDP_PASS;
		h ^= ((__u32)udp->source << 16) | udp->dest;
	}
	h ^= h >> 16;
	h ^= h >> 8;

	/* The director's own MAC (the frame's destination) becomes the source. */
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	eth->h_dest[0] = 0x02;
	eth->h_dest[1] = 0x00;
	eth->h_dest[2] = 0x0a;
	eth->h_dest[3] = 0x00;
	eth->h_dest[4] = 0x00;
	eth->h_dest[5] = RS_FIRST + (h % RS_COUNT);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
