// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xvs steering program.
 *
 * Decides, per frame, one thing: does it belong to a virtual service? If so it goes to the
 * AF_XDP socket of the RX queue it arrived on, where a userspace worker load-balances it.
 * That includes ICMP errors about a service's traffic (see icmp_error_is_ours). Everything
 * else (ARP, ping, other ICMP, SSH to the DIP, health checks, IPv6) is XDP_PASS, untouched,
 * so the director's kernel keeps working as if xvs were not there.
 *
 * The program is deliberately small and table-driven: all policy lives in userspace.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xvs_shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_SERVICES);
	__type(key, struct xvs_svc_key);
	__type(value, struct xvs_svc_val);
} xvs_services SEC(".maps");

/* NAT: replies from these (real server address, source port, protocol) go to the workers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_NAT_RS);
	__type(key, struct xvs_svc_key);
	__type(value, struct xvs_svc_val);
} xvs_nat_rs SEC(".maps");

/* The director's own IPv4 addresses: traffic to them is the kernel's (health checks). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_LOCAL);
	__type(key, __u32);
	__type(value, __u32);
} xvs_local SEC(".maps");

/* ifindex -> interface slot, for XSKMAP indexing when xvsd serves several interfaces. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct xvs_iface);
} xvs_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XVS_MAX_IFACES * XVS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xvs_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xvs_xdp_stats);
} xvs_stats SEC(".maps");

/* IPv4 flags/fragment-offset field: offset bits and the MF bit. */
#define XVS_IP_OFFSET 0x1fff
#define XVS_IP_MF 0x2000

/* ICMP error types IPVS relays for its connections (ip_vs_in_icmp, ip_vs_out_icmp). */
#define XVS_ICMP_DEST_UNREACH 3
#define XVS_ICMP_SOURCE_QUENCH 4
#define XVS_ICMP_TIME_EXCEEDED 11
/* ICMP header: type, code, checksum, 4 bytes; the quoted IP header follows. */
#define XVS_ICMP_HLEN 8

/* Settings written by xvsd (struct xvs_config). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xvs_config);
} xvs_config SEC(".maps");

/*
 * The fast path's flow cache (docs/architecture.md, "Fast path"): established connections'
 * forwarding decisions, installed and removed by the workers. LRU: when full, the least
 * recently used entry goes, and its flow simply takes the workers' path again. xvsd sizes
 * it from --conn-max before loading.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xvs_flow_key);
	__type(value, struct xvs_flow);
} xvs_flows SEC(".maps");

/* Per-CPU packets and bytes the fast path forwarded, per stat slot (services, servers). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XVS_MAX_STAT_SLOTS);
	__type(key, __u32);
	__type(value, struct xvs_fast_ctr);
} xvs_fast_ctr SEC(".maps");

/*
 * Generation of each real server's stat slot. xvsd bumps it when a server is removed, dies
 * or changes policy, and when a slot is reused: entries installed before no longer match and
 * their frames go to the workers, which apply the server's fate (and reinstall if it is
 * still forwarded).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XVS_MAX_STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} xvs_fast_gen SEC(".maps");

static __always_inline struct xvs_xdp_stats *stats(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&xvs_stats, &zero);
}

/* Is (addr, port, proto) a virtual service, exactly or as an all-ports (port 0) one? */
static __always_inline int is_service(__u32 addr, __u16 port, __u8 proto)
{
	struct xvs_svc_key key = { .addr = addr, .port = port, .proto = proto };

	if (bpf_map_lookup_elem(&xvs_services, &key))
		return 1;
	key.port = 0;
	return bpf_map_lookup_elem(&xvs_services, &key) != NULL;
}

/* Is (addr, port, proto) a NAT real server's, exactly or for an all-ports service? */
static __always_inline int is_nat_rs(__u32 addr, __u16 port, __u8 proto)
{
	struct xvs_svc_key key = { .addr = addr, .port = port, .proto = proto };

	if (bpf_map_lookup_elem(&xvs_nat_rs, &key))
		return 1;
	key.port = 0;
	return bpf_map_lookup_elem(&xvs_nat_rs, &key) != NULL;
}

