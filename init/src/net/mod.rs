//! Host networking from `host.toml`'s `[[network]]` tables: find each
//! uplink (by name, by MAC, or the first wired NIC), put the guests' bridge
//! over it, and give the host an address, static or by DHCP, on the bridge
//! (or on the uplink when there is none).
//!
//! Links, addresses and routes go through rtnetlink (`netlink`). DHCP is
//! smoltcp's client over a packet socket (`keel_sys::dhcp`), kept
//! running for renewals and link changes (`dhcp`). Each uplink is set up on
//! a thread of its own so that a missing NIC or a silent DHCP server never
//! holds up PID 1; only the bridge is made before [`start`] returns, so
//! that guests can join it from the first moment.

pub mod dhcp;
pub mod netlink;
pub mod uplink;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use keel_common::host::{AddressMode, HostConfig, NetworkConfig};
use keel_sys::dhcp::SYSFS_NET;

use netlink::{Netlink, NetlinkError};

/// How long an uplink may be missing before the console says so (USB NICs
/// and slow drivers appear after init starts).
const UPLINK_PATIENCE: Duration = Duration::from_secs(5);
/// Where keel-agent publishes an open pairing code (see its
/// `--pairing-file`), shown here next to the management address.
pub const PAIRING_FILE: &str = "/run/keel/pairing-code";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("Could not read {path}: {source}.")]
    Sysfs { path: String, source: io::Error },
    #[error("No wired Ethernet interface was found in {sysfs}.")]
    NoInterface { sysfs: String },
    #[error("There is no network interface {uplink}.")]
    NoSuchInterface { uplink: String },
    #[error("{ifname:?} is not a valid interface name.")]
    BadName { ifname: String },
    #[error("Interface {ifname} has no Ethernet address.")]
    NoMac { ifname: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Dhcp(#[from] keel_sys::dhcp::DhcpError),
}

/// Where the uplink threads publish what they learn: the console (the
/// management address), and resolv.conf (DHCP's DNS servers).
#[derive(Debug, Clone)]
pub struct Announcer {
    /// The agent's TCP port.
    pub agent_port: u16,
    pub pairing_file: PathBuf,
    /// /etc/resolv.conf in the image points at [`RESOLV_CONF`], so that
    /// user-mode guests' DNS forwarders find the leased servers.
    pub resolv_conf: PathBuf,
}

/// Where the host's DNS servers are written.
pub const RESOLV_CONF: &str = "/run/keel/resolv.conf";

impl Announcer {
    /// Writes DNS servers (from a lease) to resolv.conf.
    pub fn dns(&self, servers: &[Ipv4Addr]) {
        if servers.is_empty() {
            return;
        }
        let text: String = servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        if let Err(err) = keel_sys::fsutil::atomic_write(&self.resolv_conf, text.as_bytes(), 0o644)
        {
            log::warn!("cannot write {}: {err}", self.resolv_conf.display());
        }
    }

    /// Prints the management address, with the pairing code while the host
    /// is unpaired.
    pub fn address(&self, ifname: &str, address: Ipv4Addr, prefix_len: u8) {
        crate::logger::announce(&format!(
            "management address: {address}/{prefix_len} on {ifname}, agent port {}",
            self.agent_port
        ));
        if let Some(code) = crate::pairing_display::read_code(&self.pairing_file) {
            crate::pairing_display::show(&code, self.agent_port);
        }
    }
}

/// Configures every `[[network]]` of `config`; returns the bridge that
/// bridge-mode guest NICs join, once it exists.
pub fn start(config: &HostConfig, announcer: Announcer) -> Option<String> {
    if let Err(err) = Netlink::open().and_then(|mut nl| nl.set_up("lo")) {
        log::error!("cannot bring up lo: {err}");
    }
    let mut guest_bridge = None;
    for (i, network) in config.networks().into_iter().enumerate() {
        if let Some(bridge) = network.bridge() {
            match Netlink::open().and_then(|mut nl| {
                nl.create_bridge(bridge, None)?;
                nl.set_up(bridge)
            }) {
                Ok(()) => guest_bridge = Some(bridge.to_owned()),
                Err(err) => {
                    log::error!(
                        "cannot create bridge {bridge}: {err}; bridge-mode guests cannot start"
                    )
                }
            }
        }
        let announcer = announcer.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("net{i}"))
            .spawn(move || run_uplink(&network, &announcer));
        if let Err(err) = spawned {
            log::error!("cannot start the thread for network[{i}]: {err}");
        }
    }
    guest_bridge
}

/// One `[[network]]`: waits for the uplink, joins it to the bridge and
/// configures the address. DHCP keeps this thread for renewals.
fn run_uplink(network: &NetworkConfig, announcer: &Announcer) {
    let sysfs = Path::new(SYSFS_NET);
    let uplink = wait_for_uplink(sysfs, network);
    let host_if = match attach(&uplink, network.bridge()) {
        Ok(host_if) => host_if,
        Err(err) => {
            log::error!("cannot configure {uplink}: {err}");
            return;
        }
    };
    match network.mode() {
        AddressMode::Static => {
            let Some(cidr) = network.address else {
                // Validation requires an address for static mode.
                log::error!("{uplink}: static mode without an address");
                return;
            };
            let gateway = network.gateway;
            match apply_static(&host_if, cidr.address, cidr.prefix_len, gateway) {
                Ok(()) => announcer.address(&host_if, cidr.address, cidr.prefix_len),
                Err(err) => log::error!("cannot configure {host_if}: {err}"),
            }
        }
        AddressMode::Dhcp => {
            let never = AtomicBool::new(false);
            dhcp::run(&host_if, &uplink, network.bridge(), announcer, &never);
        }
    }
}

/// Finds the uplink, logging once if it takes long, and then waiting as
/// long as it takes: a NIC that appears later is still configured.
fn wait_for_uplink(sysfs: &Path, network: &NetworkConfig) -> String {
    let wanted = network.uplink();
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        match uplink::find(sysfs, &wanted) {
            Ok(name) => {
                if warned {
                    log::info!("{name} appeared");
                }
                return name;
            }
            Err(err) if !warned && started.elapsed() >= UPLINK_PATIENCE => {
                log::warn!("{err} Waiting for it; no management address until then.");
                warned = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Brings `uplink` up and, with a bridge, makes it the bridge's port and
/// gives the bridge the uplink's MAC (so a DHCP server that keys on it
/// hands out the same address as before the bridge). Returns the interface
/// that carries the host's address.
pub fn attach(uplink: &str, bridge: Option<&str>) -> Result<String, NetError> {
    let mut nl = Netlink::open()?;
    nl.set_up(uplink)?;
    let Some(bridge) = bridge else {
        log::info!("{uplink}: link up");
        return Ok(uplink.to_owned());
    };
    let mac = nl.link(uplink)?.mac;
    nl.create_bridge(bridge, mac)?;
    nl.set_master(uplink, bridge)?;
    nl.set_up(bridge)?;
    log::info!("{uplink}: link up, port of {bridge}");
    Ok(bridge.to_owned())
}

/// Sets a fixed address and, with a gateway, the default route.
pub fn apply_static(
    ifname: &str,
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    nl.add_address(ifname, address, prefix_len)?;
    if let Some(gateway) = gateway {
        nl.replace_default_route(ifname, gateway)?;
    }
    log::info!(
        "{ifname}: static {address}/{prefix_len}, gateway {}",
        gateway.map_or_else(|| "none".to_owned(), |g| g.to_string())
    );
    Ok(())
}
