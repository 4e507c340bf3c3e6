//! Finding the uplink a `[[network]]` table names, in sysfs: by name, by
//! MAC address, or the first wired Ethernet interface.

use std::fs;
use std::path::Path;

use keel_common::guest::{validate_ifname, MacAddr};
use keel_common::host::Uplink;

use super::NetError;

/// `ARPHRD_ETHER`, the value of `/sys/class/net/<if>/type` for Ethernet.
const ARPHRD_ETHER: u32 = 1;

/// The interface `uplink` names in the sysfs tree at `sysfs_net`, if it is
/// there now.
pub fn find(sysfs_net: &Path, uplink: &Uplink) -> Result<String, NetError> {
    match uplink {
        Uplink::Name(name) => {
            validate_ifname(name).map_err(|_| NetError::BadName {
                ifname: name.clone(),
            })?;
            if sysfs_net.join(name).exists() {
                Ok(name.clone())
            } else {
                Err(NetError::NoSuchInterface {
                    uplink: name.clone(),
                })
            }
        }
        Uplink::Mac(mac) => candidates(sysfs_net)?
            .into_iter()
            .find(|name| read_mac(sysfs_net, name) == Some(*mac))
            .ok_or_else(|| NetError::NoSuchInterface {
                uplink: format!("the interface with MAC {mac}"),
            }),
        Uplink::FirstEthernet => {
            candidates(sysfs_net)?
                .into_iter()
                .next()
                .ok_or_else(|| NetError::NoInterface {
                    sysfs: sysfs_net.display().to_string(),
                })
        }
    }
}

/// Wired Ethernet interfaces, sorted by name so the choice is stable
/// across boots: Ethernet (`type` 1) and backed by hardware (a `device`
/// link), which rules out loopback, bridges, taps, and the bond0 the
/// bonding driver creates on its own.
fn candidates(sysfs_net: &Path) -> Result<Vec<String>, NetError> {
    let entries = fs::read_dir(sysfs_net).map_err(|source| NetError::Sysfs {
        path: sysfs_net.display().to_string(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_candidate(&sysfs_net.join(name), name))
        .collect();
    names.sort();
    Ok(names)
}

fn is_candidate(dir: &Path, name: &str) -> bool {
    if name == "lo" || validate_ifname(name).is_err() {
        return false;
    }
    let is_ether = fs::read_to_string(dir.join("type"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(ARPHRD_ETHER);
    is_ether
        && dir.join("device").exists()
        && !dir.join("bridge").exists()
        && !dir.join("tun_flags").exists()
}

/// The interface's MAC address from `<sysfs_net>/<ifname>/address`.
pub fn read_mac(sysfs_net: &Path, ifname: &str) -> Option<MacAddr> {
    keel_sys::dhcp::read_mac(sysfs_net, ifname).map(MacAddr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fake_if(root: &Path, name: &str, ty: u32, mac: &str, extra: &[&str]) {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{ty}\n")).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        for e in extra {
            if e.ends_with('/') {
                fs::create_dir_all(dir.join(e)).unwrap();
            } else {
                fs::write(dir.join(e), "0x1002\n").unwrap();
            }
        }
    }

    fn root() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("class/net");
        fs::create_dir_all(&path).unwrap();
        (tmp, path)
    }

    const MAC: &str = "52:54:00:12:34:56";

    #[test]
    fn selects_first_plain_ethernet() {
        let (_tmp, net) = root();
        fake_if(&net, "lo", 772, "00:00:00:00:00:00", &[]);
        fake_if(&net, "br0", 1, MAC, &["bridge/"]);
        fake_if(&net, "tap0", 1, MAC, &["tun_flags"]);
        fake_if(&net, "sit0", 776, MAC, &[]);
        // Virtual, no device link: the bonding driver's own bond0.
        fake_if(&net, "bond0", 1, MAC, &["bonding/"]);
        fake_if(&net, "eth1", 1, MAC, &["device/"]);
        fake_if(&net, "enp0s2", 1, MAC, &["device/"]);
        assert_eq!(find(&net, &Uplink::FirstEthernet).unwrap(), "enp0s2");
        assert_eq!(read_mac(&net, "enp0s2").unwrap().to_string(), MAC);
    }

    #[test]
    fn selects_by_mac() {
        let (_tmp, net) = root();
        fake_if(&net, "eth0", 1, "52:54:00:00:00:01", &["device/"]);
        fake_if(&net, "eth1", 1, "52:54:00:00:00:02", &["device/"]);
        let wanted = Uplink::Mac("52:54:00:00:00:02".parse().unwrap());
        assert_eq!(find(&net, &wanted).unwrap(), "eth1");
        let missing = Uplink::Mac("52:54:00:00:00:03".parse().unwrap());
        let err = find(&net, &missing).unwrap_err();
        assert!(err.to_string().contains("52:54:00:00:00:03"), "{err}");
    }

    #[test]
    fn no_candidate_is_an_error() {
        let (_tmp, net) = root();
        fake_if(&net, "lo", 772, MAC, &[]);
        fake_if(&net, "br0", 1, MAC, &["bridge/"]);
        let err = find(&net, &Uplink::FirstEthernet).unwrap_err();
        assert!(matches!(err, NetError::NoInterface { .. }), "{err}");
        let err = find(&net.join("missing"), &Uplink::FirstEthernet).unwrap_err();
        assert!(matches!(err, NetError::Sysfs { .. }), "{err}");
    }

    #[test]
    fn explicit_name_must_exist() {
        let (_tmp, net) = root();
        fake_if(&net, "br0", 1, MAC, &["bridge/"]);
        // An explicit choice overrides the heuristics.
        assert_eq!(find(&net, &Uplink::Name("br0".into())).unwrap(), "br0");
        let err = find(&net, &Uplink::Name("eth9".into())).unwrap_err();
        assert!(err.to_string().contains("eth9"), "{err}");
        assert!(find(&net, &Uplink::Name("../../etc".into())).is_err());
    }
}
