//! Health checks of real servers with keepalived's semantics, off the data path.
