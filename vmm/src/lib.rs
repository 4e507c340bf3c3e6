//! keel-vmm: the per-guest KVM virtual machine monitor.
//!
//! Not built yet: the VMM arrives with its own issue (rust-vmm based boot,
//! devices, control socket and confinement). The crate exists so the
//! workspace layout matches the design from the start.
