//! One monotonic millisecond clock for the whole process, so that expiry times written by one
//! worker mean the same to every other thread (listings, persistence templates, rates).

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process (monotonic).
pub fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}