/*
 * An ICMP error (destination unreachable incl. fragmentation needed, source quench, time
 * exceeded) whose quoted packet belongs to a service, which the workers relay as IPVS does:
 *  - quoted src = VIP:vport: about a reply to a client (from the real server for DR/TUN, or
 *    NAT-rewritten), sent from the client's side to the VIP;
 *  - quoted dst = NAT RIP:rport: about a request xvs forwarded, from the real server's side,
 *    to the client (not to the director: its own traffic with the servers is the kernel's);
 *  - quoted IPIP from a director address, around a packet to VIP:vport: about a packet xvs
 *    tunnelled, from a router on the way, to the director.
 * Returns 1 to steer, 0 to pass. Every read is bounds-checked: quoted headers are variable
 * length (IHL) and quotes are truncated by design; what cannot be parsed is counted
 * malformed and passed.
 */
static __always_inline int icmp_error_is_ours(struct iphdr *iph, void *data_end,
					      struct xvs_xdp_stats *st)
{
	__u8 *icmp = (void *)iph + iph->ihl * 4;
	struct iphdr *q, *q2;
	__u16 *ports;

	if (iph->frag_off & bpf_htons(XVS_IP_OFFSET | XVS_IP_MF))
		return 0;
	if ((void *)(icmp + XVS_ICMP_HLEN) > data_end) {
		st->malformed++;
		return 0;
	}
	if (icmp[0] != XVS_ICMP_DEST_UNREACH && icmp[0] != XVS_ICMP_SOURCE_QUENCH &&
	    icmp[0] != XVS_ICMP_TIME_EXCEEDED)
		return 0;
	q = (void *)(icmp + XVS_ICMP_HLEN);
	if ((void *)(q + 1) > data_end || q->version != 4 || q->ihl < 5) {
		st->malformed++;
		return 0;
	}
	if (q->frag_off & bpf_htons(XVS_IP_OFFSET))
		return 0; /* a non-first fragment: no ports quoted */

	if (q->protocol == IPPROTO_IPIP) {
		/* Our tunnels start at a director address and their errors come to one. */
		if (!bpf_map_lookup_elem(&xvs_local, &iph->daddr) ||
		    !bpf_map_lookup_elem(&xvs_local, &q->saddr))
			return 0;
		q2 = (void *)q + q->ihl * 4;
		if ((void *)(q2 + 1) > data_end || q2->version != 4 || q2->ihl < 5) {
			st->malformed++;
			return 0;
		}
		if (q2->frag_off & bpf_htons(XVS_IP_OFFSET))
			return 0;
		if (q2->protocol != IPPROTO_TCP && q2->protocol != IPPROTO_UDP)
			return 0;
		ports = (void *)q2 + q2->ihl * 4;
		if ((void *)(ports + 2) > data_end) {
			st->malformed++;
			return 0;
		}
		return is_service(q2->daddr, ports[1], q2->protocol);
	}
	if (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP)
		return 0;
	ports = (void *)q + q->ihl * 4;
	if ((void *)(ports + 2) > data_end) {
		st->malformed++;
		return 0;
	}
	if (is_service(q->saddr, ports[0], q->protocol))
		return 1;
	return is_nat_rs(q->daddr, ports[1], q->protocol) &&
	       !bpf_map_lookup_elem(&xvs_local, &iph->daddr);
}

#define XVS_TCP_FIN 0x01
#define XVS_TCP_SYN 0x02
#define XVS_TCP_RST 0x04
#define XVS_TCP_ACK 0x10
#define XVS_IPIP_HLEN 20

/* One's complement sum folded to 16 bits. */
static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* One frame of `bytes` in stat slot `slot`: client to server, or (`out`) a NAT reply. */
static __always_inline void count(__u32 slot, __u64 bytes, int out)
{
	struct xvs_fast_ctr *c = bpf_map_lookup_elem(&xvs_fast_ctr, &slot);

	if (!c)
		return;
	if (out) {
		c->out_pkts++;
		c->out_bytes += bytes;
	} else {
		c->pkts++;
		c->bytes += bytes;
	}
}

