// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test harness only (scripts/harness.sh): an XDP program that passes every frame, attached
 * to the switch side of each director veth. A frame a veth sends with XDP_TX or
 * bpf_redirect (xvs's fast path) is dropped unless its peer runs NAPI, which a veth does only
 * with an XDP program attached (asking for GRO was not enough on the 6.18 kernels here). A
 * real NIC needs nothing of the kind.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xvs_veth_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
