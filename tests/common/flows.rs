//! Long-lived TCP flows checked end to end, over `scripts/stream.py`: the client runs in a
//! namespace, real kernel TCP on both ends (the real servers run `stream.py server`, the
//! harness starts it on port 9000), every byte compared with the pattern of its flow.
//!
//! ```ignore
//! let mut s = Streams::start(&lab.ns("client"), VIP, 9000, 20, 2_000_000, 100_000, secs(60));
//! assert_eq!(s.wait_flowing(secs(10)), 20); // every flow has data: now break something
//! let r = s.finish();
//! assert!(r.all_ok(), "{}", r.describe());
//! ```
//!
//! Bounded: the client gives up after its timeout (flows still open are `Timeout`), and
//! `finish` kills it 15 s after that at the latest; dropping a `Streams` kills the client.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The port the harness's real servers serve `stream.py server` on.
pub const STREAM_PORT: u16 = 9000;

/// What one flow ended with (stream.py's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStatus {
    /// Every byte, in order, then a clean close.
    Ok,
    /// ECONNRESET (or the connection was refused).
    Reset,
    /// A clean close before all the bytes.
    Short,
    /// A byte differed from the pattern.
    Corrupt,
    /// The client's timeout passed first (a stalled flow: its packets went nowhere).
    Timeout,
    /// Any other socket error, or a status this code does not know.
    Error,
}

impl FlowStatus {
    fn parse(s: &str) -> FlowStatus {
        match s {
            "ok" => FlowStatus::Ok,
            "reset" => FlowStatus::Reset,
            "short" => FlowStatus::Short,
            "corrupt" => FlowStatus::Corrupt,
            "timeout" => FlowStatus::Timeout,
            _ => FlowStatus::Error,
        }
    }
}

/// One flow of a report.
#[derive(Debug, Clone)]
pub struct FlowResult {
    pub id: u64,
    /// The source address it was bound to ("" for the kernel's choice).
    pub src: String,
    pub status: FlowStatus,
    /// Bytes received and verified.
    pub bytes: u64,
    /// The longest time between two receipts of data on this flow, in ms.
    pub max_gap_ms: f64,
    /// stream.py's detail (exception name, offset of a corruption).
    pub error: String,
}

/// The result of one `Streams` run.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub flows: Vec<FlowResult>,
    /// The bytes each flow asked for.
    pub expected_bytes: u64,
    /// The client's stderr (its "flowing N" line and any traceback), for messages.
    pub stderr: String,
}

impl StreamReport {
    /// Every flow complete and intact (and there was at least one).
    pub fn all_ok(&self) -> bool {
        !self.flows.is_empty() && self.flows.iter().all(|f| f.status == FlowStatus::Ok)
    }

    /// The flows that did not end `Ok`.
    pub fn broken(&self) -> Vec<&FlowResult> {
        self.flows
            .iter()
            .filter(|f| f.status != FlowStatus::Ok)
            .collect()
    }

    /// How many flows ended with `status`.
    pub fn count(&self, status: FlowStatus) -> usize {
        self.flows.iter().filter(|f| f.status == status).count()
    }

    /// The longest gap between data on any flow, in ms: what a failover costs the clients.
    pub fn max_gap_ms(&self) -> f64 {
        self.flows.iter().map(|f| f.max_gap_ms).fold(0.0, f64::max)
    }

    /// One line per status with its count, then the broken flows; for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} flows of {} bytes: ok {}, reset {}, short {}, corrupt {}, timeout {}, error {}; \
             longest gap {:.0} ms",
            self.flows.len(),
            self.expected_bytes,
            self.count(FlowStatus::Ok),
            self.count(FlowStatus::Reset),
            self.count(FlowStatus::Short),
            self.count(FlowStatus::Corrupt),
            self.count(FlowStatus::Timeout),
            self.count(FlowStatus::Error),
            self.max_gap_ms()
        );
        for f in self.broken() {
            s += &format!(
                "\n  flow {} from {:?}: {:?} after {} bytes, gap {:.0} ms {}",
                f.id, f.src, f.status, f.bytes, f.max_gap_ms, f.error
            );
        }
        if self.flows.is_empty() {
            s += &format!("\n  client stderr: {}", self.stderr);
        }
        s
    }
}

/// A `stream.py client` run in progress. See the module docs.
pub struct Streams {
    child: Option<Child>,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr: String,
    started: Instant,
    deadline: Instant,
    expected_bytes: u64,
}

