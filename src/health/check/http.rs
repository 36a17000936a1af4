//! HTTP_GET and SSL_GET (keepalived/check/check_http.c, check_ssl.c, lib/html.c).
//!
//! What keepalived does, and this probe with it, for each `url`:
//! - connects (bound as configured), for SSL_GET runs a TLS handshake **without verifying
//!   the certificate** (keepalived's SSL_CTX has no `SSL_VERIFY_PEER` unless a CA file is
//!   configured, which kconf does not model), sending SNI only with `enable_sni`;
//! - writes `GET PATH HTTP/1.0` (or 1.1 per `http_protocol`), `User-Agent: KeepAliveClient`,
//!   `Connection: close` for `1.0C`/`1.1`, and `Host: VHOST` or `Host: IP:PORT`;
//! - reads to end of stream, splits the header at the first `\r\n\r\n`, takes the status
//!   code as `extract_status_code` does and `Content-Length:` as `extract_content_length`
//!   does (case-sensitive, digits followed by end of line, else "no length");
//! - MD5s the body bytes (up to Content-Length if given, no chunked decoding: keepalived
//!   hashes the bytes as sent, and so does genhash, whose output operators paste into
//!   `digest`);
//! - fails on: no complete header ("no data"), a status outside `status_code` (default
//!   200-299), a digest mismatch, a regex (non-)match; a read error on a plain connection
//!   fails too, while on TLS a read error just ends the stream (check_ssl.c
//!   `ssl_read_thread` goes on to the response on SSL_ERROR_SYSCALL/SSL_ERROR_SSL).
//!
//! Differences: all urls are checked in one run (keepalived checks one url per delay_loop,
//! moving to the next after a success); each url has one deadline of connect_timeout for
//! the whole exchange (keepalived restarts the timer at each read); the header may be up
//! to 64 KiB (keepalived's buffer is 4 KiB); `regex` is not supported yet (no regex crate
//! in the dependencies): a url with a regex fails with a message saying so.

use super::{io_msg, step, tcp_connect, Outcome, UP};
use crate::kconf::{Checker, HttpCheck, Url};
use md5::{Digest, Md5};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The most header bytes kept while looking for the blank line.
const MAX_HEAD: usize = 64 * 1024;

/// check_http.h HTTP_STATUS_CODE_MIN/MAX: codes outside are never accepted.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

pub(super) async fn check(c: &Checker, h: &HttpCheck) -> Outcome {
    // keepalived enables a checker with no url without checking (http_connect_thread).
    for url in &h.urls {
        let limit = c.timing.connect_timeout;
        let deadline = Instant::now() + limit;
        let probe = async {
            match check_url(c, h, url, deadline).await {
                Ok(()) => UP,
                Err(e) => Outcome::Down(e),
            }
        };
        if let Outcome::Down(e) = super::bounded(deadline, limit, probe).await {
            return Outcome::Down(format!("{e} (url {})", url.path));
        }
    }
    UP
}

/// The Host header value and, for SSL_GET, the SNI name: check_http.c `http_request` uses
/// the url's virtualhost, else the checker's (kconf folds the real and virtual server's
/// into it), else `IP:PORT`; check_ssl.c `ssl_connect` sends SNI from the same names when
/// `enable_sni` is set, and none otherwise.
fn vhost<'a>(h: &'a HttpCheck, url: &'a Url) -> Option<&'a str> {
    url.virtualhost.as_deref().or(h.virtualhost.as_deref())
}

/// The request keepalived writes (check_http.c `request_template`).
pub(crate) fn request(c: &Checker, h: &HttpCheck, url: &Url) -> String {
    let (minor, close) = match h.http_protocol.as_str() {
        "1.1" => (1, true),
        "1.0C" | "1.0c" => (0, true),
        _ => (0, false),
    };
    let host = match vhost(h, url) {
        Some(v) => v.to_string(),
        None => format!("{}:{}", c.connect_ip, c.connect_port),
    };
    format!(
        "GET {} HTTP/1.{minor}\r\nUser-Agent: KeepAliveClient\r\n{}Host: {host}\r\n\r\n",
        url.path,
        if close { "Connection: close\r\n" } else { "" },
    )
}

async fn check_url(c: &Checker, h: &HttpCheck, url: &Url, deadline: Instant) -> Result<(), String> {
    fetch(c, h, url, url.digest.is_some(), deadline)
        .await?
        .verdict(url)
}

