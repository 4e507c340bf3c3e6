use super::*;
use netlink_packet_route::link::InfoVeth;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use std::time::{Duration, Instant};

/// Runs `body` on a thread of its own in a fresh network namespace, so
/// the host's interfaces are never touched.
fn in_netns(test: &str, body: impl FnOnce() + Send + 'static) {
    let test = test.to_owned();
    let thread = std::thread::spawn(move || {
        match unshare(CloneFlags::CLONE_NEWNET) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                eprintln!(
                    "SKIPPED: {test}: cannot create a network namespace (EPERM: needs CAP_SYS_ADMIN)"
                );
                return;
            }
            Err(e) => panic!("{test}: unshare(CLONE_NEWNET): {e}"),
        }
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A veth pair: always built into kernels that run containers, unlike
/// the dummy driver (missing on this CI kernel).
fn add_veth(nl: &mut Netlink, name: &str, peer: &str) {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::LinkInfo(vec![
            NlaLinkInfo::Kind(InfoKind::Veth),
            NlaLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    nl.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .unwrap();
}

fn del_link(nl: &mut Netlink, name: &str) {
    let msg = link_message(nl.link_index(name).unwrap());
    nl.ack(RouteNetlinkMessage::DelLink(msg), 0).unwrap();
}

fn find(nl: &mut Netlink, name: &str) -> LinkInfo {
    let links = nl.links().unwrap();
    links
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("{name} not in {links:?}"))
        .clone()
}

#[test]
fn lo_is_listed_and_comes_up() {
    in_netns("lo_is_listed_and_comes_up", || {
        let mut nl = Netlink::open().unwrap();
        let lo = find(&mut nl, "lo");
        assert!(!lo.up, "{lo:?}");
        assert_eq!(nl.link_index("lo").unwrap(), lo.index);
        nl.set_up("lo").unwrap();
        assert!(find(&mut nl, "lo").up);
        nl.set_flags("lo", false).unwrap();
        assert!(!find(&mut nl, "lo").up);
    });
}

#[test]
fn bridge_port_address_and_routes() {
    in_netns("bridge_port_address_and_routes", || {
        let mut nl = Netlink::open().unwrap();
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        add_veth(&mut nl, "kv0", "kv1");
        nl.create_bridge("kbr0", Some(mac)).unwrap();
        // Again: an existing bridge is fine.
        nl.create_bridge("kbr0", Some(mac)).unwrap();
        let bridge = find(&mut nl, "kbr0");
        assert_eq!(bridge.mac, Some(mac));
        assert_eq!(bridge.kind.as_deref(), Some("bridge"));
        let err = nl.create_bridge("kv1", None).unwrap_err();
        assert!(matches!(err, NetlinkError::NotABridge { .. }), "{err}");

        nl.set_master("kv0", "kbr0").unwrap();
        assert_eq!(find(&mut nl, "kv0").master, Some(bridge.index));
        assert_eq!(find(&mut nl, "kv0").kind.as_deref(), Some("veth"));
        assert_eq!(find(&mut nl, "kv1").master, None);
        for name in ["kv0", "kv1", "kbr0"] {
            nl.set_up(name).unwrap();
        }
        // Adding a port must not change the bridge's chosen MAC.
        assert_eq!(find(&mut nl, "kbr0").mac, Some(mac));

        let addr = Ipv4Addr::new(10, 0, 0, 5);
        nl.add_address("kbr0", addr, 24).unwrap();
        nl.add_address("kbr0", addr, 24).unwrap();
        assert_eq!(nl.addresses("kbr0").unwrap(), vec![(addr, 24)]);
        assert_eq!(nl.addresses("kv0").unwrap(), vec![]);
        let dump = nl
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_DUMP,
            )
            .unwrap();
        let broadcast = Ipv4Addr::new(10, 0, 0, 255);
        assert!(dump.iter().any(|r| matches!(r,
            RouteNetlinkMessage::NewAddress(m)
                if m.attributes.contains(&AddressAttribute::Broadcast(broadcast)))));

        assert_eq!(nl.default_route().unwrap(), None);
        let gw1 = Ipv4Addr::new(10, 0, 0, 1);
        let gw2 = Ipv4Addr::new(10, 0, 0, 2);
        nl.replace_default_route("kbr0", gw1).unwrap();
        assert_eq!(nl.default_route().unwrap(), Some((gw1, bridge.index)));
        nl.replace_default_route("kbr0", gw2).unwrap();
        assert_eq!(nl.default_route().unwrap(), Some((gw2, bridge.index)));
        nl.del_default_route("kbr0").unwrap();
        assert_eq!(nl.default_route().unwrap(), None);
        nl.del_default_route("kbr0").unwrap();

        nl.del_address("kbr0", addr, 24).unwrap();
        assert_eq!(nl.addresses("kbr0").unwrap(), vec![]);
        let err = nl.del_address("kbr0", addr, 24).unwrap_err();
        assert!(err.to_string().contains("kbr0"), "{err}");
    });
}

#[test]
fn errors_name_the_interface() {
    in_netns("errors_name_the_interface", || {
        let mut nl = Netlink::open().unwrap();
        let err = nl.set_up("nosuch0").unwrap_err();
        assert!(matches!(err, NetlinkError::NoSuchLink { .. }), "{err}");
        assert!(err.to_string().contains("nosuch0"), "{err}");
        let err = nl.link_index("nosuch0").unwrap_err();
        assert!(matches!(err, NetlinkError::NoSuchLink { .. }), "{err}");
        let err = nl.link_index("").unwrap_err();
        assert!(matches!(err, NetlinkError::BadName { .. }), "{err}");
        let err = nl.link_index("a-name-far-too-long").unwrap_err();
        assert!(matches!(err, NetlinkError::BadName { .. }), "{err}");
        let err = nl.add_address("lo", Ipv4Addr::LOCALHOST, 33).unwrap_err();
        assert!(err.to_string().contains("lo"), "{err}");

        // The gateway is not on any connected subnet: ENETUNREACH.
        nl.set_up("lo").unwrap();
        let err = nl
            .replace_default_route("lo", Ipv4Addr::new(192, 0, 2, 1))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, NetlinkError::Request { ifname, source, .. }
                if ifname == "lo" && source.raw_os_error() == Some(libc::ENETUNREACH)),
            "{text}"
        );
        assert!(text.starts_with("Could not set the default route via 192.0.2.1 on lo: "));
        assert!(text.ends_with('.'), "{text}");
    });
}