/*
 * The fast path for an established flow. Returns -1 when the frame is not (or no longer) the
 * fast path's: the caller then steers it to the workers exactly as without the fast path.
 * Otherwise the verdict (XDP_TX or the redirect's). Conditions mirror the workers'
 * forward_local, nat_request and nat_reply (src/forward.rs): a state-changing TCP segment
 * (SYN, FIN, RST), a fragment, TTL <= 1 (time exceeded is theirs to send) and a frame too
 * big for the egress (frag-needed, theirs too) all go to the workers.
 */
static __always_inline int fast_path(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *iph,
				     __u16 *ports, void *data_end, struct xvs_xdp_stats *st)
{
	struct xvs_flow_key k = {};
	struct xvs_flow *f;
	struct xvs_iface *iface;
	__u32 ifindex = ctx->ingress_ifindex, *gen, sum;
	__u16 tot_len, old, new, *l4_check = 0;
	__u8 tos, ttl;
	int nat;

	/*
	 * A client's SYN (SYN without ACK) opens a connection: always the workers', so it skips
	 * the lookup. For a flow never seen that lookup is a miss into a random bucket of a map
	 * sized from --conn-max, a cache and TLB miss that doubled the kernel's cost of a SYN
	 * (docs/benchmarks.md, "The new-connection path"). A SYN reusing an installed tuple is
	 * therefore not counted in fast_punt.
	 */
	if (iph->protocol == IPPROTO_TCP) {
		__u8 *tcp = (void *)ports;

		if ((void *)(tcp + 14) <= data_end &&
		    (tcp[13] & (XVS_TCP_SYN | XVS_TCP_ACK)) == XVS_TCP_SYN)
			return -1;
	}
	k.saddr = iph->saddr;
	k.daddr = iph->daddr;
	k.sport = ports[0];
	k.dport = ports[1];
	k.proto = iph->protocol;
	f = bpf_map_lookup_elem(&xvs_flows, &k);
	if (!f)
		return -1;
	gen = bpf_map_lookup_elem(&xvs_fast_gen, &f->dest_slot);
	if (!gen || *gen != f->gen) {
		st->fast_stale++;
		return -1;
	}
	if (iph->frag_off & bpf_htons(XVS_IP_OFFSET | XVS_IP_MF))
		goto punt;
	nat = f->method == XVS_FAST_NAT_IN || f->method == XVS_FAST_NAT_OUT;
	if (iph->protocol == IPPROTO_TCP) {
		__u8 *tcp = (void *)ports;

		/* NAT rewrites the checksum at byte 16: the whole base header must be there. */
		if ((void *)(tcp + 20) > data_end)
			goto punt;
		if (tcp[13] & (XVS_TCP_FIN | XVS_TCP_SYN | XVS_TCP_RST))
			goto punt;
		l4_check = (void *)(tcp + 16);
	} else {
		__u8 *udp = (void *)ports;

		if ((void *)(udp + 8) > data_end)
			goto punt;
		l4_check = (void *)(udp + 6);
	}
	if (iph->ttl <= 1)
		goto punt;
	/* As the workers: only frames addressed to this interface's MAC are forwarded. */
	iface = bpf_map_lookup_elem(&xvs_ifaces, &ifindex);
	if (!iface || *(__u32 *)eth->h_dest != *(__u32 *)iface->mac ||
	    *(__u16 *)(eth->h_dest + 4) != *(__u16 *)(iface->mac + 4))
		return -1;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < 20 || (void *)iph + tot_len > data_end)
		goto punt;
	if (f->method == XVS_FAST_TUN) {
		if (tot_len + XVS_IPIP_HLEN > f->mtu)
			goto punt;
	} else if (f->method == XVS_FAST_DR || nat) {
		/* NAT: requests check the egress towards the server, replies the client's
		 * interface; the entry carries that MTU either way. */
		if (tot_len > f->mtu)
			goto punt;
	} else {
		goto punt;
	}

	/* decrement_ttl (src/xmit.rs): RFC 1624 update of the TTL/protocol word; NAT adds the
	 * address's precomputed delta in the same update (xmit::nat_in/nat_out). */
	old = *(__u16 *)&iph->ttl;
	iph->ttl--;
	new = *(__u16 *)&iph->ttl;
	sum = (__u16)~iph->check + (__u16)~old + new;
	if (nat)
		sum += f->ip_csum_delta;
	iph->check = ~csum_fold(sum);

	if (nat) {
		__u16 c = *l4_check;

		if (f->method == XVS_FAST_NAT_IN) {
			iph->daddr = f->nat_addr;
			ports[1] = f->nat_port;
		} else {
			iph->saddr = f->nat_addr;
			ports[0] = f->nat_port;
		}
		/* As rewrite_addr_port: UDP checksum 0 means none (RFC 768) and stays 0; a
		 * computed UDP checksum of 0 is sent as all ones. TCP always has one. */
		if (iph->protocol == IPPROTO_TCP || c != 0) {
			c = ~csum_fold((__u16)~c + (__u32)f->l4_csum_delta);
			if (iph->protocol == IPPROTO_UDP && c == 0)
				c = 0xffff;
			*l4_check = c;
		}
	}

	f->last_seen_ns = bpf_ktime_get_ns();
	/* IPVS counts a NAT reply as OutPkts/OutBytes (ip_vs_out_stats). */
	count(f->dest_slot, tot_len, f->method == XVS_FAST_NAT_OUT);
	count(f->svc_slot, tot_len, f->method == XVS_FAST_NAT_OUT);
	count(0, tot_len, 0); /* slot 0: the fast path's total, both directions */

	if (f->method == XVS_FAST_TUN) {
		/* tun_encap_packet (src/xmit.rs): IPIP, DF copied, TTL copied (decremented), DSCP
		 * copied and ECN encapsulated per RFC 6040 (CE becomes ECT(0) outside). */
		struct iphdr *o;
		__u16 df = iph->frag_off & bpf_htons(0x4000);
		__u16 *w;
		void *data;
		int i;

		tos = iph->tos;
		ttl = iph->ttl;
		if ((tos & 3) == 3)
			tos = (tos & ~3) | 2;
		/* Ethernet padding after the IP packet: trim it so the outer length is exact. */
		if ((void *)iph + tot_len < data_end &&
		    bpf_xdp_adjust_tail(ctx, (int)((void *)iph + tot_len - data_end)))
			goto punt_late;
		if (bpf_xdp_adjust_head(ctx, -XVS_IPIP_HLEN))
			goto punt_late;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		o = (void *)(eth + 1);
		if ((void *)(o + 1) > data_end)
			return XDP_DROP;
		/* The re-read entry: its pointer stays valid (map value), but re-check. */
		eth->h_proto = bpf_htons(ETH_P_IP);
		o->version = 4;
		o->ihl = 5;
		o->tos = tos;
		o->tot_len = bpf_htons(tot_len + XVS_IPIP_HLEN);
		/* Any ID for an atomic (DF) datagram; otherwise a random one (RFC 6864 4.1). */
		o->id = df ? 0 : (__u16)bpf_get_prandom_u32();
		o->frag_off = df;
		o->ttl = ttl;
		o->protocol = IPPROTO_IPIP;
		o->check = 0;
		o->saddr = f->tun_saddr;
		o->daddr = f->tun_daddr;
		w = (void *)o;
		sum = 0;
#pragma unroll
		for (i = 0; i < 10; i++)
			sum += w[i];
		o->check = ~csum_fold(sum);
	}
	__builtin_memcpy(eth->h_dest, f->dmac, 6);
	__builtin_memcpy(eth->h_source, f->smac, 6);
	st->fast++;
	if (f->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	/* Constant verdicts only: the caller tells "not mine" (-1) apart from them, and after
	 * bpf_xdp_adjust_head the verifier must know that no path falls back to the caller's
	 * (now invalid) packet pointers. */
	return bpf_redirect(f->ifindex, 0) == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED;

punt_late:
	/* The TTL is already decremented and counted: undo neither, drop (cannot happen on a
	 * frame the kernel gave us with headroom). */
	st->fast_punt++;
	return XDP_DROP;
punt:
	st->fast_punt++;
	return -1;
}

