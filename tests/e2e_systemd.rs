//! xvsd under systemd's protocols, without systemd: the notify datagrams arrive on a Unix
//! socket this test owns (`NOTIFY_SOCKET`), the journal is a file whose device and inode
//! the test puts in `JOURNAL_STREAM`. Also `--rules` at start and `xvsadm --reload`, the
//! unit's `ExecReload=`. Namespaces `xsys*`, torn down by the lab's `Drop`.

mod common;

use common::{Lab, RS_IPS, VIP};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The test's end of the notify socket; removed on drop.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let path = PathBuf::from(format!("/tmp/xvs-test-{name}.notify"));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { sock, path }
    }

    /// Datagrams until one contains `want` (10 s at most); all of them, in order.
    fn until(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.lines().any(|l| l == want);
                got.push(m);
                if done {
                    return got;
                }
            }
        }
        panic!("no {want:?} from xvsd within 10 s; got {got:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn save(lab: &Lab) -> String {
    lab.adm_ok(&["-S", "-n"])
}

#[test]
fn notify_protocol_rules_reload_and_journal_priorities() {
    let mut lab = Lab::up("xsysa", 2, 1);
    let notify = NotifySocket::bind("xsysa");
    let rules = PathBuf::from("/tmp/xvs-test-xsysa.rules");
    write(
        &rules,
        &format!(
            "# as ipvsadm-save -n writes it\n-A -t {VIP}:80 -s wrr\n-a -t {VIP}:80 -r {}:80 -g -w 2\n",
            RS_IPS[0]
        ),
    );
    // The lab's log is xvsd's stderr: name it as systemd names the journal stream.
    let log = PathBuf::from("/tmp/xvs-test-xsysa-xvsd.log");
    let m = std::fs::metadata(&log).expect("the lab's log file");
    std::env::set_var("NOTIFY_SOCKET", &notify.path);
    std::env::set_var("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    lab.start_xvsd(&["--rules", rules.to_str().unwrap()]);
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("JOURNAL_STREAM");

    // READY comes with the status line, and by then the rules are in.
    let got = notify.until("READY=1");
    let ready = got.last().unwrap();
    assert!(
        ready.contains(
            "STATUS=1 service, 1 real server, 0 active + 0 inactive connections, sync none"
        ),
        "{ready:?}"
    );
    let s = save(&lab);
    assert!(
        s.contains(&format!("-a -t {VIP}:80 -r {}:80 -g -w 2", RS_IPS[0])),
        "{s}"
    );

    // Journal lines: `<N>` first, no timestamp.
    let journal = lab.xvsd_log();
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<6>") && l.contains("control socket ready")),
        "{journal}"
    );
    assert!(
        journal.lines().all(|l| l.starts_with('<')),
        "every line carries a priority:\n{journal}"
    );

    // A good file: RELOADING with MONOTONIC_USEC, then READY; xvsadm answers when done.
    write(
        &rules,
        &format!(
            "-A -t {VIP}:80 -s wrr\n-a -t {VIP}:80 -r {}:80 -g -w 2\n-a -t {VIP}:80 -r {}:80 -g -w 5\n-A -u {VIP}:53 -s rr\n",
            RS_IPS[0], RS_IPS[1]
        ),
    );
    let out = lab.adm(&["--reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: 4 rule(s) applied\n", rules.display())
    );
    let got = notify.until("READY=1");
    let all = got.join("");
    let reloading = all.find("RELOADING=1").expect("RELOADING=1 before READY=1");
    assert!(all[reloading..].contains("\nMONOTONIC_USEC="), "{all:?}");
    assert!(
        got.last()
            .unwrap()
            .contains("STATUS=2 services, 2 real servers"),
        "{got:?}"
    );
    let s = save(&lab);
    assert!(s.contains(&format!("-A -u {VIP}:53 -s rr")), "{s}");

    // A bad file: refused with its line, non-zero, nothing changed, READY again.
    write(
        &rules,
        &format!(
            "-A -t {VIP}:80 -s wrr\n-a -t {VIP}:80 -r {}:80 -g -w 70000\n",
            RS_IPS[0]
        ),
    );
    let out = lab.adm(&["--reload"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: illegal weight specified") && err.contains("unchanged"),
        "{err}"
    );
    assert_eq!(save(&lab), s);
    notify.until("READY=1");
    assert!(lab
        .xvsd_log()
        .lines()
        .any(|l| l.starts_with("<3>") && l.contains("reload refused")));

    // SIGHUP takes the same path.
    write(&rules, &format!("-A -t {VIP}:80 -s rr\n"));
    lab.signal_xvsd("HUP");
    let got = notify.until("READY=1");
    assert!(got.join("").contains("RELOADING=1"), "{got:?}");
    assert_eq!(save(&lab), format!("-A -t {VIP}:80 -s rr\n"));

    // The stop is announced.
    let st = lab.stop_xvsd_with("TERM").expect("xvsd stops on SIGTERM");
    assert!(st.success(), "{st}");
    notify.until("STOPPING=1");
    let _ = std::fs::remove_file(&rules);
}

#[test]
fn bad_rules_stop_xvsd_and_reload_answers_for_config_or_nothing() {
    let mut lab = Lab::up("xsysb", 1, 1);
    let rules = PathBuf::from("/tmp/xvs-test-xsysb.rules");
    write(
        &rules,
        &format!("-A -t {VIP}:80 -s wrr\n-A -t {VIP}:80 -s nosuch\n"),
    );
    // Refused before anything is attached or served.
    let out = lab.exec(
        "dir",
        &[
            env!("CARGO_BIN_EXE_xvsd"),
            "--interface",
            "eth0",
            "--rules",
            rules.to_str().unwrap(),
            "--socket",
            "/run/xvs-test/xsysb-bad.sock",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: ", rules.display())) && err.contains("line 2"),
        "{err}"
    );
    let xdp = lab.exec("dir", &["ip", "link", "show", "eth0"]);
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "nothing attached: {xdp:?}"
    );
    // --rules and --config exclude each other (clap's message, exit 2).
    let out = lab.exec(
        "dir",
        &[
            env!("CARGO_BIN_EXE_xvsd"),
            "--interface",
            "eth0",
            "--rules",
            "/dev/null",
            "--config",
            "/dev/null",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    lab.start_xvsd(&[]);
    let out = lab.adm(&["--reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nothing to reload: xvsd runs without --config or --rules\n"
    );
    assert!(lab.stop_xvsd());

    // --config: the same command re-reads keepalived.conf as SIGHUP does.
    let conf = PathBuf::from("/tmp/xvs-test-xsysb-keepalived.conf");
    let vs = |port: u16| {
        format!(
            "virtual_server {VIP} {port} {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server {} {port} {{\n    weight 1\n  }}\n}}\n",
            RS_IPS[0]
        )
    };
    write(&conf, &vs(80));
    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    write(&conf, "virtual_server {VIP} 80 {\n  lb_algo nosuch\n");
    let out = lab.adm(&["--reload"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reload refused"),
        "{out:?}"
    );
    write(&conf, &format!("{}{}", vs(80), vs(443)));
    let out = lab.adm(&["--reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: 2 virtual server(s) reloaded\n", conf.display())
    );
    common::wait_for("the second service", Duration::from_secs(5), || {
        save(&lab).contains(&format!("-A -t {VIP}:443"))
    });
    let _ = std::fs::remove_file(&rules);
    let _ = std::fs::remove_file(&conf);
}
