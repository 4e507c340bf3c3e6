//! `host.toml`: the appliance's own configuration.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::config::{deserialize_from_str, load_toml, parse_toml, ConfigError, Source};
use crate::guest::validate_ifname;
use crate::mac::MacAddr;

/// Hostname used when `host.toml` sets none.
pub const DEFAULT_HOSTNAME: &str = "keel";
/// The agent's TCP port unless `[agent] listen` says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 7444;
/// How an operator names this host to reach its agent at `ip`: the bare
/// address on the default port, `ip:port` otherwise (keelctl adds 7444).
pub fn agent_host(ip: std::net::IpAddr, port: u16) -> String {
    if port == DEFAULT_AGENT_PORT {
        ip.to_string()
    } else {
        std::net::SocketAddr::new(ip, port).to_string()
    }
}

/// The console line that tells the operator of an unpaired host what to
/// type; init and keel-agent both print it (whichever learns last of the
/// address and the code).
pub fn pairing_hint(host: &str, code: &str) -> String {
    format!("unpaired: on your workstation run `keelctl keygen && keelctl pair {host} {code}`")
}

/// The bridge made over the uplink when `host.toml` has no `[[network]]`.
pub const DEFAULT_BRIDGE: &str = "br0";

/// The parsed and validated `host.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub hostname: Option<String>,
    #[serde(default)]
    pub agent: AgentConfig,
    /// The uplinks to configure; see [`HostConfig::networks`] for the
    /// default when there are none.
    #[serde(default)]
    pub network: Vec<NetworkConfig>,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// Where a host block device that host.toml allow-lists for guests may be
/// named: by a stable identity, never by a kernel name like `/dev/sdb`
/// that can change with the boot order.
pub const GUEST_DEVICE_DIRS: [&str; 2] = ["/dev/disk/by-id", "/dev/disk/by-partuuid"];

/// The `[storage]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Host block devices that guest specs may name as a disk, each as
    /// `/dev/disk/by-id/NAME` or `/dev/disk/by-partuuid/NAME`. Nothing else
    /// outside the data partition's `images/` and `disks/` can be a disk.
    #[serde(default)]
    pub guest_devices: Vec<PathBuf>,
}

/// The `[console]` table: what the host's own console shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Copy every guest's serial console to the host console too (`make
    /// run` sets it to show the demo guest); off, consoles only go to
    /// their logs and attached clients.
    #[serde(default)]
    pub guests: bool,
}

/// One `[[network]]` table: an uplink, how it gets its address, and an
/// optional bridge over it for guests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The uplink by kernel name.
    pub interface: Option<String>,
    /// The uplink by MAC address, `match = { mac = "..." }` (names can
    /// change with the kernel or the slot; the MAC cannot).
    #[serde(rename = "match")]
    pub matches: Option<LinkMatch>,
    /// DHCP unless set.
    pub mode: Option<AddressMode>,
    /// `a.b.c.d/len`, for `mode = "static"` only.
    pub address: Option<Ipv4Cidr>,
    /// Default gateway, for `mode = "static"` only.
    pub gateway: Option<Ipv4Addr>,
    /// A bridge made over the uplink; the host's address moves onto it and
    /// bridge-mode guest NICs join it.
    pub bridge: Option<String>,
}

/// The `match` table of a `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMatch {
    pub mac: MacAddr,
}

/// How an uplink gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressMode {
    #[default]
    Dhcp,
    Static,
}

/// Which interface a `[[network]]` table is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// The first wired Ethernet interface, by name.
    FirstEthernet,
    Name(String),
    Mac(MacAddr),
}

/// An IPv4 address with its prefix length, written `192.168.1.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The netmask as a number, all ones for the prefix.
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Whether `other` is in this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(other) & self.mask() == u32::from(self.address) & self.mask()
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{text}` is not an IPv4 address with a prefix length, like 192.168.1.10/24")
        };
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
        if !(1..=32).contains(&prefix_len) {
            return Err(format!(
                "prefix length /{prefix_len} is not between 1 and 32"
            ));
        }
        Ok(Ipv4Cidr {
            address,
            prefix_len,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer)
    }
}

impl NetworkConfig {
    /// The interface this table configures.
    pub fn uplink(&self) -> Uplink {
        match (&self.interface, &self.matches) {
            (Some(name), _) => Uplink::Name(name.clone()),
            (None, Some(m)) => Uplink::Mac(m.mac),
            (None, None) => Uplink::FirstEthernet,
        }
    }

    pub fn mode(&self) -> AddressMode {
        self.mode.unwrap_or_default()
    }

    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    fn validate(&self, i: usize, at: &Source) -> Result<(), ConfigError> {
        let field = |name: &str| format!("network[{i}].{name}");
        let mac = self.matches.as_ref().map(|m| m.mac);
        if self.interface.is_some() && mac.is_some() {
            return Err(at.error(&field("match.mac"), "set `interface` or `match`, not both"));
        }
        if let Some(name) = &self.interface {
            validate_ifname(name).map_err(|m| at.error(&field("interface"), m))?;
        }
        if let Some(mac) = mac {
            if !mac.is_unicast() || mac.is_zero() {
                return Err(at.error(
                    &field("match.mac"),
                    format!("{mac} is not a unicast address"),
                ));
            }
        }
        if let Some(bridge) = &self.bridge {
            validate_ifname(bridge).map_err(|m| at.error(&field("bridge"), m))?;
            if self.interface.as_ref() == Some(bridge) {
                return Err(at.error(&field("bridge"), "must not be the uplink itself"));
            }
        }
        match self.mode() {
            AddressMode::Dhcp => {
                for (set, name) in [
                    (self.address.is_some(), "address"),
                    (self.gateway.is_some(), "gateway"),
                ] {
                    if set {
                        return Err(at.error(&field(name), "only allowed when mode is \"static\""));
                    }
                }
            }
            AddressMode::Static => {
                let Some(cidr) = self.address else {
                    return Err(at.error_at(
                        &field("mode"),
                        &field("address"),
                        "required when mode is \"static\"",
                    ));
                };
                if cidr.address.is_unspecified()
                    || cidr.address.is_broadcast()
                    || cidr.address.is_multicast()
                    || cidr.address.is_loopback()
                {
                    return Err(at.error(
                        &field("address"),
                        format!("{} cannot be a host address", cidr.address),
                    ));
                }
                if let Some(gw) = self.gateway {
                    if !cidr.contains(gw) || gw == cidr.address {
                        return Err(at.error(
                            &field("gateway"),
                            format!("{gw} is not another address in {cidr}'s subnet"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `[agent]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default = "AgentConfig::default_listen")]
    pub listen: std::net::SocketAddr,
}

