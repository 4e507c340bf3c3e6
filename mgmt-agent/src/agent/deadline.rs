//! The handshake's deadline ([`keel_sys::deadline`], which the agent's
//! calls to init and the VMMs use too): a client trickling a byte now and
//! then cannot stretch the handshake past it.

pub use keel_sys::deadline::Deadline;
