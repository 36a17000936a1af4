//! IPVS connection synchronisation between directors (active/backup).
//!
//! `wire` is the datagram format of Linux's `net/netfilter/ipvs/ip_vs_sync.c`, byte for
//! byte, so that xvs can talk to kernel IPVS sync daemons (and to itself). It is a pure
//! library: no sockets, no connection table; the daemon side maps entries to and from
//! xvs's model.

pub mod wire;
