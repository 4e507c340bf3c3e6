//! Types and wire contracts shared by every Keel component.
//!
//! Configuration lives here so that init, the agent and the client parse and
//! validate it the same way, and every error names the file, line and field.
//! This crate holds types and parsers only; what does I/O (atomic writes,
//! taps, the DHCP client, the checks of a spec's files on disk) is in
//! keel-sys (`common/sys/`).

pub mod authorized_keys;
pub mod config;
pub mod frame;
pub mod guest;
pub mod guest_ports;
pub mod host;
pub mod hostfwd;
pub mod init_api;
pub mod mac;
pub mod vmm_api;
pub mod vmm_exit;

pub use config::ConfigError;
pub use guest::GuestSpec;
pub use host::HostConfig;

/// The Keel release, shared by the boot banner, the agent and the client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
