//! xvs: the XDP Virtual Server, an AF_XDP layer-4 load balancer with Linux IPVS semantics.
//!
//! See `docs/architecture.md` for the data flow and who owns which state.

pub mod bpf;
pub mod busypoll;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod control;
pub mod daemon;
pub mod dest;
pub mod fastpath;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod health;
pub mod kconf;
pub mod model;
pub mod packet;
pub mod sched;
pub mod service;
pub mod stats;
pub mod sync;
pub mod web;
pub mod worker;
pub mod xmit;