/// Everything `Streams::spawn` takes; `Streams::start` fills in the defaults.
#[derive(Debug, Clone)]
pub struct StreamSpec<'a> {
    pub client_ns: &'a str,
    pub addr: &'a str,
    pub port: u16,
    pub flows: u32,
    /// Bytes per flow.
    pub bytes: u64,
    /// Bytes per second per flow.
    pub rate: u64,
    /// For the whole run.
    pub timeout: Duration,
    /// Source addresses used in turn (the harness client has 10.0.0.100-104); empty: the
    /// kernel's choice.
    pub src_ips: &'a [&'a str],
    /// ID of the first flow; give runs that overlap different IDs so their data differ.
    pub first_id: u64,
}

impl Streams {
    /// `n` flows from namespace `client_ns` to `addr:port`, `bytes` each at `rate` bytes/s,
    /// all done within `timeout`.
    pub fn start(
        client_ns: &str,
        addr: &str,
        port: u16,
        n: u32,
        bytes: u64,
        rate: u64,
        timeout: Duration,
    ) -> Streams {
        Self::spawn(&StreamSpec {
            client_ns,
            addr,
            port,
            flows: n,
            bytes,
            rate,
            timeout,
            src_ips: &[],
            first_id: 1,
        })
    }

    pub fn spawn(spec: &StreamSpec) -> Streams {
        Self::spawn_heartbeat(spec, None)
    }

    /// `spawn` with each client also sending one byte every `heartbeat` while it receives
    /// (stream.py `--heartbeat`): the client's own TCP then has unacknowledged data, and
    /// retransmits it, when a failover stalls the flow.
    pub fn spawn_heartbeat(spec: &StreamSpec, heartbeat: Option<Duration>) -> Streams {
        let script = super::root().join("scripts/stream.py");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", spec.client_ns, "python3"])
            .arg(&script)
            .args(["client", "--addr", spec.addr])
            .args(["--port", &spec.port.to_string()])
            .args(["--flows", &spec.flows.to_string()])
            .args(["--bytes", &spec.bytes.to_string()])
            .args(["--rate", &spec.rate.to_string()])
            .args(["--timeout", &format!("{:.3}", spec.timeout.as_secs_f64())])
            .args(["--first-id", &spec.first_id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !spec.src_ips.is_empty() {
            cmd.args(["--src-ips", &spec.src_ips.join(",")]);
        }
        if let Some(h) = heartbeat {
            cmd.args(["--heartbeat", &h.as_millis().max(1).to_string()]);
        }
        // `ip netns exec` execs python3 in place, so this child is the client itself.
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        // Both pipes drained by threads, so neither can fill and stall the client.
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streams {
            child: Some(child),
            stdout: Some(stdout),
            stderr_lines: rx,
            stderr: String::new(),
            started: Instant::now(),
            deadline: Instant::now() + spec.timeout,
            expected_bytes: spec.bytes,
        }
    }

    /// Time since the client was started: paced flows of B bytes at R bytes/s end no sooner
    /// than B/R s after it, so a test can check that its failure came mid-stream.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits (at most `timeout`) until every flow has received data or failed; returns how
    /// many have data (stream.py's "flowing N"), 0 if the client never said.
    pub fn wait_flowing(&mut self, timeout: Duration) -> u32 {
        let until = Instant::now() + timeout;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr += &line;
                    self.stderr.push('\n');
                    if let Some(n) = line.strip_prefix("flowing ") {
                        return n.trim().parse().unwrap_or(0);
                    }
                }
                Err(_) => break,
            }
        }
        0
    }

    /// Waits for the client (its own timeout, plus 15 s of grace before it is killed) and
    /// returns its report. A client that printed nothing gives a report with no flows, which
    /// is not `all_ok`.
    pub fn finish(mut self) -> StreamReport {
        let mut child = self.child.take().unwrap();
        let until = self.deadline + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        let out = self.stdout.take().unwrap().join().unwrap_or_default();
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr += &line;
            self.stderr.push('\n');
        }
        parse_report(&out, self.expected_bytes, std::mem::take(&mut self.stderr))
    }
}

fn parse_report(out: &str, expected_bytes: u64, stderr: String) -> StreamReport {
    let mut flows = Vec::new();
    let v: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    for f in v["flows"].as_array().into_iter().flatten() {
        flows.push(FlowResult {
            id: f["id"].as_u64().unwrap_or(0),
            src: f["src"].as_str().unwrap_or("").to_string(),
            status: FlowStatus::parse(f["status"].as_str().unwrap_or("")),
            bytes: f["bytes"].as_u64().unwrap_or(0),
            max_gap_ms: f["max_gap_ms"].as_f64().unwrap_or(0.0),
            error: f["error"].as_str().unwrap_or("").to_string(),
        });
    }
    StreamReport {
        flows,
        expected_bytes,
        stderr: if out.trim().is_empty() {
            stderr
        } else {
            format!("{stderr}(stdout: {} bytes)", out.len())
        },
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
