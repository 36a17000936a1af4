/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared between the XDP steering program and the Rust daemon.
 *
 * Every struct here has a #[repr(C)] mirror in src/bpf/maps.rs; a unit test checks sizes and
 * field offsets against the skeleton's BTF-generated types, so a change on one side that is not
 * made on the other fails `cargo test`.
 */
#ifndef XVS_SHARED_H
#define XVS_SHARED_H

#include <linux/types.h>

/* Upper bound on RX queues per interface (one AF_XDP socket each). */
#define XVS_MAX_QUEUES 256
/* Upper bound on interfaces (external, internal, ...): XSKMAP slot = iface slot * queues + queue. */
#define XVS_MAX_IFACES 4
/* Upper bound on (real server address, port) pairs whose NAT replies are steered. */
#define XVS_MAX_NAT_RS 65536
/* Upper bound on the director's own addresses (replies to them stay with the kernel). */
#define XVS_MAX_LOCAL 256
/* Upper bound on virtual services (ipvsadm -A entries). */
#define XVS_MAX_SERVICES 4096

/*
 * Key of the services map: what a frame must match to be steered to a worker.
 * addr and port are in network byte order, exactly as they sit in the packet, so the program
 * never byte-swaps.
 */
struct xvs_svc_key {
	__u32 addr;  /* destination IPv4 address (VIP), network order */
	__u16 port;  /* destination port, network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;    /* must be zero: the hash map compares all key bytes */
};

/*
 * Value of the services map (and of the NAT reply map, whose key is the real server's
 * source address and port). Flags are reserved for the fast path.
 */
struct xvs_svc_val {
	__u32 flags;
};

/*
 * Value of the interface map (key: ifindex): the interface's slot (its XSKMAP range) and its
 * MAC address. Only frames addressed to that MAC are steered: a NIC in promiscuous mode
 * (tcpdump), a bridge flooding unknown unicast, or a veth (which filters nothing) also
 * delivers frames meant for other hosts, which the kernel drops (PACKET_OTHERHOST) and
 * which xvs must not forward either (a second director would duplicate them).
 */
struct xvs_iface {
	__u32 slot;
	__u8 mac[6];
	__u8 pad[2];
};

/* Per-CPU verdict counters of the steering program (index 0 of a one-entry array). */
struct xvs_xdp_stats {
	__u64 redirected;  /* frames handed to an AF_XDP socket */
	__u64 passed;      /* frames left to the kernel: not for a service */
	__u64 malformed;   /* frames too short or inconsistent to parse, left to the kernel */
	__u64 no_socket;   /* service frames on a queue without a socket, left to the kernel */
	__u64 fragments;   /* non-first IPv4 fragments, left to the kernel (they carry no ports) */
	__u64 held;        /* service frames dropped while xvsd restarts (no socket, hold set) */
	__u64 fast;        /* frames forwarded by the fast path itself (XDP_TX or redirect) */
	__u64 fast_punt;   /* flow-map hits that went to the workers (SYN/FIN/RST, TTL, MTU, ...) */
	__u64 fast_stale;  /* flow-map hits whose generation no longer matches: to the workers */
};

/*
 * The program's settings (index 0 of a one-entry array), written by xvsd.
 *
 * hold_until_ns: CLOCK_MONOTONIC time (bpf_ktime_get_ns) until which a service frame whose
 * AF_XDP socket is missing is dropped instead of passed to the kernel. xvsd sets it when it
 * stops for a restart (--state-dir): its sockets close, and without the hold the kernel
 * would answer the VIP's established connections with RSTs. 0 (never set, e.g. after a
 * crash) or a past time: such frames go to the kernel, so a dead xvsd never blackholes.
 */
struct xvs_config {
	__u64 hold_until_ns;
	/* Non-zero: flow-map hits are forwarded by the program (xvsd without --no-fast-path). */
	__u32 fast_path;
	__u32 pad;
};


/*
 * The fast path (see docs/architecture.md, "Fast path").
 *
 * XVS_MAX_STAT_SLOTS: counter slots of services and real servers (struct xvs_fast_ctr per
 * CPU, and one generation per slot). Slot 0 is never handed out: it counts everything the
 * fast path forwarded (the `--datapath` total).
 */
#define XVS_MAX_STAT_SLOTS 65536

/* Forwarding methods of a flow entry. */
#define XVS_FAST_DR 1
#define XVS_FAST_TUN 2
/* NAT, client to server: destination VIP:vport becomes nat_addr:nat_port (RIP:rport). */
#define XVS_FAST_NAT_IN 3
/* NAT, server to client: source RIP:rport becomes nat_addr:nat_port (VIP:vport). */
#define XVS_FAST_NAT_OUT 4

/*
 * Key of the flow map: the 5-tuple exactly as the steering program sees it in the frame
 * (network byte order): the client's side for DR, TUN and a NAT request (CIP:cport ->
 * VIP:vport), the real server's for a NAT reply (RIP:rport -> CIP:cport).
 */
struct xvs_flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3]; /* must be zero: the hash map compares all key bytes */
};

/*
 * Value of the flow map: the worker's forwarding decision for an established connection.
 * Written by the worker at state changes only; the program writes last_seen_ns.
 */
struct xvs_flow {
	__u8 method;       /* XVS_FAST_DR, _TUN, _NAT_IN or _NAT_OUT; anything else: to the workers */
	__u8 pad0;
	__u16 mtu;         /* IP MTU of the egress interface (TUN: the inner packet may be 20 less) */
	__u32 ifindex;     /* egress interface; the ingress one means XDP_TX, another bpf_redirect */
	__u8 dmac[6];      /* next hop (the real server or the router towards it) */
	__u8 smac[6];      /* the egress interface's own MAC */
	__u32 tun_saddr;   /* TUN outer source address, network order */
	__u32 tun_daddr;   /* TUN outer destination (the real server), network order */
	__u32 dest_slot;   /* stat slot of the real server (counters and generation) */
	__u32 svc_slot;    /* stat slot of the service (counters) */
	__u32 gen;         /* the real server's generation when installed */
	/* NAT only: the address and port written (destination for _NAT_IN, source for
	 * _NAT_OUT), network order, and the checksum deltas of that rewrite, precomputed by the
	 * worker (RFC 1624: ~old + new over the changed 16-bit words, folded, not
	 * complemented), in the byte order the program reads packet words in: the IP header's
	 * covers the address, the L4 one the address (pseudo-header) and the port. */
	__u32 nat_addr;
	__u16 nat_port;
	__u16 ip_csum_delta;
	__u16 l4_csum_delta;
	__u16 pad1;
	__u32 pad2;
	__u64 last_seen_ns; /* bpf_ktime_get_ns of the last frame forwarded by the fast path */
};

/*
 * Per-CPU fast-path counters of one stat slot: what the fast path forwarded, client to
 * server (DR, TUN, NAT requests: IPVS's InPkts) and server to client (NAT replies: OutPkts).
 * Slot 0 (the total) counts both directions in pkts/bytes.
 */
struct xvs_fast_ctr {
	__u64 pkts;
	__u64 bytes; /* IP length, as the workers count it */
	__u64 out_pkts;
	__u64 out_bytes;
};

#endif
