//! The health-check probes against real services, each test in a network namespace of its
//! own (so nothing touches the host's network): a thread unshares CLONE_NEWNET, brings its
//! `lo` up, and runs a current-thread tokio runtime with the servers and the probes on
//! 127.0.0.0/8. Needs root (CAP_SYS_ADMIN for unshare); skipped with a message otherwise.
//! Every wait is bounded: each test's runtime is stopped after 20 s.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use xvs::health::check::{genhash, genhash_digest, is_up, run, Outcome, UP};
use xvs::kconf::{
    CheckKind, Checker, DnsCheck, FileCheck, HttpCheck, Loc, MiscCheck, Script, SmtpCheck, Timing,
    UdpCheck, Url,
};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Runs `f` in a fresh network namespace with `lo` up, on a thread of its own.
fn in_netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: health check tests need root (a network namespace per test)");
        return;
    }
    let t = std::thread::spawn(move || {
        // SAFETY: unshare of the network namespace affects only this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        lo_up();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), f())
                .await
                .expect("test took more than 20 s")
        });
    });
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
}

/// `ip link set lo up`, with SIOCSIFFLAGS from this thread (so in its namespace).
fn lo_up() {
    // SAFETY: a zeroed ifreq named "lo" is valid for SIOCGIFFLAGS/SIOCSIFFLAGS on an open
    // datagram socket; the socket is closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut ifr), 0);
        libc::close(fd);
    }
}

/// Writes a sysctl of this thread's network namespace.
fn sysctl(path: &str, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

fn checker(kind: CheckKind, port: u16, timeout: Duration) -> Checker {
    Checker {
        loc: Loc::default(),
        kind,
        connect_ip: LO,
        connect_port: port,
        bindto: None,
        bind_port: None,
        alpha: false,
        timing: Timing {
            delay_loop: Duration::from_secs(6),
            connect_timeout: timeout,
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
            warmup: Duration::ZERO,
        },
    }
}

const T: Duration = Duration::from_millis(800);

fn down(o: &Outcome) -> &str {
    match o {
        Outcome::Down(s) => s,
        Outcome::Up { .. } => panic!("expected down, got {o:?}"),
    }
}

fn assert_down(o: &Outcome, needle: &str) {
    let msg = down(o);
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

/// A port nothing listens on (bound, then released).
async fn free_port() -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- TCP_CHECK

#[test]
fn tcp_check_up_refused_unreachable_and_bindto() {
    in_netns(|| async {
        let l = TcpListener::bind((LO, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let peers = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
        let p = peers.clone();
        tokio::spawn(async move {
            // Held open, so that the checker closes first (its side goes to TIME_WAIT).
            let mut held = Vec::new();
            while let Ok((s, peer)) = l.accept().await {
                p.lock().unwrap().push(peer);
                held.push(s);
            }
        });
        let mut c = checker(CheckKind::Tcp, port, T);
        assert_eq!(run(&c, 1).await, UP);

        c.bindto = Some(Ipv4Addr::new(127, 0, 0, 2));
        c.bind_port = Some(free_port().await);
        assert_eq!(run(&c, 1).await, UP);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The same local port again, while the first connection may be in TIME_WAIT.
        assert_eq!(run(&c, 1).await, UP);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let last = *peers.lock().unwrap().last().unwrap();
        assert_eq!(
            last,
            SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), c.bind_port.unwrap()))
        );

        // A bindto address that is not local: the bind error is the reason.
        c.bind_port = None;
        c.bindto = Some(Ipv4Addr::new(192, 0, 2, 1));
        assert_down(
            &run(&c, 1).await,
            "bind 192.0.2.1:0: Cannot assign requested address",
        );

        let c = checker(CheckKind::Tcp, free_port().await, T);
        assert_eq!(
            run(&c, 1).await,
            Outcome::Down("connect: Connection refused".into())
        );

        let mut c = checker(CheckKind::Tcp, 80, T);
        c.connect_ip = Ipv4Addr::new(10, 9, 9, 9);
        assert_down(&run(&c, 1).await, "connect: Network is unreachable");
    });
}

// ---------------------------------------------------------------- HTTP_GET / SSL_GET

#[derive(Clone)]
enum Reply {
    Bytes(Vec<u8>),
    /// Accept, read the request, never answer.
    Silent,
}

fn http_reply(status: &str, body: &[u8]) -> Reply {
    let mut r = format!(
        "HTTP/1.0 {status}\r\nServer: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    Reply::Bytes(r)
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reply: Reply,
    reqs: Arc<Mutex<Vec<String>>>,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    reqs.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&req).into_owned());
    match reply {
        Reply::Bytes(b) => {
            // Two writes, so that the client sees the header and body in pieces.
            let mid = b.len() / 2;
            let _ = s.write_all(&b[..mid]).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = s.write_all(&b[mid..]).await;
            let _ = s.shutdown().await;
        }
        Reply::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
    }
}

