//! FILE_CHECK with its `track_file` (keepalived/check/check_file.c,
//! keepalived/trackers/track_file.c).
//!
//! As keepalived: the file's first 127 bytes are read as a C `strtol(…, 0)` number
//! (leading blanks, a sign, `0x` hex, `0` octal, trailing text ignored; no number, an empty
//! or missing file: 0). With the checker's weight `w` (default the track_file's, 1) and
//! `reverse`:
//! - `w == 0`: a zero value is up and non-zero is down (reversed: non-zero up, zero down),
//!   the weight staying the configured one;
//! - otherwise the offset `value × w` (negated with `reverse`, clamped to i32) is added
//!   to the configured weight (result clamped to 0..=i32::MAX); an offset of i32::MIN or
//!   less (keepalived's IPVS_WEIGHT_FAULT) is down.
//!
//! Differences: keepalived watches the file with inotify and applies changes at once;
//! this probe reads the file at each check (the engine's delay_loop is the latency). A
//! number outside i32 (keepalived logs "Invalid number" and keeps the previous state) is
//! down here, since a probe has no previous state.

use super::Outcome;
use crate::kconf::FileCheck;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

pub(super) fn check(f: &FileCheck, base_weight: u32) -> Outcome {
    let value = match read_value(f) {
        Ok(v) => v,
        Err(e) => return Outcome::Down(e),
    };
    file_outcome(f, value, base_weight)
}

fn read_value(f: &FileCheck) -> Result<i64, String> {
    // O_NONBLOCK as keepalived: a FIFO without writer reads as empty instead of hanging.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&f.path);
    let mut buf = [0u8; 127];
    let n = match file {
        Ok(mut file) => file.read(&mut buf).unwrap_or(0),
        // keepalived: a file it cannot open has the value 0.
        Err(_) => 0,
    };
    file_status(&buf[..n]).map_err(|e| format!("track_file {} ({}): {e}", f.name, f.path.display()))
}

/// The number keepalived reads from a tracked file's contents (track_file.c
/// `process_track_file`): `strtol(buf, NULL, 0)`, accepted within
/// `INT32_MIN..=INT32_MAX + 1`.
pub fn file_status(contents: &[u8]) -> Result<i64, String> {
    let v = strtol0(contents).ok_or_else(|| "number out of range".to_string())?;
    if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) + 1 {
        return Err(format!("invalid number {v}"));
    }
    Ok(v)
}

