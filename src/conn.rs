//! The connection table of one worker, with IPVS connection states and timeouts.
//!
//! Each worker owns its table (no locks on the data path): with DR and TUN a flow always
//! arrives on the same RX queue (the NIC's RSS hash, or veth's per-flow queue), so the worker
//! that created an entry is the one that sees its later packets. Load counters live on the
//! shared `DestRt` so that schedulers see global figures.
//!
//! Storage: a slab of fixed capacity plus a hash index of slab positions, both allocated up
//! front, so inserting never allocates. Expiry is a clock sweep: every call to `expire`
//! examines a bounded number of slots, so there is never a stop-the-world pass.

use crate::model::{ConnStatus, Protocol, Timeouts};
use crate::packet::{tcp_flags, FlowKey};
use crate::runtime::{DestRt, ServiceRt, Template};
use hashbrown::HashTable;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
            [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
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
            [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
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

/// One tracked connection.
pub struct Conn {
    pub key: FlowKey,
    pub state: ConnState,
    /// Absolute expiry on the worker's millisecond clock.
    pub expires_ms: u64,
    pub svc: Arc<ServiceRt>,
    pub dest: Arc<DestRt>,
    /// The persistence template that chose `dest`, if any (it outlives us, see runtime.rs).
    pub tpl: Option<Arc<Template>>,
    /// NAT: the real server's address and port of the reply tuple (RIP:rport -> CIP:cport,
    /// indexed too); `rip` is 0 for DR and TUN entries. Kept as two small fields rather
    /// than an `Option<FlowKey>` so an entry stays 64 bytes (see `reply_key`).
    pub rip: u32,
    pub rport: u16,
    /// NAT: where replies go back: the request's source MAC (the client or its router) and
    /// the port (interface) the request arrived on.
    pub client_mac: [u8; 6],
    pub in_port: u8,
}

impl Conn {
    /// A DR/TUN entry (no reply tuple).
    pub fn new(
        key: FlowKey,
        state: ConnState,
        expires_ms: u64,
        svc: Arc<ServiceRt>,
        dest: Arc<DestRt>,
        tpl: Option<Arc<Template>>,
    ) -> Self {
        Conn {
            key,
            state,
            expires_ms,
            svc,
            dest,
            tpl,
            rip: 0,
            rport: 0,
            client_mac: [0; 6],
            in_port: 0,
        }
    }

    /// The tuple a NAT reply carries, `None` for DR and TUN entries.
    pub fn reply_key(&self) -> Option<FlowKey> {
        (self.rip != 0).then_some(FlowKey {
            saddr: self.rip,
            daddr: self.key.saddr,
            sport: self.rport,
            dport: self.key.sport,
            proto: self.key.proto,
        })
    }

    /// Moves to `new`, keeping the server's active/inactive counters right.
    pub fn set_state(&mut self, new: ConnState) {
        if self.state.is_active() != new.is_active() {
            if new.is_active() {
                self.dest.inactive_conns.fetch_sub(1, Relaxed);
                self.dest.active_conns.fetch_add(1, Relaxed);
            } else {
                self.dest.active_conns.fetch_sub(1, Relaxed);
                self.dest.inactive_conns.fetch_add(1, Relaxed);
            }
        }
        self.state = new;
    }

    /// This entry as `-L -c` shows it.
    pub fn status(&self, now_ms: u64) -> ConnStatus {
        let proto = Protocol::from_number(self.key.proto).unwrap_or(Protocol::Tcp);
        ConnStatus {
            proto,
            expires_ms: self.expires_ms.saturating_sub(now_ms),
            state: self.state.name().to_string(),
            client_addr: Ipv4Addr::from(self.key.saddr),
            client_port: self.key.sport,
            virtual_addr: Ipv4Addr::from(self.key.daddr),
            virtual_port: self.key.dport,
            dest_addr: self.dest.addr,
            dest_port: self.dest.port,
            template: false,
        }
    }

    fn count(&self) {
        self.dest.bind_conn(self.state.is_active());
    }

    fn uncount(&self) {
        self.dest.unbind_conn(self.state.is_active());
        if let Some(t) = &self.tpl {
            t.n_control.fetch_sub(1, Relaxed);
        }
    }
}

/// Index entries are slot numbers; this bit marks the entry of a reply tuple.
const REPLY_TAG: u32 = 1 << 31;

fn untag(e: u32) -> (u32, bool) {
    (e & !REPLY_TAG, e & REPLY_TAG != 0)
}

/// The table is full; the new connection is refused (existing ones are never evicted early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

pub struct ConnTable {
    slots: Vec<Option<Conn>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    capacity: usize,
    len: usize,
    cursor: usize,
}

impl ConnTable {
    /// Allocates everything up front: inserting up to `capacity` entries never allocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_keys(capacity, 1)
    }

    /// A table whose entries may carry a reply key too (NAT): the index gets room for
    /// `keys_per_entry` keys per entry so that it never grows.
    pub fn with_capacity_and_keys(capacity: usize, keys_per_entry: usize) -> Self {
        // Slot numbers carry the reply tag in their top bit.
        let capacity = capacity.min(REPLY_TAG as usize - 1);
        ConnTable {
            slots: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            // Twice the keys: hashbrown then always rehashes in place when deletions have
            // used up its growth budget (it only allocates when more than half full), so a
            // table kept full under churn never allocates on the packet path.
            index: HashTable::with_capacity(capacity * keys_per_entry * 2),
            hasher: ahash::RandomState::new(),
            capacity,
            len: 0,
            cursor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn hash(&self, k: &FlowKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// The slot of the connection with this key (either direction).
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.find(key).map(|(s, _)| s)
    }

    /// The slot of the connection with this key, and whether `key` is its reply tuple.
    pub fn find(&self, key: &FlowKey) -> Option<(u32, bool)> {
        let h = self.hash(key);
        let slots = &self.slots;
        self.index
            .find(h, |&e| {
                let (slot, reply) = untag(e);
                slots[slot as usize].as_ref().is_some_and(|c| {
                    if reply {
                        c.reply_key().as_ref() == Some(key)
                    } else {
                        c.key == *key
                    }
                })
            })
            .map(|&e| untag(e))
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Inserts a new connection (the key must not be present) and counts it on its server.
    pub fn insert(&mut self, conn: Conn) -> Result<u32, TableFull> {
        if self.len >= self.capacity {
            return Err(TableFull);
        }
        let h = self.hash(&conn.key);
        conn.count();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(conn);
                s
            }
            None => {
                // Within the preallocated capacity: no reallocation.
                self.slots.push(Some(conn));
                (self.slots.len() - 1) as u32
            }
        };
        let reply = self.slots[slot as usize]
            .as_ref()
            .and_then(|c| c.reply_key());
        let slots = &self.slots;
        let hasher = &self.hasher;
        let rehash = |&e: &u32| {
            // Only called on growth, which capacity rules out; still correct if it happens.
            let (i, r) = untag(e);
            slots[i as usize].as_ref().map_or(0, |c| {
                if r {
                    c.reply_key().map_or(0, |k| hasher.hash_one(k))
                } else {
                    hasher.hash_one(c.key)
                }
            })
        };
        self.index.insert_unique(h, slot, rehash);
        if let Some(rk) = reply {
            let hr = self.hasher.hash_one(rk);
            self.index.insert_unique(hr, slot | REPLY_TAG, rehash);
        }
        self.len += 1;
        Ok(slot)
    }

    /// Removes the connection in `slot`, uncounting it.
    pub fn remove(&mut self, slot: u32) {
        let Some(conn) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        conn.uncount();
        let h = self.hash(&conn.key);
        if let Ok(e) = self.index.find_entry(h, |&i| i == slot) {
            e.remove();
        }
        if let Some(rk) = conn.reply_key() {
            let hr = self.hash(&rk);
            if let Ok(e) = self.index.find_entry(hr, |&i| i == slot | REPLY_TAG) {
                e.remove();
            }
        }
        self.free.push(slot);
        self.len -= 1;
    }

    /// Examines up to `budget` slots from the sweep cursor and removes expired entries
    /// (and entries of deleted services). Returns how many were removed.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let slot = self.cursor as u32;
            self.cursor += 1;
            let dead = match &self.slots[slot as usize] {
                Some(c) => c.expires_ms <= now_ms || c.svc.deleted.load(Relaxed),
                None => false,
            };
            if dead {
                self.remove(slot);
                removed += 1;
            }
        }
        removed
    }

    /// Visits every live connection (for listings; not on the packet path).
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for c in self.slots.iter().flatten() {
            f(c);
        }
    }

    /// Visits the live connections in at most `max_slots` slots from slot `from` on, and
    /// returns the slot to resume from (`None` once the end is reached). Bounded work for
    /// listings taken in chunks between packet batches; a slot's entry never moves, so
    /// resuming visits every entry that lived throughout exactly once.
    pub fn for_each_from(
        &self,
        from: usize,
        max_slots: usize,
        mut f: impl FnMut(&Conn),
    ) -> Option<usize> {
        let end = from.saturating_add(max_slots).min(self.slots.len());
        for c in self.slots.get(from..end).unwrap_or(&[]).iter().flatten() {
            f(c);
        }
        (end < self.slots.len()).then_some(end)
    }

    /// Removes everything (daemon shutdown), uncounting each entry.
    pub fn clear(&mut self) {
        for i in 0..self.slots.len() {
            self.remove(i as u32);
        }
    }
}