struct HttpServer {
    port: u16,
    reply: Arc<Mutex<Reply>>,
    reqs: Arc<Mutex<Vec<String>>>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

async fn http_server(tls: bool) -> HttpServer {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let reply = Arc::new(Mutex::new(http_reply("200 OK", b"hello\n")));
    let reqs = Arc::new(Mutex::new(Vec::new()));
    let sni = Arc::new(Mutex::new(Vec::new()));
    let acceptor = tls.then(|| tls_acceptor(sni.clone()));
    let (r, q) = (reply.clone(), reqs.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let reply = r.lock().unwrap().clone();
            let q = q.clone();
            match &acceptor {
                Some(a) => {
                    let a = a.clone();
                    tokio::spawn(async move {
                        if let Ok(s) = a.accept(s).await {
                            serve_http(s, reply, q).await;
                        }
                    });
                }
                None => {
                    tokio::spawn(serve_http(s, reply, q));
                }
            }
        }
    });
    HttpServer {
        port,
        reply,
        reqs,
        sni,
    }
}

fn http_check(tls: bool, path: &str, digest: Option<String>) -> HttpCheck {
    HttpCheck {
        tls,
        urls: vec![Url {
            path: path.into(),
            digest,
            status_codes: vec![],
            virtualhost: None,
            regex: None,
            regex_no_match: false,
        }],
        virtualhost: None,
        http_protocol: "1.0".into(),
        fast_recovery: false,
        enable_sni: false,
    }
}