/// C `strtol(s, NULL, 0)`; `None` on overflow (ERANGE).
fn strtol0(s: &[u8]) -> Option<i64> {
    let mut i = 0;
    // C isspace; the text stops at a NUL as a C string does.
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let radix = if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
        16
    } else if s.get(i) == Some(&b'0') {
        8
    } else {
        10
    };
    let mut v: i128 = 0;
    while let Some(d) = s.get(i).and_then(|&b| (b as char).to_digit(radix)) {
        v = v * i128::from(radix) + i128::from(d);
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
        i += 1;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// The outcome of a tracked file's value (track_file.c `update_track_file_status`,
/// `process_update_checker_track_file_status`; ipwrapper.c `update_svr_wgt`).
pub(crate) fn file_outcome(f: &FileCheck, value: i64, base_weight: u32) -> Outcome {
    let down = || {
        Outcome::Down(format!(
            "track_file {}: value {value} (weight {}{}) means down",
            f.name,
            f.weight,
            if f.reverse { " reverse" } else { "" }
        ))
    };
    if f.weight == 0 {
        // "If the tracking weight is 0, a non-zero value means failure, a 0 status means
        // success" (reversed with `reverse`).
        return if (value != 0) != f.reverse {
            down()
        } else {
            Outcome::Up {
                weight: Some(base_weight),
            }
        };
    }
    let mult: i64 = if f.reverse { -1 } else { 1 };
    let offset = (i128::from(value) * i128::from(f.weight) * i128::from(mult))
        .clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i64;
    if offset <= i64::from(i32::MIN) {
        return down();
    }
    let w = (i64::from(base_weight) + offset).clamp(0, i64::from(i32::MAX));
    Outcome::Up {
        weight: Some(w as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::check::is_up;

    fn fc(weight: i32, reverse: bool) -> FileCheck {
        FileCheck {
            name: "tf".into(),
            path: "/nonexistent".into(),
            weight,
            reverse,
            init_value: None,
            init_overwrite: false,
        }
    }

    #[test]
    fn strtol_like_c() {
        assert_eq!(file_status(b"5\n"), Ok(5));
        assert_eq!(file_status(b"  -12 trailing"), Ok(-12));
        assert_eq!(file_status(b"0x1f"), Ok(31));
        assert_eq!(file_status(b"010"), Ok(8));
        assert_eq!(file_status(b"0x"), Ok(0));
        assert_eq!(file_status(b"09"), Ok(0));
        assert_eq!(file_status(b"+7"), Ok(7));
        assert_eq!(file_status(b""), Ok(0));
        assert_eq!(file_status(b"abc"), Ok(0));
        assert_eq!(file_status(b"2147483648"), Ok(2147483648));
        assert!(file_status(b"2147483649").is_err());
        assert_eq!(file_status(b"-2147483648"), Ok(-2147483648));
        assert!(file_status(b"-2147483649").is_err());
        assert!(file_status(b"99999999999999999999999").is_err());
    }

    #[test]
    fn value_times_weight() {
        let up = |w| Outcome::Up { weight: Some(w) };
        assert_eq!(file_outcome(&fc(1, false), 0, 10), up(10));
        assert_eq!(file_outcome(&fc(1, false), 5, 10), up(15));
        assert_eq!(file_outcome(&fc(1, false), -3, 10), up(7));
        // Below zero the weight is 0, the server still up (quiescent).
        assert_eq!(file_outcome(&fc(1, false), -30, 10), up(0));
        assert_eq!(file_outcome(&fc(2, true), 3, 10), up(4));
        assert_eq!(file_outcome(&fc(-2, false), 3, 10), up(4));
        // i32::MIN or beyond: keepalived's IPVS_WEIGHT_FAULT, down.
        assert!(!is_up(&file_outcome(
            &fc(1, false),
            i64::from(i32::MIN),
            10
        )));
        assert!(!is_up(&file_outcome(&fc(254, false), -10_000_000, 10)));
        assert!(!is_up(&file_outcome(
            &fc(-1, false),
            i64::from(i32::MAX) + 1,
            10
        )));
        assert_eq!(
            file_outcome(&fc(1, false), i64::from(i32::MAX) + 1, 10),
            up(i32::MAX as u32)
        );
    }

    #[test]
    fn weight_zero_is_a_switch() {
        assert_eq!(
            file_outcome(&fc(0, false), 0, 3),
            Outcome::Up { weight: Some(3) }
        );
        assert!(!is_up(&file_outcome(&fc(0, false), 1, 3)));
        assert!(!is_up(&file_outcome(&fc(0, false), -1, 3)));
        assert!(!is_up(&file_outcome(&fc(0, true), 0, 3)));
        assert_eq!(
            file_outcome(&fc(0, true), 7, 3),
            Outcome::Up { weight: Some(3) }
        );
    }

    #[test]
    fn missing_file_is_zero() {
        assert_eq!(check(&fc(0, false), 4), Outcome::Up { weight: Some(4) });
        assert!(!is_up(&check(&fc(0, true), 4)));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_contents_any_weight(data in proptest::collection::vec(any::<u8>(), 0..127), w in any::<i32>(), rev in any::<bool>(), base in any::<u32>()) {
            if let Ok(v) = file_status(&data) {
                let _ = file_outcome(&fc(w, rev), v, base);
            }
        }

        #[test]
        fn decimal_numbers_read_back(v in i64::from(i32::MIN)..=i64::from(i32::MAX)) {
            prop_assert_eq!(file_status(format!(" {v}\n").as_bytes()), Ok(v));
        }
    }
}
