//! One director of an HA pair (`harness.sh up --pair`): its own xvsd (socket, log) and its
//! own keepalived (`-P`, VRRP only), both in the director's namespace, so a test can crash
//! and restart each director separately. `Lab` keeps its single xvsd in P-dir for the other
//! tests; a pair test uses two `Director`s instead. Everything is killed in `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A director namespace with (at most) one xvsd and one keepalived started by the test.
pub struct Director {
    /// The namespace (`P-dir`, `P-dir2`).
    pub ns: String,
    pub socket: PathBuf,
    xvsd: Option<Child>,
    xvsd_log: PathBuf,
    keepalived: Option<Child>,
    keepalived_log: PathBuf,
    /// keepalived's `-p` and `-r` pid files (per director, so two can run on one host).
    pidfiles: [PathBuf; 2],
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

impl Director {
    /// `ns` is the director's namespace; `tag` names its files (`/tmp/xvs-test-TAG-*`,
    /// `/run/xvs-test/TAG.sock`), unique per test.
    pub fn new(ns: &str, tag: &str) -> Director {
        let _ = std::fs::create_dir_all("/run/xvs-test");
        Director {
            ns: ns.to_string(),
            socket: PathBuf::from(format!("/run/xvs-test/{tag}.sock")),
            xvsd: None,
            xvsd_log: PathBuf::from(format!("/tmp/xvs-test-{tag}-xvsd.log")),
            keepalived: None,
            keepalived_log: PathBuf::from(format!("/tmp/xvs-test-{tag}-keepalived.log")),
            pidfiles: [
                PathBuf::from(format!("/run/xvs-test/{tag}-keepalived.pid")),
                PathBuf::from(format!("/run/xvs-test/{tag}-vrrp.pid")),
            ],
        }
    }

    /// Starts xvsd with `args` (plus `--socket`) and waits (15 s at most) until it answers.
    pub fn start_xvsd(&mut self, args: &[&str]) {
        assert!(self.xvsd.is_none(), "{}: xvsd already started", self.ns);
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(&self.xvsd_log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_xvsd"))
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
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
                panic!(
                    "{}: xvsd exited early ({st}):\n{}",
                    self.ns,
                    self.xvsd_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{}: xvsd did not come up:\n{}", self.ns, self.xvsd_log());
    }

    /// `keepalived -P -n -l -f CONF -p PID -r VRRP_PID` in the namespace: VRRP only (its
    /// virtual_server blocks are xvsd's), in the foreground, logging to our log file.
    pub fn start_keepalived(&mut self, conf: &Path) {
        assert!(
            self.keepalived.is_none(),
            "{}: keepalived already started",
            self.ns
        );
        for p in &self.pidfiles {
            let _ = std::fs::remove_file(p);
        }
        let log = std::fs::File::create(&self.keepalived_log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "keepalived",
                "-P",
                "-n",
                "-l",
                "-f",
            ])
            .arg(conf)
            .arg("-p")
            .arg(&self.pidfiles[0])
            .arg("-r")
            .arg(&self.pidfiles[1])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning keepalived");
        self.keepalived = Some(child);
    }

    pub fn xvsd_log(&self) -> String {
        std::fs::read_to_string(&self.xvsd_log).unwrap_or_default()
    }

    pub fn keepalived_log(&self) -> String {
        std::fs::read_to_string(&self.keepalived_log).unwrap_or_default()
    }

    /// True once keepalived has logged `(INSTANCE) Entering STATE STATE` (MASTER, BACKUP,
    /// FAULT) at least once. Compared without case: keepalived 2.2.7 logs a FAULT it starts
    /// in as "(VI_1) entering FAULT state", later transitions as "Entering FAULT STATE".
    pub fn vrrp_entered(&self, instance: &str, state: &str) -> bool {
        self.vrrp_log_pos(instance, state).is_some()
    }

    /// Byte offsets in keepalived's log (lower-cased) of the first and the last time it
    /// entered `state`, for ordering checks.
    pub fn vrrp_log_pos(&self, instance: &str, state: &str) -> Option<(usize, usize)> {
        let log = self.keepalived_log().to_lowercase();
        let pat = format!(
            "({}) entering {} state",
            instance.to_lowercase(),
            state.to_lowercase()
        );
        Some((log.find(&pat)?, log.rfind(&pat)?))
    }

    /// True while `ip` is on the director's eth0 (VRRP put it there).
    pub fn holds(&self, ip: &str) -> bool {
        self.holds_on(ip, "eth0")
    }

    /// True while `ip` is on the director's interface `dev` (a NAT pair's gateway
    /// address sits on eth1).
    pub fn holds_on(&self, ip: &str, dev: &str) -> bool {
        let o = run(Command::new("ip").args([
            "-n",
            &self.ns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            dev,
            "to",
            &format!("{ip}/32"),
        ]));
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    }

    /// The director's interfaces but lo (eth0; eth1 on a two-armed NAT director).
    fn links(&self) -> Vec<String> {
        let o = run(Command::new("ip").args(["-n", &self.ns, "-o", "link", "show"]));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split(':').nth(1)?.trim();
                let name = name.split('@').next()?;
                (name != "lo").then(|| name.to_string())
            })
            .collect()
    }

