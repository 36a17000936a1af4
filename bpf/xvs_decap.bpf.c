// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * IPIP decapsulation for an LVS-TUN real server whose kernel has no ipip module.
 *
 * LVS-TUN (and xvs in tunnel mode) sends each client packet to the real server wrapped in an
 * outer IPv4 header (RFC 2003, protocol 4): outer DIP -> RIP, inner client -> VIP. A real
 * server normally unwraps it with the ipip module's tunl0 device. Where that module does not
 * exist, this tc program does the same job on the ingress of the real server's interface:
 *
 *   Ethernet | outer IPv4 (proto 4) | inner IPv4 | L4 ...   ->   Ethernet | inner IPv4 | L4 ...
 *
 * and hands the inner packet to the stack (TC_ACT_OK), which delivers it locally because its
 * destination (the VIP) sits on lo. The reply then leaves from the VIP straight to the client.
 *
 * Attach (scripts/rs-tun.sh does this):
 *   tc qdisc add dev eth0 clsact
 *   tc filter add dev eth0 ingress pref 4242 handle 1 bpf direct-action obj decap.o sec tc
 *
 * Build:
 *   clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu -c xvs_decap.bpf.c -o decap.o
 *
 * What is decapsulated, and what is left alone (returned TC_ACT_OK unchanged, so the stack
 * sees exactly what it would have seen without this program):
 *   - only untagged Ethernet frames carrying IPv4 with protocol 4;
 *   - only frames addressed to this host's MAC (skb->pkt_type == PACKET_HOST). The outer
 *     destination address itself is not checked: the program sits on an end host's own
 *     interface, where an IPIP packet addressed to our MAC is meant for us (as with the ipip
 *     module's fallback tunl0, which accepts any outer source). If the inner destination is not
 *     local either, the stack drops it (a real server does not forward);
 *   - only whole outer packets: an outer fragment (MF set or offset != 0) is left to the stack,
 *     which reassembles it and then finds no handler for protocol 4 (the ipip module would
 *     have decapsulated the reassembled packet; we do not see it again after reassembly);
 *   - only an inner header that looks like IPv4 (version 4, IHL >= 5).
 * Outer IP options (IHL > 5) are stripped together with the header: the room removed is
 * IHL * 4 bytes, not a fixed 20.
 *
 * bpf_skb_adjust_room(skb, -len, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO) removes len
 * bytes right after the Ethernet header; the MAC header is kept and skb->protocol stays
 * ETH_P_IP (inner and outer are both IPv4). BPF_F_ADJ_ROOM_FIXED_GSO: if GRO merged several
 * tunnelled segments into one skb, each inner segment still carries the same TCP payload, so
 * gso_size (payload bytes per segment) must not grow by the removed header length, which is
 * what the helper does by default on shrink. The kernel's BPF_F_ADJ_ROOM_DECAP_L3_IPV4/IPV6
 * flags (Linux 6.3+) only matter when the L3 protocol changes (4in6, 6in4): not here, and
 * leaving them out keeps the program loadable on older kernels (Linux 5.2+, for
 * BPF_ADJ_ROOM_MAC), which reject unknown flags with -EINVAL.
 *
 * No maps, no global data: tc can load it anywhere without pinning (`ip netns exec` hides
 * /sys/fs/bpf).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* IPv4 flag bits and offset mask in iphdr.frag_off (host order), RFC 791. */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

SEC("tc")
int xvs_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer, *inner;
	__u32 outer_len;

	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return TC_ACT_OK;
	if (outer->version != 4 || outer->protocol != IPPROTO_IPIP)
		return TC_ACT_OK;
	if (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return TC_ACT_OK;
	/* IHL in 32-bit words; 5..15, so the outer header is 20..60 bytes. */
	outer_len = outer->ihl * 4;
	if (outer_len < sizeof(struct iphdr))
		return TC_ACT_OK;
	inner = (void *)outer + outer_len;
	if ((void *)(inner + 1) > data_end)
		return TC_ACT_OK; /* truncated, or the inner header is not in the linear part */
	if (inner->version != 4 || inner->ihl < 5)
		return TC_ACT_OK;

	/* On failure (e.g. -ENOTSUPP for an odd GSO packet) the skb is unchanged: let the stack
	 * have it as it is rather than drop it silently here. */
	if (bpf_skb_adjust_room(skb, -(__s32)outer_len, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return TC_ACT_OK;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
