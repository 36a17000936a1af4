#!/usr/bin/env python3
"""A tiny real server for the xvs lab: who answered is all a test needs to know.

usage: rs-http.py NAME [PORT] [UDPPORT]

  * HTTP/1.1 on 0.0.0.0:PORT (default 80): every GET or HEAD is answered with
    200 and the body "NAME\\n". Threaded, keep-alive (HTTP/1.1 persistent
    connections), so one client connection can carry many requests.
  * UDP on 0.0.0.0:UDPPORT (default 5353; 0 disables): every datagram is
    answered with "NAME\\n" to its sender, from the address it was sent to.

Binding 0.0.0.0 matters for LVS-DR: requests arrive addressed to the VIP
(held on lo), and the reply must leave from the VIP. For TCP the kernel does
that on its own; for UDP we reply with the datagram's own destination address
(IP_PKTINFO), as a real UDP service on a multi-address host must.

Python 3 standard library only. Stops cleanly on SIGTERM/SIGINT.
"""

import http.server
import signal
import socket
import socketserver
import struct
import sys
import threading


def usage():
    sys.stderr.write("usage: rs-http.py NAME [PORT] [UDPPORT]\n")
    sys.exit(2)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    server_version = "xvs-rs/1"
    body = b""

    def _answer(self, with_body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(self.body)

    def do_GET(self):
        self._answer(True)

    def do_HEAD(self):
        self._answer(False)

    def log_message(self, format, *args):
        # One line per request would swamp the harness logs at test rates.
        pass


class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def udp_loop(sock, reply, stop):
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data, anc, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(12))
        except socket.timeout:
            continue
        except OSError:
            if stop.is_set():
                return
            raise
        # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
        # reply from the address the datagram was sent to (the VIP in DR mode).
        cmsgs = []
        for level, ctype, cdata in anc:
            if level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(cdata) >= 12:
                _ifindex, _spec, dst = struct.unpack("i4s4s", cdata[:12])
                cmsgs = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, dst, b"\0" * 4))]
        try:
            sock.sendmsg([reply], cmsgs, 0, peer)
        except OSError as e:
            sys.stderr.write(f"rs-http: udp reply to {peer}: {e}\n")


def main():
    args = sys.argv[1:]
    if not args or len(args) > 3 or args[0] in ("-h", "--help"):
        usage()
    name = args[0]
    try:
        port = int(args[1]) if len(args) > 1 else 80
        udp_port = int(args[2]) if len(args) > 2 else 5353
    except ValueError:
        usage()

    reply = (name + "\n").encode()
    Handler.body = reply
    httpd = HTTPServer(("0.0.0.0", port), Handler)

    stop = threading.Event()
    threads = []
    udp = None
    if udp_port:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        udp.bind(("0.0.0.0", udp_port))
        t = threading.Thread(target=udp_loop, args=(udp, reply, stop), daemon=True)
        t.start()
        threads.append(t)

    def on_signal(_signum, _frame):
        stop.set()
        # shutdown() blocks until serve_forever returns: not from its own thread.
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sys.stderr.write(f"rs-http: {name} http :{port} udp :{udp_port or 'off'}\n")
    sys.stderr.flush()
    httpd.serve_forever(poll_interval=0.5)
    httpd.server_close()
    if udp is not None:
        udp.close()
    for t in threads:
        t.join(timeout=2)


if __name__ == "__main__":
    main()
