//! ICMP errors about DR/TUN connections that arrive on another worker's queue.
//!
//! DR/TUN connections live in per-worker tables, but an ICMP error is hashed to an RX queue
//! by its own addresses (the router that sent it, the VIP), not by the connection's. A
//! worker that finds no connection for an error (`Verdict::Handoff`) copies the frame into
//! the next worker's queue; that worker looks it up in its own table and relays it from one
//! of its own UMEM frames as a local hit would, or passes it on to the next one. The copy
//! goes round the workers once: the last one that misses drops it (`no_conn`), so every
//! error ends exactly once, relayed by one worker or dropped by one.
//!
//! The queues are bounded and allocated at start-up (`HANDOFF_QUEUE` frames of
//! `MAX_FRAME` bytes per worker); pushing and popping copy the frame and never allocate or
//! lock. A frame longer than `MAX_FRAME` (routers quote at most 576 bytes, RFC 1812) or a
//! full queue is dropped and counted (`icmp_handoff_lost`).

use crossbeam::queue::ArrayQueue;

/// Longest frame handed off: a full Ethernet frame at MTU 1500.
pub const MAX_FRAME: usize = 1514;
/// Frames each worker's queue holds.
pub const HANDOFF_QUEUE: usize = 64;
/// Frames a worker takes from its queue per loop iteration.
pub const HANDOFF_PER_ITER: usize = 16;

/// A copy of an ICMP error frame on its way round the workers.
pub struct HandoffFrame {
    pub len: u16,
    /// Workers still to ask after the one that receives this copy.
    pub hops_left: u16,
    pub data: [u8; MAX_FRAME],
}

impl HandoffFrame {
    /// A copy of `frame` to ask `hops` more workers about; `None` if it is too long.
    pub fn copy_of(frame: &[u8], hops: u16) -> Option<HandoffFrame> {
        if frame.len() > MAX_FRAME {
            return None;
        }
        let mut f = HandoffFrame {
            len: frame.len() as u16,
            hops_left: hops,
            data: [0; MAX_FRAME],
        };
        f.data[..frame.len()].copy_from_slice(frame);
        Some(f)
    }

    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

/// One queue per worker, shared by all of them (created by the daemon).
pub struct Handoffs {
    queues: Box<[ArrayQueue<HandoffFrame>]>,
}

impl Handoffs {
    pub fn new(workers: usize) -> Handoffs {
        Handoffs {
            queues: (0..workers)
                .map(|_| ArrayQueue::new(HANDOFF_QUEUE))
                .collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.queues.len()
    }

    /// The worker after `me` in the ring.
    pub fn next(&self, me: usize) -> usize {
        (me + 1) % self.queues.len()
    }

    /// Queues `f` for worker `to`; false (and `f` dropped) if that queue is full.
    pub fn send(&self, to: usize, f: HandoffFrame) -> bool {
        self.queues[to].push(f).is_ok()
    }

    /// The next frame queued for worker `me`.
    pub fn recv(&self, me: usize) -> Option<HandoffFrame> {
        self.queues[me].pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_round_the_ring_and_is_bounded() {
        let h = Handoffs::new(3);
        assert_eq!((h.next(0), h.next(2)), (1, 0));
        assert!(HandoffFrame::copy_of(&[0; MAX_FRAME + 1], 2).is_none());
        let f = HandoffFrame::copy_of(&[7; 100], 2).unwrap();
        assert_eq!(f.frame(), &[7; 100][..]);
        for _ in 0..HANDOFF_QUEUE {
            assert!(h.send(1, HandoffFrame::copy_of(&[1], 2).unwrap()));
        }
        assert!(!h.send(1, f), "a full queue refuses");
        assert!(h.recv(0).is_none());
        assert_eq!(h.recv(1).unwrap().frame(), &[1]);
    }
}
