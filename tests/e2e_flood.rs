//! Table pressure on the veth harness: a spoofed SYN flood (real hping3) that fills the
//! connection table, legitimate clients (real curl) during and after it, and an established
//! keep-alive connection throughout. Needs root and hping3; run with `--test-threads=1`.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The table of the measured case (65536 entries): hping3 fills it in about a second here.
const CONN_MAX: &str = "65536";

/// `hping3 --flood --rand-source -S` at VIP:80 from the client, for at most `secs`.
struct Flood(Child);

impl Flood {
    fn start(lab: &Lab, secs: u32) -> Flood {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("client")])
            .args(["timeout", &secs.to_string(), "hping3", "--flood"])
            .args(["--rand-source", "-S", "-p", "80", VIP])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("hping3 (scripts/deps.sh installs it)");
        Flood(child)
    }

    fn stop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-f", "hping3 --flood --rand-source"])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One new HTTP connection from the client: true when a real server answered.
fn served(lab: &Lab, max_time: &str) -> bool {
    let o = lab.exec(
        "client",
        &["curl", "-s", "--max-time", max_time, "http://10.0.0.88/"],
    );
    o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("rs")
}

fn flood_lab(prefix: &str, policy: &str) -> Lab {
    let mut lab = Lab::up(prefix, 3, 1);
    lab.start_xvsd(&["--conn-max", CONN_MAX, "--table-full", policy]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "wlc"]);
    add_dr_servers(&lab, "-t", "10.0.0.88:80", [1, 1, 1]);
    wait_for("the service to answer", Duration::from_secs(10), || {
        served(&lab, "2")
    });
    lab
}

/// Waits until the flood has filled the table.
fn wait_full(lab: &Lab) {
    wait_for(
        "the flood to fill the table",
        Duration::from_secs(10),
        || lab.counter("conns") >= CONN_MAX.parse::<u64>().unwrap(),
    );
}

#[test]
fn syn_flood_filling_the_table_does_not_lock_clients_out() {
    let lab = flood_lab("e2eflood", "evict-half-open");
    let mut ka = KeepAlive::open(&lab);
    assert!(ka.get().starts_with("rs"), "keep-alive before the flood");

    let mut flood = Flood::start(&lab, 60);
    wait_full(&lab);
    let (mut ok, n) = (0, 20);
    let t0 = Instant::now();
    for _ in 0..n {
        ok += served(&lab, "3") as u32;
    }
    let during = t0.elapsed();
    let half_open = lab.counter("half_open");
    let ka_during = ka.get();
    let evicted_during = lab.counter("evicted");
    flood.stop();
    assert!(
        ok * 10 >= n * 9,
        "only {ok} of {n} new connections served during the flood ({during:?})\n{}",
        lab.adm_ok(&["--datapath"])
    );
    assert!(ka_during.starts_with("rs"), "established flow: {ka_during}");
    // The flood really kept the table full of half-open entries and made them go.
    assert!(half_open > 60_000, "half_open {half_open}");
    assert!(evicted_during > 1000, "evicted {evicted_during}");
    assert_eq!(lab.counter("table_full"), 0);

    // Right after it: every new connection is served, the established one goes on.
    for i in 0..10 {
        assert!(served(&lab, "3"), "connection {i} after the flood");
    }
    assert!(ka.get().starts_with("rs"), "keep-alive after the flood");
    // The flood's cost is visible: frames received and connections made and evicted.
    assert!(lab.counter("new_conns") > lab.counter("conns") + 1000);
}

/// The same flood against IPVS's behaviour without drop_entry (`--table-full refuse`):
/// the table stays full of half-open entries and new clients are refused, which is what
/// the default policy prevents (this is the check that fails without it).
#[test]
fn refuse_policy_locks_clients_out_while_the_table_is_full() {
    let lab = flood_lab("e2eflref", "refuse");
    let mut ka = KeepAlive::open(&lab);
    assert!(ka.get().starts_with("rs"));
    let mut flood = Flood::start(&lab, 30);
    wait_full(&lab);
    let ok: u32 = (0..3).map(|_| served(&lab, "2") as u32).sum();
    let refused = lab.counter("table_full");
    assert!(
        ka.get().starts_with("rs"),
        "established flows survive either way"
    );
    flood.stop();
    assert_eq!(
        ok, 0,
        "a new connection got through a table full of half-open entries"
    );
    assert!(refused > 1000, "table_full {refused}");
    assert_eq!(lab.counter("evicted"), 0);
}