SEC("xdp")
int xvs_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xvs_xdp_stats *st = stats();
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__u16 *ports;
	struct xvs_svc_key key = {};
	struct xvs_iface *iface;
	__u32 ifindex;
	long ret;

	if (!st) /* cannot happen for a one-entry per-CPU array; keeps the verifier happy */
		return XDP_PASS;

	if ((void *)(eth + 1) > data_end) {
		st->malformed++;
		return XDP_PASS;
	}
	/* VLAN-tagged and non-IPv4 frames are the kernel's business (IPv6 comes later). */
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		st->passed++;
		return XDP_PASS;
	}

	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5) {
		st->malformed++;
		return XDP_PASS;
	}
	if (iph->protocol == IPPROTO_ICMP) {
		if (!icmp_error_is_ours(iph, data_end, st)) {
			st->passed++;
			return XDP_PASS;
		}
		goto redirect;
	}
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP) {
		st->passed++;
		return XDP_PASS;
	}
	/*
	 * Non-first fragments carry no ports, so they cannot be matched to a service here. They go
	 * to the kernel, which drops them after its reassembly timeout: fragmented traffic to a VIP
	 * is not load-balanced (documented in docs/architecture.md).
	 */
	if (iph->frag_off & bpf_htons(XVS_IP_OFFSET)) {
		st->fragments++;
		return XDP_PASS;
	}

	/* Source and destination ports are the first 4 bytes of both TCP and UDP headers. */
	ports = (void *)iph + iph->ihl * 4;
	if ((void *)(ports + 2) > data_end) {
		st->malformed++;
		return XDP_PASS;
	}

	{
		__u32 zero = 0;
		struct xvs_config *cfg = bpf_map_lookup_elem(&xvs_config, &zero);

		if (cfg && cfg->fast_path) {
			int v = fast_path(ctx, eth, iph, ports, data_end, st);

			if (v >= 0)
				return v;
		}
	}

	key.addr = iph->daddr;
	key.port = ports[1];
	key.proto = iph->protocol;
	if (!bpf_map_lookup_elem(&xvs_services, &key)) {
		/* A persistent service on port 0 takes every port of its address (ipvsadm -p). */
		key.port = 0;
		if (!bpf_map_lookup_elem(&xvs_services, &key)) {
			/*
			 * A NAT reply: from a real server's (address, port), to someone other
			 * than the director itself (whose own traffic with real servers, such as
			 * health checks, belongs to its kernel).
			 */
			key.addr = iph->saddr;
			key.port = ports[0];
			if (!bpf_map_lookup_elem(&xvs_nat_rs, &key)) {
				/* Real servers of all-ports (port 0) services answer from any port. */
				key.port = 0;
				if (!bpf_map_lookup_elem(&xvs_nat_rs, &key)) {
					st->passed++;
					return XDP_PASS;
				}
			}
			if (bpf_map_lookup_elem(&xvs_local, &iph->daddr)) {
				st->passed++;
				return XDP_PASS;
			}
		}
	}

