//! MISC_CHECK (keepalived/check/check_misc.c, lib/notify.c `system_call_script`).
//!
//! As keepalived: the parsed words are exec'd directly (no shell unless `argv[0]` is one,
//! or is keepalived's `</path` file test, which goes to `/bin/sh -c`), in a process group
//! of their own, stdin/stdout/stderr on /dev/null, as the script's `user` (and group) when
//! given, with SIGTERM as parent-death signal; `IFS`, `LD_PRELOAD` and `LD_LIBRARY_PATH`
//! are removed from the environment (as keepalived after 2.2 does). At `misc_timeout` the
//! group gets SIGTERM, 2 s later SIGKILL; a timed-out script is a failure. Exit status: 0
//! up; with `misc_dynamic` 1 is down and 2..=255 up with weight status − 2; without it
//! any non-zero status is down. Death by a signal is down.
//!
//! Differences: a script that cannot be exec'd is down here (keepalived's forked child
//! logs the exec error and exits 0, i.e. up, and disables at load time a script it cannot
//! find); supplementary groups of `user` are dropped rather than set from the group
//! database; a process group that survives SIGKILL for 2 s more is reported down and left
//! to the kernel (keepalived keeps waiting 10 s at a time).

use super::{fmt_dur, io_msg, Outcome, UP};
use crate::kconf::MiscCheck;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// How long after SIGTERM keepalived sends SIGKILL (check_misc.c
/// `misc_check_child_thread`: `timeout = 2` in each kill state).
pub const MISC_KILL_GRACE: Duration = Duration::from_secs(2);

/// The outcome of a script that exited with `code` (check_misc.c
/// `misc_check_child_thread`). With `misc_dynamic`, status 0 restores the configured
/// weight (keepalived sets the checker's weight offset back to 0) and 2..=255 sets the
/// weight to status − 2.
pub fn misc_exit_outcome(code: i32, dynamic: bool, base_weight: u32) -> Outcome {
    match code {
        0 if dynamic => Outcome::Up {
            weight: Some(base_weight),
        },
        0 => UP,
        2..=255 if dynamic => Outcome::Up {
            weight: Some(code as u32 - 2),
        },
        n => Outcome::Down(format!("exited with status {n}")),
    }
}

fn status_outcome(st: ExitStatus, dynamic: bool, base_weight: u32) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(code), _) => misc_exit_outcome(code, dynamic, base_weight),
        (None, Some(sig)) => Outcome::Down(format!("killed by signal {sig}")),
        (None, None) => Outcome::Down(format!("ended with {st}")),
    }
}

/// Kills the script's process group if the check is dropped (the engine cancelled it)
/// before the script was reaped; `kill_on_drop` alone would leave its children running.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals the process group; no memory is
            // involved. An ESRCH (group gone) is fine.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