async fn http_cases(tls: bool) {
    let srv = http_server(tls).await;
    let h = http_check(tls, "/health", Some(genhash_digest(b"hello\n")));
    let c = checker(CheckKind::Http(h.clone()), srv.port, T);
    assert_eq!(run(&c, 1).await, UP);
    assert_eq!(
        srv.reqs.lock().unwrap().last().unwrap(),
        &format!(
            "GET /health HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 127.0.0.1:{}\r\n\r\n",
            srv.port
        )
    );

    // What genhash prints for the page is what the check compares with.
    assert_eq!(
        genhash(&c).await,
        Ok((200, "b1946ac92492d2347c6235b4d2611184".to_string()))
    );

    *srv.reply.lock().unwrap() = http_reply("503 Service Unavailable", b"hello\n");
    assert_down(&run(&c, 1).await, "HTTP status 503");

    *srv.reply.lock().unwrap() = http_reply("200 OK", b"changed\n");
    assert_down(&run(&c, 1).await, "digest mismatch");

    // No digest configured: any body will do; status_code lists replace 200-299.
    let mut h2 = http_check(tls, "/", None);
    let c2 = checker(CheckKind::Http(h2.clone()), srv.port, T);
    assert_eq!(run(&c2, 1).await, UP);
    h2.urls[0].status_codes = vec![503..=503];
    *srv.reply.lock().unwrap() = http_reply("503 Service Unavailable", b"");
    let c3 = checker(CheckKind::Http(h2), srv.port, T);
    assert_eq!(run(&c3, 1).await, UP);

    // Several urls: all must pass; the failing one is named.
    *srv.reply.lock().unwrap() = http_reply("200 OK", b"hello\n");
    let mut hm = http_check(tls, "/a", None);
    hm.urls.push(Url {
        path: "/b".into(),
        digest: Some(genhash_digest(b"other")),
        ..hm.urls[0].clone()
    });
    let cm = checker(CheckKind::Http(hm), srv.port, T);
    assert_down(&run(&cm, 1).await, "digest mismatch");
    assert_down(&run(&cm, 1).await, "(url /b)");

    // Virtual host, HTTP/1.1: Host header and Connection: close.
    let mut hv = http_check(tls, "/", None);
    hv.virtualhost = Some("www.example.com".into());
    hv.http_protocol = "1.1".into();
    let cv = checker(CheckKind::Http(hv), srv.port, T);
    assert_eq!(run(&cv, 1).await, UP);
    let last = srv.reqs.lock().unwrap().last().unwrap().clone();
    assert!(last.starts_with("GET / HTTP/1.1\r\n"), "{last}");
    assert!(last.contains("\r\nConnection: close\r\n"), "{last}");
    assert!(last.contains("\r\nHost: www.example.com\r\n"), "{last}");

    // A server that accepts and never answers: the read times out.
    *srv.reply.lock().unwrap() = Reply::Silent;
    let t0 = std::time::Instant::now();
    let o = run(&c, 1).await;
    assert!(t0.elapsed() < T + Duration::from_millis(1500));
    assert_down(&o, "timeout after 800ms");

    // A server that closes without answering: no data.
    *srv.reply.lock().unwrap() = Reply::Bytes(vec![]);
    assert_down(&run(&c, 1).await, "no data received");

    // Not an HTTP answer.
    *srv.reply.lock().unwrap() = Reply::Bytes(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    assert_down(&run(&c, 1).await, "no complete HTTP header");
}

#[test]
fn http_get_status_digest_vhost_timeout() {
    in_netns(|| async {
        http_cases(false).await;
        let c = checker(
            CheckKind::Http(http_check(false, "/", None)),
            free_port().await,
            T,
        );
        assert_eq!(
            run(&c, 1).await,
            Outcome::Down("connect: Connection refused (url /)".into())
        );
    });
}

const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUZhUT7gqXy+z8jyvf1pPYCI8pjcEwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOcnMuZXhhbXBsZS5jb20wIBcNMjYxMjAxMjIxNjUxWhgPMjEy
NjExMDcyMjE2NTFaMBkxFzAVBgNVBAMMDnJzLmV4YW1wbGUuY29tMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEhcJL00sT8bHabw6KoTFMTv6D65APRSktTn0hWKul
JH6xc9+/3VDYuZ1a7kyubIcvb+TtH5SZib46Cgu6dNS2w6NTMFEwHQYDVR0OBBYE
FHIrFz5e6t+tjN3v5ID+FE254w9FMB8GA1UdIwQYMBaAFHIrFz5e6t+tjN3v5ID+
FE254w9FMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAJROUruD
4eekj+blHBGqiP1EHsH1+2QrprZP+xvHg9ThAiBXcGtTzoUv3YkhvwWh+Rpe7scW
Qac5z5C987LhJHxPnA==
-----END CERTIFICATE-----
";

const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcecSh0WAQkSm50iK
Kspk24WLYEtWCNloy16lSOw7qe2hRANCAASFwkvTSxPxsdpvDoqhMUxO/oPrkA9F
KS1OfSFYq6UkfrFz37/dUNi5nVruTK5shy9v5O0flJmJvjoKC7p01LbD
-----END PRIVATE KEY-----
";

/// Serves the self-signed certificate above (CN rs.example.com, made with
/// `openssl req -x509 -newkey ec`) and records the SNI of each handshake.
#[derive(Debug)]
struct RecordSni {
    key: Arc<rustls::sign::CertifiedKey>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl rustls::server::ResolvesServerCert for RecordSni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.seen
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_string));
        Some(self.key.clone())
    }
}

