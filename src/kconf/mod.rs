//! keepalived.conf, the LVS part: `virtual_server`, `virtual_server_group`, `real_server`
//! and the checkers, with keepalived 2.2's keywords, aliases and defaults.

pub mod lexer;
pub mod model;

pub use model::*;
