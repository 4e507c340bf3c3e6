//! `host.toml`: the appliance's own configuration.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::config::{load_toml, parse_toml, ConfigError};
use crate::guest::{validate_ifname, MacAddr};

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
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub agent: AgentConfig,
    /// The uplinks to configure; see [`HostConfig::networks`] for the
    /// default when there are none.
    #[serde(default)]
    pub network: Vec<Spanned<NetworkConfig>>,
    #[serde(default)]
    pub console: ConsoleConfig,
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The uplink by kernel name.
    pub interface: Option<Spanned<String>>,
    /// The uplink by MAC address, `match = { mac = "..." }` (names can
    /// change with the kernel or the slot; the MAC cannot).
    #[serde(rename = "match")]
    pub matches: Option<LinkMatch>,
    /// DHCP unless set.
    pub mode: Option<Spanned<AddressMode>>,
    /// `a.b.c.d/len`, for `mode = "static"` only.
    pub address: Option<Spanned<Ipv4Cidr>>,
    /// Default gateway, for `mode = "static"` only.
    pub gateway: Option<Spanned<Ipv4Addr>>,
    /// A bridge made over the uplink; the host's address moves onto it and
    /// bridge-mode guest NICs join it.
    pub bridge: Option<Spanned<String>>,
}

/// The `match` table of a `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMatch {
    pub mac: Spanned<MacAddr>,
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
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl NetworkConfig {
    /// The interface this table configures.
    pub fn uplink(&self) -> Uplink {
        match (&self.interface, &self.matches) {
            (Some(name), _) => Uplink::Name(name.get_ref().clone()),
            (None, Some(m)) => Uplink::Mac(*m.mac.get_ref()),
            (None, None) => Uplink::FirstEthernet,
        }
    }

    pub fn mode(&self) -> AddressMode {
        self.mode
            .as_ref()
            .map_or_else(AddressMode::default, |m| *m.get_ref())
    }

    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_ref().map(|b| b.get_ref().as_str())
    }

    fn validate(
        &self,
        i: usize,
        at: &dyn Fn(usize, &str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let field = |name: &str| format!("network[{i}].{name}");
        let mac = self.matches.as_ref().map(|m| &m.mac);
        if let (Some(_), Some(mac)) = (&self.interface, mac) {
            return Err(at(
                mac.span().start,
                &field("match.mac"),
                "set `interface` or `match`, not both".into(),
            ));
        }
        if let Some(name) = &self.interface {
            validate_ifname(name.get_ref())
                .map_err(|m| at(name.span().start, &field("interface"), m))?;
        }
        if let Some(mac) = mac {
            if !mac.get_ref().is_unicast() || mac.get_ref().is_zero() {
                return Err(at(
                    mac.span().start,
                    &field("match.mac"),
                    format!("{} is not a unicast address", mac.get_ref()),
                ));
            }
        }
        if let Some(bridge) = &self.bridge {
            validate_ifname(bridge.get_ref())
                .map_err(|m| at(bridge.span().start, &field("bridge"), m))?;
            if self
                .interface
                .as_ref()
                .is_some_and(|i| i.get_ref() == bridge.get_ref())
            {
                return Err(at(
                    bridge.span().start,
                    &field("bridge"),
                    "must not be the uplink itself".into(),
                ));
            }
        }
        match self.mode() {
            AddressMode::Dhcp => {
                for (value, name) in [
                    (self.address.as_ref().map(|a| a.span()), "address"),
                    (self.gateway.as_ref().map(|g| g.span()), "gateway"),
                ] {
                    if let Some(span) = value {
                        return Err(at(
                            span.start,
                            &field(name),
                            "only allowed when mode is \"static\"".into(),
                        ));
                    }
                }
            }
            AddressMode::Static => {
                let Some(address) = &self.address else {
                    let offset = self.mode.as_ref().map_or(0, |m| m.span().start);
                    return Err(at(
                        offset,
                        &field("address"),
                        "required when mode is \"static\"".into(),
                    ));
                };
                let cidr = address.get_ref();
                if cidr.address.is_unspecified()
                    || cidr.address.is_broadcast()
                    || cidr.address.is_multicast()
                    || cidr.address.is_loopback()
                {
                    return Err(at(
                        address.span().start,
                        &field("address"),
                        format!("{} cannot be a host address", cidr.address),
                    ));
                }
                if let Some(gateway) = &self.gateway {
                    let gw = *gateway.get_ref();
                    if !cidr.contains(gw) || gw == cidr.address {
                        return Err(at(
                            gateway.span().start,
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
                interface: None,
                matches: None,
                mode: None,
                address: None,
                gateway: None,
                bridge: Some(Spanned::new(0..0, DEFAULT_BRIDGE.to_owned())),
            }];
        }
        self.network.iter().map(|n| n.get_ref().clone()).collect()
    }

    /// The bridge that bridge-mode guest NICs join, if any.
    pub fn guest_bridge(&self) -> Option<String> {
        self.networks()
            .iter()
            .find_map(|n| n.bridge().map(str::to_owned))
    }

    /// The hostname to set, falling back to [`DEFAULT_HOSTNAME`].
    pub fn hostname(&self) -> &str {
        self.hostname
            .as_ref()
            .map(|h| h.get_ref().as_str())
            .unwrap_or(DEFAULT_HOSTNAME)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        if let Some(hostname) = &self.hostname {
            if let Err(message) = validate_hostname(hostname.get_ref()) {
                return Err(ConfigError::at(
                    path,
                    text,
                    hostname.span().start,
                    "hostname",
                    message,
                ));
            }
        }
        self.validate_networks(path, text)
    }

    fn validate_networks(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let at = |offset: usize, field: &str, message: String| {
            ConfigError::at(path, text, offset, field, message)
        };
        let mut uplinks: HashMap<String, usize> = HashMap::new();
        let mut bridge: Option<(usize, &str)> = None;
        for (i, network) in self.network.iter().enumerate() {
            let network_at = network.span().start;
            let network = network.get_ref();
            network.validate(i, &at)?;
            let key = match network.uplink() {
                Uplink::Name(name) => name,
                Uplink::Mac(mac) => mac.to_string(),
                Uplink::FirstEthernet => "the first Ethernet interface".to_owned(),
            };
            if let Some(first) = uplinks.insert(key.clone(), i) {
                return Err(at(
                    network_at,
                    &format!("network[{i}]"),
                    format!("{key} is already configured by network[{first}]"),
                ));
            }
            if let Some(name) = &network.bridge {
                if let Some((first, _)) = bridge {
                    return Err(at(name.span().start, &format!("network[{i}].bridge"), format!("only one uplink can carry the guests' bridge; network[{first}] already has one")));
                }
                bridge = Some((i, name.get_ref()));
            }
        }
        if let Some((i, name)) = bridge {
            if let Some(other) = self.network.iter().position(|n| {
                n.get_ref()
                    .interface
                    .as_ref()
                    .is_some_and(|u| u.get_ref() == name)
            }) {
                let offset = self.network[i]
                    .get_ref()
                    .bridge
                    .as_ref()
                    .map_or(0, |b| b.span().start);
                return Err(at(
                    offset,
                    &format!("network[{i}].bridge"),
                    format!("`{name}` is the uplink of network[{other}]"),
                ));
            }
        }
        Ok(())
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(Path::new("host.toml"), text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").expect("empty config is valid");
        assert_eq!(config.hostname(), "keel");
        assert_eq!(config.agent.listen.port(), 7444);
    }

    #[test]
    fn hostname_and_listen_are_read() {
        let config =
            parse("hostname = \"hv01\"\n[agent]\nlisten = \"127.0.0.1:9000\"\n").expect("valid");
        assert_eq!(config.hostname(), "hv01");
        assert_eq!(config.agent.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn bad_hostname_names_file_line_and_field() {
        let err = parse("# comment\nhostname = \"bad_name\"\n").expect_err("invalid hostname");
        let text = err.to_string();
        assert!(text.starts_with("host.toml:2: field `hostname`:"), "{text}");
        assert!(text.contains("'_'"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let err = parse("hostname = \"a\"\n[agent]\nlisten = 7444\n").expect_err("wrong type");
        let text = err.to_string();
        assert!(
            text.starts_with("host.toml:3: field `agent.listen`:"),
            "{text}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = parse("hostnme = \"hv01\"\n").expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("host.toml:1:"), "{text}");
        assert!(text.contains("hostnme"), "{text}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("hostname = \"hv01\"\n[agent\n").expect_err("syntax");
        assert!(err.to_string().starts_with("host.toml:2:"), "{err}");
    }

    #[test]
    fn no_network_table_means_dhcp_on_the_first_nic_under_br0() {
        let config = parse("").expect("valid");
        let networks = config.networks();
        assert_eq!(networks.len(), 1);
        assert_eq!(networks[0].uplink(), Uplink::FirstEthernet);
        assert_eq!(networks[0].mode(), AddressMode::Dhcp);
        assert_eq!(networks[0].bridge(), Some("br0"));
        assert_eq!(config.guest_bridge().as_deref(), Some("br0"));
    }

    #[test]
    fn networks_by_name_and_by_mac() {
        let config = parse(
            "[[network]]\ninterface = \"eno1\"\nbridge = \"br0\"\n\n\
             [[network]]\nmatch = { mac = \"52:54:00:AA:bb:01\" }\nmode = \"static\"\n\
             address = \"192.168.7.10/24\"\ngateway = \"192.168.7.1\"\n",
        )
        .expect("valid");
        let networks = config.networks();
        assert_eq!(networks.len(), 2);
        assert_eq!(networks[0].uplink(), Uplink::Name("eno1".into()));
        assert_eq!(networks[0].mode(), AddressMode::Dhcp);
        assert_eq!(
            networks[1].uplink(),
            Uplink::Mac(MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 1]))
        );
        assert_eq!(networks[1].mode(), AddressMode::Static);
        let address = networks[1].address.as_ref().unwrap().get_ref();
        assert_eq!(address.to_string(), "192.168.7.10/24");
        assert_eq!(
            networks[1].gateway.as_ref().map(|g| *g.get_ref()),
            Some(Ipv4Addr::new(192, 168, 7, 1))
        );
        assert_eq!(networks[1].bridge(), None);
        assert_eq!(config.guest_bridge().as_deref(), Some("br0"));
    }

    #[test]
    fn guest_consoles_stay_off_the_host_console_unless_asked() {
        assert!(!parse("").expect("valid").console.guests);
        assert!(
            parse("[console]\nguests = true\n")
                .expect("valid")
                .console
                .guests
        );
        let err = parse("[console]\nguests = \"yes\"\n").expect_err("not a bool");
        assert!(
            err.to_string()
                .starts_with("host.toml:2: field `console.guests`:"),
            "{err}"
        );
    }

    #[test]
    fn a_network_without_bridge_gives_guests_none() {
        let config = parse("[[network]]\ninterface = \"eth0\"\n").expect("valid");
        assert_eq!(config.guest_bridge(), None);
    }

    fn refused(text: &str, line: usize, field: &str, words: &str) {
        let err = parse(text).expect_err("must be refused").to_string();
        let prefix = format!("host.toml:{line}: field `{field}`:");
        assert!(err.starts_with(&prefix), "{err}\n(wanted {prefix})");
        assert!(err.contains(words), "{err}\n(wanted {words:?})");
    }

    #[test]
    fn bad_network_tables_name_line_and_field() {
        refused(
            "[[network]]\ninterface = \"eth0\"\nmatch = { mac = \"52:54:00:00:00:01\" }\n",
            3,
            "network[0].match.mac",
            "not both",
        );
        refused(
            "[[network]]\nmatch = { mac = \"52:54:00:00:00\" }\n",
            2,
            "network[0].match.mac",
            "not a MAC address",
        );
        refused(
            "[[network]]\nmatch = { mac = \"01:00:5e:00:00:01\" }\n",
            2,
            "network[0].match.mac",
            "unicast",
        );
        refused(
            "[[network]]\ninterface = \"a/b\"\n",
            2,
            "network[0].interface",
            "'/'",
        );
        refused(
            "[[network]]\nmode = \"static\"\n",
            2,
            "network[0].address",
            "required",
        );
        refused(
            "[[network]]\nmode = \"dhcp\"\naddress = \"10.0.0.2/24\"\n",
            3,
            "network[0].address",
            "only allowed when mode is \"static\"",
        );
        refused(
            "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2/33\"\n",
            3,
            "network[0].address",
            "/33",
        );
        refused(
            "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2\"\n",
            3,
            "network[0].address",
            "prefix length",
        );
        refused(
            "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.1.1\"\n",
            4,
            "network[0].gateway",
            "subnet",
        );
        refused(
            "[[network]]\nmode = \"manual\"\n",
            2,
            "network[0].mode",
            "dhcp",
        );
        refused(
            "[[network]]\ninterface = \"eth0\"\nbridge = \"eth0\"\n",
            3,
            "network[0].bridge",
            "uplink itself",
        );
        refused(
            "[[network]]\ninterface = \"eth0\"\nbridge = \"br0\"\n\
             [[network]]\ninterface = \"eth1\"\nbridge = \"br1\"\n",
            6,
            "network[1].bridge",
            "only one uplink",
        );
        refused(
            "[[network]]\ninterface = \"eth0\"\n[[network]]\ninterface = \"eth0\"\n",
            3,
            "network[1]",
            "already configured by network[0]",
        );
        refused(
            "[[network]]\ninterface = \"eth0\"\nbrige = \"br0\"\n",
            3,
            "network[0].brige",
            "brige",
        );
    }

    #[test]
    fn the_port_is_named_only_when_it_is_not_the_default() {
        let ip = std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(agent_host(ip, DEFAULT_AGENT_PORT), "10.0.2.15");
        assert_eq!(agent_host(ip, 9000), "10.0.2.15:9000");
        assert_eq!(
            pairing_hint("10.0.2.15", "1234-5678"),
            "unpaired: on your workstation run `keelctl keygen && keelctl pair 10.0.2.15 1234-5678`"
        );
    }

    #[test]
    fn cidr_contains() {
        let cidr: Ipv4Cidr = "192.168.7.10/24".parse().unwrap();
        assert!(cidr.contains(Ipv4Addr::new(192, 168, 7, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(192, 168, 8, 1)));
        let all: Ipv4Cidr = "10.1.2.3/32".parse().unwrap();
        assert!(!all.contains(Ipv4Addr::new(10, 1, 2, 4)));
        assert!("10.1.2.3/0".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn hostname_rules() {
        assert!(validate_hostname("hv01.example.com").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("-a").is_err());
        assert!(validate_hostname("a..b").is_err());
        assert!(validate_hostname(&"a".repeat(64)).is_err());
        assert!(validate_hostname("a b").is_err());
    }
}