redirect:
	ifindex = ctx->ingress_ifindex;
	iface = bpf_map_lookup_elem(&xvs_ifaces, &ifindex);
	if (!iface || ctx->rx_queue_index >= XVS_MAX_QUEUES) {
		st->no_socket++;
		return XDP_PASS;
	}
	/* Another host's frame (promiscuous NIC, flooding bridge): the kernel drops it. */
	if (*(__u32 *)eth->h_dest != *(__u32 *)iface->mac ||
	    *(__u16 *)(eth->h_dest + 4) != *(__u16 *)(iface->mac + 4)) {
		st->passed++;
		return XDP_PASS;
	}
	/*
	 * The low bits of flags are the action when the queue has no socket (kernel >= 5.3):
	 * pass rather than drop, so a queue without a worker degrades to "kernel handles it".
	 */
	ret = bpf_redirect_map(&xvs_xsks, iface->slot * XVS_MAX_QUEUES + ctx->rx_queue_index, XDP_PASS);
	if (ret == XDP_REDIRECT) {
		st->redirected++;
		return ret;
	}
	/*
	 * No socket. While xvsd restarts (hold in the future) the frame is dropped: the
	 * client retransmits into the next xvsd, where the kernel would have sent a RST.
	 * Only the entry's emptiness is looked at, so an unregistered interface above still
	 * passes, and so does everything once the hold is over (a crashed xvsd).
	 */
	{
		__u32 zero = 0;
		struct xvs_config *cfg = bpf_map_lookup_elem(&xvs_config, &zero);

		if (cfg && cfg->hold_until_ns > bpf_ktime_get_ns()) {
			st->held++;
			return XDP_DROP;
		}
	}
	st->no_socket++;
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
