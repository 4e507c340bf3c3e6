//! The host's DHCP client for the life of the system: applies each lease
//! with netlink, renews it (smoltcp's state machine sends the REQUESTs at
//! T1 and T2), drops the address when the lease is lost, and starts over
//! when the link comes back after an outage, as the network may have
//! changed while the cable was out.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_sys::dhcp::{self, Clock, DhcpClient, DhcpEvent, Lease, PacketDevice, PACKET_BUFFER_LEN};

use super::netlink::{LinkEvent, LinkMonitor, Netlink};
use super::{Announcer, NetError};

/// Longest sleep between polls: link events and frames wake us sooner; it
/// also bounds how long a stop request waits.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Pause before reopening after the interface went away.
const REOPEN_DELAY: Duration = Duration::from_secs(2);

/// Runs DHCP on `host_if` until `stop` is set (in init: never). `uplink`
/// (the bridge's port, or `host_if` itself) is watched for carrier changes.
pub fn run(
    host_if: &str,
    uplink: &str,
    bridge: Option<&str>,
    announcer: &Announcer,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(err) = session(host_if, uplink, bridge, announcer, stop) {
            log::error!("{host_if}: {err}; retrying");
            std::thread::sleep(REOPEN_DELAY);
        }
    }
}

/// The address currently applied, so a renewal that changes nothing does
/// not touch the kernel and a changed lease replaces the old address.
#[derive(Default)]
struct Applied {
    lease: Option<Lease>,
}

impl Applied {
    fn configure(&mut self, lease: Lease, announcer: &Announcer) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        let old = self.lease.take();
        if let Some(old) = &old {
            if old.address != lease.address || old.prefix_len != lease.prefix_len {
                nl.del_address(&old.ifname, old.address, old.prefix_len)?;
            }
        }
        nl.add_address(&lease.ifname, lease.address, lease.prefix_len)?;
        match lease.router {
            Some(router) => nl.replace_default_route(&lease.ifname, router)?,
            None => nl.del_default_route(&lease.ifname)?,
        }
        announcer.dns(&lease.dns);
        let changed = old
            .as_ref()
            .is_none_or(|o| o.address != lease.address || o.prefix_len != lease.prefix_len);
        log::info!(
            "{}: DHCP lease {}/{} via {}, DNS {:?}, {} s",
            lease.ifname,
            lease.address,
            lease.prefix_len,
            lease
                .router
                .map_or_else(|| "no router".to_owned(), |r| r.to_string()),
            lease.dns,
            lease
                .lease_secs
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        );
        if changed {
            announcer.address(&lease.ifname, lease.address, lease.prefix_len);
        }
        self.lease = Some(lease);
        Ok(())
    }

    fn deconfigure(&mut self) -> Result<(), NetError> {
        let Some(old) = self.lease.take() else {
            return Ok(());
        };
        log::warn!(
            "{}: DHCP lease for {} lost; removing the address",
            old.ifname,
            old.address
        );
        let mut nl = Netlink::open()?;
        nl.del_default_route(&old.ifname)?;
        nl.del_address(&old.ifname, old.address, old.prefix_len)?;
        Ok(())
    }
}

/// One DHCP client on one open packet socket; returns when the interface
/// goes away.
fn session(
    host_if: &str,
    uplink: &str,
    bridge: Option<&str>,
    announcer: &Announcer,
    stop: &AtomicBool,
) -> Result<(), NetError> {
    // Through netlink, not sysfs, so that it works in any network namespace.
    let link = Netlink::open()?.link(host_if)?;
    let mac = link.mac.ok_or_else(|| NetError::NoMac {
        ifname: host_if.to_owned(),
    })?;
    let device = PacketDevice::open(host_if, link.mtu)?;
    let mut buffer = vec![0u8; PACKET_BUFFER_LEN];
    let clock = Clock::start();
    let mut client = DhcpClient::new(
        host_if,
        device,
        mac,
        dhcp::seed(mac),
        &mut buffer,
        clock.now(),
    )?;
    // Without a monitor DHCP still works; only link changes go unnoticed
    // until the next renewal.
    let mut monitor = LinkMonitor::open()
        .map_err(|err| log::warn!("cannot watch link changes: {err}"))
        .ok();
    let mut applied = Applied::default();
    let mut carrier = true;
    log::info!("{host_if}: asking for a DHCP lease");
    while !stop.load(Ordering::Relaxed) {
        match client.poll(clock.now()) {
            Some(DhcpEvent::Configured(lease)) => {
                if let Err(err) = applied.configure(lease, announcer) {
                    log::error!("{host_if}: cannot apply the DHCP lease: {err}");
                }
            }
            Some(DhcpEvent::Deconfigured) => {
                if let Err(err) = applied.deconfigure() {
                    log::error!("{host_if}: cannot remove the lost lease: {err}");
                }
            }
            None => {}
        }
        if let Some(err) = client.device().take_error() {
            if dhcp::is_fatal(&err) {
                let _ = applied.deconfigure();
                return Err(NetError::Dhcp(dhcp::DhcpError::Device {
                    ifname: host_if.to_owned(),
                    source: err,
                }));
            }
            log::debug!("{host_if}: packet I/O error: {err}");
        }
        if let Some(monitor) = monitor.as_mut() {
            match monitor.drain() {
                Ok(mut changes) => {
                    if changes.overrun {
                        // Notifications were lost: read the state instead.
                        changes.events = current_state(uplink);
                    }
                    for event in changes.events.iter().filter(|e| e.name == uplink) {
                        if event.removed {
                            log::warn!("{uplink} was removed");
                            continue;
                        }
                        if event.carrier == carrier {
                            continue;
                        }
                        carrier = event.carrier;
                        if carrier {
                            log::info!("{uplink}: link up again; confirming the DHCP lease");
                            client.reset();
                        } else {
                            log::warn!("{uplink}: link down");
                        }
                        // A NIC that was replaced comes back as a new,
                        // down link outside the bridge.
                        if let Err(err) = rejoin(uplink, bridge) {
                            log::warn!("{uplink}: {err}");
                        }
                    }
                }
                Err(err) => log::debug!("link monitor: {err}"),
            }
        }
        let wait = dhcp::next_wait(&mut client, &clock, MAX_WAIT);
        dhcp::wait_readable(client.device(), monitor.as_ref().map(|m| m.as_fd()), wait);
    }
    Ok(())
}

/// The uplink's state as one synthetic event, for after a monitor overrun.
fn current_state(uplink: &str) -> Vec<LinkEvent> {
    match Netlink::open().and_then(|mut nl| nl.link(uplink)) {
        Ok(l) => vec![LinkEvent {
            name: l.name,
            index: l.index,
            up: l.up,
            carrier: l.carrier,
            removed: false,
        }],
        Err(err) => {
            log::debug!("cannot read {uplink}: {err}");
            Vec::new()
        }
    }
}

fn rejoin(uplink: &str, bridge: Option<&str>) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    nl.set_up(uplink)?;
    if let Some(bridge) = bridge {
        nl.set_master(uplink, bridge)?;
    }
    Ok(())
}
