//! The individual probes: given one resolved `kconf::Checker`, run one check and say up or
//! down. Scheduling, retries, alpha, quorum and notify scripts are the health engine's.
//!
//! Each probe reimplements what keepalived 2.2's checker of the same name sends and accepts
//! (`keepalived/check/check_*.c`, `keepalived/core/layer4.c`, `lib/html.c`,
//! `keepalived/trackers/track_file.c`, `lib/notify.c`; read at v2.2.7, the version Debian
//! ships, and at git 9cbce3e, where these behaviours are the same); the file of each probe
//! says which behaviour it matches and where it differs.
//!
//! Bounds: every socket-based check is bounded by `connect_timeout` (HTTP/SSL: per url, as
//! keepalived restarts its timer per url), MISC_CHECK by `misc_timeout` plus its kill grace,
//! FILE_CHECK does one bounded non-blocking read.
//!
//! For the engine:
//! - `run` needs a tokio runtime with IO and time enabled (`enable_all`: MISC_CHECK uses
//!   tokio::process, which needs the signal driver). Sockets and scripts are created from
//!   the thread polling the future, so they live in that thread's network namespace.
//! - Weights: keepalived keeps per checker an offset from the configured weight
//!   (`cur_weight`) and sets `effective = configured + Σ offsets`, clamped to
//!   0..=i32::MAX (ipwrapper.c `update_svr_wgt`, check_data.h `real_weight`). `Up { weight:
//!   Some(w) }` is that result for this checker alone (`w - base_weight` is its offset);
//!   with several weight-setting checkers on one server, sum the offsets. keepalived
//!   applies a weight change at once, even when the checker's up/down state is unchanged.
//! - FILE_CHECK has no retry in keepalived: a tracked file's change takes effect at once
//!   (check_file.c marks its checkers as run and clears alpha).

mod dns;
mod file;
mod http;
mod misc;
mod ping;
mod smtp;
mod tcp;
mod udp;

pub use file::file_status;
pub use http::{genhash, parse_content_length, parse_status_code, split_head, ResponseHead};
pub use misc::{misc_exit_outcome, MISC_KILL_GRACE};

use crate::kconf::{CheckKind, Checker};
use md5::{Digest, Md5};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The result of one check is the engine's `Outcome`: `Up { weight }` (`weight`: the
/// server's new absolute weight when the checker sets one, MISC_CHECK with `misc_dynamic`
/// and FILE_CHECK, else `None`) or `Down(reason)`, a short operator-readable reason
/// (`connect: Connection refused`, `HTTP status 503 (url /health)`, `timeout after 5s`).
pub use super::engine::Outcome;

/// Up, the weight unchanged.
pub const UP: Outcome = Outcome::Up { weight: None };

pub fn is_up(o: &Outcome) -> bool {
    matches!(o, Outcome::Up { .. })
}

/// Runs one check of `c` against `c.connect_ip:c.connect_port`, with `bindto`/`bind_port`
/// applied. `base_weight` is the real server's configured weight, the base that
/// `misc_dynamic` 0 and FILE_CHECK offsets refer to. Never panics on anything a server
/// sends, and always returns within the checker's bound.
pub async fn run(c: &Checker, base_weight: u32) -> Outcome {
    let limit = c.timing.connect_timeout;
    match &c.kind {
        // Their own bounds: misc_timeout + SIGTERM/SIGKILL grace; one non-blocking read.
        // keepalived runs a script for `misc_timeout`, or delay_loop when that is 0
        // (check_misc.c `misc_check_thread`).
        CheckKind::Misc(m) => misc::check(m, c.timing.delay_loop, base_weight).await,
        CheckKind::File(f) => file::check(f, base_weight),
        // HTTP/SSL: each url gets its own connect_timeout (keepalived connects once per
        // url); http::check bounds each url as below.
        CheckKind::Http(h) => http::check(c, h).await,
        kind => {
            let deadline = Instant::now() + limit;
            let probe = async {
                match kind {
                    CheckKind::Tcp => tcp::check(c, deadline).await,
                    // A silent UDP service is up unless require_reply: the probe owns its
                    // deadline and decides what reaching it means.
                    CheckKind::Udp(u) => udp::check(c, u, deadline).await,
                    CheckKind::Dns(d) => dns::check(c, d, deadline).await,
                    CheckKind::Ping => ping::check(c, deadline).await,
                    CheckKind::Smtp(s) => smtp::check(c, s, deadline).await,
                    _ => Outcome::Down("internal: unexpected checker kind".into()),
                }
            };
            bounded(deadline, limit, probe).await
        }
    }
}

/// `run` as the runner takes it (`health::runner::Prober`).
pub fn prober() -> super::runner::Prober {
    std::sync::Arc::new(|c, w| Box::pin(async move { run(&c, w).await }))
}

/// How much later than the probe's own deadline the safety net strikes, so that the
/// probe's message (which names the step that timed out) wins.
const SAFETY_MARGIN: Duration = Duration::from_millis(200);

