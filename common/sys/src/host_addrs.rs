//! The host's own IPv4 addresses, as getifaddrs(3) lists them: what the
//! agent and init print for an operator to connect to, and what keel-vmm
//! keeps user-mode guests away from.

use std::io;
use std::net::Ipv4Addr;

/// Every IPv4 address of the host's interfaces, loopback included, each
/// once, in the order the kernel lists them.
pub fn ipv4_addresses() -> io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated to `head`, checked below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, freed
        // only after the loop.
        let ifa = unsafe { &*cur };
        let family = if ifa.ifa_addr.is_null() {
            None
        } else {
            // SAFETY: a non-null ifa_addr points at a sockaddr in the list.
            Some(i32::from(unsafe { (*ifa.ifa_addr).sa_family }))
        };
        if family == Some(libc::AF_INET) {
            // SAFETY: a sockaddr of family AF_INET is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(addrs)
}

/// The addresses an operator can reach the host at: all but loopback.
pub fn reachable_ipv4_addresses() -> Vec<Ipv4Addr> {
    ipv4_addresses()
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_then_left_out() {
        let all = ipv4_addresses().unwrap();
        assert!(all.contains(&Ipv4Addr::LOCALHOST), "{all:?}");
        let mut seen = all.clone();
        seen.dedup();
        assert_eq!(seen.len(), all.len());
        assert!(!reachable_ipv4_addresses().contains(&Ipv4Addr::LOCALHOST));
    }
}
