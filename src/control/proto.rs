//! Wire protocol between `xvsadm` and `xvsd`.
//!
//! One connection carries one request and its answer, each message a single line of JSON:
//! `{"xvs":2,"body":<Request|Response>}`. The version field lets a newer daemon refuse (or
//! translate) an older client explicitly instead of misreading it.
//!
//! Most requests get one response. `Request::Connections` (`-L -c`) gets a stream, since a
//! full connection table (a million entries by default) is far larger than one message may
//! be: any number of `Response::Connections` chunks (each at most
//! `worker::LIST_CHUNK_SLOTS` entries, well under a megabyte), then
//! `Response::ConnectionsEnd { entries }`, or an `Error` if the daemon cannot finish. The
//! end marker tells a complete listing from one cut short.

use crate::model::{ConnStatus, Request, Response};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Protocol version spoken by this build.
///
/// 2: the `-L -c` answer is the stream described above. 1 answered it with one
/// `Connections` message, which failed beyond about 100,000 entries (`MAX_MESSAGE_BYTES`).
pub const PROTOCOL_VERSION: u32 = 2;
/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvsd.sock";
/// Environment variable that overrides the default socket path.
pub const SOCKET_ENV: &str = "XVS_SOCKET";
/// Longest accepted message (a `-R` restore of a large configuration fits comfortably).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub xvs: u32,
    pub body: T,
}

/// Writes one message as a JSON line.
pub fn write_message<T: Serialize, W: Write>(w: &mut W, body: &T) -> Result<()> {
    let env = Envelope {
        xvs: PROTOCOL_VERSION,
        body,
    };
    let mut line = serde_json::to_vec(&env).context("encoding control message")?;
    line.push(b'\n');
    w.write_all(&line).context("writing control message")?;
    w.flush().context("flushing control message")?;
    Ok(())
}

/// Reads one JSON-line message, checking the protocol version.
pub fn read_message<T: for<'de> Deserialize<'de>, R: BufRead>(r: &mut R) -> Result<T> {
    let mut line = Vec::new();
    let mut limited = <&mut R as std::io::Read>::take(r, MAX_MESSAGE_BYTES as u64 + 1);
    let n = limited
        .read_until(b'\n', &mut line)
        .context("reading control message")?;
    if n == 0 {
        bail!("connection closed before a message arrived");
    }
    if line.len() > MAX_MESSAGE_BYTES {
        bail!("control message longer than {MAX_MESSAGE_BYTES} bytes");
    }
    // The version first, skipping the body without building it (a listing chunk is
    // thousands of entries); then the body straight into its type.
    #[derive(Deserialize)]
    struct VersionOnly {
        #[serde(default)]
        xvs: Option<serde_json::Value>,
    }
    let v: VersionOnly = serde_json::from_slice(&line).context("malformed control message")?;
    let version = v.xvs.as_ref().and_then(|x| x.as_u64());
    if version != Some(PROTOCOL_VERSION as u64) {
        bail!("protocol version mismatch: peer speaks {version:?}, this build speaks {PROTOCOL_VERSION}");
    }
    let env: Envelope<T> = serde_json::from_slice(&line).context("unexpected control message")?;
    Ok(env.body)
}

/// The socket path to use: explicit option, then `$XVS_SOCKET`, then the default.
pub fn socket_path(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var(SOCKET_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

fn send_request(path: &Path, req: &Request) -> Result<BufReader<UnixStream>> {
    let stream = UnixStream::connect(path)
        .with_context(|| format!("cannot connect to xvsd at {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = stream.try_clone()?;
    write_message(&mut w, req)?;
    Ok(BufReader::new(stream))
}

/// Sends one request to the daemon at `path` and waits for its response.
pub fn call(path: &Path, req: &Request) -> Result<Response> {
    read_message(&mut send_request(path, req)?)
}

/// Sends a request whose answer is a stream (`-L -c`): hands each `Connections` chunk to
/// `chunk` as it arrives and returns the message that closed the stream
/// (`ConnectionsEnd`, an `Error`, or whatever else the daemon said).
pub fn call_streamed(
    path: &Path,
    req: &Request,
    chunk: &mut dyn FnMut(Vec<ConnStatus>) -> Result<()>,
) -> Result<Response> {
    let mut r = send_request(path, req)?;
    read_stream(&mut r, chunk)
}

/// Reads a `-L -c` stream from `r` (see [`call_streamed`]).
pub fn read_stream<R: BufRead>(
    r: &mut R,
    chunk: &mut dyn FnMut(Vec<ConnStatus>) -> Result<()>,
) -> Result<Response> {
    let mut chunks = 0u64;
    loop {
        let msg = read_message(r).with_context(|| {
            if chunks > 0 {
                format!("connection listing cut short after {chunks} chunk(s)")
            } else {
                "reading the connection listing".to_string()
            }
        })?;
        match msg {
            Response::Connections(c) => {
                chunks += 1;
                chunk(c)?
            }
            other => return Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn round_trip_and_version_check() {
        let req = Request::DeleteService {
            key: ServiceKey {
                proto: Protocol::Tcp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 80,
            },
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).unwrap();
        let back: Request = read_message(&mut &buf[..]).unwrap();
        assert_eq!(back, req);

        let wrong = br#"{"xvs":99,"body":"Clear"}
"#;
        let err = read_message::<Request, _>(&mut &wrong[..]).unwrap_err();
        assert!(err.to_string().contains("version mismatch"), "{err}");
    }
}
