// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test tool, not part of xvs: pins every frame that enters a bridge port to one RX queue of
 * the director's veth (tests/e2e_queue_move.rs).
 *
 * veth delivers a frame to the peer's RX queue numbered like the TX queue it was sent on,
 * and a forwarded frame without a socket leaves on the TX queue of its recorded RX queue
 * (skb_tx_hash). Setting queue_mapping at the ingress of the bridge port the client's
 * frames arrive on records "received on queue QUEUE" (queue_mapping holds rx queue + 1),
 * so the bridge sends them towards the director on TX queue QUEUE, and they arrive on the
 * director's RX queue QUEUE. The kernel's skbedit action would do this too, but it is not
 * built into every kernel.
 *
 * Build: clang -O2 -target bpf -DQUEUE=N -c test_queue_pin.bpf.c -o pinN.o
 * Attach: tc filter replace dev client ingress pref 10 handle 1 bpf da obj pinN.o sec tc
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#ifndef QUEUE
#define QUEUE 0
#endif

__attribute__((section("tc"), used)) int pin_queue(struct __sk_buff *skb)
{
	skb->queue_mapping = QUEUE + 1;
	return TC_ACT_OK;
}

char _license[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