fn tls_acceptor(seen: Arc<Mutex<Vec<Option<String>>>>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let ck = Arc::new(rustls::sign::CertifiedKey::new(vec![cert], signer));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(RecordSni { key: ck, seen }));
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[test]
fn ssl_get_self_signed_sni_and_plain_server() {
    in_netns(|| async {
        // The self-signed certificate is accepted, as keepalived does not verify.
        http_cases(true).await;

        let srv = http_server(true).await;
        let mut h = http_check(true, "/", None);
        h.virtualhost = Some("www.example.com".into());
        let c = checker(CheckKind::Http(h.clone()), srv.port, T);
        assert_eq!(run(&c, 1).await, UP);
        h.enable_sni = true;
        let c = checker(CheckKind::Http(h), srv.port, T);
        assert_eq!(run(&c, 1).await, UP);
        assert_eq!(
            *srv.sni.lock().unwrap(),
            vec![None, Some("www.example.com".to_string())]
        );

        // A server that ends the TCP stream without TLS close_notify after its answer is
        // still up (check_ssl.c goes on to the response on SSL_ERROR_SYSCALL).
        let l = TcpListener::bind((LO, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let acceptor = tls_acceptor(Arc::new(Mutex::new(Vec::new())));
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = tls.flush().await;
                let _ = tls.get_mut().0.shutdown().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let h = http_check(true, "/", Some(genhash_digest(b"ok")));
        let c = checker(CheckKind::Http(h), port, T);
        assert_eq!(run(&c, 1).await, UP);

        // SSL_GET against a plain HTTP server: the handshake fails.
        let plain = http_server(false).await;
        let c = checker(CheckKind::Http(http_check(true, "/", None)), plain.port, T);
        assert_down(&run(&c, 1).await, "TLS handshake");
    });
}

// ---------------------------------------------------------------- UDP_CHECK

fn udp_check(require_reply: Option<Vec<u8>>) -> UdpCheck {
    UdpCheck {
        payload: b"ping".to_vec(),
        require_reply,
        min_reply_length: 0,
        max_reply_length: None,
    }
}

#[test]
fn udp_check_echo_silence_and_port_unreachable() {
    in_netns(|| async {
        let echo = UdpSocket::bind((LO, 0)).await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::<(Vec<u8>, SocketAddr)>::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                s2.lock().unwrap().push((buf[..n].to_vec(), from));
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        // A port that is bound and silent.
        let silent = UdpSocket::bind((LO, 0)).await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let closed_port = {
            let s = UdpSocket::bind((LO, 0)).await.unwrap();
            s.local_addr().unwrap().port()
        };
        let short = Duration::from_millis(300);

        let c = checker(
            CheckKind::Udp(udp_check(Some(b"pi".to_vec()))),
            echo_port,
            T,
        );
        assert_eq!(run(&c, 1).await, UP);
        let c = checker(
            CheckKind::Udp(udp_check(Some(b"pong".to_vec()))),
            echo_port,
            T,
        );
        assert_down(&run(&c, 1).await, "reply data mismatch");
        let mut u = udp_check(Some(b"ping".to_vec()));
        u.min_reply_length = 10;
        let c = checker(CheckKind::Udp(u), echo_port, T);
        assert_down(&run(&c, 1).await, "outside 10..=255");

        // No payload: keepalived's filler; bindto and bind_port applied.
        let mut u = udp_check(Some(vec![]));
        u.payload = vec![];
        let mut c = checker(CheckKind::Udp(u), echo_port, T);
        c.bindto = Some(Ipv4Addr::new(127, 0, 0, 3));
        c.bind_port = Some(40123);
        assert_eq!(run(&c, 1).await, UP);
        let (data, from) = seen.lock().unwrap().last().unwrap().clone();
        assert_eq!(data, b"keepalived check - keepalived ch");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 3], 40123)));

        // Silence: up without require_reply, down with it.
        let c = checker(CheckKind::Udp(udp_check(None)), silent_port, short);
        assert_eq!(run(&c, 1).await, UP);
        let c = checker(CheckKind::Udp(udp_check(Some(vec![]))), silent_port, short);
        assert_down(&run(&c, 1).await, "no reply: timeout after 300ms");

        // Nothing listens: ICMP port unreachable, with or without require_reply.
        let c = checker(CheckKind::Udp(udp_check(None)), closed_port, T);
        assert_eq!(
            run(&c, 1).await,
            Outcome::Down("ICMP port unreachable".into())
        );
        drop(silent);
    });
}

// ---------------------------------------------------------------- DNS_CHECK

