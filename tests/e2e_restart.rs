//! Restart and upgrade of xvsd with `--state-dir` on the single-director DR lab
//! (`scripts/harness.sh`, prefix `xrs*`): the steering program stays attached through a
//! pinned BPF link, the kernel never answers the VIP with a RST while xvsd is away, the
//! configuration comes back without `-R`, and a crashed xvsd leaves the host's own
//! networking working. See docs/architecture.md, "Restart and upgrade".
//!
//! The pins live on a bpffs mounted for the test in the host's mount namespace (xvsd runs
//! under `ip netns exec`, whose /sys is a fresh sysfs without bpffs; a bpffs mounted there
//! would end with that process). The guard unmounts it, which releases the links.
//!
//! Needs root. Run under `flock /tmp/xvs-netns.lock`.

mod common;

use common::flows::{Streams, STREAM_PORT};
use common::{Http, Lab, DIP, RS_IPS, VIP};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A bpffs for the pins and a state directory, both removed on drop (declare it before the
/// `Lab`, so that it is dropped after xvsd stopped).
struct Pins {
    bpffs: PathBuf,
    state: PathBuf,
}

impl Pins {
    fn new(prefix: &str) -> Pins {
        let bpffs = PathBuf::from(format!("/tmp/xvs-test-{prefix}-bpf"));
        let state = PathBuf::from(format!("/tmp/xvs-test-{prefix}-state"));
        // Left over from an aborted run (usually nothing: stderr silenced).
        let _ = Command::new("umount")
            .arg(&bpffs)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&bpffs).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting bpffs on {}", bpffs.display());
        Pins { bpffs, state }
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("xvs")
    }

    /// xvsd's arguments for a restartable run.
    fn args(&self, hold_s: u32) -> Vec<String> {
        vec![
            "--interface".into(),
            "eth0".into(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--bpf-pin-dir".into(),
            self.pin_dir().display().to_string(),
            "--restart-hold".into(),
            hold_s.to_string(),
        ]
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Removes a file on drop (the copied binary).
struct Rm(PathBuf);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(lab: &mut Lab, bin: &Path, args: &[String]) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_xvsd_bin(bin, &a);
}

fn xvsd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xvsd"))
}

/// The XDP program on the director's eth0, as `ip link` shows it: its id, `None` if none.
fn xdp_prog_id(lab: &Lab) -> Option<u32> {
    let o = lab.exec("dir", &["ip", "-d", "link", "show", "eth0"]);
    let s = String::from_utf8_lossy(&o.stdout);
    let at = s.find("prog/xdp id ")?;
    s[at + 12..].split_whitespace().next()?.parse().ok()
}

/// Watches the director's eth0 every 20 ms until dropped: counts the looks and the ones
/// that found no XDP program.
struct XdpWatch {
    stop: Arc<AtomicBool>,
    looks: Arc<AtomicU32>,
    missing: Arc<AtomicU32>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl XdpWatch {
    fn start(lab: &Lab) -> XdpWatch {
        let (stop, looks, missing) = (Arc::default(), Arc::default(), Arc::default());
        let ns = lab.ns("dir");
        let t = {
            let (stop, looks, missing): (Arc<AtomicBool>, Arc<AtomicU32>, Arc<AtomicU32>) =
                (Arc::clone(&stop), Arc::clone(&looks), Arc::clone(&missing));
            std::thread::spawn(move || {
                // Bounded: at most 10 minutes of looks even if never stopped.
                let until = Instant::now() + secs(600);
                while !stop.load(Relaxed) && Instant::now() < until {
                    let o = Command::new("ip")
                        .args(["-n", &ns, "link", "show", "eth0"])
                        .output();
                    if let Ok(o) = o {
                        looks.fetch_add(1, Relaxed);
                        if !String::from_utf8_lossy(&o.stdout).contains("prog/xdp") {
                            missing.fetch_add(1, Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        XdpWatch {
            stop,
            looks,
            missing,
            t: Some(t),
        }
    }

    /// (looks, looks without a program).
    fn finish(mut self) -> (u32, u32) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        (self.looks.load(Relaxed), self.missing.load(Relaxed))
    }
}

impl Drop for XdpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// tcpdump in the client namespace for TCP RSTs from the VIP (the director's kernel, or a
/// real server, answering a flow it does not know).
struct RstCapture {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl RstCapture {
    fn start(lab: &Lab) -> RstCapture {
        let filter = format!("src host {VIP} and tcp[tcpflags] & tcp-rst != 0");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("client")])
            .args(["tcpdump", "-i", "eth0", "-nn", "-l", "-U", &filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx2.send(l);
            }
        });
        // tcpdump says "listening on eth0" on stderr once the capture runs.
        let err = child.stderr.take().unwrap();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains("listening on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready
            .recv_timeout(secs(10))
            .expect("tcpdump did not start listening within 10 s");
        drop(tx);
        RstCapture { child, lines }
    }

    /// The RSTs seen so far (tcpdump lines).
    fn seen(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for RstCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab's configuration: an HTTP service on :80 (wrr) and the streaming service on
/// :9000 (rr), both DR over the two real servers, and non-default timeouts.
fn configure(lab: &Lab) {
    lab.adm_line(&format!("-A -t {VIP}:80 -s wrr"));
    lab.adm_line(&format!("-A -t {VIP}:{STREAM_PORT} -s rr"));
    for (i, rs) in RS_IPS[..2].iter().enumerate() {
        lab.adm_line(&format!("-a -t {VIP}:80 -r {rs} -g -w {}", i + 2));
        lab.adm_line(&format!("-a -t {VIP}:{STREAM_PORT} -r {rs} -g"));
    }
    lab.adm_line("--set 1000 100 200");
}

/// `-S -n` and `-L -n --timeout`: what must be identical after a restart.
fn saved_rules(lab: &Lab) -> String {
    lab.adm_ok(&["-S", "-n"]) + &lab.adm_ok(&["-L", "-n", "--timeout"])
}

/// One HTTP request to the VIP started now in the background (10 s at most): a SYN sent
/// while no xvsd runs must be retransmitted into the next one, not refused.
fn http_in_background(lab: &Lab) -> std::thread::JoinHandle<Http> {
    let ns = lab.ns("client");
    std::thread::spawn(move || {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "10"])
            .arg(format!("http://{VIP}/"))
            .output()
            .expect("curl");
        if o.status.success() {
            Http::Body(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Http::Failed {
                code: o.status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        }
    })
}

fn is_rs_body(h: &Http) -> bool {
    matches!(h, Http::Body(b) if b == "rs1" || b == "rs2")
}

/// SIGTERM, a 0.25 s gap, start `bin` on the saved state; asserts what must hold across it:
/// the program attached all along and swapped, the configuration back, a SYN of the gap
/// served, no RST from the VIP.
fn restart(lab: &mut Lab, pins: &Pins, bin: &Path, rules: &str) {
    let before = xdp_prog_id(lab).expect("an XDP program before the restart");
    let rst = RstCapture::start(lab);
    let watch = XdpWatch::start(lab);
    let st = lab.stop_xvsd_with("TERM");
    assert!(
        st.is_some_and(|s| s.success()),
        "xvsd did not exit cleanly on SIGTERM ({st:?}):\n{}",
        lab.xvsd_log()
    );
    assert!(
        pins.state.join("conns.sync").exists() && pins.state.join("config.json").exists(),
        "no state saved:\n{}",
        lab.xvsd_log()
    );
    assert_eq!(
        xdp_prog_id(lab),
        Some(before),
        "the old program must stay attached while xvsd is away"
    );
    let syn_in_gap = http_in_background(lab);
    std::thread::sleep(Duration::from_millis(250));
    start(lab, bin, &pins.args(30));
    let after = xdp_prog_id(lab).expect("an XDP program after the restart");
    assert_ne!(
        after, before,
        "the new xvsd must swap its own program into the link"
    );
    assert_eq!(
        saved_rules(lab),
        rules,
        "the configuration came back changed"
    );
    assert!(
        !pins.state.join("conns.sync").exists() && pins.state.join("conns.sync.restored").exists(),
        "the applied connection file must be retired"
    );
    let h = syn_in_gap.join().unwrap();
    assert!(
        is_rs_body(&h),
        "a connection opened during the gap must be served by the next xvsd, got {h}"
    );
    let h = lab.http(&format!("http://{VIP}/"));
    assert!(is_rs_body(&h), "a new connection after the restart: {h}");
    // Let the flows run on for a while: a RST for a flow the new xvsd does not know would
    // come within a retransmission or two.
    std::thread::sleep(secs(3));
    let (looks, missing) = watch.finish();
    assert!(looks >= 10, "the XDP watch looked only {looks} times");
    assert_eq!(
        missing, 0,
        "no XDP program on eth0 in {missing} of {looks} looks during the restart"
    );
    let rsts = rst.seen();
    assert!(
        rsts.is_empty(),
        "{} RST(s) from the VIP during the restart:\n{}\n{}",
        rsts.len(),
        rsts.join("\n"),
        lab.xvsd_log()
    );
}

fn flowing(lab: &Lab) -> Streams {
    let mut s = Streams::start(
        &lab.ns("client"),
        VIP,
        STREAM_PORT,
        12,
        2_000_000,
        100_000,
        secs(60),
    );
    assert_eq!(s.wait_flowing(secs(15)), 12, "not every flow got data");
    s
}

/// (a) SIGTERM and start again with `--state-dir`: the XDP program stays attached all
/// along (then the new one replaces it), the kernel sends no RST for the 12 streaming
/// flows nor for a SYN sent in the gap, and the services and timeouts are back without
/// `-R`.
#[test]
fn restart_keeps_steering_and_configuration() {
    let pins = Pins::new("xrsa");
    let mut lab = Lab::up("xrsa", 2, 1);
    start(&mut lab, xvsd_bin(), &pins.args(30));
    configure(&lab);
    let rules = saved_rules(&lab);
    let _flows = flowing(&lab);
    restart(&mut lab, &pins, xvsd_bin(), &rules);
}

/// (b) The same with a different binary (a copy elsewhere, as a package upgrade installs
/// one) started on the saved state.
#[test]
fn upgrade_to_another_binary_keeps_steering_and_configuration() {
    let pins = Pins::new("xrsb");
    let bin = pins.state.with_file_name("xvs-test-xrsb-xvsd-next");
    std::fs::copy(xvsd_bin(), &bin).expect("copying xvsd");
    let _rm = Rm(bin.clone());
    let mut lab = Lab::up("xrsb", 2, 1);
    start(&mut lab, xvsd_bin(), &pins.args(30));
    configure(&lab);
    let rules = saved_rules(&lab);
    let _flows = flowing(&lab);
    restart(&mut lab, &pins, &bin, &rules);
    // And back to the first binary (a downgrade is the same path).
    restart(&mut lab, &pins, xvsd_bin(), &rules);
}

/// A web server on the DIP in the director namespace (the host's own service).
struct DipServer(Child);

impl DipServer {
    fn start(lab: &Lab) -> DipServer {
        let c = Command::new("ip")
            .args(["netns", "exec", &lab.ns("dir")])
            .args(["python3", "-m", "http.server", "8000", "--bind", DIP])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the DIP web server");
        let s = DipServer(c);
        common::wait_for("the DIP web server", secs(10), || {
            !lab.exec("dir", &["ss", "-Htln", "sport = :8000"])
                .stdout
                .is_empty()
        });
        s
    }
}

impl Drop for DipServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ping_dip(lab: &Lab) -> bool {
    lab.exec("client", &["ping", "-c", "1", "-W", "2", DIP])
        .status
        .success()
}

/// (c) What a stopped or dead xvsd leaves: during the hold of a stopped one, VIP frames are
/// dropped (a SYN times out) while the host's own traffic works; after the hold, and at
/// once after kill -9, the kernel has the VIP (a SYN is refused) and the host works; the
/// next xvsd restores the last configuration even after the crash.
#[test]
fn stopped_and_crashed_xvsd_leave_the_host_working() {
    let pins = Pins::new("xrsc");
    let mut lab = Lab::up("xrsc", 2, 1);
    let _dip = DipServer::start(&lab);
    start(&mut lab, xvsd_bin(), &pins.args(3));
    configure(&lab);
    let rules = saved_rules(&lab);
    let dip_url = format!("http://{DIP}:8000/");
    let vip_url = format!("http://{VIP}/");

    // Stopped, within the 3 s hold: VIP frames dropped, the host answers.
    let stopped = Instant::now();
    assert!(lab.stop_xvsd_with("TERM").is_some_and(|s| s.success()));
    assert!(xdp_prog_id(&lab).is_some());
    let o = lab.exec("client", &["curl", "-sS", "--max-time", "1", &vip_url]);
    assert_eq!(
        o.status.code(),
        Some(28),
        "a SYN to the VIP during the hold must go unanswered (dropped), got: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(ping_dip(&lab), "ping to the DIP during the hold");
    assert!(
        matches!(lab.http(&dip_url), Http::Body(_)),
        "TCP to the DIP during the hold"
    );
    // After the hold: the kernel has the VIP again (nothing listens on :80 there).
    let left = secs(3).saturating_sub(stopped.elapsed()) + Duration::from_millis(500);
    std::thread::sleep(left);
    assert_eq!(
        lab.http(&vip_url),
        Http::Refused,
        "after the hold the director's kernel must answer the VIP"
    );

    // Back, then kill -9: no hold was set, the kernel answers at once.
    start(&mut lab, xvsd_bin(), &pins.args(30));
    assert_eq!(saved_rules(&lab), rules);
    assert!(is_rs_body(&lab.http(&vip_url)));
    lab.adm_line(&format!("-e -t {VIP}:80 -r {} -g -w 7", RS_IPS[0]));
    let rules = saved_rules(&lab);
    // The configuration is written through within about a second of a change.
    std::thread::sleep(Duration::from_millis(1500));
    let killed = lab.stop_xvsd_with("KILL");
    assert!(killed.is_some_and(|s| !s.success()), "{killed:?}");
    assert!(
        xdp_prog_id(&lab).is_some(),
        "the pinned program outlives a crash"
    );
    assert!(ping_dip(&lab), "ping to the DIP after kill -9");
    assert!(
        matches!(lab.http(&dip_url), Http::Body(_)),
        "TCP to the DIP after kill -9"
    );
    assert_eq!(
        lab.http(&vip_url),
        Http::Refused,
        "the kernel has the VIP after kill -9"
    );

    // The next xvsd: the last configuration (with the edit), no connections resurrected.
    assert!(!pins.state.join("conns.sync").exists());
    start(&mut lab, xvsd_bin(), &pins.args(30));
    assert_eq!(saved_rules(&lab), rules);
    assert!(is_rs_body(&lab.http(&vip_url)));
}

/// The connections each start restored, from the xvsd log ("connections restored ...
/// conns=N").
fn restored_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("connections restored"))
        .filter_map(|l| {
            let at = l.find(" conns=")? + 7;
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// (d) The streaming flows themselves survive a restart and then an upgrade: every byte,
/// no reset. The 12 connections go through `conns.sync` (the daemon's sync hooks dump and
/// park them); without them the restored xvsd would drop the flows' segments (TCP without
/// SYN) and they would stall.
#[test]
fn streaming_flows_survive_restart_and_upgrade() {
    let pins = Pins::new("xrsd");
    let bin = pins.state.with_file_name("xvs-test-xrsd-xvsd-next");
    std::fs::copy(xvsd_bin(), &bin).expect("copying xvsd");
    let _rm = Rm(bin.clone());
    // Two queues: two workers, each with its own table and socket to hand over.
    let mut lab = Lab::up("xrsd", 2, 2);
    start(&mut lab, xvsd_bin(), &pins.args(30));
    configure(&lab);
    let rules = saved_rules(&lab);
    let flows = flowing(&lab);
    restart(&mut lab, &pins, xvsd_bin(), &rules);
    restart(&mut lab, &pins, &bin, &rules);
    let r = flows.finish();
    let log = lab.xvsd_log();
    assert!(r.all_ok(), "{}\n{log}", r.describe());
    eprintln!("{}", r.describe());
    let restored = restored_counts(&log);
    assert!(
        restored.len() == 2 && restored.iter().all(|&n| n >= 12),
        "each start must restore the 12 flows, got {restored:?}"
    );
}