/// Polls the monitor until an event matching `want` arrives.
fn wait_for(monitor: &mut LinkMonitor, want: impl Fn(&LinkEvent) -> bool) -> LinkEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(monitor.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u16)).unwrap();
        let changes = monitor.drain().unwrap();
        assert!(!changes.overrun);
        if let Some(event) = changes.iter().find(|e| want(e)) {
            return event.clone();
        }
    }
    panic!("no matching link event within 5 s");
}

#[test]
fn monitor_sees_link_changes() {
    in_netns("monitor_sees_link_changes", || {
        let mut monitor = LinkMonitor::open().unwrap();
        assert_eq!(monitor.drain().unwrap(), LinkChanges::default());
        let mut nl = Netlink::open().unwrap();

        add_veth(&mut nl, "km0", "km1");
        let created = wait_for(&mut monitor, |e| e.name == "km0");
        assert!(!created.up && !created.carrier && !created.removed);
        assert_eq!(created.index, nl.link_index("km0").unwrap());

        // A veth has a carrier once both ends are up.
        nl.set_up("km0").unwrap();
        nl.set_up("km1").unwrap();
        let up = wait_for(&mut monitor, |e| e.name == "km0" && e.carrier);
        assert!(up.up && !up.removed);

        // Leaving a bridge sends an AF_BRIDGE RTM_DELLINK for the port:
        // that is not the link going away.
        nl.create_bridge("kmbr0", None).unwrap();
        nl.set_master("km0", "kmbr0").unwrap();
        let mut msg = link_message(created.index);
        msg.attributes.push(LinkAttribute::Controller(0));
        nl.ack(RouteNetlinkMessage::SetLink(msg), 0).unwrap();
        assert_eq!(find(&mut nl, "km0").master, None);
        std::thread::sleep(Duration::from_millis(50));
        let changes = monitor.drain().unwrap();
        assert!(changes.iter().all(|e| !e.removed), "{changes:?}");

        del_link(&mut nl, "km0");
        let gone = wait_for(&mut monitor, |e| e.name == "km0" && e.removed);
        assert_eq!(gone.index, created.index);
    });
}
