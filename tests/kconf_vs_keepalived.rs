//! The keepalived.conf parser against keepalived itself: `keepalived -t` (configuration
//! test) on each fixture must warn at the same lines xvsd's parser warns at, with the same
//! words for unknown keywords, and accept what xvsd accepts. keepalived comes from
//! Debian's package (scripts/deps.sh installs it); without it the test fails in CI and is
//! skipped with a message elsewhere.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn keepalived() -> Option<&'static str> {
    let p = "/usr/sbin/keepalived";
    if Path::new(p).exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "keepalived is not installed (scripts/deps.sh installs it)"
    );
    eprintln!("skipped: keepalived is not installed");
    None
}

/// keepalived's `(FILE: Line N) message` lines, as (line, message).
fn keepalived_warnings(bin: &str, file: &Path) -> BTreeSet<(u32, String)> {
    let out = Command::new(bin)
        .arg("-t")
        .arg("-f")
        .arg(file)
        .output()
        .expect("running keepalived -t");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('(')?;
            let (loc, msg) = rest.split_once(") ")?;
            let line = loc.rsplit_once("Line ")?.1.parse().ok()?;
            Some((line, msg.to_string()))
        })
        .collect()
}

#[test]
fn keepalived_warns_where_xvs_warns() {
    let Some(bin) = keepalived() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kconf");
    let mut checked = 0;
    for f in ["seed-lab.conf", "checkers.conf", "groups.conf"] {
        let path = dir.join(f);
        let ours = xvs::kconf::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        let theirs = keepalived_warnings(bin, &path);
        // Lines keepalived warns about; our own extension keyword (xvs_on_dead) is one
        // keepalived does not know, which is expected.
        let their_lines: BTreeSet<u32> = theirs
            .iter()
            .filter(|(_, m)| !m.contains("'xvs_"))
            .map(|(l, _)| *l)
            .collect();
        let our_lines: BTreeSet<u32> = ours.warnings.iter().map(|w| w.loc.line).collect();
        assert_eq!(
            our_lines, their_lines,
            "{f}: warned lines (keepalived: {theirs:?})"
        );
        // Unknown keywords are reported in keepalived's words.
        for (line, msg) in &theirs {
            if msg.starts_with("Unknown keyword") && !msg.contains("'xvs_") {
                assert!(
                    ours.warnings
                        .iter()
                        .any(|w| w.loc.line == *line && w.msg.contains(msg.as_str())),
                    "{f}:{line}: keepalived says {msg:?}; ours: {:?}",
                    ours.warnings
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
}
