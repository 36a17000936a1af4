//! The veth lab for end-to-end tests: `scripts/harness.sh` namespaces, a real `xvsd` in the
//! director namespace and `xvsadm` driving it. Everything is torn down in `Drop`, also when
//! a test fails.
#![allow(dead_code)]

pub mod director;
pub mod ecmp;
pub mod flows;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "10.0.0.88";
pub const DIP: &str = "10.0.0.12";
pub const RS_IPS: [&str; 3] = ["10.0.0.9", "10.0.0.20", "10.0.0.21"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Privileged tests need root; say so plainly instead of failing obscurely.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc_geteuid() };
    assert_eq!(
        uid, 0,
        "end-to-end tests need root (network namespaces, XDP)"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub struct Lab {
    pub prefix: String,
    pub socket: PathBuf,
    xvsd: Option<Child>,
    log: PathBuf,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

impl Lab {
    /// Brings the harness up with `rs` real servers and `queues` director queues.
    pub fn up(prefix: &str, rs: u32, queues: u32) -> Lab {
        Self::up_topology(prefix, "dr", rs, queues)
    }

    /// Like `up` with a `--topology` (dr, nat2, nat1, tun).
    pub fn up_topology(prefix: &str, topology: &str, rs: u32, queues: u32) -> Lab {
        Self::up_with(prefix, topology, rs, queues, &[])
    }

    /// Like `up_topology` with more `harness.sh up` options (e.g. `--client-router`).
    pub fn up_with(prefix: &str, topology: &str, rs: u32, queues: u32, extra: &[&str]) -> Lab {
        require_root();
        let lab = Lab {
            prefix: prefix.to_string(),
            socket: PathBuf::from(format!("/run/xvs-test/{prefix}.sock")),
            xvsd: None,
            log: PathBuf::from(format!("/tmp/xvs-test-{prefix}-xvsd.log")),
        };
        // Nothing from an earlier run (`start_xvsd_bin` appends).
        let _ = std::fs::File::create(&lab.log);
        let out = run(Command::new("bash")
            .arg(root().join("scripts/harness.sh"))
            .args(["up", "--topology", topology, "--rs", &rs.to_string()])
            .args(["--queues", &queues.to_string()])
            .args(extra)
            .env("XVS_NS_PREFIX", prefix));
        assert!(
            out.status.success(),
            "harness up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Starts xvsd on the director's eth0 and waits for its control socket.
    pub fn start_xvsd(&mut self, extra: &[&str]) {
        let mut args = vec!["--interface", "eth0"];
        args.extend_from_slice(extra);
        self.start_xvsd_args(&args);
    }

    /// Starts xvsd with exactly these arguments (plus the socket) in the director namespace.
    pub fn start_xvsd_args(&mut self, args: &[&str]) {
        // A fresh log for each start (tests read what this run said).
        let _ = std::fs::File::create(&self.log);
        self.start_xvsd_bin(Path::new(env!("CARGO_BIN_EXE_xvsd")), args);
    }

    /// `start_xvsd_args` with another xvsd binary (an upgrade test), its log appended to
    /// the lab's xvsd log: a restart keeps the earlier runs' lines.
    pub fn start_xvsd_bin(&mut self, bin: &Path, args: &[&str]) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("dir")])
            .arg(bin)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning xvsd");
        self.xvsd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.socket.exists() && self.adm(&["-L", "-n"]).status.success() {
                return;
            }
            if let Some(st) = self.xvsd.as_mut().unwrap().try_wait().unwrap() {
                panic!("xvsd exited early ({st}):\n{}", self.xvsd_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("xvsd did not come up:\n{}", self.xvsd_log());
    }

    pub fn xvsd_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while xvsd runs.
    /// The running xvsd's process id.
    pub fn xvsd_pid(&self) -> Option<u32> {
        self.xvsd.as_ref().map(|c| c.id())
    }

    pub fn xvsd_alive(&mut self) -> bool {
        matches!(self.xvsd.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops xvsd with SIGINT and returns its exit status success.
    pub fn stop_xvsd(&mut self) -> bool {
        let Some(mut c) = self.xvsd.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Stops xvsd with signal `sig` (`TERM`, `KILL`, ...) and waits for it (10 s at most,
    /// then SIGKILL); its exit status, `None` if it had to be killed or was not running.
    pub fn stop_xvsd_with(&mut self, sig: &str) -> Option<std::process::ExitStatus> {
        let mut c = self.xvsd.take()?;
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Sends xvsd a signal by name (`HUP`: reload its `--config`).
    pub fn signal_xvsd(&self, sig: &str) {
        let c = self.xvsd.as_ref().expect("xvsd is not running");
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status();
    }

    /// Runs xvsadm against this lab's daemon.
    pub fn adm(&self, args: &[&str]) -> Output {
        run(Command::new(env!("CARGO_BIN_EXE_xvsadm"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args))
    }

    /// Runs xvsadm and panics unless it succeeds; returns stdout.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let o = self.adm(args);
        assert!(
            o.status.success(),
            "xvsadm {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `adm_ok` with the arguments as one line of white-space separated words, for the
    /// long ones: `lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 1")`.
    pub fn adm_line(&self, line: &str) -> String {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.adm_ok(&args)
    }

    /// xvsadm with stdin (for -R).
    pub fn adm_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xvsadm"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    /// Runs a command in one of the lab's namespaces.
    pub fn exec(&self, role: &str, cmd: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(cmd))
    }

    /// One HTTP request from the client (a new TCP connection, 3 s at most): the body, or
    /// how it failed.
    pub fn http(&self, url: &str) -> Http {
        self.http_from("client", url)
    }

    /// One HTTP request from namespace `role` (3 s at most).
    pub fn http_from(&self, role: &str, url: &str) -> Http {
        // -v: curl 7.88 says only "Couldn't connect to server" on exit 7; the verbose
        // "connect to ... failed: Connection refused" line tells a RST from the rest.
        let o = self.exec(role, &["curl", "-sSv", "--max-time", "3", url]);
        Http::from_curl(&o)
    }

    /// One HTTP request from the client; the body, trimmed, or a `<...>` description of the
    /// failure (which no real server's body equals), so comparisons with a body fail.
    pub fn curl(&self, url: &str) -> String {
        self.http(url).to_string()
    }

    /// One UDP request/response from the client; the reply text, or `<timeout>` or
    /// `<refused>` (ICMP port unreachable), which no real server's reply equals.
    pub fn udp(&self, addr: &str, port: u16) -> String {
        let py = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n\
             s.sendto(b'q',('{addr}',{port}))\ntry: print(s.recvfrom(100)[0].decode().strip())\n\
             except socket.timeout: print('<timeout>')\n\
             except ConnectionRefusedError: print('<refused>')"
        );
        let o = self.exec("client", &["python3", "-c", &py]);
        assert!(
            o.status.success(),
            "UDP client failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Data-path counters as xvsadm prints them (`--datapath`), as (name, value) pairs.
    pub fn datapath(&self) -> Vec<(String, u64)> {
        let out = self.adm_ok(&["--datapath"]);
        out.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (k, v) = (it.next()?, it.next()?);
                Some((k.trim_end_matches(':').to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// One data-path counter, summed over the workers.
    pub fn counter(&self, name: &str) -> u64 {
        counter_in(&self.datapath(), name)
    }

    /// The real server name behind each RIP, in harness order.
    pub fn rs_name(ip: &str) -> &'static str {
        match ip {
            "10.0.0.9" => "rs1",
            "10.0.0.20" => "rs2",
            "10.0.0.21" => "rs3",
            _ => "?",
        }
    }
}

/// Counter `name` of a `Lab::datapath` reading, summed over the workers.
pub fn counter_in(dp: &[(String, u64)], name: &str) -> u64 {
    dp.iter().filter(|(k, _)| k == name).map(|(_, v)| *v).sum()
}

/// What one curl request ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http {
    /// A response; its body, trimmed.
    Body(String),
    /// The peer answered the SYN with a RST: nothing listens there (curl exit 7).
    Refused,
    /// No answer within the time limit: the frames were dropped somewhere (curl exit 28).
    Timeout,
    /// Any other failure: curl's exit code and message.
    Failed { code: i32, stderr: String },
}

impl Http {
    fn from_curl(o: &Output) -> Http {
        // Of the verbose log, keep the failure lines: "* connect to ... failed: REASON" and
        // "curl: (N) ...".
        let stderr: Vec<String> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("curl:") || l.contains(" failed: "))
            .map(str::to_string)
            .collect();
        let stderr = stderr.join("; ");
        match o.status.code() {
            Some(0) => Http::Body(String::from_utf8_lossy(&o.stdout).trim().to_string()),
            Some(7) if stderr.contains("failed: Connection refused") => Http::Refused,
            Some(28) => Http::Timeout,
            code => Http::Failed {
                code: code.unwrap_or(-1),
                stderr,
            },
        }
    }
}

impl std::fmt::Display for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Http::Body(b) => f.write_str(b),
            Http::Refused => f.write_str("<connection refused>"),
            Http::Timeout => f.write_str("<timeout>"),
            Http::Failed { code, stderr } => write!(f, "<curl exit {code}: {stderr}>"),
        }
    }
}

/// Adds the three harness real servers to service `svc` (`flag`: `-t` or `-u`) for DR with
/// the given weights.
pub fn add_dr_servers(lab: &Lab, flag: &str, svc: &str, weights: [u32; 3]) {
    for (ip, w) in RS_IPS.iter().zip(weights) {
        lab.adm_ok(&["-a", flag, svc, "-r", ip, "-g", "-w", &w.to_string()]);
    }
}

/// Adds `-A -t VIP:80 -s sched` and the three harness real servers (DR) with weights `w`.
pub fn http_service(lab: &Lab, sched: &str, w: [u32; 3]) {
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", sched]);
    add_dr_servers(lab, "-t", "10.0.0.88:80", w);
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_xvsd();
        let _ = Command::new("bash")
            .arg(root().join("scripts/harness.sh"))
            .arg("down")
            .env("XVS_NS_PREFIX", &self.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A long-lived HTTP/1.1 keep-alive connection from the client namespace: a small Python
/// client that sends one request per line it reads on stdin and prints each response body.
pub struct KeepAlive {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

const KEEPALIVE_PY: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
for line in sys.stdin:
    try:
        c.request("GET", "/")
        body = c.getresponse().read().decode().strip()
    except Exception as e:
        body = "ERROR " + type(e).__name__
    print(body, flush=True)
"#;

impl KeepAlive {
    pub fn open(lab: &Lab) -> KeepAlive {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("client"),
                "python3",
                "-c",
                KEEPALIVE_PY,
                VIP,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning keep-alive client");
        let out = BufReader::new(child.stdout.take().unwrap());
        KeepAlive { child, out }
    }

    /// Sends one request on the same TCP connection; returns the body (or "ERROR ...").
    pub fn get(&mut self) -> String {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Polls `f` every 100 ms until it returns `Ok`, for at most `timeout`; panics with the last
/// `Err` (the state that did not match) when time runs out.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
