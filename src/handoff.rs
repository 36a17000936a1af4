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
//!
//! A worker asleep in poll(2) (idle, without `--busy-poll`) also polls its queue's eventfd,
//! which a sender writes only while that worker says it sleeps: no syscall otherwise.

use crossbeam::queue::ArrayQueue;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering::Relaxed, Ordering::SeqCst};

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
    /// The port the first worker received the frame on.
    pub in_port: u8,
    pub data: [u8; MAX_FRAME],
}

impl HandoffFrame {
    /// A copy of `frame` (received on `in_port`) to ask `hops` more workers about; `None`
    /// if it is too long.
    pub fn copy_of(frame: &[u8], hops: u16, in_port: u8) -> Option<HandoffFrame> {
        if frame.len() > MAX_FRAME {
            return None;
        }
        let mut f = HandoffFrame {
            len: frame.len() as u16,
            hops_left: hops,
            in_port,
            data: [0; MAX_FRAME],
        };
        f.data[..frame.len()].copy_from_slice(frame);
        Some(f)
    }

    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

/// One worker's queue.
struct Peer {
    queue: ArrayQueue<HandoffFrame>,
    /// Set while the worker sleeps in poll(2): a sender then writes `wake`.
    sleeping: AtomicBool,
    /// An eventfd in the worker's poll set.
    wake: OwnedFd,
}

/// One queue per worker, shared by all of them (created by the daemon).
pub struct Handoffs {
    queues: Box<[Peer]>,
}

impl Handoffs {
    pub fn new(workers: usize) -> std::io::Result<Handoffs> {
        let queues = (0..workers)
            .map(|_| {
                // SAFETY: eventfd has no memory preconditions; the fd is checked below.
                let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(Peer {
                    queue: ArrayQueue::new(HANDOFF_QUEUE),
                    sleeping: AtomicBool::new(false),
                    // SAFETY: a new fd that nothing else owns.
                    wake: unsafe { OwnedFd::from_raw_fd(fd) },
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Handoffs { queues })
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
        let p = &self.queues[to];
        if p.queue.push(f).is_err() {
            return false;
        }
        // Pairs with the fence in `sleep_begin`: either the worker sees the frame before it
        // sleeps, or this sees it sleeping.
        fence(SeqCst);
        if p.sleeping.load(Relaxed) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(p.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        true
    }

    /// The next frame queued for worker `me`.
    pub fn recv(&self, me: usize) -> Option<HandoffFrame> {
        self.queues[me].queue.pop()
    }

    /// Worker `me` is about to sleep in poll(2) with `wake_fd(me)` in its set: false if a
    /// frame is already waiting (then it must not sleep; `sleep_end` either way).
    pub fn sleep_begin(&self, me: usize) -> bool {
        let p = &self.queues[me];
        p.sleeping.store(true, Relaxed);
        fence(SeqCst);
        p.queue.is_empty()
    }

    /// Worker `me` is awake again: senders stop writing its eventfd, which is emptied.
    pub fn sleep_end(&self, me: usize) {
        let p = &self.queues[me];
        p.sleeping.store(false, Relaxed);
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; the fd is non-blocking.
        unsafe { libc::read(p.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The eventfd a sender writes while worker `me` sleeps.
    pub fn wake_fd(&self, me: usize) -> RawFd {
        self.queues[me].wake.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_round_the_ring_and_is_bounded() {
        let h = Handoffs::new(3).unwrap();
        assert_eq!((h.next(0), h.next(2)), (1, 0));
        assert!(HandoffFrame::copy_of(&[0; MAX_FRAME + 1], 2, 0).is_none());
        let f = HandoffFrame::copy_of(&[7; 100], 2, 0).unwrap();
        assert_eq!(f.frame(), &[7; 100][..]);
        for _ in 0..HANDOFF_QUEUE {
            assert!(h.send(1, HandoffFrame::copy_of(&[1], 2, 0).unwrap()));
        }
        assert!(!h.send(1, f), "a full queue refuses");
        assert!(h.recv(0).is_none());
        assert_eq!(h.recv(1).unwrap().frame(), &[1]);
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_an_awake_one_is_not() {
        let h = Handoffs::new(2).unwrap();
        // Awake: no wake-up written.
        assert!(h.send(1, HandoffFrame::copy_of(&[1], 0, 0).unwrap()));
        assert!(!readable(h.wake_fd(1)));
        // A frame waiting: do not sleep.
        assert!(!h.sleep_begin(1));
        h.sleep_end(1);
        assert!(h.recv(1).is_some());
        // Asleep: the sender wakes it; awake again, the eventfd is empty.
        assert!(h.sleep_begin(1));
        assert!(h.send(1, HandoffFrame::copy_of(&[2], 0, 0).unwrap()));
        assert!(readable(h.wake_fd(1)));
        h.sleep_end(1);
        assert!(!readable(h.wake_fd(1)));
    }
}
