//! Inbound port-forward rules, in QEMU's `hostfwd` syntax:
//! `proto:[hostaddr]:hostport-[guestaddr]:guestport`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::deserialize_from_str;

/// The address user-mode networking gives the guest.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// Transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FwdProto {
    Tcp,
    Udp,
}

impl fmt::Display for FwdProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FwdProto::Tcp => "tcp",
            FwdProto::Udp => "udp",
        })
    }
}

/// One forward: the host listens on `host`, and each connection (TCP) or
/// datagram (UDP) goes to the guest's `guest_port`.
///
/// An empty host address means 127.0.0.1 (QEMU uses 0.0.0.0; loopback is
/// the safer default here: write `0.0.0.0` to listen on every interface).
/// Host port 0 binds an ephemeral port (`UserNet::hostfwd_addrs` in keel-vmm
/// tells which). The guest address, if given, must be 10.0.2.15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    pub proto: FwdProto,
    pub host: SocketAddrV4,
    pub guest_port: u16,
}

/// Why a `hostfwd` rule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostFwdParseError {
    #[error("hostfwd rule {0:?}: expected proto:[hostaddr]:hostport-[guestaddr]:guestport")]
    Syntax(String),
    #[error("hostfwd rule {rule:?}: unknown protocol {proto:?} (expected tcp or udp)")]
    Protocol { rule: String, proto: String },
    #[error("hostfwd rule {rule:?}: bad address {addr:?} (expected an IPv4 address)")]
    Address { rule: String, addr: String },
    #[error("hostfwd rule {rule:?}: bad port {port:?}")]
    Port { rule: String, port: String },
    #[error("hostfwd rule {rule:?}: the guest address must be {GUEST_IP}, not {addr}")]
    GuestAddress { rule: String, addr: Ipv4Addr },
}

impl FromStr for HostFwd {
    type Err = HostFwdParseError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let syntax = || HostFwdParseError::Syntax(rule.to_string());
        let (proto, rest) = rule.split_once(':').ok_or_else(syntax)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => FwdProto::Tcp,
            "udp" => FwdProto::Udp,
            _ => {
                return Err(HostFwdParseError::Protocol {
                    rule: rule.to_string(),
                    proto: proto.to_string(),
                })
            }
        };
        let (host, guest) = rest.split_once('-').ok_or_else(syntax)?;
        let (host_addr, host_port) = host.rsplit_once(':').ok_or_else(syntax)?;
        let (guest_addr, guest_port) = guest.rsplit_once(':').ok_or_else(syntax)?;
        let addr = |a: &str, default: Ipv4Addr| {
            if a.is_empty() {
                Ok(default)
            } else {
                a.parse::<Ipv4Addr>()
                    .map_err(|_| HostFwdParseError::Address {
                        rule: rule.to_string(),
                        addr: a.to_string(),
                    })
            }
        };
        let port = |p: &str, allow_zero: bool| match p.parse::<u16>() {
            Ok(n) if n != 0 || allow_zero => Ok(n),
            _ => Err(HostFwdParseError::Port {
                rule: rule.to_string(),
                port: p.to_string(),
            }),
        };
        let host_ip = addr(host_addr, Ipv4Addr::LOCALHOST)?;
        let host_port = port(host_port, true)?;
        let guest_ip = addr(guest_addr, GUEST_IP)?;
        if guest_ip != GUEST_IP {
            return Err(HostFwdParseError::GuestAddress {
                rule: rule.to_string(),
                addr: guest_ip,
            });
        }
        Ok(HostFwd {
            proto,
            host: SocketAddrV4::new(host_ip, host_port),
            guest_port: port(guest_port, false)?,
        })
    }
}

impl fmt::Display for HostFwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-:{}", self.proto, self.host, self.guest_port)
    }
}

/// Written in the rule syntax, so a spec keeps its forwards as strings.
impl Serialize for HostFwd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostFwd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer)
    }
}

impl HostFwd {
    /// Whether two rules would listen on the same host port.
    pub fn overlaps(&self, other: &HostFwd) -> bool {
        self.proto == other.proto
            && self.host.port() != 0
            && self.host.port() == other.host.port()
            && (self.host.ip() == other.host.ip()
                || self.host.ip().is_unspecified()
                || other.host.ip().is_unspecified())
    }
}
