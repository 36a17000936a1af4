#!/usr/bin/env python3
"""A tiny real server for the xvs lab: who answered is all a test needs to know.

usage: rs-http.py NAME [PORT] [UDPPORT] [--also-http PORT]...

  * HTTP/1.1 on 0.0.0.0:PORT (default 80): every GET or HEAD is answered with
    200 and the body "NAME\\n". Threaded, keep-alive (HTTP/1.1 persistent
    connections), so one client connection can carry many requests.
  * UDP on 0.0.0.0:UDPPORT (default 5353; 0 disables): every datagram is
    answered with "NAME\\n" to its sender, from the address it was sent to.
  * GET /whoami answers "NAME LOCALIP:LOCALPORT PEERIP:PEERPORT\\n": the
    address and port the request arrived on and the peer as this server sees
    it (LVS-NAT and port mapping tests check both).
  * GET /bytes/N answers N bytes ("x" repeated, at most 100 MB): a download
    big enough for full-size segments from the real server (path MTU tests).
  * POST (and PUT) read the whole request body (Content-Length, or chunked
    transfer encoding) without keeping it and answer 200 "NAME BYTES\\n",
    BYTES being the number of body bytes received. A large upload through an
    LVS-TUN tunnel makes the client send full-size TCP segments.
  * Every answer carries the headers X-Xvs-Server: NAME and X-Xvs-Port: the
    local port the request arrived on.
  * --also-http PORT (repeatable) serves the same HTTP on more ports, e.g.
    8080 for a service on :80 whose real server is given as RIP:8080.

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
    sys.stderr.write("usage: rs-http.py NAME [PORT] [UDPPORT] [--also-http PORT]...\n")
    sys.exit(2)


# Upload bodies are counted in chunks of this many bytes, never kept.
READ_CHUNK = 64 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    server_version = "xvs-rs/1"
    name = ""
    body = b""

    def _send(self, body, with_body=True):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Xvs-Server", self.name)
        self.send_header("X-Xvs-Port", str(self.connection.getsockname()[1]))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _get_body(self):
        if self.path.split("?", 1)[0] == "/whoami":
            lip, lport = self.connection.getsockname()[:2]
            pip, pport = self.client_address[:2]
            return f"{self.name} {lip}:{lport} {pip}:{pport}\n".encode()
        return self.body

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/bytes/"):
            try:
                n = int(path[len("/bytes/"):])
            except ValueError:
                n = -1
            if not 0 <= n <= 100_000_000:
                self.send_error(400, "bad size")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.send_header("X-Xvs-Server", self.name)
            self.end_headers()
            chunk = b"x" * READ_CHUNK
            while n > 0:
                self.wfile.write(chunk[: min(n, READ_CHUNK)])
                n -= READ_CHUNK
            return
        self._send(self._get_body())

    def do_HEAD(self):
        self._send(self._get_body(), with_body=False)

    def _drain(self, n):
        """Reads and discards exactly n body bytes; returns how many arrived."""
        got = 0
        while got < n:
            chunk = self.rfile.read(min(READ_CHUNK, n - got))
            if not chunk:
                break
            got += len(chunk)
        return got

    def _read_chunked(self):
        """Reads a chunked body (RFC 9112 section 7.1); returns its length in bytes."""
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                return total
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailer section: header lines up to an empty line.
                while True:
                    line = self.rfile.readline(1024)
                    if not line or line in (b"\r\n", b"\n"):
                        return total
            total += self._drain(size)
            self.rfile.readline(1024)  # CRLF after the chunk data

    def do_POST(self):
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                received = self._read_chunked()
            else:
                received = self._drain(int(self.headers.get("Content-Length", "0")))
        except ValueError:
            self.send_error(400, "bad Content-Length or chunk size")
            return
        self._send(f"{self.name} {received}\n".encode())

    do_PUT = do_POST

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


def parse_args(argv):
    """NAME [PORT] [UDPPORT] plus any number of --also-http PORT, in any order."""
    positional, extra = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            usage()
        if a == "--also-http":
            if i + 1 >= len(argv):
                usage()
            extra.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--also-http="):
            extra.append(a.split("=", 1)[1])
            i += 1
            continue
        positional.append(a)
        i += 1
    if not positional or len(positional) > 3:
        usage()
    try:
        port = int(positional[1]) if len(positional) > 1 else 80
        udp_port = int(positional[2]) if len(positional) > 2 else 5353
        extra_ports = [int(p) for p in extra]
    except ValueError:
        usage()
    return positional[0], port, udp_port, extra_ports


def main():
    name, port, udp_port, extra_ports = parse_args(sys.argv[1:])

    reply = (name + "\n").encode()
    Handler.name = name
    Handler.body = reply
    servers = [HTTPServer(("0.0.0.0", p), Handler) for p in [port] + extra_ports]

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
    for srv in servers[1:]:
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
        t.start()
        threads.append(t)

    def on_signal(_signum, _frame):
        stop.set()
        # shutdown() blocks until serve_forever returns: not from its own thread.
        for srv in servers:
            threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    also = "".join(f" http :{p}" for p in extra_ports)
    sys.stderr.write(f"rs-http: {name} http :{port}{also} udp :{udp_port or 'off'}\n")
    sys.stderr.flush()
    servers[0].serve_forever(poll_interval=0.5)
    for t in threads:
        t.join(timeout=2)
    for srv in servers:
        srv.server_close()
    if udp is not None:
        udp.close()


if __name__ == "__main__":
    main()
