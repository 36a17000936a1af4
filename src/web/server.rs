//! A small HTTP/1.1 server on std threads: an accept thread and one thread per
//! connection, at most `Limits::max_conns` at a time and `Limits::max_per_ip` from one
//! client address, so one client (a scanner, a slowloris) cannot take every slot from
//! Prometheus. Each request has a deadline for its head (`header_timeout`, however the
//! bytes trickle in) and its response (`write_timeout`); a connection idle past
//! `idle_timeout` between keep-alive requests is closed. Only GET and HEAD, no request
//! bodies, heads of at most `max_head` bytes.
//!
//! These threads are control threads: xvsd starts the listener after it has moved its
//! control threads off the workers' cores, and the handlers only copy counters (see
//! `Sample::take`), so nothing here can slow the data path down beyond a scrape's copy.

use super::{HttpResponse, WebCtx};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; beyond it a new connection gets a 503 and is closed.
    pub max_conns: usize,
    /// Connections served at once from one client address.
    pub max_per_ip: usize,
    /// Bytes of a request head (request line and headers).
    pub max_head: usize,
    /// Time to receive a request head, from its first byte wait on.
    pub header_timeout: Duration,
    /// Time to send one response.
    pub write_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 32,
            max_per_ip: 8,
            max_head: 8192,
            header_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            max_requests: 100,
        }
    }
}

/// The request handler: a GET or HEAD → response. `web::route` in production; tests
/// pass their own.
pub type Handler = dyn Fn(&Request) -> HttpResponse + Send + Sync;

/// Binds `addr`. Done before xvsd attaches anything, so a bad or taken address stops it at
/// start with the address in the message.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("--web-listen {addr}: binding"))
}

/// Serves `listener` on a thread of its own with the production router.
pub fn start(listener: TcpListener, ctx: WebCtx) -> Result<()> {
    super::page::start(&ctx);
    let handler: Arc<Handler> = Arc::new(move |req: &Request| super::route(req, &ctx));
    spawn(listener, handler, Limits::default())
}

/// Serves `listener` with `handler` on a thread of its own.
pub fn spawn(listener: TcpListener, handler: Arc<Handler>, limits: Limits) -> Result<()> {
    std::thread::Builder::new()
        .name("xvs-web".into())
        .spawn(move || serve(listener, handler, limits))
        .context("spawning the web listener thread")?;
    Ok(())
}

/// Connection slots: the total and per client address.
#[derive(Default)]
struct Slots {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Frees a slot when a connection's thread ends, however it ends.
struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    ip: IpAddr,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

fn serve(listener: TcpListener, handler: Arc<Handler>, limits: Limits) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    for conn in listener.incoming() {
        let Ok(stream) = conn else {
            // EMFILE and the like: do not spin on a listener that keeps failing.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let ip = peer.ip();
        let admitted = {
            let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
            let mine = s.per_ip.get(&ip).copied().unwrap_or(0);
            if s.total < limits.max_conns && mine < limits.max_per_ip {
                s.total += 1;
                *s.per_ip.entry(ip).or_insert(0) += 1;
                true
            } else {
                false
            }
        };
        if !admitted {
            refuse(stream);
            continue;
        }
        let guard = SlotGuard {
            slots: slots.clone(),
            ip,
        };
        let handler = handler.clone();
        let spawned = std::thread::Builder::new()
            .name("xvs-web-conn".into())
            .spawn(move || {
                let _guard = guard;
                connection(stream, &*handler, &limits);
            });
        if let Err(e) = spawned {
            tracing::warn!("web listener: spawning a connection thread: {e}");
        }
    }
}

/// Answers a connection beyond the limits with a 503 without reading it, never waiting
/// on the client for more than a moment (the accept loop runs this).
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let r = HttpResponse::text(503, "too many connections\n");
    let _ = stream.write_all(&head(&r, r.body.len(), false));
    let _ = stream.write_all(&r.body);
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target without its query string.
    pub path: String,
    /// HTTP/1.1 without `Connection: close` (or 1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// A request body is announced (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
    /// The `Accept` header, empty when absent (`/metrics` negotiates its format).
    pub accept: String,
}