/// Connects, sends the url's request and reads the response to its end.
async fn fetch(
    c: &Checker,
    h: &HttpCheck,
    url: &Url,
    digest: bool,
    deadline: Instant,
) -> Result<Response, String> {
    let total = c.timing.connect_timeout;
    let tcp = tcp_connect(c, deadline, total).await?;
    let req = request(c, h, url);
    let mut resp = Response::with_regex(digest, url.regex.is_some());
    if h.tls {
        let name = match vhost(h, url).filter(|_| h.enable_sni) {
            Some(v) => ServerName::try_from(v.to_string())
                .unwrap_or(ServerName::IpAddress(c.connect_ip.into())),
            // An IP server name makes rustls send no SNI, as keepalived without enable_sni.
            None => ServerName::IpAddress(c.connect_ip.into()),
        };
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = step(deadline, total, "TLS handshake", async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {}", io_msg(&e)))
        })
        .await?;
        exchange(tls, &req, &mut resp, true, deadline, total).await?;
    } else {
        exchange(tcp, &req, &mut resp, false, deadline, total).await?;
    }
    Ok(resp)
}

/// What `genhash` prints for the first url of an HTTP_GET/SSL_GET checker: the status
/// code and the digest of the page, fetched as the checker fetches it (same request, TLS,
/// SNI, bound like the check, within connect_timeout). For an operator tool
/// (`keepalived --genhash`); a status outside the url's codes is not an error here.
pub async fn genhash(c: &Checker) -> Result<(u16, String), String> {
    let crate::kconf::CheckKind::Http(h) = &c.kind else {
        return Err("genhash needs an HTTP_GET or SSL_GET checker".into());
    };
    let Some(url) = h.urls.first() else {
        return Err("genhash needs a url".into());
    };
    let limit = c.timing.connect_timeout;
    let deadline = Instant::now() + limit;
    let r = tokio::time::timeout_at(
        deadline + std::time::Duration::from_millis(200),
        fetch(c, h, url, true, deadline),
    )
    .await
    .map_err(|_| format!("timeout after {}", super::fmt_dur(limit)))??;
    match (r.head, r.md5) {
        (Some(head), Some(m)) => Ok((head.status, super::hex(&m.finalize()))),
        // check_http.c in genhash mode: "no data received from remote webserver".
        _ => Err("no data received from remote webserver".into()),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &str,
    resp: &mut Response,
    tls: bool,
    deadline: Instant,
    total: std::time::Duration,
) -> Result<(), String> {
    step(deadline, total, "send", async {
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {}", io_msg(&e)))?;
        s.flush().await.map_err(|e| format!("send: {}", io_msg(&e)))
    })
    .await?;
    step(deadline, total, "read", async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => resp.feed(&buf[..n])?,
                Err(_) if tls => return Ok(()),
                Err(e) => return Err(format!("read: {}", io_msg(&e))),
            }
        }
    })
    .await
}

/// A response as it streams in: the header kept until its end is found, then the body
/// hashed (and counted) without being kept.
/// How much of a response a `regex` is matched against.
const REGEX_KEEP: usize = 1 << 20;

pub(crate) struct Response {
    /// With a `regex`: the response as received, up to `REGEX_KEEP` bytes.
    kept: Option<Vec<u8>>,
    head_buf: Vec<u8>,
    head: Option<ResponseHead>,
    md5: Option<Md5>,
    body_bytes: u64,
}

/// What keepalived reads from a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 0 when the status line does not parse (keepalived's value then).
    pub status: u16,
    /// `Content-Length:` as keepalived reads it; `None` = read to end of stream.
    pub content_length: Option<u64>,
}

