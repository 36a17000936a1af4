//! The status page (`xvsd --web-listen`, `/`) in a real browser: headless Chromium, run in
//! the lab's client namespace, loads the page from the director, runs its script (which
//! refreshes the tables from `/api/status`, `/api/health` and the history) and the DOM is
//! checked for the lab's services and servers. keepalived's checkers feed the health
//! column (`--config`), one server is failed on purpose.
//!
//! Needs root and Debian's `chromium` (scripts/deps.sh installs it).
//! `XVS_UPDATE_SCREENSHOT=1` also writes the screenshot to docs/status-page.png.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const WEB: &str = "10.0.0.12:9109";

/// Three DR servers, weights 1 2 3, TCP_CHECK every 2 s; rs3 stays at weight 0 when its
/// check fails (inhibit_on_failure) so the page shows it DOWN in the pool.
fn conf() -> String {
    let mut c = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 2\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n"
    );
    for (i, ip) in RS_IPS.iter().enumerate() {
        let inhibit = if i == 2 {
            "        inhibit_on_failure\n"
        } else {
            ""
        };
        c.push_str(&format!(
            "    real_server {ip} 80 {{\n        weight {w}\n{inhibit}        TCP_CHECK {{\n            connect_timeout 1\n            delay_before_retry 1\n        }}\n    }}\n",
            w = i + 1
        ));
    }
    c.push_str("}\n");
    c
}

