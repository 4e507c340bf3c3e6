//! keel-vmm: the per-guest KVM virtual machine monitor.
//!
//! One process per guest, in the mould of Firecracker and Cloud Hypervisor:
//! rust-vmm crates for KVM, guest memory, virtqueues, kernel loading and the
//! serial port; one thread per vCPU plus one event loop; seccomp per thread.

pub mod arch;
pub mod console;
pub mod control;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod logger;
pub mod seccomp;
pub mod vcpu;
pub mod vm;