impl Response {
    pub(crate) fn with_regex(digest: bool, regex: bool) -> Self {
        Response {
            kept: regex.then(Vec::new),
            head_buf: Vec::new(),
            head: None,
            md5: digest.then(Md5::new),
            body_bytes: 0,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if let Some(k) = self.kept.as_mut() {
            let room = REGEX_KEEP.saturating_sub(k.len());
            k.extend_from_slice(&data[..room.min(data.len())]);
        }
        if self.head.is_some() {
            self.body(data);
            return Ok(());
        }
        // The blank line may straddle reads: look again from 3 bytes before the new data.
        let from = self.head_buf.len().saturating_sub(3);
        self.head_buf.extend_from_slice(data);
        match split_head(&self.head_buf[from..]) {
            Some(end) => {
                let end = from + end;
                let head = &self.head_buf[..end];
                self.head = Some(ResponseHead {
                    status: parse_status_code(head),
                    content_length: parse_content_length(head),
                });
                let rest = self.head_buf.split_off(end);
                self.body(&rest);
                Ok(())
            }
            None if self.head_buf.len() > MAX_HEAD => Err(format!(
                "no end of HTTP header in the first {} bytes",
                MAX_HEAD
            )),
            None => Ok(()),
        }
    }

    fn body(&mut self, data: &[u8]) {
        // check_http.c `http_process_response`: only the first Content-Length bytes go to
        // MD5 when the header gives a length.
        let take = match self.head.and_then(|h| h.content_length) {
            Some(len) => len.saturating_sub(self.body_bytes).min(data.len() as u64) as usize,
            None => data.len(),
        };
        if let Some(m) = self.md5.as_mut() {
            m.update(&data[..take]);
        }
        self.body_bytes += data.len() as u64;
    }

    /// The url's verdict once the stream has ended (check_http.c `http_handle_response`).
    pub(crate) fn verdict(self, url: &Url) -> Result<(), String> {
        let Some(head) = self.head else {
            return Err(if self.head_buf.is_empty() {
                "no data received".into()
            } else {
                "no complete HTTP header received".into()
            });
        };
        if !status_ok(url, head.status) {
            return Err(if head.status == 0 {
                "no HTTP status code in the response".into()
            } else {
                format!("HTTP status {}", head.status)
            });
        }
        if let (Some(want), Some(m)) = (url.digest.as_deref(), self.md5) {
            let got = super::hex(&m.finalize());
            if !got.eq_ignore_ascii_case(want.trim()) {
                return Err(format!("digest mismatch (got {got})"));
            }
        }
        if let Some(p) = url.regex.as_deref() {
            let re = regex::bytes::Regex::new(p).map_err(|e| format!("bad regex {p:?}: {e}"))?;
            let matched = re.is_match(self.kept.as_deref().unwrap_or_default());
            if matched == url.regex_no_match {
                return Err(if matched {
                    format!("regex {p:?} matched (regex_no_match)")
                } else {
                    format!("regex {p:?} did not match")
                });
            }
        }
        Ok(())
    }
}

fn status_ok(url: &Url, status: u16) -> bool {
    if !(STATUS_MIN..=STATUS_MAX).contains(&status) {
        return false;
    }
    if url.status_codes.is_empty() {
        (200..=299).contains(&status)
    } else {
        url.status_codes.iter().any(|r| r.contains(&status))
    }
}

/// The length of the header including its blank line (lib/html.c `extract_html`: the
/// first `\r\n\r\n`), or `None` if it has not ended yet.
pub fn split_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// lib/html.c `extract_status_code`: after the first space of the status line, exactly
/// three digits followed by a space (`HTTP/1.1 200 OK`); anything else is 0.
pub fn parse_status_code(head: &[u8]) -> u16 {
    let Some(sp) = head.iter().position(|&b| b == b' ' || b == b'\r') else {
        return 0;
    };
    if head[sp] != b' ' {
        return 0;
    }
    let rest = &head[sp + 1..];
    // keepalived wants a fourth byte after the code and no space in front of it.
    if rest.len() <= 4 || rest[3] != b' ' || !rest[..3].iter().all(u8::is_ascii_digit) {
        return 0;
    }
    rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
}

/// lib/html.c `extract_content_length`: the first `Content-Length:` (case as written),
/// optional blanks, digits, then end of line; anything else means no length.
pub fn parse_content_length(head: &[u8]) -> Option<u64> {
    const TAG: &[u8] = b"Content-Length:";
    let at = head.windows(TAG.len()).position(|w| w == TAG)? + TAG.len();
    let mut rest = &head[at..];
    // strtoul skips leading white space (and takes one sign, which no server sends).
    while let [b' ' | b'\t', tail @ ..] = rest {
        rest = tail;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    match rest.get(digits) {
        None | Some(b'\r') | Some(b'\n') => {}
        Some(_) => return None,
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The TLS client configuration for SSL_GET, built once. An error (none is expected with
/// the ring provider) fails each SSL_GET check with its text instead of panicking.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyServerCert(provider.clone()));
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| format!("TLS setup: {e}"))
        })
        .clone()
}

/// Accepts any server certificate, as keepalived's SSL_GET does: its SSL context is built
/// without `SSL_VERIFY_PEER` (check_ssl.c `build_ssl_ctx`), so self-signed, expired or
/// wrongly-named certificates of real servers pass, and the check tests that the service
/// speaks TLS and answers. The handshake signature is still verified (OpenSSL always does
/// that), which proves the server holds the key of the certificate it presented.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::check::genhash_digest;