/// Chromium's profile directory, removed when the test ends (also on failure).
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium in the client namespace with `args` then `url`; 90 s at most.
fn chromium(lab: &Lab, profile: &Profile, args: &[&str], url: &str) -> String {
    let o = Command::new("timeout")
        .args(["90", "ip", "netns", "exec", &lab.ns("client")])
        .args([
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(["--no-first-run", "--disable-extensions", "--disable-sync"])
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium (scripts/deps.sh installs it)");
    assert!(
        o.status.success(),
        "chromium failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An HTTP GET from the client: (headers, body).
fn get(lab: &Lab, path: &str) -> (String, String) {
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-sS",
            "-i",
            "--max-time",
            "3",
            &format!("http://{WEB}{path}"),
        ],
    );
    assert!(
        o.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
    let (h, b) = text.split_once("\n\n").unwrap_or((&text, ""));
    (h.to_string(), b.to_string())
}

fn history(lab: &Lab, path: &str) -> serde_json::Value {
    let (h, b) = get(lab, path);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"))
}

fn max_of(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).max().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn chromium_shows_services_servers_health_and_graphs() {
    let mut lab = Lab::up("xvspage", 3, 1);
    let conf_path = PathBuf::from(format!("/tmp/xvs-test-{}-page.conf", lab.prefix));
    std::fs::write(&conf_path, conf()).unwrap();
    lab.start_xvsd(&["--config", conf_path.to_str().unwrap(), "--web-listen", WEB]);
    // A second service beside keepalived's, by hand: no checker, a NAT server.
    lab.adm_ok(&["-A", "-u", "10.0.0.88:53", "-s", "rr"]);
    lab.adm_ok(&[
        "-a",
        "-u",
        "10.0.0.88:53",
        "-r",
        "10.0.0.20:5353",
        "-m",
        "-w",
        "4",
    ]);

    // rs3's HTTP stops: its TCP_CHECK fails and inhibit_on_failure sets weight 0.
    let pid = std::fs::read_to_string(format!("/run/xvs-harness/{}/rs3.pid", lab.prefix)).unwrap();
    let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    wait_for("rs3 at weight 0", Duration::from_secs(20), || {
        lab.adm_ok(&["-L", "-n"])
            .lines()
            .any(|l| l.contains("10.0.0.21:80") && l.split_whitespace().nth(3) == Some("0"))
    });

    // Traffic for the rates and graphs: wrr 1:2 over rs1 and rs2.
    for _ in 0..60 {
        let r = lab.curl(&format!("http://{VIP}/"));
        assert!(r == "rs1" || r == "rs2", "{r}");
    }
    // The estimator (2 s) and the sampler (2 s) see it: a nonzero cps in the history.
    poll(
        "a nonzero cps in /api/history",
        Duration::from_secs(15),
        || {
            let h = history(&lab, "/api/history");
            let svc = h["series"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|s| s["service"] == "TCP 10.0.0.88:80" && s["server"].is_null())
                })
                .cloned()
                .ok_or_else(|| "no series for the service".to_string())?;
            match max_of(&svc, "cps") {
                0 => Err("cps still 0".to_string()),
                n => Ok(n),
            }
        },
    );
    let full = history(&lab, "/api/history");
    assert_eq!(full["interval_s"], 2);
    assert_eq!(full["points"], 300);
    // 2 services, 4 servers.
    assert_eq!(full["series"].as_array().unwrap().len(), 6, "{full}");
    // The increment the page asks for carries only the newer points.
    let seq_now = full["seq"].as_u64().unwrap();
    let inc = history(&lab, &format!("/page/history/{}", seq_now - 1));
    let inc_len = inc["series"][0]["cps"].as_array().unwrap().len() as u64;
    assert!(
        inc_len <= 1 + inc["seq"].as_u64().unwrap() - seq_now,
        "{inc}"
    );

    // The page itself: self-contained HTML, never cached.
    let (h, body) = get(&lab, "/");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(
        h.to_ascii_lowercase().contains("content-type: text/html"),
        "{h}"
    );
    assert!(
        h.to_ascii_lowercase().contains("cache-control: no-store"),
        "{h}"
    );
    assert!(
        !body.contains("<link") && !body.contains("src=\"http"),
        "external resource"
    );

    // Chromium: the DOM after the script ran (it marks #updated data-live="1" once it has
    // drawn from the JSON endpoints).
    let profile = Profile(PathBuf::from(format!(
        "/tmp/xvs-test-{}-chromium",
        lab.prefix
    )));
    let url = format!("http://{WEB}/");
    let dom = chromium(
        &lab,
        &profile,
        &["--virtual-time-budget=5000", "--dump-dom"],
        &url,
    );
    assert!(
        dom.contains("data-live=\"1\""),
        "the script did not refresh:\n{dom}"
    );
    assert!(dom.contains("data-service=\"TCP 10.0.0.88:80\""), "{dom}");
    assert!(dom.contains("data-service=\"UDP 10.0.0.88:53\""), "{dom}");
    for (ip, w, health) in [
        ("10.0.0.9", 1, "up"),
        ("10.0.0.20", 2, "up"),
        ("10.0.0.21", 0, "down"),
    ] {
        let row = format!(
            "<tr data-server=\"{ip}:80\"><td>{ip}:80</td><td class=\"fwd\">Route</td><td class=\"num\">{w}</td><td class=\"health {health}\" title=\"TCP_CHECK {ip}:80 {health} for"
        );
        assert!(dom.contains(&row), "no row {row}:\n{dom}");
    }
    assert!(
        dom.contains("<td>10.0.0.20:5353</td><td class=\"fwd\">Masq</td><td class=\"num\">4</td><td class=\"health none\""),
        "{dom}"
    );
    // A sparkline per service and server, drawn from the history.
    assert!(dom.matches("<svg class=\"spark\"").count() >= 6, "{dom}");
    assert!(
        !dom.contains("<td class=\"graph none\">no history</td>"),
        "{dom}"
    );

    // The screenshot for the docs.
    let png = PathBuf::from(format!("/tmp/xvs-test-{}-status.png", lab.prefix));
    let _ = std::fs::remove_file(&png);
    chromium(
        &lab,
        &profile,
        &[
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
    if std::env::var_os("XVS_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root().join("docs/status-page.png"), &bytes).unwrap();
    }
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(&conf_path);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}