pub(super) async fn check(m: &MiscCheck, delay_loop: Duration, base_weight: u32) -> Outcome {
    let Some(prog) = m.script.argv.first() else {
        return Outcome::Down("no misc_path script".into());
    };
    let redirect = is_redirect_test(prog);
    let mut cmd = if redirect {
        let mut sh = tokio::process::Command::new("/bin/sh");
        sh.arg("-c").arg(shell_line(&m.script.argv));
        sh
    } else {
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(&m.script.argv[1..]);
        cmd
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("IFS")
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
        .process_group(0)
        .kill_on_drop(true);
    if let Some(spec) = m.script.user.as_deref() {
        match lookup_user(spec, m.script.group.as_deref()) {
            Ok((uid, gid)) => {
                cmd.uid(uid).gid(gid);
            }
            Err(e) => return Outcome::Down(e),
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe. keepalived sets the same parent-death signal so that a
    // script does not outlive the daemon.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Down(format!("exec {prog}: {}", io_msg(&e))),
    };
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let timeout = if m.timeout.is_zero() {
        delay_loop
    } else {
        m.timeout
    };
    if let Ok(r) = tokio::time::timeout(timeout, child.wait()).await {
        guard.pgid = None;
        return match r {
            // system(3) failing to find or run the command: keepalived's child exits 0
            // ("Script errors aren't server errors", notify.c `system_call_script`).
            Ok(st) if redirect && matches!(st.code(), Some(126 | 127)) => {
                misc_exit_outcome(0, m.dynamic, base_weight)
            }
            Ok(st) => status_outcome(st, m.dynamic, base_weight),
            Err(e) => Outcome::Down(format!("wait: {}", io_msg(&e))),
        };
    }
    let msg = format!("timeout after {}", fmt_dur(timeout));
    guard.signal(libc::SIGTERM);
    if let Ok(r) = tokio::time::timeout(MISC_KILL_GRACE, child.wait()).await {
        // The script died of our SIGTERM: make sure its children die too (check_misc.c
        // sends SIGKILL to the group then). The guard's drop does exactly that.
        drop(r);
        return Outcome::Down(msg);
    }
    guard.signal(libc::SIGKILL);
    let reaped = tokio::time::timeout(MISC_KILL_GRACE, child.wait())
        .await
        .is_ok();
    if reaped {
        guard.pgid = None;
        Outcome::Down(msg)
    } else {
        Outcome::Down(format!("{msg}; still running after SIGKILL"))
    }
}

/// keepalived's file test idiom, `misc_path "</path/to/file"`: a first word of `<`, blanks
/// and an absolute path is not exec'd but given to the shell (notify.c
/// `check_script_secure` returns SC_SYSTEM), so the check passes when the file opens.
pub(crate) fn is_redirect_test(argv0: &str) -> bool {
    argv0
        .strip_prefix('<')
        .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with('/'))
}

/// notify.c `cmd_str_r`: the words single-quoted for the shell, except a first word that
/// is a redirection.
pub(crate) fn shell_line(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if i == 0 && (a.starts_with('<') || a.starts_with('>')) {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

/// `user USER [GROUP]` → uid and gid (USER's primary group unless GROUP is given). Names
/// are looked up in the user and group databases; a number that is no name is taken as
/// the id itself.
fn lookup_user(user: &str, group: Option<&str>) -> Result<(u32, u32), String> {
    let mut words = user.split_whitespace();
    let user = words.next().ok_or("misc user: empty")?;
    // "USER GROUP" in one string is accepted too.
    let group = group.or(words.next());
    let (uid, mut gid) = match getpw(user) {
        Some(p) => p,
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, 0),
            Err(_) => return Err(format!("misc user {user}: no such user")),
        },
    };
    if let Some(group) = group {
        gid = match getgr(group).or_else(|| group.parse().ok()) {
            Some(g) => g,
            None => return Err(format!("misc group {group}: no such group")),
        };
    }
    Ok((uid, gid))
}

fn getpw(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r writes into it and
    // `buf` (of the length passed) and sets `res` to it on success or to null.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        );
        (rc == 0 && !res.is_null()).then_some((pw.pw_uid, pw.pw_gid))
    }
}

fn getgr(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in `getpw`, with getgrnam_r.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut res: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        );
        (rc == 0 && !res.is_null()).then_some(gr.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::check::is_up;

    #[test]
    fn exit_codes_plain() {
        assert_eq!(misc_exit_outcome(0, false, 7), UP);
        assert_eq!(
            misc_exit_outcome(1, false, 7),
            Outcome::Down("exited with status 1".into())
        );
        assert!(!is_up(&misc_exit_outcome(2, false, 7)));
        assert!(!is_up(&misc_exit_outcome(255, false, 7)));
    }

    #[test]
    fn exit_codes_dynamic() {
        assert_eq!(
            misc_exit_outcome(0, true, 7),
            Outcome::Up { weight: Some(7) }
        );
        assert!(!is_up(&misc_exit_outcome(1, true, 7)));
        assert_eq!(
            misc_exit_outcome(2, true, 7),
            Outcome::Up { weight: Some(0) }
        );
        assert_eq!(
            misc_exit_outcome(12, true, 7),
            Outcome::Up { weight: Some(10) }
        );
        assert_eq!(
            misc_exit_outcome(255, true, 7),
            Outcome::Up { weight: Some(253) }
        );
    }

    #[test]
    fn redirect_idiom() {
        assert!(is_redirect_test("</etc/up"));
        assert!(is_redirect_test("< \t/etc/up"));
        assert!(!is_redirect_test("<"));
        assert!(!is_redirect_test("<etc/up"));
        assert!(!is_redirect_test("/bin/true"));
        let argv: Vec<String> = ["</etc/up", "it's", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_line(&argv), "</etc/up 'it'\\''s' 'b'");
    }

    #[test]
    fn users() {
        assert_eq!(lookup_user("root", None), Ok((0, 0)));
        assert_eq!(lookup_user("0", Some("0")), Ok((0, 0)));
        assert_eq!(lookup_user("0 0", None), Ok((0, 0)));
        assert!(lookup_user("no-such-user-xvs", None).is_err());
        assert!(lookup_user("root", Some("no-such-group-xvs")).is_err());
    }
}
