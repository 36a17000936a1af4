//! The generated files the Debian package ships, checked against xvsd's clap `Command`:
//! `dist/man/xvsd.8` (clap_mangen) and `dist/completions/xvsd.bash` (clap_complete). A
//! changed option fails here until the files are regenerated with
//! `XVS_UPDATE_DIST=1 cargo test --test dist_files`. Also: the unit passes
//! `systemd-analyze verify` with its binaries in place.

use clap::CommandFactory;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `got` with the committed file, or rewrites it under XVS_UPDATE_DIST=1.
fn check(rel: &str, got: &[u8]) {
    let path = root().join(rel);
    if std::env::var_os("XVS_UPDATE_DIST").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_default();
    assert!(
        want == got,
        "{rel} is out of date: XVS_UPDATE_DIST=1 cargo test --test dist_files"
    );
}

#[test]
fn xvsd_man_page_is_generated_from_the_options() {
    let cmd = xvs::daemon::args::Args::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(format!("xvs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .unwrap();
    let text = String::from_utf8_lossy(&page);
    assert!(text.contains("\\-\\-rules") && text.contains("\\-\\-state\\-dir"));
    check("dist/man/xvsd.8", &page);
}

#[test]
fn xvsd_bash_completion_is_generated_from_the_options() {
    let mut cmd = xvs::daemon::args::Args::command();
    let mut out = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "xvsd", &mut out);
    assert!(String::from_utf8_lossy(&out).contains("--rules"));
    check("dist/completions/xvsd.bash", &out);
}

#[test]
fn hand_written_xvsadm_page_names_every_xvs_option() {
    let page = std::fs::read_to_string(root().join("dist/man/xvsadm.8")).unwrap();
    for opt in [
        "reload",
        "announce",
        "datapath",
        "health",
        "on-dead",
        "sync-peer",
        "bulk-peer",
        "socket",
    ] {
        assert!(
            page.contains(&format!("\\-\\-{}", opt.replace('-', "\\-"))),
            "xvsadm.8 lacks --{opt}"
        );
    }
}

/// `systemd-analyze verify` wants the unit's executables where ExecStart names them; a
/// copy of the unit pointing at this build's binaries is checked instead.
#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze not found (scripts/deps.sh installs systemd)");
    }
    let unit = std::fs::read_to_string(root().join("dist/systemd/xvsd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/usr/sbin/xvsadm --reload"));
    let dir = std::env::temp_dir().join(format!("xvs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = unit
        .replace("/usr/sbin/xvsd", env!("CARGO_BIN_EXE_xvsd"))
        .replace("/usr/sbin/xvsadm", env!("CARGO_BIN_EXE_xvsadm"))
        // The man pages are not installed here; the package check verifies the real unit.
        .replace("Documentation=man:xvsd(8) man:xvsadm(8)\n", "");
    let path = dir.join("xvsd.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("xvsd.service"),
        "systemd-analyze verify: {err}"
    );
}
