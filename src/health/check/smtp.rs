//! SMTP_CHECK (keepalived/check/check_smtp.c).
//!
//! As keepalived: connect, read a line, which must carry status 220; send
//! `HELO name\r\n` (`helo_name`, default `smtpchecker.keepalived.org`, keepalived's
//! SMTP_DEFAULT_HELO), read a line, which must carry 250; send `QUIT\r\n` and read one more
//! line (any content). A status is keepalived's `smtp_get_status`: exactly three digits at
//! the start of the line followed by a space (or nothing), so a multi-line `220-` banner or
//! a bare `220\r\n` fails as it does in keepalived. A line is what was read up to a `\n`;
//! bytes after it in the same read are dropped, as keepalived does.

use super::{io_msg, step, tcp_connect, Outcome, UP};
use crate::kconf::{Checker, SmtpCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// check_smtp.h SMTP_DEFAULT_HELO.
pub const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";
/// check_smtp.h SMTP_BUFF_MAX: a longer line is discarded and reading goes on.
const BUFF_MAX: usize = 512;

/// check_smtp.c `smtp_get_status`: the status code of a line, if keepalived sees one.
pub(crate) fn status(line: &[u8]) -> Option<u16> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match line.get(3) {
        None | Some(b' ') | Some(0) => {}
        Some(_) => return None,
    }
    Some(
        line[..3]
            .iter()
            .fold(0, |n, d| n * 10 + u16::from(d - b'0')),
    )
}

async fn read_line(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; BUFF_MAX];
    loop {
        if buf.len() >= BUFF_MAX - 1 {
            buf.clear();
        }
        let room = BUFF_MAX - 1 - buf.len();
        match s.read(&mut chunk[..room]).await {
            Ok(0) => return Err("read: connection closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {}", io_msg(&e))),
        }
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(nl + 1);
            return Ok(buf);
        }
    }
}

fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end()
        .chars()
        .take(80)
        .collect()
}

pub(super) async fn check(c: &Checker, sm: &SmtpCheck, deadline: Instant) -> Outcome {
    match probe(c, sm, deadline).await {
        Ok(()) => UP,
        Err(e) => Outcome::Down(e),
    }
}

async fn probe(c: &Checker, sm: &SmtpCheck, deadline: Instant) -> Result<(), String> {
    let total = c.timing.connect_timeout;
    let mut s = tcp_connect(c, deadline, total).await?;
    let banner = step(deadline, total, "banner", read_line(&mut s)).await?;
    if status(&banner) != Some(220) {
        return Err(format!("bad greeting banner: {}", show(&banner)));
    }
    let helo = format!(
        "HELO {}\r\n",
        sm.helo_name.as_deref().unwrap_or(DEFAULT_HELO)
    );
    step(deadline, total, "HELO", async {
        s.write_all(helo.as_bytes())
            .await
            .map_err(|e| format!("write: {}", io_msg(&e)))
    })
    .await?;
    let reply = step(deadline, total, "HELO reply", read_line(&mut s)).await?;
    if status(&reply) != Some(250) {
        return Err(format!("bad HELO response: {}", show(&reply)));
    }
    step(deadline, total, "QUIT", async {
        s.write_all(b"QUIT\r\n")
            .await
            .map_err(|e| format!("write: {}", io_msg(&e)))
    })
    .await?;
    step(deadline, total, "QUIT reply", read_line(&mut s)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_keepalived_reads_them() {
        assert_eq!(status(b"220 mail.example.com ESMTP\r\n"), Some(220));
        assert_eq!(status(b"250 ok\r\n"), Some(250));
        assert_eq!(status(b"220"), Some(220));
        assert_eq!(status(b"220-first line\r\n"), None);
        assert_eq!(status(b"220\r\n"), None);
        assert_eq!(status(b"22 x\r\n"), None);
        assert_eq!(status(b"abc def\r\n"), None);
        assert_eq!(status(b""), None);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_line_is_harmless(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = status(&data);
        }
    }
}