    /// Runs xvsadm against this director's xvsd.
    pub fn adm(&self, args: &[&str]) -> Output {
        run(Command::new(env!("CARGO_BIN_EXE_xvsadm"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args))
    }

    /// xvsadm, panicking unless it succeeds; returns stdout.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let o = self.adm(args);
        assert!(
            o.status.success(),
            "{}: xvsadm {args:?} failed: {}{}",
            self.ns,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A machine failure: every link down (eth0, and eth1 of a two-armed NAT director),
    /// then SIGKILL to everything in the namespace (xvsd, keepalived and its VRRP child: no
    /// priority-0 advert, no cleanup); the dead host neither sends nor answers ARP for the
    /// addresses it still has configured.
    pub fn crash(&mut self) {
        // Links first: whatever a dying process still sends (keepalived's children get
        // SIGTERM when their parent dies, and would send a priority-0 advert, which is a
        // clean stop) never reaches the segment, as with a machine that lost power.
        for dev in self.links() {
            let _ = run(Command::new("ip").args(["-n", &self.ns, "link", "set", &dev, "down"]));
        }
        let o = run(Command::new("ip").args(["netns", "pids", &self.ns]));
        let pids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
        for c in [self.xvsd.take(), self.keepalived.take()]
            .into_iter()
            .flatten()
        {
            reap(c);
        }
    }

    /// The crashed host comes back: booted without the VIP (VRRP adds it when it is master
    /// again) and with an empty neighbour cache, eth0 up.
    pub fn reboot(&mut self, vip: &str) {
        self.reboot_without(&[(vip, "eth0")]);
    }

    /// `reboot` for a director whose VRRP addresses are `(address, interface)` pairs (a
    /// NAT pair: the VIP on eth0, the real servers' gateway on eth1); every link comes up.
    pub fn reboot_without(&mut self, addrs: &[(&str, &str)]) {
        for (ip, dev) in addrs {
            let _ = run(Command::new("ip").args([
                "-n",
                &self.ns,
                "addr",
                "del",
                &format!("{ip}/32"),
                "dev",
                dev,
            ]));
        }
        let _ = run(Command::new("ip").args(["-n", &self.ns, "neigh", "flush", "all"]));
        for dev in self.links() {
            let _ = run(Command::new("ip").args(["-n", &self.ns, "link", "set", &dev, "up"]));
        }
    }

    /// SIGKILL to xvsd alone (no cleanup runs; the routing daemon in the namespace lives on).
    pub fn kill_xvsd(&mut self) {
        if let Some(mut c) = self.xvsd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to xvsd alone and wait for it to exit (KILL after 5 s).
    pub fn stop_xvsd(&mut self) {
        if let Some(c) = self.xvsd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            reap(c);
        }
    }

    /// Stops keepalived and xvsd (TERM, then KILL after 5 s).
    pub fn stop(&mut self) {
        for c in [self.keepalived.take(), self.xvsd.take()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            reap(c);
        }
    }
}

/// Waits (5 s at most) for a child that was signalled, then kills it.
fn reap(mut c: Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Director {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
        for p in &self.pidfiles {
            let _ = std::fs::remove_file(p);
        }
    }
}
