//! Connection tracking: the tables, the IPVS TCP state machine and the persistence
//! templates.
//!
//! - `state`: IPVS connection states, transitions and per-state timeouts.
//! - `table`: `Conn` and `ConnTable`, the fixed-capacity slab + index every table uses;
//!   each worker owns one for its DR/TUN connections.
//! - `nat`: `NatConns`, the sharded table shared by all workers for NAT connections, whose
//!   replies may arrive on any queue.
//! - `template`: persistence templates of one service.
//! - `pressure`: what a full table does with a new connection (SYN-flood defence).
//! - `parked`: connections no worker holds yet (synced, restored, or moved between
//!   queues), taken by the first worker that sees their flow.

mod nat;
mod parked;
mod pressure;
mod state;
mod table;
mod template;

pub use nat::NatConns;
pub use parked::{ClientSide, Parked, ParkedConns, ParkedFull};
pub use pressure::PressurePolicy;
pub use state::{tcp_transition, ConnState, Direction, StateTimeouts};
pub use table::{Conn, ConnTable, TableFull};
pub use template::{Template, TemplateKey, Templates, TemplatesFull};