    fn url(digest: Option<&str>, codes: Vec<std::ops::RangeInclusive<u16>>) -> Url {
        Url {
            path: "/".into(),
            digest: digest.map(str::to_string),
            status_codes: codes,
            virtualhost: None,
            regex: None,
            regex_no_match: false,
        }
    }

    fn respond(parts: &[&[u8]], u: &Url) -> Result<(), String> {
        let mut r = Response::with_regex(u.digest.is_some(), u.regex.is_some());
        for p in parts {
            r.feed(p)?;
        }
        r.verdict(u)
    }

    #[test]
    fn regex_and_regex_no_match() {
        let mut u = url(None, vec![]);
        u.regex = Some("st[a-z]+ ok".into());
        let ok: &[&[u8]] = &[b"HTTP/1.0 200 OK\r\n\r\nstatus ", b"ok\n"];
        assert_eq!(respond(ok, &u), Ok(()));
        let bad: &[&[u8]] = &[b"HTTP/1.0 200 OK\r\n\r\nstatus: degraded\n"];
        assert!(respond(bad, &u).unwrap_err().contains("did not match"));
        u.regex_no_match = true;
        assert_eq!(respond(bad, &u), Ok(()));
        assert!(respond(ok, &u).unwrap_err().contains("matched"));
    }

    #[test]
    fn status_code_as_keepalived_reads_it() {
        assert_eq!(parse_status_code(b"HTTP/1.1 200 OK\r\n\r\n"), 200);
        assert_eq!(
            parse_status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            503
        );
        // keepalived wants a space after the code, even with an empty reason phrase.
        assert_eq!(parse_status_code(b"HTTP/1.1 200\r\n\r\n"), 0);
        assert_eq!(parse_status_code(b"HTTP/1.1 200 \r\n\r\n"), 200);
        assert_eq!(parse_status_code(b"HTTP/1.1  200 OK\r\n"), 0);
        assert_eq!(parse_status_code(b"HTTP/1.1 20x OK\r\n"), 0);
        assert_eq!(parse_status_code(b"garbage\r\n\r\n"), 0);
        assert_eq!(parse_status_code(b""), 0);
        assert_eq!(parse_status_code(b"HTTP/1.1 2"), 0);
    }

