//! Where xvsd's log goes: journald's stream with `<N>` priorities under systemd, plain
//! lines anywhere else.
//!
//! systemd connects a service's stderr to the journal and says so in `JOURNAL_STREAM`
//! (`DEVICE:INODE` of that stream, systemd.exec(5)). journald reads a leading `<N>` on each
//! line as its syslog priority (sd-daemon(3)), so the levels survive without the native
//! protocol (tracing-journald maps INFO to 5, notice; IPVS operators filter with
//! `journalctl -p info`, 6). journald stamps the time itself, so the lines carry none.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// syslog priority of a tracing level: error 3, warn 4, info 6, debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (a redirected stderr inherits the
/// variable but is another file, and then gets plain lines).
pub fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM").is_ok_and(|v| stream_matches(&v, 2))
}

fn stream_matches(var: &str, fd: i32) -> bool {
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes only into the stat buffer we own; fd is just a number to it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// The journal's line format: `<N>` then the level-less, time-less default line.
pub struct JournalFormat {
    inner: format::Format<format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: format::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        let f = tempfile();
        let m = f.metadata().unwrap();
        let fd = f.as_raw_fd();
        assert!(stream_matches(&format!("{}:{}", m.dev(), m.ino()), fd));
        assert!(!stream_matches(&format!("{}:{}", m.dev(), m.ino() + 1), fd));
        assert!(!stream_matches("garbage", fd));
        assert!(!stream_matches("1:", fd));
    }

    fn tempfile() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("xvs-logging-{}", std::process::id()));
        let f = std::fs::File::create(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        f
    }
}
