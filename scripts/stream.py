#!/usr/bin/env python3
"""Long-lived TCP flows checked end to end, for failover tests (stdlib only).

  stream.py server --port P [--bind ADDR]
      Per connection: read one line "ID LEN RATE\\n", send LEN bytes of the
      pattern of flow ID paced at RATE bytes/s, then close. Run it in each real
      server's namespace (DR: the VIP sits on lo, so it answers VIP:P).

  stream.py client --addr A --port P --flows N --bytes LEN --rate R --timeout T
                   [--src-ips IP,IP,...] [--first-id K] [--heartbeat MS]
      N parallel connections to A:P, each asking for LEN bytes at R bytes/s;
      every byte is checked against the pattern. --heartbeat MS: each client
      also sends one byte every MS ms while it receives (an interactive
      protocol's keep-alive; the server reads and discards them), so its own
      stack retransmits something after a failover, not only the server's. Prints one JSON object on
      stdout: {"flows": [{"id", "status", "bytes", "max_gap_ms", "src",
      "error"}...], "summary": {...}}. max_gap_ms: the longest time between two
      receipts (data or the close), from the request on; for a flow that timed
      out, including its final silence. status is ok (all LEN bytes, then a
      clean close), reset (ECONNRESET or refused), short (clean close before
      LEN bytes), corrupt (a byte differs from the pattern: data from another
      connection or a lost segment the stack could not have hidden) or timeout
      (T seconds passed). Exit status 0 when every flow is ok, 1 otherwise.
      Prints "flowing N" on stderr once every flow has received data (or
      failed), so a test can crash a director mid-stream.

The pattern: block k (4096 bytes) of flow ID is random.Random(ID << 32 | k)'s
randbytes(4096), the same on both ends and position dependent, so a stream
that skips, repeats or mixes data shows as corrupt.
"""

import argparse
import json
import random
import socket
import sys
import threading
import time

BLOCK = 4096
# Pacing granularity: the server sends RATE/TICKS_PER_S bytes per tick. 20 ms
# ticks keep a client's "longest gap" near 20 ms when nothing goes wrong, well
# below the ~1-4 s a VRRP failover takes.
TICK_S = 0.02


def block(flow_id, k):
    return random.Random((flow_id << 32) | k).randbytes(BLOCK)


def pattern(flow_id, offset, n):
    """n bytes of flow flow_id's pattern from offset."""
    out = bytearray()
    while n > 0:
        k, r = divmod(offset, BLOCK)
        chunk = block(flow_id, k)[r : r + n]
        out += chunk
        offset += len(chunk)
        n -= len(chunk)
    return bytes(out)


# ---------------------------------------------------------------- server


