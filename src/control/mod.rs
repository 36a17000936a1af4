//! Control plane: the versioned protocol between `xvsadm` and `xvsd` over a Unix socket.

pub mod proto;