/// The safety net around a probe that times its own steps against `deadline`.
pub(crate) async fn bounded<F: Future<Output = Outcome>>(
    deadline: Instant,
    limit: Duration,
    probe: F,
) -> Outcome {
    match tokio::time::timeout_at(deadline + SAFETY_MARGIN, probe).await {
        Ok(o) => o,
        Err(_) => Outcome::Down(format!("timeout after {}", fmt_dur(limit))),
    }
}

/// What keepalived's `genhash` prints for a page and what `url { digest }` is compared
/// with: the lower-case hex MD5 of the body bytes (check_http.c feeds the bytes after the
/// header's blank line, up to Content-Length when the header gives one, to MD5 and prints
/// each byte as `%02x`).
pub fn genhash_digest(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `5s`, `1.5s`, `250ms`: durations in messages.
pub(crate) fn fmt_dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// An io error as an operator reads it: `Connection refused`, without Rust's
/// ` (os error 111)` suffix.
pub(crate) fn io_msg(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Runs one step of a probe against the check's deadline: `Err("STEP: timeout after T")`
/// when the deadline passes, `T` being the checker's whole bound.
pub(crate) async fn step<T, F>(
    deadline: Instant,
    total: Duration,
    what: &str,
    fut: F,
) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: timeout after {}", fmt_dur(total))),
    }
}

/// The local address a checker binds to (`bindto`, `bind_port`), if any: keepalived binds
/// its socket to `co->bindto` (address and port) before connecting (layer4.c
/// `socket_bind_connect`). `bind_port` alone binds the wildcard address to that port.
pub(crate) fn bind_addr(c: &Checker) -> Option<SocketAddrV4> {
    match (c.bindto, c.bind_port) {
        (None, None) => None,
        (ip, port) => Some(SocketAddrV4::new(
            ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            port.unwrap_or(0),
        )),
    }
}

pub(crate) fn target(c: &Checker) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(c.connect_ip, c.connect_port))
}

/// A socket of `ty`/`proto` bound as the checker says (socket2, so that the bind happens
/// before connect, as in keepalived), non-blocking and close-on-exec.
pub(crate) fn bound_socket(
    c: &Checker,
    ty: socket2::Type,
    proto: Option<socket2::Protocol>,
) -> Result<socket2::Socket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, ty.cloexec(), proto)
        .map_err(|e| format!("socket: {}", io_msg(&e)))?;
    s.set_nonblocking(true)
        .map_err(|e| format!("socket: {}", io_msg(&e)))?;
    if ty == socket2::Type::STREAM && c.bind_port.is_some() {
        // A fixed local port must be free again at the next check: SO_REUSEADDR and an
        // abortive close (RST, no TIME_WAIT/FIN_WAIT on our side). keepalived does
        // neither; its bind then fails and it skips checks until the old connection's
        // state expires (layer4.c: "bind failed. Rescheduling").
        s.set_reuse_address(true)
            .and_then(|()| s.set_linger(Some(Duration::ZERO)))
            .map_err(|e| format!("socket: {}", io_msg(&e)))?;
    }
    if let Some(a) = bind_addr(c) {
        s.bind(&SocketAddr::V4(a).into())
            .map_err(|e| format!("bind {a}: {}", io_msg(&e)))?;
    }
    Ok(s)
}

/// A TCP connection to the checker's target, bound first, within the deadline.
/// keepalived's TCP connect (layer4.c) fails on refusal, unreachability and timeout alike.
pub(crate) async fn tcp_connect(
    c: &Checker,
    deadline: Instant,
    total: Duration,
) -> Result<TcpStream, String> {
    let s = bound_socket(c, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(s));
    step(deadline, total, "connect", async {
        sock.connect(target(c))
            .await
            .map_err(|e| format!("connect: {}", io_msg(&e)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_known_vectors() {
        // RFC 1321's test suite.
        assert_eq!(genhash_digest(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(genhash_digest(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            genhash_digest(b"message digest"),
            "f96b697d7cb7938d525a2f31aaf161d0"
        );
        // `printf 'hello\n' | md5sum`: what genhash prints for a page whose body is
        // "hello\n" (genhash-test.sh compares genhash's output with md5sum of the file).
        assert_eq!(
            genhash_digest(b"hello\n"),
            "b1946ac92492d2347c6235b4d2611184"
        );
    }

    #[test]
    fn prober_runs_the_probes() {
        // Also a compile-time check that `run`'s future is Send, as the runner needs.
        let p = prober();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = Checker {
            loc: Default::default(),
            kind: CheckKind::File(crate::kconf::FileCheck {
                name: "t".into(),
                path: "/nonexistent/xvs".into(),
                weight: 1,
                reverse: false,
                init_value: None,
                init_overwrite: false,
            }),
            connect_ip: Ipv4Addr::LOCALHOST,
            connect_port: 0,
            bindto: None,
            bind_port: None,
            alpha: false,
            timing: crate::kconf::Timing {
                delay_loop: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                retry: 1,
                delay_before_retry: Duration::from_secs(1),
                warmup: Duration::ZERO,
            },
        };
        assert_eq!(rt.block_on(p(c, 4)), Outcome::Up { weight: Some(4) });
    }

    #[test]
    fn durations_and_errors_read_well() {
        assert_eq!(fmt_dur(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_dur(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_dur(Duration::from_millis(1500)), "1.5s");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_msg(&e), "Connection refused");
    }
}
