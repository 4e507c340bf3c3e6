//! Which host services a user-mode guest may reach: the outbound rule.
//!
//! The gateway 10.0.2.2 stands for the host, but only on the ports the
//! spec lists (`host_ports`); every other port of it is refused. The host's
//! own addresses are refused outright, whatever the port: 0.0.0.0,
//! 127.0.0.0/8, and the addresses of the host's interfaces (read once, at
//! construction, while the VMM may still open a netlink socket). Without
//! this a guest would reach the management agent and other guests'
//! forwarded ports, which listen on the host's loopback or on every
//! address. A port the host's agent listens on is refused even if listed.
//!
//! Connections the host makes to an address of its own use that address
//! as their source: a connection that comes up with its local address
//! equal to its peer's reached the host after all (an address added after
//! start) and is refused then, in [`tcp`](super::tcp).

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, warn};

use super::GATEWAY_IP;

/// Where a guest packet to some address and port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this host socket address. `host` if it is the host itself (a
    /// listed port on the gateway).
    Out { to: SocketAddrV4, host: bool },
    /// A host service the guest may not reach: TCP is reset, UDP dropped.
    Refused,
    /// Nowhere: the rest of 10.0.2.0/24, broadcast and multicast.
    Nowhere,
}

/// The outbound rule for one guest network. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Ports of the host reachable through the gateway.
    ports: BTreeSet<u16>,
    /// The host's own IPv4 addresses (besides 0.0.0.0 and 127.0.0.0/8).
    local: Vec<Ipv4Addr>,
}

impl HostPolicy {
    /// The rule for `host_ports`, less any in `denied` (the agent's port),
    /// against the host's current interface addresses.
    pub fn new(host_ports: &[u16], denied: &[u16]) -> io::Result<Self> {
        let local = interface_addrs()?;
        debug!("user-net: the host's own addresses, refused to the guest: {local:?}");
        Ok(Self::with_local(host_ports, denied, local))
    }

    /// The rule with the host's addresses given.
    pub fn with_local(host_ports: &[u16], denied: &[u16], local: Vec<Ipv4Addr>) -> Self {
        let mut ports = BTreeSet::new();
        for &port in host_ports {
            if denied.contains(&port) {
                warn!("user-net: host port {port} is the agent's and stays unreachable from the guest");
            } else {
                ports.insert(port);
            }
        }
        HostPolicy { ports, local }
    }

    /// Where the guest's packet to `dst:port` goes.
    pub fn route(&self, dst: Ipv4Addr, port: u16) -> Route {
        let o = dst.octets();
        if dst == GATEWAY_IP {
            if self.ports.contains(&port) {
                let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
                return Route::Out { to, host: true };
            }
            return Route::Refused;
        }
        if (o[0], o[1], o[2]) == (10, 0, 2) || dst.is_broadcast() || dst.is_multicast() {
            return Route::Nowhere;
        }
        if dst.is_unspecified() || dst.is_loopback() || self.local.contains(&dst) {
            return Route::Refused;
        }
        Route::Out {
            to: SocketAddrV4::new(dst, port),
            host: false,
        }
    }
}

/// The IPv4 addresses of the host's interfaces (getifaddrs(3)).
pub(super) fn interface_addrs() -> io::Result<Vec<Ipv4Addr>> {
    keel_sys::host_addrs::ipv4_addresses()
}