/// Why a head was refused; each has its status.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400
    Bad,
    /// 505
    Version,
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Bad)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or(HeadError::Bad)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Bad);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Bad),
    };
    if !target.starts_with('/') {
        return Err(HeadError::Bad);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    let mut keep_alive = http11;
    let mut has_body = false;
    let mut accept = String::new();
    for h in lines {
        if h.is_empty() {
            continue;
        }
        let (name, value) = h.split_once(':').ok_or(HeadError::Bad)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().map_err(|_| HeadError::Bad)?;
            has_body |= n > 0;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if name.eq_ignore_ascii_case("accept") {
            accept = value.to_string();
        }
    }
    Ok(Request {
        method: method.to_string(),
        path,
        keep_alive,
        has_body,
        accept,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The status line and headers of `r`, announcing `len` body bytes.
fn head(r: &HttpResponse, len: usize, keep_alive: bool) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (n, v) in &r.headers {
        h.push_str(n);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// What reading a request head produced.
enum Read1 {
    Head(Vec<u8>),
    /// The client closed (or went idle past the timeout) between requests: no answer due.
    Gone,
    TooLarge,
    TimedOut,
}

/// Reads one request head into `buf` (which may already hold bytes of it, pipelined
/// after the previous request), within `limits`. Leaves what follows the head in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, limits: &Limits) -> Read1 {
    let idle_deadline = Instant::now() + limits.idle_timeout;
    let mut head_deadline: Option<Instant> = None;
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_head_end(buf) {
            let rest = buf.split_off(end);
            let head = std::mem::replace(buf, rest);
            return Read1::Head(head);
        }
        if buf.len() >= limits.max_head {
            return Read1::TooLarge;
        }
        if !buf.is_empty() && head_deadline.is_none() {
            head_deadline = Some(Instant::now() + limits.header_timeout);
        }
        // Before the first byte the idle timeout applies, after it the header deadline:
        // each read gets only the time left, so a client trickling a byte at a time
        // cannot stretch the head past it.
        let deadline = head_deadline.unwrap_or(idle_deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return if head_deadline.is_some() {
                Read1::TimedOut
            } else {
                Read1::Gone
            };
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return Read1::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Read1::Gone,
        }
    }
}

/// The offset just past the blank line ending a head, if `buf` holds one.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Writes all of `data` before `deadline`.
fn write_by(stream: &mut TcpStream, data: &[u8], deadline: Instant) -> bool {
    let mut off = 0;
    while off < data.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Closes a connection the server ends (an error answer, `Connection: close`) without
/// losing the answer: closing a socket with unread input makes the kernel send a RST,
/// which can discard the response the client has not read yet. So the write side is shut
/// first and what the client still sends is read and thrown away, briefly and boundedly.
fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 2048];
    let mut total = 0usize;
    while total < 64 * 1024 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Serves one connection until it closes, errs, times out or reaches `max_requests`.
fn connection(mut stream: TcpStream, handler: &Handler, limits: &Limits) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    for served in 1..=limits.max_requests {
        let (resp, keep_alive, is_head) = match read_head(&mut stream, &mut buf, limits) {
            Read1::Gone => return,
            Read1::TimedOut => (HttpResponse::text(408, "request timeout\n"), false, false),
            Read1::TooLarge => (
                HttpResponse::text(431, "request head too large\n"),
                false,
                false,
            ),
            Read1::Head(h) => match parse_head(&h) {
                Err(HeadError::Bad) => (HttpResponse::text(400, "bad request\n"), false, false),
                Err(HeadError::Version) => (
                    HttpResponse::text(505, "HTTP/1.0 or HTTP/1.1 only\n"),
                    false,
                    false,
                ),
                // A body would have to be read and thrown away; no endpoint takes one.
                Ok(req) if req.has_body => (
                    HttpResponse::text(413, "no request body accepted\n"),
                    false,
                    false,
                ),
                Ok(req) if req.method != "GET" && req.method != "HEAD" => {
                    let mut r = HttpResponse::text(405, "method not allowed (GET or HEAD)\n");
                    r.headers.push(("Allow".into(), "GET, HEAD".into()));
                    (r, req.keep_alive, false)
                }
                Ok(req) => (
                    handler(&req),
                    req.keep_alive && served < limits.max_requests,
                    req.method == "HEAD",
                ),
            },
        };
        let deadline = Instant::now() + limits.write_timeout;
        let mut out = head(&resp, resp.body.len(), keep_alive);
        if !is_head {
            out.extend_from_slice(&resp.body);
        }
        if !write_by(&mut stream, &out, deadline) {
            return;
        }
        if !keep_alive {
            linger(stream);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A listener on 127.0.0.1 with a handler answering "ok" on /metrics, 404 elsewhere.
    fn listen(limits: Limits) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h: Arc<Handler> = Arc::new(|r: &Request| match r.path.as_str() {
            "/metrics" => HttpResponse::text(200, "ok\n"),
            _ => super::super::not_found(),
        });
        spawn(l, h, limits).unwrap();
        addr
    }

    fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&src.parse::<SocketAddr>().unwrap().into()).unwrap();
        s.connect(&addr.into()).unwrap();
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends `req` and reads one response: (status, headers, body).
    fn exchange(s: &mut TcpStream, req: &str) -> (u16, Vec<String>, String) {
        s.write_all(req.as_bytes()).unwrap();
        read_response(s)
    }

    fn read_response(s: &mut TcpStream) -> (u16, Vec<String>, String) {
        read_response_of(s, false)
    }

    /// `head_only`: the answer to a HEAD (headers announce a body that is not sent).
    fn read_response_of(s: &mut TcpStream, head_only: bool) -> (u16, Vec<String>, String) {
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap_or("0").parse().unwrap();
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                if !head_only {
                    len = v.parse().unwrap();
                }
            }
            headers.push(h);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }

    #[test]
    fn parses_heads() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.path, "/metrics");
        assert!(r.keep_alive && !r.has_body);
        let r = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert!(r.has_body);
        assert_eq!(parse_head(b"GET /\r\n\r\n"), Err(HeadError::Bad));
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Version)
        );
        assert_eq!(parse_head(b"GET x HTTP/1.1\r\n\r\n"), Err(HeadError::Bad));
        assert_eq!(parse_head(b"get / HTTP/1.1\r\n\r\n"), Err(HeadError::Bad));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nbroken\r\n\r\n"),
            Err(HeadError::Bad)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\xff\r\n\r\n"),
            Err(HeadError::Bad)
        );
    }

    #[test]
    fn answers_get_head_404_405_and_keeps_alive() {
        let addr = listen(Limits::default());
        let mut s = connect_from("127.0.0.1:0", addr);
        let (st, _, body) = exchange(&mut s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((st, body.as_str()), (200, "ok\n"));
        // Same connection: keep-alive.
        let (st, _, _) = exchange(&mut s, "GET /nope HTTP/1.1\r\n\r\n");
        assert_eq!(st, 404);
        s.write_all(b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
        let (st, h, _) = read_response_of(&mut s, true);
        assert_eq!(st, 200);
        assert!(h.contains(&"Content-Length: 3".to_string()), "{h:?}");
        // No body followed: the next answer starts right after the head.
        let (st, h, _) = exchange(&mut s, "DELETE /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(st, 405);
        assert!(h.contains(&"Allow: GET, HEAD".to_string()), "{h:?}");
        // A body is refused and the connection closed.
        let (st, h, _) = exchange(
            &mut s,
            "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
        );
        assert_eq!(st, 413);
        assert!(h.contains(&"Connection: close".to_string()));
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn oversized_and_garbage_heads_are_refused() {
        let addr = listen(Limits::default());
        let mut s = connect_from("127.0.0.1:0", addr);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let (st, _, _) = exchange(&mut s, &big);
        assert_eq!(st, 431);
        let mut s = connect_from("127.0.0.1:0", addr);
        let (st, _, _) = exchange(&mut s, "\x16\x03\x01garbage\r\n\r\n");
        assert_eq!(st, 400);
    }

    #[test]
    fn a_trickling_head_times_out() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let addr = listen(limits);
        let mut s = connect_from("127.0.0.1:0", addr);
        let t = Instant::now();
        // One byte every 50 ms for 1 s, three times the deadline: each read succeeds, the
        // head never completes. A per-read timeout would never fire.
        for b in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n".iter().take(20) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(read_response(&mut s).0, 408);
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn idle_clients_do_not_block_a_scrape_and_cannot_take_every_slot() {
        let limits = Limits {
            max_conns: 12,
            max_per_ip: 4,
            ..Limits::default()
        };
        let addr = listen(limits);
        // A hostile client opens many connections from one address and sends nothing.
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(connect_from("127.0.0.3:0", addr));
        }
        // Beyond its share it is told 503 at once.
        let mut refused = 0;
        for s in idle.iter_mut().skip(4) {
            if read_response(s).0 == 503 {
                refused += 1;
            }
        }
        assert_eq!(refused, 6);
        // A scrape from another address is served at once meanwhile.
        let t = Instant::now();
        let mut s = connect_from("127.0.0.1:0", addr);
        let (st, _, body) = exchange(&mut s, "GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!((st, body.as_str()), (200, "ok\n"));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Slots come back when connections close.
        drop(idle);
        let mut ok = false;
        for _ in 0..50 {
            let mut s = connect_from("127.0.0.3:0", addr);
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            if read_response(&mut s).0 == 200 {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ok, "the client's slots were not released");
    }
}
