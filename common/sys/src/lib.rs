//! The machinery Keel's host-side components share: everything here does
//! I/O, while keel-common holds the pure types and parsers it works on.
//!
//! - [`beneath`]: opening a file that cannot leave its directory;
//! - [`cloud_init`]: a guest's cloud-init NoCloud seed volume;
//! - [`deadline`]: one deadline for a whole exchange on a socket;
//! - [`fsutil`]: atomic, durable writes to the data partition;
//! - [`host_addrs`]: the host's own IPv4 addresses;
//! - [`tun`]: taps through `/dev/net/tun`;
//! - [`unix_connect`]: a Unix socket connected with a time bound or without blocking;
//! - [`dhcp`] (feature `dhcp`): the DHCPv4 client over a packet socket;
//! - [`spec_files`]: what a guest spec's paths name on disk.

pub mod beneath;
pub mod cloud_init;
pub mod deadline;
#[cfg(feature = "dhcp")]
pub mod dhcp;
pub mod fsutil;
pub mod host_addrs;
pub mod spec_files;
pub mod tun;
pub mod unix_connect;
