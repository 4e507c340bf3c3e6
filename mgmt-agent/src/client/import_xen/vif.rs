//! Xen NIC specifications (xl-network-configuration(5)): comma-separated
//! `key=value` pairs, all optional, and what Keel makes of them. Every
//! NIC becomes a virtio-net device on Keel's one host bridge, as xl's
//! default (`script=vif-bridge`, `bridge=xenbr0`) put it on dom0's.

use keel_common::guest::{MacAddr, NetMode, NetSpec};

use super::report::Note;

/// Bridge names that mean "the host's LAN bridge": xl's default, Keel's,
/// and the one xend's `network-bridge` script named after the NIC.
pub const USUAL_BRIDGES: &[&str] = &["xenbr0", "br0", "eth0"];

/// One parsed NIC and what Keel makes of its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenVif {
    pub net: NetSpec,
    pub notes: Vec<Note>,
}

/// Parses one element of `vif = [...]` (an empty string is a NIC with
/// every default).
pub fn parse(spec: &str) -> XenVif {
    let mut net = NetSpec {
        mode: NetMode::Bridge,
        tap: None,
        mac: None,
        hostfwd: None,
        host_ports: None,
    };
    let mut notes = Vec::new();
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .map_or((field, ""), |(k, v)| (k.trim(), v.trim()));
        if let Some(note) = setting(&mut net, key, value) {
            notes.push(note);
        }
    }
    XenVif { net, notes }
}

/// Applies one `key=value` to `net`; returns what the report says of it.
fn setting(net: &mut NetSpec, key: &str, value: &str) -> Option<Note> {
    let note = match key {
        "mac" => match value.parse::<MacAddr>() {
            Ok(mac) if mac.is_unicast() && !mac.is_zero() => {
                net.mac = Some(mac);
                return None;
            }
            Ok(_) => Note::not_mapped(format!(
                "mac={value}: not a unicast address; Keel picks one"
            )),
            Err(_) => Note::not_mapped(format!("mac={value}: not a MAC address; Keel picks one")),
        },
        "bridge" if USUAL_BRIDGES.contains(&value) => return None,
        "bridge" => Note::not_mapped(format!(
            "bridge={value}: Keel has one host bridge; the NIC is joined to the host bridge"
        )),
        "script" if value.rsplit('/').next() == Some("vif-bridge") => return None,
        "script" => Note::not_mapped(format!(
            "script={value}: Keel runs no vif scripts; the NIC is joined to the host bridge"
        )),
        "type" if matches!(value, "ioemu" | "vif") => return None,
        "model" if matches!(value, "virtio-net" | "virtio") => return None,
        "model" => Note::not_mapped(format!(
            "model={value}: the guest gets a virtio-net NIC, so it needs the virtio_net driver"
        )),
        "ip" => Note::not_mapped(format!(
            "ip={value}: Keel does not filter a guest's traffic by IP address"
        )),
        "vifname" => Note::not_mapped(format!(
            "vifname={value}: Keel names the guest's taps itself"
        )),
        "rate" => Note::not_mapped(format!("rate={value}: Keel does not limit a NIC's rate")),
        "backend" => Note::not_mapped(format!(
            "backend={value}: Keel has no driver domains; the host serves the NIC"
        )),
        "mtu" => Note::not_mapped(format!(
            "mtu={value}: Keel sets no MTU on the tap; the bridge's applies"
        )),
        "gatewaydev" | "netdev" | "forwarddev" => Note::not_mapped(format!(
            "{key}={value}: for routed or NAT scripts, which Keel does not run"
        )),
        "devid" => Note::not_mapped(format!(
            "devid={value}: Keel numbers NICs in the order they are listed"
        )),
        "trusted" | "untrusted" => Note::changed(format!(
            "{key}: a hint to Xen's network frontend; Keel's virtio-net has none"
        )),
        _ if value.is_empty() => Note::not_mapped(format!("{key}: unknown to Keel")),
        _ => Note::not_mapped(format!("{key}={value}: unknown to Keel")),
    };
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::import_xen::report::Kind;

    fn texts(vif: &XenVif) -> Vec<(Kind, &str)> {
        vif.notes
            .iter()
            .map(|n| (n.kind, n.text.as_str()))
            .collect()
    }

    #[test]
    fn an_empty_vif_is_a_bridge_nic_with_a_mac_chosen_by_keel() {
        for spec in [
            "",
            " ",
            ",",
            "bridge=xenbr0",
            "script=vif-bridge",
            "type=ioemu",
        ] {
            let vif = parse(spec);
            assert_eq!(vif.net.mode, NetMode::Bridge, "{spec:?}");
            assert_eq!(vif.net.mac, None);
            assert_eq!(vif.notes, vec![], "{spec:?}");
        }
    }

    #[test]
    fn mac_and_the_usual_bridge_are_kept_with_xm_spacing() {
        let vif = parse("mac=00:16:3E:74:3d:76, bridge=xenbr0, script=/etc/xen/scripts/vif-bridge, model=virtio-net");
        assert_eq!(
            vif.net.mac,
            Some(MacAddr([0x00, 0x16, 0x3e, 0x74, 0x3d, 0x76]))
        );
        assert_eq!(vif.net.mode, NetMode::Bridge);
        assert_eq!(vif.notes, vec![]);
        for bridge in USUAL_BRIDGES {
            assert_eq!(parse(&format!("bridge={bridge}")).notes, vec![]);
        }
    }

    #[test]
    fn a_bad_or_group_mac_is_reported_and_left_to_keel() {
        for (spec, why) in [
            ("mac=01:16:3e:00:00:01", "not a unicast address"),
            ("mac=00:00:00:00:00:00", "not a unicast address"),
            ("mac=00:16:3e:00:01", "not a MAC address"),
            ("mac=zz:16:3e:00:00:01", "not a MAC address"),
        ] {
            let vif = parse(spec);
            assert_eq!(vif.net.mac, None, "{spec}");
            let [(Kind::NotMapped, text)] = texts(&vif)[..] else {
                panic!("{spec}: {:?}", vif.notes)
            };
            assert!(text.starts_with(spec) && text.contains(why), "{text}");
        }
    }

    #[test]
    fn what_keel_cannot_do_is_reported_one_note_per_setting() {
        let vif = parse(
            "bridge=xenbr1,ip=10.0.0.5,vifname=web-eth0,model=e1000,rate=10Mb/s,\
             backend=netdom,script=vif-route,type=ioemu,mtu=9000,gatewaydev=eth1,devid=3,accel=x,untrusted",
        );
        let notes = texts(&vif);
        let starts: Vec<&str> = notes
            .iter()
            .map(|(_, t)| t.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            starts,
            [
                "bridge=xenbr1",
                "ip=10.0.0.5",
                "vifname=web-eth0",
                "model=e1000",
                "rate=10Mb/s",
                "backend=netdom",
                "script=vif-route",
                "mtu=9000",
                "gatewaydev=eth1",
                "devid=3",
                "accel=x",
                "untrusted",
            ]
        );
        assert!(notes[0].1.contains("joined to the host bridge"));
        assert!(notes[..11].iter().all(|(k, _)| *k == Kind::NotMapped));
        assert_eq!(notes[10].1, "accel=x: unknown to Keel");
        assert_eq!(notes[11].0, Kind::Changed);
        assert_eq!(vif.net.mode, NetMode::Bridge);
    }
}