def serve_one(conn):
    try:
        conn.settimeout(30)
        line = b""
        # Up to the first newline: a heartbeat byte may follow the request at once.
        while b"\n" not in line:
            got = conn.recv(64)
            if not got or len(line) > 128:
                return
            line += got
        flow_id, length, rate = (int(x) for x in line.split(b"\n")[0].split()[:3])
        conn.settimeout(None)
        per_tick = max(1, int(rate * TICK_S))
        sent = 0
        start = time.monotonic()
        while sent < length:
            n = min(per_tick, length - sent)
            conn.sendall(pattern(flow_id, sent, n))
            sent += n
            # Absolute schedule: a stall (a failover) is not made up for by a
            # burst afterwards beyond what the socket buffer already holds.
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        conn.shutdown(socket.SHUT_WR)
        # Wait for the client's close so our FIN is acknowledged before the
        # socket goes (bounded: a vanished client does not pin the thread).
        conn.settimeout(30)
        while conn.recv(4096):
            pass
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def server(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(256)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------- client


class Flow:
    def __init__(self, flow_id, src):
        self.id = flow_id
        self.src = src
        self.status = "timeout"
        self.bytes = 0
        self.max_gap_ms = 0.0
        self.error = ""
        self.first_data = threading.Event()


def run_flow(flow, args, deadline):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    last = None
    try:
        if flow.src:
            s.bind((flow.src, 0))
        s.settimeout(max(0.1, deadline - time.monotonic()))
        s.connect((args.addr, args.port))
        s.sendall(b"%d %d %d\n" % (flow.id, args.bytes, args.rate))
        last = time.monotonic()
        beat = args.heartbeat / 1000.0 if args.heartbeat > 0 else None
        next_beat = last + beat if beat else None
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise socket.timeout()
            if next_beat is not None and now >= next_beat:
                # One byte; the send buffer holds the few that pile up while a
                # failover stalls the flow, so this never blocks for long.
                s.settimeout(left)
                s.send(b".")
                next_beat = now + beat
            s.settimeout(left if next_beat is None else max(0.001, min(left, next_beat - now)))
            try:
                data = s.recv(65536)
            except socket.timeout:
                if next_beat is not None and time.monotonic() < deadline:
                    continue
                raise
            now = time.monotonic()
            flow.max_gap_ms = max(flow.max_gap_ms, (now - last) * 1000.0)
            last = now
            if not data:
                flow.status = "ok" if flow.bytes == args.bytes else "short"
                return
            if flow.bytes + len(data) > args.bytes or data != pattern(flow.id, flow.bytes, len(data)):
                flow.status = "corrupt"
                flow.error = "at offset %d" % flow.bytes
                return
            flow.bytes += len(data)
            flow.first_data.set()
    except socket.timeout:
        flow.status = "timeout"
        # A flow that stalled for good: its silence until the deadline is its longest gap.
        if last is not None:
            flow.max_gap_ms = max(flow.max_gap_ms, (time.monotonic() - last) * 1000.0)
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError) as e:
        flow.status = "reset"
        flow.error = type(e).__name__
    except OSError as e:
        flow.status = "reset" if e.errno in (104, 111, 32) else "error"
        flow.error = str(e)
    finally:
        flow.first_data.set()
        s.close()


def client(args):
    srcs = [ip for ip in (args.src_ips or "").split(",") if ip]
    flows = [Flow(args.first_id + i, srcs[i % len(srcs)] if srcs else "") for i in range(args.flows)]
    deadline = time.monotonic() + args.timeout
    threads = [threading.Thread(target=run_flow, args=(f, args, deadline), daemon=True) for f in flows]
    for t in threads:
        t.start()
    for f in flows:
        f.first_data.wait(max(0.0, deadline - time.monotonic()))
    print("flowing %d" % sum(1 for f in flows if f.bytes > 0), file=sys.stderr, flush=True)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1.0)
    counts = {}
    for f in flows:
        counts[f.status] = counts.get(f.status, 0) + 1
    report = {
        "flows": [
            {
                "id": f.id,
                "src": f.src,
                "status": f.status,
                "bytes": f.bytes,
                "max_gap_ms": round(f.max_gap_ms, 1),
                "error": f.error,
            }
            for f in flows
        ],
        "summary": {
            "flows": len(flows),
            "expected_bytes": args.bytes,
            "counts": counts,
            "max_gap_ms": round(max((f.max_gap_ms for f in flows), default=0.0), 1),
        },
    }
    print(json.dumps(report), flush=True)
    return 0 if counts.get("ok", 0) == len(flows) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bind", default="0.0.0.0")
    c = sub.add_parser("client")
    c.add_argument("--addr", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--flows", type=int, required=True)
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--rate", type=int, required=True, help="bytes/s per flow")
    c.add_argument("--timeout", type=float, required=True, help="seconds for the whole run")
    c.add_argument("--src-ips", default="", help="comma-separated source addresses, used in turn")
    c.add_argument("--first-id", type=int, default=1, help="ID of the first flow (pattern seed)")
    c.add_argument("--heartbeat", type=int, default=0, help="ms between one-byte sends of each client (0: none)")
    args = p.parse_args()
    if args.cmd == "server":
        server(args)
        return 0
    if args.flows < 1 or args.bytes < 1 or args.rate < 1 or args.timeout <= 0:
        p.error("--flows, --bytes and --rate must be positive, --timeout > 0")
    return client(args)


if __name__ == "__main__":
    sys.exit(main())