    #[test]
    fn content_length_as_keepalived_reads_it() {
        let h = b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(parse_content_length(h), Some(12));
        assert_eq!(parse_content_length(b"Content-Length:7\r\n"), Some(7));
        assert_eq!(parse_content_length(b"Content-Length: 12 \r\n"), None);
        assert_eq!(parse_content_length(b"Content-Length: x\r\n"), None);
        // keepalived's strstr is case-sensitive.
        assert_eq!(parse_content_length(b"content-length: 12\r\n"), None);
        assert_eq!(parse_content_length(b"HTTP/1.0 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn head_split_across_reads() {
        let u = url(Some(&genhash_digest(b"hello\n")), vec![]);
        let parts: [&[u8]; 4] = [
            b"HTTP/1.0 200 OK\r\nContent-Length: 6\r",
            b"\n\r",
            b"\nhel",
            b"lo\n",
        ];
        assert_eq!(respond(&parts, &u), Ok(()));
    }

    #[test]
    fn digest_stops_at_content_length() {
        let u = url(Some(&genhash_digest(b"hello\n")), vec![]);
        let r = respond(
            &[b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\ntrailing"],
            &u,
        );
        assert_eq!(r, Ok(()));
        // Without a length, everything to the end of the stream is hashed.
        let r = respond(&[b"HTTP/1.0 200 OK\r\n\r\nhello\ntrailing"], &u);
        assert!(r.unwrap_err().starts_with("digest mismatch"));
        // Upper-case hex in the configuration still matches.
        let up = url(Some(&genhash_digest(b"x").to_uppercase()), vec![]);
        assert_eq!(respond(&[b"HTTP/1.0 200 OK\r\n\r\nx"], &up), Ok(()));
    }

    #[test]
    fn status_codes_default_and_configured() {
        let def = url(None, vec![]);
        assert_eq!(respond(&[b"HTTP/1.0 204 No Content\r\n\r\n"], &def), Ok(()));
        assert_eq!(
            respond(&[b"HTTP/1.0 301 Moved\r\n\r\n"], &def),
            Err("HTTP status 301".into())
        );
        let only = url(None, vec![301..=302, 404..=404]);
        assert_eq!(respond(&[b"HTTP/1.0 404 Not Found\r\n\r\n"], &only), Ok(()));
        assert!(respond(&[b"HTTP/1.0 200 OK\r\n\r\n"], &only).is_err());
        assert_eq!(
            respond(&[b"HTTP/1.0 20 OK\r\n\r\n"], &def),
            Err("no HTTP status code in the response".into())
        );
    }

    #[test]
    fn no_header_is_no_data() {
        let u = url(None, vec![]);
        assert_eq!(respond(&[], &u), Err("no data received".into()));
        assert_eq!(
            respond(&[b"HTTP/1.0 200 OK\r\n"], &u),
            Err("no complete HTTP header received".into())
        );
        let big = vec![b'a'; MAX_HEAD + 10];
        assert!(respond(&[&big], &u).is_err());
    }

    #[test]
    fn request_format() {
        use crate::kconf::{CheckKind, Loc, Timing};
        use std::time::Duration;
        let mut h = HttpCheck {
            tls: false,
            urls: vec![url(None, vec![])],
            virtualhost: None,
            http_protocol: "1.0".into(),
            fast_recovery: false,
            enable_sni: false,
        };
        let c = Checker {
            loc: Loc::default(),
            kind: CheckKind::Http(h.clone()),
            connect_ip: "10.0.0.1".parse().unwrap(),
            connect_port: 8080,
            bindto: None,
            bind_port: None,
            alpha: false,
            timing: Timing {
                delay_loop: Duration::from_secs(6),
                connect_timeout: Duration::from_secs(5),
                retry: 1,
                delay_before_retry: Duration::from_secs(3),
                warmup: Duration::ZERO,
            },
        };
        let mut u = url(None, vec![]);
        u.path = "/health".into();
        assert_eq!(
            request(&c, &h, &u),
            "GET /health HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 10.0.0.1:8080\r\n\r\n"
        );
        h.http_protocol = "1.1".into();
        h.virtualhost = Some("www.example.com".into());
        assert_eq!(
            request(&c, &h, &u),
            "GET /health HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: www.example.com\r\n\r\n"
        );
        h.http_protocol = "1.0C".into();
        u.virtualhost = Some("url.example.com".into());
        assert_eq!(
            request(&c, &h, &u),
            "GET /health HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: url.example.com\r\n\r\n"
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Any bytes, cut anywhere: no panic, and the verdict (digest included) does not
        /// depend on how the stream was split into reads.
        #[test]
        fn any_response_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            head in proptest::sample::select(vec![
                &b""[..],
                b"HTTP/1.0 200 OK\r\n\r\n",
                b"HTTP/1.1 503 x\r\nContent-Length: 3\r\n\r\n",
                b"HTTP/1.0 200 OK\r\nContent-Length: 10\r",
            ]),
            cuts in proptest::collection::vec(0usize..700, 0..6),
            digest in any::<bool>(),
        ) {
            let mut all = head.to_vec();
            all.extend_from_slice(&data);
            let d = digest.then(|| genhash_digest(&data[..data.len().min(3)]));
            let u = url(d.as_deref(), vec![]);
            let whole = respond(&[&all], &u);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.sort();
            let mut parts = Vec::new();
            let mut from = 0;
            for c in cuts {
                parts.push(&all[from..c]);
                from = c;
            }
            parts.push(&all[from..]);
            prop_assert_eq!(respond(&parts, &u), whole);
            let _ = parse_status_code(&all);
            let _ = parse_content_length(&all);
        }
    }
}