#[test]
fn dns_check_noerror_nxdomain_ignored_replies_and_no_server() {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    in_netns(|| async {
        let sock = UdpSocket::bind((LO, 0)).await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let queries = Arc::new(Mutex::new(Vec::<Message>::new()));
        let q2 = queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q2.lock().unwrap().push(q.clone());
                let name = q.queries()[0].name().to_ascii();
                // First noise the checker must ignore: another id, and a query.
                let mut other = Message::new();
                other
                    .set_id(q.id().wrapping_add(1))
                    .set_message_type(MessageType::Response);
                let _ = sock.send_to(&other.to_vec().unwrap(), from).await;
                let mut echo = q.clone();
                echo.set_message_type(MessageType::Query);
                let _ = sock.send_to(&echo.to_vec().unwrap(), from).await;
                if name.starts_with("silent.") {
                    continue;
                }
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(q.queries().to_vec())
                    .set_response_code(if name.starts_with("nx.") {
                        ResponseCode::NXDomain
                    } else {
                        ResponseCode::NoError
                    });
                let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
            }
        });
        let dns = |name: &str, qtype: &str| {
            CheckKind::Dns(DnsCheck {
                qtype: qtype.into(),
                name: name.into(),
            })
        };
        let c = checker(dns(".", "SOA"), port, T);
        assert_eq!(run(&c, 1).await, UP);
        let c = checker(dns("www.example.com", "A"), port, T);
        assert_eq!(run(&c, 1).await, UP);
        {
            let q = queries.lock().unwrap();
            assert_eq!(q[0].queries()[0].name().to_ascii(), ".");
            assert_eq!(
                q[0].queries()[0].query_type(),
                hickory_proto::rr::RecordType::SOA
            );
            assert!(q[1].recursion_desired());
            assert_eq!(q[1].queries()[0].name().to_ascii(), "www.example.com.");
        }
        let c = checker(dns("nx.example.com", "A"), port, T);
        assert_down(&run(&c, 1).await, "DNS rcode 3");
        let c = checker(
            dns("silent.example.com", "A"),
            port,
            Duration::from_millis(300),
        );
        assert_down(&run(&c, 1).await, "DNS reply: timeout after 300ms");
        let c = checker(dns(".", "SOA"), free_port().await, T);
        assert_down(&run(&c, 1).await, "recv: Connection refused");
    });
}

// ---------------------------------------------------------------- SMTP_CHECK

#[derive(Clone, Copy)]
enum Smtp {
    Good,
    BadBanner,
    BadHelo,
    MultiLineBanner,
}

