//! TCP_CHECK (keepalived/check/check_tcp.c): up when a TCP connection to the target is
//! established within connect_timeout; the connection is then closed without sending
//! anything. Refused, unreachable or timed out: down.

use super::{tcp_connect, Outcome, UP};
use crate::kconf::Checker;
use tokio::time::Instant;

pub(super) async fn check(c: &Checker, deadline: Instant) -> Outcome {
    match tcp_connect(c, deadline, c.timing.connect_timeout).await {
        Ok(s) => {
            drop(s);
            UP
        }
        Err(e) => Outcome::Down(e),
    }
}