impl AgentConfig {
    fn default_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_AGENT_PORT))
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: Self::default_listen(),
        }
    }
}

impl HostConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, text): (HostConfig, String) = load_toml(path)?;
        config.validate(path, &text)?;
        Ok(config)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: HostConfig = parse_toml(path, text)?;
        config.validate(path, text)?;
        Ok(config)
    }

    /// The uplinks to configure. Without any `[[network]]` table: the first
    /// wired Ethernet interface, by DHCP, under a bridge [`DEFAULT_BRIDGE`]
    /// so that bridge-mode guests work out of the box.
    pub fn networks(&self) -> Vec<NetworkConfig> {
        if self.network.is_empty() {
            return vec![NetworkConfig {
                bridge: Some(DEFAULT_BRIDGE.to_owned()),
                ..NetworkConfig::default()
            }];
        }
        self.network.clone()
    }

    /// The bridge that bridge-mode guest NICs join, if any.
    pub fn guest_bridge(&self) -> Option<String> {
        self.networks()
            .iter()
            .find_map(|n| n.bridge().map(str::to_owned))
    }

    /// The hostname to set, falling back to [`DEFAULT_HOSTNAME`].
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let at = Source::new(path, text);
        if let Some(hostname) = &self.hostname {
            validate_hostname(hostname).map_err(|m| at.error("hostname", m))?;
        }
        for (i, device) in self.storage.guest_devices.iter().enumerate() {
            validate_guest_device(device)
                .map_err(|m| at.error(&format!("storage.guest_devices[{i}]"), m))?;
        }
        self.validate_networks(&at)
    }

    fn validate_networks(&self, at: &Source) -> Result<(), ConfigError> {
        let mut uplinks: HashMap<String, usize> = HashMap::new();
        let mut bridge: Option<(usize, &str)> = None;
        for (i, network) in self.network.iter().enumerate() {
            network.validate(i, at)?;
            let key = match network.uplink() {
                Uplink::Name(name) => name,
                Uplink::Mac(mac) => mac.to_string(),
                Uplink::FirstEthernet => "the first Ethernet interface".to_owned(),
            };
            if let Some(first) = uplinks.insert(key.clone(), i) {
                return Err(at.error(
                    &format!("network[{i}]"),
                    format!("{key} is already configured by network[{first}]"),
                ));
            }
            if let Some(name) = &network.bridge {
                if let Some((first, _)) = bridge {
                    return Err(at.error(
                        &format!("network[{i}].bridge"),
                        format!(
                            "only one uplink can carry the guests' bridge; \
                             network[{first}] already has one"
                        ),
                    ));
                }
                bridge = Some((i, name));
            }
        }
        if let Some((i, name)) = bridge {
            if let Some(other) = self
                .network
                .iter()
                .position(|n| n.interface.as_deref() == Some(name))
            {
                return Err(at.error(
                    &format!("network[{i}].bridge"),
                    format!("`{name}` is the uplink of network[{other}]"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an allow-listed guest device: one name in one of
/// [`GUEST_DEVICE_DIRS`].
fn validate_guest_device(device: &Path) -> Result<(), String> {
    let in_dir = device.parent().is_some_and(|dir| {
        GUEST_DEVICE_DIRS
            .iter()
            .any(|allowed| dir == Path::new(allowed))
    });
    // file_name() is None for a path ending in `..`.
    if in_dir && device.file_name().is_some() {
        Ok(())
    } else {
        Err(format!(
            "`{}` must name a device by a stable identity: /dev/disk/by-id/NAME or \
             /dev/disk/by-partuuid/NAME",
            device.display()
        ))
    }
}

/// Checks RFC 1123 hostname syntax: dot-separated labels of letters, digits
/// and inner hyphens, each 1 to 63 bytes, 253 bytes in all.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "must be 1 to 253 characters long, not {}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label `{label}` must be 1 to 63 characters long"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label `{label}` must not start or end with a hyphen"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "character {bad:?} is not allowed (use letters, digits and hyphens)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