async fn smtp_server(mode: Smtp, lines: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = tokio::io::BufReader::new(r);
                let banner: &[u8] = match mode {
                    Smtp::BadBanner => b"554 go away\r\n",
                    Smtp::MultiLineBanner => b"220-mx.test ESMTP\r\n220 ready\r\n",
                    _ => b"220 mx.test ESMTP ready\r\n",
                };
                let _ = w.write_all(banner).await;
                let mut line = String::new();
                use tokio::io::AsyncBufReadExt;
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    lines.lock().unwrap().push(line.clone());
                    let answer: &[u8] = if line.starts_with("HELO") {
                        match mode {
                            Smtp::BadHelo => b"501 bad\r\n",
                            _ => b"250 mx.test\r\n",
                        }
                    } else if line.starts_with("QUIT") {
                        b"221 bye\r\n"
                    } else {
                        b"500 what\r\n"
                    };
                    let _ = w.write_all(answer).await;
                    if line.starts_with("QUIT") {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

#[test]
fn smtp_check_dialogue() {
    in_netns(|| async {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let port = smtp_server(Smtp::Good, lines.clone()).await;
        let c = checker(CheckKind::Smtp(SmtpCheck { helo_name: None }), port, T);
        assert_eq!(run(&c, 1).await, UP);
        assert_eq!(
            *lines.lock().unwrap(),
            vec!["HELO smtpchecker.keepalived.org\r\n", "QUIT\r\n"]
        );
        let c = checker(
            CheckKind::Smtp(SmtpCheck {
                helo_name: Some("director.example".into()),
            }),
            port,
            T,
        );
        assert_eq!(run(&c, 1).await, UP);
        assert_eq!(lines.lock().unwrap()[2], "HELO director.example\r\n");

        let x = Arc::new(Mutex::new(Vec::new()));
        for (mode, msg) in [
            (Smtp::BadBanner, "bad greeting banner: 554 go away"),
            (Smtp::MultiLineBanner, "bad greeting banner: 220-mx.test"),
            (Smtp::BadHelo, "bad HELO response: 501 bad"),
        ] {
            let port = smtp_server(mode, x.clone()).await;
            let c = checker(CheckKind::Smtp(SmtpCheck { helo_name: None }), port, T);
            assert_down(&run(&c, 1).await, msg);
        }
        // A TCP service that never speaks.
        let l = TcpListener::bind((LO, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let c = checker(CheckKind::Smtp(SmtpCheck { helo_name: None }), port, T);
        assert_down(&run(&c, 1).await, "banner: timeout after 800ms");
        drop(l);
    });
}

// ---------------------------------------------------------------- PING_CHECK

#[test]
fn ping_check_raw_dgram_and_no_reply() {
    in_netns(|| async {
        // The namespace's ping_group_range is "1 0": no SOCK_DGRAM ICMP, raw socket.
        let c = checker(CheckKind::Ping, 0, T);
        assert_eq!(run(&c, 1).await, UP);
        let mut b = c.clone();
        b.bindto = Some(Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(run(&b, 1).await, UP);
        // keepalived's unprivileged socket once the range includes our group.
        sysctl("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
        assert_eq!(run(&c, 1).await, UP);
        assert_eq!(run(&b, 1).await, UP);

        let mut u = c.clone();
        u.connect_ip = Ipv4Addr::new(10, 9, 9, 9);
        assert_down(&run(&u, 1).await, "send: Network is unreachable");

        sysctl("/proc/sys/net/ipv4/icmp_echo_ignore_all", "1");
        let mut q = c.clone();
        q.timing.connect_timeout = Duration::from_millis(300);
        assert_down(&run(&q, 1).await, "no echo reply: timeout after 300ms");
        sysctl("/proc/sys/net/ipv4/ping_group_range", "1 0");
        assert_down(&run(&q, 1).await, "no echo reply: timeout after 300ms");
    });
}

// ---------------------------------------------------------------- MISC_CHECK

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "xvs-hc-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn misc(argv: &[&str], timeout: Duration, dynamic: bool) -> Checker {
    checker(
        CheckKind::Misc(MiscCheck {
            script: Script {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                user: None,
                group: None,
                loc: Loc::default(),
            },
            timeout,
            dynamic,
        }),
        0,
        T,
    )
}

fn alive(pid: i32) -> bool {
    // A zombie (reparented, not yet reaped) counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn misc_check_exit_codes_dynamic_argv_and_timeouts() {
    in_netns(|| async {
        let d = TempDir::new("misc");
        let s = Duration::from_secs(5);
        let exit = d.script("exit.sh", "exit \"$1\"");
        assert_eq!(run(&misc(&[&exit, "0"], s, false), 9).await, UP);
        assert_eq!(
            run(&misc(&[&exit, "1"], s, false), 9).await,
            Outcome::Down("exited with status 1".into())
        );
        assert!(!is_up(&run(&misc(&[&exit, "7"], s, false), 9).await));
        assert_eq!(
            run(&misc(&[&exit, "0"], s, true), 9).await,
            Outcome::Up { weight: Some(9) }
        );
        assert!(!is_up(&run(&misc(&[&exit, "1"], s, true), 9).await));
        assert_eq!(
            run(&misc(&[&exit, "7"], s, true), 9).await,
            Outcome::Up { weight: Some(5) }
        );
        // The words are exec'd as they are: no shell expansion of the argument.
        let args = d.script("args.sh", "[ \"$1\" = 'a b$HOME' ] && [ $# -eq 1 ]");
        assert_eq!(run(&misc(&[&args, "a b$HOME"], s, false), 1).await, UP);
        // A shell as argv[0] runs a command line.
        assert_eq!(
            run(&misc(&["/bin/sh", "-c", "exit 3"], s, false), 1).await,
            Outcome::Down("exited with status 3".into())
        );
        assert_down(
            &run(&misc(&["/nonexistent/check"], s, false), 1).await,
            "exec /nonexistent/check: No such file or directory",
        );

        // keepalived's file test: `misc_path "</path"` passes while the file opens.
        let flag = d.0.join("up");
        let test = format!("<{}", flag.display());
        assert!(!is_up(&run(&misc(&[&test], s, false), 1).await));
        std::fs::write(&flag, "").unwrap();
        assert_eq!(run(&misc(&[&test], s, false), 1).await, UP);

        // `user USER [GROUP]`: the script runs as that user and group (numeric here, as
        // the names of uid/gid 65534 differ between distributions).
        let who = d.script("who.sh", "[ \"$(id -u):$(id -g)\" = \"$1\" ]");
        let mut as_nobody = misc(&[&who, "65534:65534"], s, false);
        if let CheckKind::Misc(m) = &mut as_nobody.kind {
            m.script.user = Some("65534".into());
            m.script.group = Some("65534".into());
        }
        assert_eq!(run(&as_nobody, 1).await, UP);
        if let CheckKind::Misc(m) = &mut as_nobody.kind {
            m.script.user = Some("no-such-user-xvs".into());
            m.script.group = None;
        }
        assert_down(&run(&as_nobody, 1).await, "no such user");

        // Timeout: SIGTERM to the group, which takes the script's children too.
        let pidfile = d.0.join("child.pid");
        let slow = d.script(
            "slow.sh",
            &format!("sleep 30 &\necho $! > {}\nwait", pidfile.display()),
        );
        let t0 = std::time::Instant::now();
        let o = run(&misc(&[&slow], Duration::from_millis(500), false), 1).await;
        assert_eq!(o, Outcome::Down("timeout after 500ms".into()));
        assert!(
            t0.elapsed() < Duration::from_millis(2200),
            "{:?}",
            t0.elapsed()
        );
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!alive(child), "the script's child {child} survived");

        // A script that ignores SIGTERM is killed 2 s later.
        let stubborn = d.script("stubborn.sh", "trap '' TERM\nwhile :; do sleep 0.1; done");
        let t0 = std::time::Instant::now();
        let o = run(&misc(&[&stubborn], Duration::from_millis(300), false), 1).await;
        assert_eq!(o, Outcome::Down("timeout after 300ms".into()));
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(2200) && e < Duration::from_millis(5000),
            "{e:?}"
        );
    });
}

// ---------------------------------------------------------------- FILE_CHECK

#[test]
fn file_check_values_weights_reverse() {
    in_netns(|| async {
        let d = TempDir::new("file");
        let path = d.0.join("weight");
        let fc = |weight, reverse| {
            checker(
                CheckKind::File(FileCheck {
                    name: "tf".into(),
                    path: path.clone(),
                    weight,
                    reverse,
                    init_value: None,
                    init_overwrite: false,
                }),
                0,
                T,
            )
        };
        // Missing file: value 0.
        assert_eq!(run(&fc(1, false), 5).await, Outcome::Up { weight: Some(5) });
        assert!(!is_up(&run(&fc(0, true), 5).await));
        std::fs::write(&path, "3\n").unwrap();
        assert_eq!(run(&fc(1, false), 5).await, Outcome::Up { weight: Some(8) });
        assert_eq!(run(&fc(2, true), 5).await, Outcome::Up { weight: Some(0) });
        assert_down(&run(&fc(0, false), 5).await, "track_file tf: value 3");
        assert_eq!(run(&fc(0, true), 5).await, Outcome::Up { weight: Some(5) });
        std::fs::write(&path, "-2147483648").unwrap();
        assert!(!is_up(&run(&fc(1, false), 5).await));
        std::fs::write(&path, "0x10 junk").unwrap();
        assert_eq!(
            run(&fc(1, false), 5).await,
            Outcome::Up { weight: Some(21) }
        );
        std::fs::write(&path, "99999999999").unwrap();
        assert_down(&run(&fc(1, false), 5).await, "invalid number");
    });
}
