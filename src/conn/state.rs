//! IPVS connection states: the TCP state machine (`tcp_states[]` of `ip_vs_proto_tcp.c`,
//! input, output and input-only tables) and the per-state timeouts (`--set`).

use crate::model::Timeouts;
use crate::packet::tcp_flags;

/// IPVS TCP states, in IPVS order (`IP_VS_TCP_S_*`), plus the UDP pseudo-state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    None = 0,
    Established,
    SynSent,
    SynRecv,
    FinWait,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    SynAck,
    Udp,
}

impl ConnState {
    pub const COUNT: usize = 12;

    /// The name `ipvsadm -L -c` prints.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::None => "NONE",
            ConnState::Established => "ESTABLISHED",
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::Listen => "LISTEN",
            ConnState::SynAck => "SYNACK",
            ConnState::Udp => "UDP",
        }
    }

    /// IPVS counts only ESTABLISHED as active; everything else (UDP too) is inactive.
    pub fn is_active(self) -> bool {
        self == ConnState::Established
    }
}

/// Per-state timeouts in milliseconds, derived from the `--set` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTimeouts {
    ms: [u64; ConnState::COUNT],
}

impl StateTimeouts {
    /// IPVS defaults (ip_vs_proto_tcp.c, ip_vs_proto_udp.c) with ESTABLISHED, FIN_WAIT and UDP
    /// taken from `t` (what `ipvsadm --set tcp tcpfin udp` controls).
    pub fn new(t: &Timeouts) -> Self {
        use ConnState::*;
        let mut s = [0u64; ConnState::COUNT];
        let secs = |st: ConnState, v: u32, s: &mut [u64; ConnState::COUNT]| {
            s[st as usize] = v as u64 * 1000
        };
        secs(None, 2, &mut s);
        secs(Established, t.tcp, &mut s);
        secs(SynSent, 120, &mut s);
        secs(SynRecv, 60, &mut s);
        secs(FinWait, t.tcp_fin, &mut s);
        secs(TimeWait, 120, &mut s);
        secs(Close, 10, &mut s);
        secs(CloseWait, 60, &mut s);
        secs(LastAck, 30, &mut s);
        secs(Listen, 120, &mut s);
        secs(SynAck, 120, &mut s);
        secs(Udp, t.udp, &mut s);
        StateTimeouts { ms: s }
    }

    pub fn get(&self, s: ConnState) -> u64 {
        self.ms[s as usize]
    }
}

impl Default for StateTimeouts {
    fn default() -> Self {
        Self::new(&Timeouts::default())
    }
}

/// Which IPVS transition table applies: DR and TUN see only client-to-server packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
    InputOnly,
}

/// Index into the transition table by TCP flags, as IPVS's `tcp_state_idx`:
/// RST beats SYN beats FIN beats ACK; a segment with none of them changes nothing.
fn flag_index(flags: u8) -> Option<usize> {
    if flags & tcp_flags::RST != 0 {
        Some(3)
    } else if flags & tcp_flags::SYN != 0 {
        Some(0)
    } else if flags & tcp_flags::FIN != 0 {
        Some(1)
    } else if flags & tcp_flags::ACK != 0 {
        Some(2)
    } else {
        None
    }
}

/// IPVS `tcp_states[]` (the non-"secure_tcp" table), rows syn/fin/ack/rst per direction,
/// columns the current state sNO..sSA.
/// The INPUT and INPUT-ONLY `ack` rows take sNO to sES, as the kernel's table has since
/// sloppy TCP (v3.10): a connection created by a segment without SYN (mid-flow scheduling,
/// `Cx::new_conn`) starts ESTABLISHED at its first ACK. A SYN-created connection is never
/// in sNO when its next segment arrives, so nothing else changes.
const TCP_STATES: [[[ConnState; 11]; 4]; 3] = {
    use ConnState::{
        Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA,
        Listen as LI, SynRecv as SR, SynSent as SS, TimeWait as TW,
    };
    [
        // INPUT
        [
            [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
            [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
        ],
        // OUTPUT
        [
            [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
            [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
            [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
        ],
        // INPUT-ONLY
        [
            [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
            [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
        ],
    ]
};

/// The next TCP state after a segment with `flags` in direction `dir`.
pub fn tcp_transition(cur: ConnState, flags: u8, dir: Direction) -> ConnState {
    let Some(row) = flag_index(flags) else {
        return cur;
    };
    if cur == ConnState::Udp {
        return cur;
    }
    TCP_STATES[dir as usize][row][cur as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::*;
    use ConnState::*;

    #[test]
    fn input_only_handshake_and_close() {
        let d = Direction::InputOnly;
        let mut s = tcp_transition(None, SYN, d);
        assert_eq!(s, SynRecv);
        s = tcp_transition(s, ACK, d);
        assert_eq!(s, Established);
        s = tcp_transition(s, ACK | FIN, d);
        assert_eq!(s, FinWait);
        s = tcp_transition(s, ACK, d);
        assert_eq!(s, FinWait);
        assert_eq!(tcp_transition(Established, RST, d), Close);
        assert_eq!(tcp_transition(SynRecv, RST, d), SynRecv);
        assert_eq!(tcp_transition(Established, 0, d), Established);
    }

    #[test]
    fn nat_sees_synack_and_fin_both_ways() {
        let mut s = tcp_transition(None, SYN, Direction::Input);
        assert_eq!(s, SynRecv);
        s = tcp_transition(s, SYN | ACK, Direction::Output);
        assert_eq!(s, SynRecv);
        s = tcp_transition(s, ACK, Direction::Input);
        assert_eq!(s, Established);
        s = tcp_transition(s, FIN | ACK, Direction::Output);
        assert_eq!(s, FinWait);
        s = tcp_transition(s, FIN | ACK, Direction::Input);
        assert_eq!(s, TimeWait);
    }

    #[test]
    fn ack_without_syn_establishes_a_new_entry() {
        // Kernel tcp_states[] since sloppy TCP: INPUT/INPUT-ONLY ack from sNO is sES.
        assert_eq!(tcp_transition(None, ACK, Direction::Input), Established);
        assert_eq!(tcp_transition(None, ACK, Direction::InputOnly), Established);
        assert_eq!(tcp_transition(None, ACK | FIN, Direction::Input), Close);
        assert_eq!(tcp_transition(None, ACK | RST, Direction::InputOnly), Close);
    }

    #[test]
    fn timeouts_follow_set() {
        let t = StateTimeouts::new(&Timeouts {
            tcp: 5,
            tcp_fin: 3,
            udp: 7,
        });
        assert_eq!(t.get(Established), 5000);
        assert_eq!(t.get(FinWait), 3000);
        assert_eq!(t.get(Udp), 7000);
        assert_eq!(t.get(SynRecv), 60_000);
        assert_eq!(t.get(Close), 10_000);
    }
}
