//! The demo guest's network check: each NIC is brought up and asks DHCP for
//! a lease, and the answer is printed. With a bridge-mode NIC that shows
//! the whole path (guest, tap, the host's bridge, the uplink, the LAN's
//! DHCP server) working.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use keel_sys::dhcp::{self, SYSFS_NET};

const DHCP_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts one thread per Ethernet NIC; each prints one line.
pub fn report_leases() {
    let Ok(entries) = std::fs::read_dir(SYSFS_NET) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("eth"))
        .collect();
    names.sort();
    for name in names {
        let _ = std::thread::Builder::new()
            .name(format!("dhcp-{name}"))
            .spawn(move || {
                let line = match lease(&name) {
                    Ok(line) => line,
                    Err(err) => format!("demo: {name}: {err}"),
                };
                println!("{line}");
                let _ = io::stdout().flush();
            });
    }
}

fn lease(ifname: &str) -> Result<String, String> {
    keel_guest_rt::link_up(ifname).map_err(|e| format!("cannot bring the link up: {e}"))?;
    let mac = dhcp::read_mac(Path::new(SYSFS_NET), ifname)
        .map(|m| keel_common::guest::MacAddr(m).to_string())
        .unwrap_or_default();
    let lease = dhcp::lease_once(ifname, DHCP_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(format!(
        "demo: {ifname} ({mac}) got {}/{} by DHCP, router {}",
        lease.address,
        lease.prefix_len,
        lease
            .router
            .map_or_else(|| "none".to_owned(), |r| r.to_string())
    ))
}
