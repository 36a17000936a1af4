//! The ECMP lab (`scripts/ecmp-lab.sh`): a router namespace running BIRD with ECMP in
//! front of 2-3 director namespaces, each with BIRD (or FRR) announcing what its xvsd puts
//! on the announce device, DR real servers on the directors' segment, a client behind the
//! router. Each director's xvsd is a `Director` the test starts, stops and kills; the lab
//! is torn down in `Drop`, also when a test fails.

use super::director::Director;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "10.20.9.88";
/// The announce device every director's xvsd creates.
pub const ANNOUNCE_DEV: &str = "xvs-vips";

/// Director `k`'s address (1-based).
pub fn dir_ip(k: usize) -> String {
    format!("10.20.0.{}", 10 + k)
}

/// Real server `k`'s address (1-based).
pub fn rs_ip(k: usize) -> String {
    format!("10.20.0.{}", 20 + k)
}

pub struct EcmpLab {
    pub prefix: String,
    pub directors: Vec<Director>,
    pub rs: usize,
    /// Real-server HTTP servers the test restarted (killed in `Drop`).
    http: Vec<Child>,
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

impl EcmpLab {
    /// `ecmp-lab.sh up --directors N --rs RS [--frr K]`; panics (after tearing down) if
    /// the lab does not come up.
    pub fn up(prefix: &str, directors: usize, rs: usize, frr: Option<usize>) -> EcmpLab {
        super::require_root();
        let mut cmd = Command::new(super::root().join("scripts/ecmp-lab.sh"));
        cmd.env("XVS_NS_PREFIX", prefix).args([
            "up",
            "--directors",
            &directors.to_string(),
            "--rs",
            &rs.to_string(),
        ]);
        if let Some(k) = frr {
            cmd.args(["--frr", &k.to_string()]);
        }
        let lab = EcmpLab {
            prefix: prefix.to_string(),
            directors: (1..=directors)
                .map(|k| Director::new(&format!("{prefix}-dir{k}"), &format!("{prefix}-dir{k}")))
                .collect(),
            rs,
            http: Vec::new(),
        };
        let o = run(&mut cmd);
        assert!(
            o.status.success(),
            "ecmp-lab.sh up failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        lab
    }

    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Director `k` (1-based).
    pub fn dir(&mut self, k: usize) -> &mut Director {
        &mut self.directors[k - 1]
    }

    /// Starts director `k`'s xvsd announcing on `xvs-vips`, with `extra` arguments.
    pub fn start_xvsd(&mut self, k: usize, extra: &[&str]) {
        let mut args = vec!["-i", "eth0", "--announce-dev", ANNOUNCE_DEV];
        args.extend_from_slice(extra);
        self.dir(k).start_xvsd(&args);
    }

    /// Configures `VIP:port` on director `k` with scheduler `sched` (and `-b flags` if
    /// given) and every real server (DR, weight 1).
    pub fn add_service(&mut self, k: usize, port: u16, sched: &str, flags: Option<&str>) {
        let svc = format!("{VIP}:{port}");
        let rs = self.rs;
        let d = self.dir(k);
        let mut add = vec!["-A", "-t", &svc, "-s", sched];
        if let Some(f) = flags {
            add.extend(["-b", f]);
        }
        d.adm_ok(&add);
        for r in 1..=rs {
            let rip = format!("{}:{port}", rs_ip(r));
            d.adm_ok(&["-a", "-t", &svc, "-r", &rip, "-g", "-w", "1"]);
        }
    }

    /// The router's next hops for the VIP in its kernel FIB (`ip route show VIP`), sorted;
    /// empty when it has no route.
    pub fn next_hops(&self) -> Vec<String> {
        let o = run(Command::new("ip").args(["-n", &self.ns("rtr"), "route", "show", VIP]));
        let text = String::from_utf8_lossy(&o.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut hops: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// Waits (at most `timeout`) until the router's next hops for the VIP are exactly
    /// directors `want` (1-based); returns how long it took, or panics with the route,
    /// the router's BIRD state and the directors' logs.
    pub fn wait_next_hops(&self, want: &[usize], timeout: Duration) -> Duration {
        let mut want_ips: Vec<String> = want.iter().map(|&k| dir_ip(k)).collect();
        want_ips.sort();
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.next_hops() == want_ips {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "after {timeout:?} the router's next hops for {VIP} are {:?}, not {want_ips:?}\n\
             birdc:\n{}\nannounce devices:\n{}",
            self.next_hops(),
            self.birdc("rtr", "show route all"),
            self.directors
                .iter()
                .map(|d| {
                    let o = run(Command::new("ip").args([
                        "-n",
                        &d.ns,
                        "-br",
                        "addr",
                        "show",
                        "dev",
                        ANNOUNCE_DEV,
                    ]));
                    format!(
                        "{}: {}{}",
                        d.ns,
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .collect::<Vec<_>>()
                .join("")
        );
    }

    /// `birdc -s CTL CMD` for `who` ("rtr", "dir1", ...); stdout and stderr.
    pub fn birdc(&self, who: &str, cmd: &str) -> String {
        let ctl = format!("/run/xvs-ecmp/{}/bird-{who}.ctl", self.prefix);
        let o = run(Command::new("birdc")
            .args(["-s", &ctl])
            .args(cmd.split_whitespace()));
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// FRR's vtysh command `cmd` on director `k` (run with `--frr K`).
    pub fn vtysh(&self, k: usize, cmd: &str) -> String {
        let dir = format!("/run/xvs-ecmp/{}/frr-dir{k}", self.prefix);
        let o = run(Command::new("ip")
            .args(["netns", "exec", &self.ns(&format!("dir{k}"))])
            // The daemons' vty sockets are in `dir`; -N would make vtysh look for
            // /etc/frr/NAME/vtysh.conf, which the lab does not write.
            .args(["vtysh", "--vty_socket", &dir])
            .args(["-c", cmd]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// Stops real server `k`'s HTTP server (scripts/rs-http.py): health checks of :80 fail.
    pub fn stop_http(&mut self, k: usize) {
        let ns = self.ns(&format!("rs{k}"));
        let o = run(Command::new("ip").args(["netns", "pids", &ns]));
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("rs-http.py") {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let t0 = Instant::now();
        while self.listening(&ns, 80) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts real server `k`'s HTTP server again and waits (5 s at most) until it listens.
    pub fn start_http(&mut self, k: usize) {
        let ns = self.ns(&format!("rs{k}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3"])
            .arg(super::root().join("scripts/rs-http.py"))
            .args([&format!("rs{k}"), "80", "5353"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning rs-http.py");
        self.http.push(child);
        let t0 = Instant::now();
        while !self.listening(&ns, 80) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listening(&self, ns: &str, port: u16) -> bool {
        let o = run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "ss",
            "-Hltn",
            &format!("sport = :{port}"),
        ]));
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    }

    /// `curl http://VIP/` from the client: the answering real server's name.
    pub fn http_get(&self) -> Option<String> {
        let o = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns("client"),
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://{VIP}/"),
        ]));
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// Established connections to `VIP:port` in director `k`'s `-L -c -n`.
    pub fn established(&mut self, k: usize, port: u16) -> usize {
        let svc = format!("{VIP}:{port}");
        let out = self.dir(k).adm(&["-L", "-c", "-n"]).stdout;
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.contains(&svc))
            .count()
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        for mut c in self.http.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The directors' xvsd first (Director's Drop), then every namespace.
        self.directors.clear();
        let _ = Command::new(super::root().join("scripts/ecmp-lab.sh"))
            .env("XVS_NS_PREFIX", &self.prefix)
            .arg("down")
            .status();
    }
}