impl Drop for ConnTable {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Protocol, ServiceKey};
    use crate::sched;
    use tcp_flags::*;
    use ConnState::*;

    fn svc() -> Arc<ServiceRt> {
        Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 80,
            },
            sched::by_name("rr").unwrap(),
        ))
    }

    fn dest() -> Arc<DestRt> {
        Arc::new(DestRt::new(
            "10.0.0.9".parse().unwrap(),
            80,
            Forward::Route,
            1,
        ))
    }

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            saddr: 1,
            daddr: 2,
            sport,
            dport: 80,
            proto: 6,
        }
    }

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

    #[test]
    fn insert_lookup_counts_and_expire() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(4);
        let a = t
            .insert(Conn {
                key: key(1),
                state: SynRecv,
                expires_ms: 100,
                svc: s.clone(),
                dest: d.clone(),
                tpl: Option::None,
                rip: 0,
                rport: 0,
                client_mac: [0; 6],
                in_port: 0,
            })
            .unwrap();
        assert_eq!(d.inactive_conns.load(Relaxed), 1);
        t.get_mut(a).unwrap().set_state(Established);
        t.get_mut(a).unwrap().expires_ms = 1000;
        assert_eq!(
            (d.active_conns.load(Relaxed), d.inactive_conns.load(Relaxed)),
            (1, 0)
        );
        assert_eq!(t.lookup(&key(1)), Some(a));
        assert_eq!(t.lookup(&key(2)), Option::None);
        assert_eq!(t.expire(999, 10), 0);
        assert_eq!(t.expire(1000, 10), 1);
        assert_eq!(t.lookup(&key(1)), Option::None);
        assert_eq!(d.active_conns.load(Relaxed), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_without_eviction() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(2);
        for p in 0..2 {
            t.insert(Conn {
                key: key(p),
                state: Udp,
                expires_ms: 10,
                svc: s.clone(),
                dest: d.clone(),
                tpl: Option::None,
                rip: 0,
                rport: 0,
                client_mac: [0; 6],
                in_port: 0,
            })
            .unwrap();
        }
        let r = t.insert(Conn {
            key: key(9),
            state: Udp,
            expires_ms: 10,
            svc: s.clone(),
            dest: d.clone(),
            tpl: Option::None,
            rip: 0,
            rport: 0,
            client_mac: [0; 6],
            in_port: 0,
        });
        assert!(r.is_err());
        assert!(t.lookup(&key(0)).is_some() && t.lookup(&key(1)).is_some());
        assert_eq!(d.inactive_conns.load(Relaxed), 2);
        // Freed slots are reused.
        t.remove(t.lookup(&key(0)).unwrap());
        assert!(t
            .insert(Conn {
                key: key(9),
                state: Udp,
                expires_ms: 10,
                svc: s,
                dest: d.clone(),
                tpl: Option::None,
                rip: 0,
                rport: 0,
                client_mac: [0; 6],
                in_port: 0,
            })
            .is_ok());
        drop(t);
        assert_eq!(d.inactive_conns.load(Relaxed), 0);
    }

    #[test]
    fn deleted_service_entries_are_swept() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(2);
        t.insert(Conn {
            key: key(1),
            state: Established,
            expires_ms: u64::MAX,
            svc: s.clone(),
            dest: d.clone(),
            tpl: Option::None,
            rip: 0,
            rport: 0,
            client_mac: [0; 6],
            in_port: 0,
        })
        .unwrap();
        s.deleted.store(true, Relaxed);
        assert_eq!(t.expire(0, 8), 1);
        assert_eq!(d.active_conns.load(Relaxed), 0);
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::model::{Forward, Protocol, ServiceKey};

    #[test]
    fn for_each_from_visits_every_entry_once_in_bounded_steps() {
        let svc = Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Udp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 53,
            },
            crate::sched::by_name("rr").unwrap(),
        ));
        let d = Arc::new(DestRt::new(
            "10.0.0.9".parse().unwrap(),
            53,
            Forward::Route,
            1,
        ));
        let mut t = ConnTable::with_capacity(100);
        for p in 0..100u16 {
            let key = FlowKey {
                saddr: 1,
                daddr: 2,
                sport: p,
                dport: 53,
                proto: 17,
            };
            t.insert(Conn::new(
                key,
                ConnState::Udp,
                10,
                svc.clone(),
                d.clone(),
                None,
            ))
            .unwrap();
        }
        // Holes: every third entry gone.
        for s in (0..100).step_by(3) {
            t.remove(s);
        }
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        let mut steps = 0;
        while let Some(c) = cursor {
            let mut n = 0;
            cursor = t.for_each_from(c, 16, |e| {
                seen.push(e.key.sport);
                n += 1;
            });
            assert!(n <= 16);
            steps += 1;
        }
        assert_eq!(steps, 7, "100 slots in steps of 16");
        let want: Vec<u16> = (0..100).filter(|p| p % 3 != 0).collect();
        assert_eq!(seen, want);
        assert_eq!(t.for_each_from(500, 16, |_| panic!()), None);
        assert_eq!(
            ConnTable::with_capacity(4).for_each_from(0, 16, |_| panic!()),
            None
        );
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;
    use crate::model::{Forward, Protocol, ServiceKey};

    #[test]
    fn reply_key_finds_the_same_entry_and_is_removed_with_it() {
        let svc = Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 80,
            },
            crate::sched::by_name("rr").unwrap(),
        ));
        let d = Arc::new(DestRt::new(
            "192.168.80.10".parse().unwrap(),
            8080,
            Forward::Masq,
            1,
        ));
        let req = FlowKey {
            saddr: 1,
            daddr: 2,
            sport: 3000,
            dport: 80,
            proto: 6,
        };
        let rep = FlowKey {
            saddr: 9,
            daddr: 1,
            sport: 8080,
            dport: 3000,
            proto: 6,
        };
        let mut t = ConnTable::with_capacity_and_keys(4, 2);
        let s = t
            .insert(Conn {
                key: req,
                state: ConnState::SynRecv,
                expires_ms: 10,
                svc,
                dest: d,
                tpl: None,
                rip: rep.saddr,
                rport: rep.sport,
                client_mac: [0; 6],
                in_port: 0,
            })
            .unwrap();
        assert_eq!(t.find(&req), Some((s, false)));
        assert_eq!(t.find(&rep), Some((s, true)));
        t.remove(s);
        assert_eq!(t.find(&req), None);
        assert_eq!(t.find(&rep), None);
    }
}
