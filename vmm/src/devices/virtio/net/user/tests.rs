//! Hand-built frames through a real [`UserNet`], against real loopback
//! sockets. Frames are built and parsed with smoltcp's wire types, every
//! checksum verified.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use smoltcp::wire::{ArpOperation, DhcpPacket, Icmpv4Packet, Icmpv4Repr, TcpOption, TcpSeqNumber};

use super::*;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const WAIT: Duration = Duration::from_secs(5);
const ETH_HLEN: usize = 14;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// A backend whose gateway the guest has resolved, as any guest does
/// before sending it anything (smoltcp learns the guest's MAC from that).
fn net() -> UserNet {
    primed(UserNet::with_resolver(UserNetConfig::default(), None).expect("user net"))
}

/// A backend whose guest reaches the host's `ports` through the gateway.
fn net_to(ports: &[u16]) -> UserNet {
    let cfg = UserNetConfig {
        host_ports: ports.to_vec(),
        ..UserNetConfig::default()
    };
    primed(UserNet::with_resolver(cfg, None).expect("user net"))
}

fn primed(mut net: UserNet) -> UserNet {
    net.write_frame(&arp_request(GATEWAY_IP)).unwrap();
    let frames = drain(&mut net);
    assert_eq!(frames.len(), 1, "the ARP reply");
    net
}

fn eth(dst: [u8; 6], ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&u16::from(ethertype).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ip_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: l4.len(),
        hop_limit: 64,
    };
    let mut p = vec![0u8; 20 + l4.len()];
    let mut packet = Ipv4Packet::new_unchecked(&mut p);
    repr.emit(&mut packet, &ChecksumCapabilities::default());
    packet.set_ident(7);
    packet.fill_checksum();
    packet.payload_mut().copy_from_slice(l4);
    eth(GATEWAY_MAC, EthernetProtocol::Ipv4, &p)
}

/// The header fields of a TCP segment to build.
#[derive(Debug, Clone, Copy)]
struct TcpHdr {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
}

fn build_tcp(h: &TcpHdr, payload: &[u8]) -> Vec<u8> {
    let hlen = if h.mss.is_some() { 24 } else { 20 };
    let mut p = vec![0u8; hlen + payload.len()];
    let mut t = TcpPacket::new_unchecked(&mut p);
    t.set_src_port(h.src.port());
    t.set_dst_port(h.dst.port());
    t.set_seq_number(TcpSeqNumber(h.seq as i32));
    t.set_ack_number(TcpSeqNumber(h.ack as i32));
    t.set_header_len(hlen as u8);
    t.clear_flags();
    t.set_fin(h.flags & TCP_FIN != 0);
    t.set_syn(h.flags & TCP_SYN != 0);
    t.set_rst(h.flags & TCP_RST != 0);
    t.set_psh(h.flags & TCP_PSH != 0);
    t.set_ack(h.flags & TCP_ACK != 0);
    t.set_window_len(h.window);
    if let Some(mss) = h.mss {
        TcpOption::MaxSegmentSize(mss).emit(t.options_mut());
    }
    t.payload_mut().copy_from_slice(payload);
    t.fill_checksum(&(*h.src.ip()).into(), &(*h.dst.ip()).into());
    p
}

fn tcp_frame(sport: u16, dst: SocketAddrV4, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let h = TcpHdr {
        src: SocketAddrV4::new(GUEST_IP, sport),
        dst,
        seq,
        ack,
        flags,
        window: 65_535,
        mss: (flags & TCP_SYN != 0).then_some(1460),
    };
    ip_frame(GUEST_IP, *dst.ip(), IpProtocol::Tcp, &build_tcp(&h, data))
}

fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 8 + data.len()];
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut p),
        &(*src.ip()).into(),
        &(*dst.ip()).into(),
        data.len(),
        |b| b.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    ip_frame(*src.ip(), *dst.ip(), IpProtocol::Udp, &p)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&GUEST_MAC);
    p.extend_from_slice(&GUEST_IP.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target.octets());
    eth(BROADCAST_MAC, EthernetProtocol::Arp, &p)
}

fn dhcp_frame(kind: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[..3].copy_from_slice(&[1, 1, 6]);
    m[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    m[28..34].copy_from_slice(&GUEST_MAC);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, kind]);
    if let Some(ip) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&ip.octets());
    }
    m.push(255);
    udp_frame(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        &m,
    )
}

/// Option `code` of a DHCP message.
fn dhcp_option(msg: &[u8], code: u8) -> Option<Vec<u8>> {
    DhcpPacket::new_checked(msg)
        .ok()?
        .options()
        .find(|o| o.kind == code)
        .map(|o| o.data.to_vec())
}

/// A received frame, virtio-net header stripped and checked to be zero.
fn strip(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
    assert_eq!(&frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12], &GATEWAY_MAC);
    &frame[VNET_HDR_LEN..]
}

/// The IPv4 packet in a frame for the guest, header checksum verified.
fn as_ipv4(frame: &[u8]) -> Option<(Ipv4Repr, Vec<u8>)> {
    let f = strip(frame);
    let eth = EthernetFrame::new_checked(f).expect("an Ethernet frame");
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("valid IPv4 for the guest");
    let repr = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("valid IPv4");
    Some((repr, packet.payload().to_vec()))
}

#[derive(Debug, Clone)]
struct Seg {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    mss: Option<u16>,
    data: Vec<u8>,
}

/// The TCP segment in a frame for the guest, checksums verified.
fn as_tcp(frame: &[u8]) -> Option<Seg> {
    let (ip, payload) = as_ipv4(frame)?;
    if ip.next_header != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(&payload[..]).expect("valid TCP");
    let repr = TcpRepr::parse(
        &t,
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        &ChecksumCapabilities::default(),
    )
    .expect("valid TCP, checksum included");
    let flags = [
        (t.fin(), TCP_FIN),
        (t.syn(), TCP_SYN),
        (t.rst(), TCP_RST),
        (t.psh(), TCP_PSH),
        (t.ack(), TCP_ACK),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |acc, (_, bit)| acc | bit);
    Some(Seg {
        src: SocketAddrV4::new(ip.src_addr, t.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr, t.dst_port()),
        seq: t.seq_number().0 as u32,
        ack: t.ack_number().0 as u32,
        flags,
        mss: repr.max_seg_size,
        data: t.payload().to_vec(),
    })
}

/// The UDP datagram in a frame for the guest, checksums verified.
fn as_udp(frame: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    let (ip, payload) = as_ipv4(frame)?;
    if ip.next_header != IpProtocol::Udp {
        return None;
    }
    let u = UdpPacket::new_checked(&payload[..]).expect("valid UDP");
    UdpRepr::parse(
        &u,
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        &ChecksumCapabilities::default(),
    )
    .expect("valid UDP, checksum included");
    Some((
        SocketAddrV4::new(ip.src_addr, u.src_port()),
        SocketAddrV4::new(ip.dst_addr, u.dst_port()),
        u.payload().to_vec(),
    ))
}

/// The ARP packet in a frame for the guest.
fn as_arp(frame: &[u8]) -> Option<ArpRepr> {
    let f = strip(frame);
    let eth = EthernetFrame::new_checked(f).expect("an Ethernet frame");
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    Some(ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("ARP")).expect("ARP"))
}

/// Reads frames (skipping others) until one satisfies `want`.
fn wait_for<T>(net: &mut UserNet, mut want: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    while Instant::now() < deadline {
        match net.read_frame(&mut buf) {
            Ok(n) => {
                if let Some(t) = want(&buf[..n]) {
                    return t;
                }
            }
            Err(NetBackendError::WouldBlock) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("read_frame: {e}"),
        }
    }
    panic!("no matching frame within {WAIT:?}");
}

fn wait_tcp(net: &mut UserNet, want: impl Fn(&Seg) -> bool) -> Seg {
    wait_for(net, |f| as_tcp(f).filter(|s| want(s)))
}

fn drain(net: &mut UserNet) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    let mut frames = Vec::new();
    while let Ok(n) = net.read_frame(&mut buf) {
        frames.push(buf[..n].to_vec());
    }
    frames
}

use crate::devices::virtio::net::MAX_PACKET_LEN;

#[test]
fn hostfwd_rules_parse() {
    let f: HostFwd = "tcp:127.0.0.1:8022-:22".parse().unwrap();
    assert_eq!(f.proto, FwdProto::Tcp);
    assert_eq!(f.host, "127.0.0.1:8022".parse().unwrap());
    assert_eq!(f.guest_port, 22);
    let f: HostFwd = "udp::5353-10.0.2.15:53".parse().unwrap();
    assert_eq!(f.proto, FwdProto::Udp);
    assert_eq!(f.host, "127.0.0.1:5353".parse().unwrap());
    assert_eq!(f.to_string(), "udp:127.0.0.1:5353-:53");
    let f: HostFwd = "TCP:0.0.0.0:80-:8080".parse().unwrap();
    assert_eq!(f.host.ip(), &Ipv4Addr::UNSPECIFIED);

    let err = |s: &str| s.parse::<HostFwd>().unwrap_err();
    assert!(matches!(
        err("sctp:127.0.0.1:1-:2"),
        HostFwdParseError::Protocol { .. }
    ));
    assert!(matches!(
        err("tcp:localhost:1-:2"),
        HostFwdParseError::Address { .. }
    ));
    assert!(matches!(
        err("tcp:1.2.3:1-:2"),
        HostFwdParseError::Address { .. }
    ));
    assert!(matches!(
        err("tcp::70000-:2"),
        HostFwdParseError::Port { .. }
    ));
    assert!(matches!(err("tcp::1-:0"), HostFwdParseError::Port { .. }));
    assert!(matches!(err("tcp::1-:x"), HostFwdParseError::Port { .. }));
    assert!(matches!(
        err("tcp::1-10.0.2.16:2"),
        HostFwdParseError::GuestAddress { .. }
    ));
    assert!(matches!(err("tcp"), HostFwdParseError::Syntax(_)));
    assert!(matches!(err("tcp:1-2"), HostFwdParseError::Syntax(_)));
    assert!(matches!(err(""), HostFwdParseError::Syntax(_)));
    // Messages name the rule.
    assert!(err("sctp:127.0.0.1:1-:2").to_string().contains("sctp"));
}

#[test]
fn overlapping_and_busy_forwards_are_refused() {
    let rules = |a: &str, b: &str| UserNetConfig {
        hostfwd: vec![a.parse().unwrap(), b.parse().unwrap()],
        ..UserNetConfig::default()
    };
    let e =
        UserNet::with_resolver(rules("tcp::8022-:22", "tcp:0.0.0.0:8022-:23"), None).unwrap_err();
    assert!(matches!(e, UserNetError::Overlap { .. }), "{e}");
    let e = UserNet::with_resolver(rules("udp::53-:53", "udp:127.0.0.1:53-:54"), None).unwrap_err();
    assert!(matches!(e, UserNetError::Overlap { .. }), "{e}");
    // Same port, different protocols or addresses: fine (not bound here).
    let a: HostFwd = "tcp::8022-:22".parse().unwrap();
    assert!(!a.overlaps(&"udp::8022-:22".parse().unwrap()));
    assert!(!a.overlaps(&"tcp:127.0.0.2:8022-:22".parse().unwrap()));

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cfg = UserNetConfig {
        hostfwd: vec![format!("tcp:127.0.0.1:{port}-:22").parse().unwrap()],
        ..UserNetConfig::default()
    };
    let e = UserNet::with_resolver(cfg, None).unwrap_err();
    assert!(matches!(e, UserNetError::Bind { .. }), "{e}");
    assert!(e.to_string().contains(&port.to_string()));
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let mut net = UserNet::with_resolver(UserNetConfig::default(), None).unwrap();
    for target in [GATEWAY_IP, DNS_IP] {
        net.write_frame(&arp_request(target)).unwrap();
        let frames = drain(&mut net);
        assert_eq!(frames.len(), 1);
        let f = strip(&frames[0]);
        assert_eq!(&f[..6], &GUEST_MAC);
        let arp = as_arp(&frames[0]).expect("an ARP reply");
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } = arp
        else {
            panic!("{arp:?}")
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr, EthernetAddress(GATEWAY_MAC));
        assert_eq!(source_protocol_addr, target);
        assert_eq!(target_protocol_addr, GUEST_IP);
        assert_eq!(target_hardware_addr, EthernetAddress(GUEST_MAC));
    }
    // Nobody else lives here.
    for target in [
        GUEST_IP,
        Ipv4Addr::new(10, 0, 2, 99),
        Ipv4Addr::new(8, 8, 8, 8),
    ] {
        net.write_frame(&arp_request(target)).unwrap();
        assert!(drain(&mut net).is_empty());
    }
}

fn dhcp_reply(net: &mut UserNet) -> (u8, Vec<u8>) {
    let frames = drain(net);
    assert_eq!(frames.len(), 1);
    let (src, dst, msg) = as_udp(&frames[0]).unwrap();
    assert_eq!(src, SocketAddrV4::new(GATEWAY_IP, 67));
    assert_eq!(dst, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(msg[0], 2);
    assert_eq!(&msg[4..8], &[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(&msg[28..34], &GUEST_MAC);
    (dhcp_option(&msg, 53).unwrap()[0], msg)
}

#[test]
fn dhcp_discover_offer_request_ack() {
    let mut net = net();
    net.write_frame(&dhcp_frame(DISCOVER, None)).unwrap();
    let (kind, offer) = dhcp_reply(&mut net);
    assert_eq!(kind, OFFER);
    assert_eq!(&offer[16..20], &GUEST_IP.octets());
    assert_eq!(dhcp_option(&offer, 54).unwrap(), &GATEWAY_IP.octets());
    assert_eq!(dhcp_option(&offer, 1).unwrap(), &[255, 255, 255, 0]);
    assert_eq!(dhcp_option(&offer, 3).unwrap(), &GATEWAY_IP.octets());
    assert_eq!(dhcp_option(&offer, 6).unwrap(), &DNS_IP.octets());
    assert_eq!(dhcp_option(&offer, 51).unwrap(), &LEASE_SECS.to_be_bytes());

    net.write_frame(&dhcp_frame(REQUEST, Some(GUEST_IP)))
        .unwrap();
    let (kind, ack) = dhcp_reply(&mut net);
    assert_eq!(kind, ACK);
    assert_eq!(&ack[16..20], &GUEST_IP.octets());
    assert_eq!(dhcp_option(&ack, 3).unwrap(), &GATEWAY_IP.octets());

    net.write_frame(&dhcp_frame(REQUEST, Some(Ipv4Addr::new(10, 0, 2, 16))))
        .unwrap();
    let (kind, nak) = dhcp_reply(&mut net);
    assert_eq!(kind, NAK);
    assert_eq!(&nak[16..20], &[0; 4]);
    // RELEASE and the like: no answer.
    net.write_frame(&dhcp_frame(7, None)).unwrap();
    assert!(drain(&mut net).is_empty());
}

#[test]
fn icmp_echo_to_the_gateway_is_answered() {
    let mut net = net();
    let echo = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: 1,
        data: b"ping",
    };
    let mut p = vec![0u8; echo.buffer_len()];
    echo.emit(
        &mut Icmpv4Packet::new_unchecked(&mut p),
        &ChecksumCapabilities::default(),
    );
    net.write_frame(&ip_frame(GUEST_IP, GATEWAY_IP, IpProtocol::Icmp, &p))
        .unwrap();
    let frames = drain(&mut net);
    assert_eq!(frames.len(), 1);
    let (ip, payload) = as_ipv4(&frames[0]).unwrap();
    assert_eq!(
        (ip.src_addr, ip.dst_addr, ip.next_header),
        (GATEWAY_IP, GUEST_IP, IpProtocol::Icmp)
    );
    let reply = Icmpv4Repr::parse(
        &Icmpv4Packet::new_checked(&payload[..]).unwrap(),
        &ChecksumCapabilities::default(),
    )
    .expect("valid ICMP, checksum included");
    assert_eq!(
        reply,
        Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 1,
            data: b"ping",
        }
    );
    // Echo to anyone else is not faked.
    net.write_frame(&ip_frame(
        GUEST_IP,
        Ipv4Addr::new(192, 0, 2, 1),
        IpProtocol::Icmp,
        &p,
    ))
    .unwrap();
    assert!(drain(&mut net).is_empty());
}

#[test]
fn tcp_connects_out_and_carries_data_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let remote = SocketAddrV4::new(GATEWAY_IP, port);
    let mut net = net_to(&[remote.port()]);

    net.write_frame(&tcp_frame(40_000, remote, 1000, 0, TCP_SYN, b""))
        .unwrap();
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    let synack = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    assert_eq!(synack.flags, TCP_SYN | TCP_ACK);
    assert_eq!(synack.src, remote);
    assert_eq!(synack.dst, SocketAddrV4::new(GUEST_IP, 40_000));
    assert_eq!(synack.ack, 1001);
    assert_eq!(synack.mss, Some(1460));
    let mut ours = synack.seq.wrapping_add(1);

    net.write_frame(&tcp_frame(40_000, remote, 1001, ours, TCP_ACK, b""))
        .unwrap();
    net.write_frame(&tcp_frame(
        40_000,
        remote,
        1001,
        ours,
        TCP_ACK | TCP_PSH,
        b"hello",
    ))
    .unwrap();
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    wait_tcp(&mut net, |s| s.ack == 1006 && s.flags & TCP_ACK != 0);

    // Host to guest, more than one segment's worth.
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    host.write_all(&big).unwrap();
    let mut received = Vec::new();
    while received.len() < big.len() {
        let s = wait_tcp(&mut net, |s| !s.data.is_empty());
        assert_eq!(s.seq, ours.wrapping_add(received.len() as u32));
        assert!(s.data.len() <= 1460);
        received.extend_from_slice(&s.data);
    }
    assert_eq!(received, big);
    ours = ours.wrapping_add(big.len() as u32);
    net.write_frame(&tcp_frame(40_000, remote, 1006, ours, TCP_ACK, b""))
        .unwrap();

    // The host closes: the guest gets a FIN; the guest closes: the host
    // reads EOF.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let fin = wait_tcp(&mut net, |s| s.flags & TCP_FIN != 0);
    assert_eq!(fin.seq, ours);
    net.write_frame(&tcp_frame(
        40_000,
        remote,
        1006,
        ours + 1,
        TCP_ACK | TCP_FIN,
        b"",
    ))
    .unwrap();
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    wait_tcp(&mut net, |s| s.ack == 1007);
    assert_eq!(
        net.tcp.len(),
        0,
        "the connection is gone once closed both ways"
    );
}

#[test]
fn tcp_data_not_acknowledged_is_retransmitted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = SocketAddrV4::new(GATEWAY_IP, listener.local_addr().unwrap().port());
    let mut net = net_to(&[remote.port()]);
    net.write_frame(&tcp_frame(40_001, remote, 7, 0, TCP_SYN, b""))
        .unwrap();
    let (mut host, _) = listener.accept().unwrap();
    let synack = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    let ours = synack.seq.wrapping_add(1);
    net.write_frame(&tcp_frame(40_001, remote, 8, ours, TCP_ACK, b""))
        .unwrap();
    host.write_all(b"again").unwrap();
    let first = wait_tcp(&mut net, |s| !s.data.is_empty());
    let start = Instant::now();
    let again = wait_tcp(&mut net, |s| !s.data.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!((again.seq, &again.data), (first.seq, &first.data));
}

#[test]
fn tcp_to_a_closed_port_is_reset() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let remote = SocketAddrV4::new(GATEWAY_IP, port);
    let mut net = net_to(&[port]);
    net.write_frame(&tcp_frame(40_002, remote, 99, 0, TCP_SYN, b""))
        .unwrap();
    let rst = wait_tcp(&mut net, |s| s.flags & TCP_RST != 0);
    assert_eq!(rst.ack, 100);
    assert_eq!(net.tcp.len(), 0);
    // Stray segments for no connection are reset; RSTs are not answered.
    net.write_frame(&tcp_frame(40_003, remote, 5, 77, TCP_ACK, b"x"))
        .unwrap();
    let rst = wait_tcp(&mut net, |s| s.flags & TCP_RST != 0);
    assert_eq!(rst.seq, 77);
    net.write_frame(&tcp_frame(40_003, remote, 5, 77, TCP_RST, b""))
        .unwrap();
    assert!(drain(&mut net).is_empty());
    // Addresses that go nowhere are refused.
    let nowhere = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 99), 80);
    net.write_frame(&tcp_frame(40_004, nowhere, 1, 0, TCP_SYN, b""))
        .unwrap();
    wait_tcp(&mut net, |s| s.flags & TCP_RST != 0 && s.src == nowhere);
}

#[test]
fn udp_goes_out_and_replies_come_back() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(WAIT)).unwrap();
    let port = echo.local_addr().unwrap().port();
    let mut net = net_to(&[port]);
    let guest = SocketAddrV4::new(GUEST_IP, 5555);
    let remote = SocketAddrV4::new(GATEWAY_IP, port);
    net.write_frame(&udp_frame(guest, remote, b"marco"))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, peer) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"marco");
    echo.send_to(b"polo", peer).unwrap();
    let (src, dst, data) = wait_for(&mut net, as_udp);
    assert_eq!((src, dst, data.as_slice()), (remote, guest, &b"polo"[..]));
    // The same flow is reused.
    net.write_frame(&udp_frame(guest, remote, b"again"))
        .unwrap();
    let (_, peer2) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(peer, peer2);
}

#[test]
fn dns_is_forwarded_to_the_resolver() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver.set_read_timeout(Some(WAIT)).unwrap();
    let mut net = primed(
        UserNet::with_resolver(
            UserNetConfig::default(),
            Some(resolver.local_addr().unwrap()),
        )
        .unwrap(),
    );
    let query = dns_query();
    let guest = SocketAddrV4::new(GUEST_IP, 33_333);
    let dns = SocketAddrV4::new(DNS_IP, 53);
    net.write_frame(&udp_frame(guest, dns, &query)).unwrap();
    let mut buf = [0u8; 512];
    let (n, peer) = resolver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], query.as_slice());
    let mut answer = query.clone();
    answer[2] |= 0x80;
    resolver.send_to(&answer, peer).unwrap();
    let (src, dst, data) = wait_for(&mut net, as_udp);
    assert_eq!((src, dst), (dns, guest));
    assert_eq!(data, answer);
    // Other ports on the DNS address go nowhere.
    net.write_frame(&udp_frame(guest, SocketAddrV4::new(DNS_IP, 54), &query))
        .unwrap();
    assert!(drain(&mut net).is_empty());
}

fn dns_query() -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]); // EDNS OPT
    q
}

#[test]
fn dns_without_a_resolver_is_servfail() {
    let mut net = net();
    let query = dns_query();
    let guest = SocketAddrV4::new(GUEST_IP, 33_334);
    net.write_frame(&udp_frame(guest, SocketAddrV4::new(DNS_IP, 53), &query))
        .unwrap();
    let (_, dst, r) = wait_for(&mut net, as_udp);
    assert_eq!(dst, guest);
    assert_eq!(&r[..2], &[0xab, 0xcd]);
    assert_eq!(r[2] & 0x80, 0x80, "a response");
    assert_eq!(r[3] & 0x0f, 2, "SERVFAIL");
    assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &r[12..],
        &query[12..query.len() - 11],
        "the question, echoed"
    );
    // Not even a header: no answer.
    net.write_frame(&udp_frame(guest, SocketAddrV4::new(DNS_IP, 53), b"abc"))
        .unwrap();
    assert!(drain(&mut net).is_empty());
}

#[test]
fn resolv_conf_first_nameserver() {
    let conf = "# hi\nsearch x\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n";
    assert_eq!(
        dns::first_nameserver(conf),
        Some("192.0.2.1:53".parse().unwrap())
    );
    assert_eq!(
        dns::first_nameserver("nameserver ::1\n"),
        Some("[::1]:53".parse().unwrap())
    );
    assert_eq!(dns::first_nameserver("nameserver bogus\n"), None);
    assert_eq!(dns::first_nameserver(""), None);
}

#[test]
fn tcp_port_forward_reaches_the_guest() {
    let cfg = UserNetConfig {
        hostfwd: vec!["tcp:127.0.0.1:0-:22".parse().unwrap()],
        ..UserNetConfig::default()
    };
    let mut net = primed(UserNet::with_resolver(cfg, None).unwrap());
    let addr = net.hostfwd_addrs()[0];
    assert_ne!(addr.port(), 0);
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let syn = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    assert_eq!(syn.flags, TCP_SYN);
    assert_eq!(syn.dst, SocketAddrV4::new(GUEST_IP, 22));
    assert_eq!(*syn.src.ip(), GATEWAY_IP);
    assert_eq!(syn.mss, Some(1460));
    let from = syn.src;
    let ours = syn.seq.wrapping_add(1);
    // The guest's sshd answers.
    let synack = TcpHdr {
        src: SocketAddrV4::new(GUEST_IP, 22),
        dst: from,
        seq: 5000,
        ack: ours,
        flags: TCP_SYN | TCP_ACK,
        window: 65_535,
        mss: Some(1400),
    };
    net.write_frame(&ip_frame(
        GUEST_IP,
        GATEWAY_IP,
        IpProtocol::Tcp,
        &build_tcp(&synack, b""),
    ))
    .unwrap();
    wait_tcp(&mut net, |s| s.flags == TCP_ACK && s.ack == 5001);

    client.write_all(b"SSH-2.0-client\r\n").unwrap();
    let data = wait_tcp(&mut net, |s| !s.data.is_empty());
    assert_eq!(data.data, b"SSH-2.0-client\r\n");
    assert_eq!(data.seq, ours);
    let reply = |seq: u32, ack: u32, flags: u8, data: &[u8]| {
        let h = TcpHdr {
            src: SocketAddrV4::new(GUEST_IP, 22),
            dst: from,
            seq,
            ack,
            flags,
            window: 65_535,
            mss: None,
        };
        ip_frame(GUEST_IP, GATEWAY_IP, IpProtocol::Tcp, &build_tcp(&h, data))
    };
    net.write_frame(&reply(
        5001,
        ours + 16,
        TCP_ACK | TCP_PSH,
        b"SSH-2.0-guest\r\n",
    ))
    .unwrap();
    let mut got = [0u8; 15];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"SSH-2.0-guest\r\n");
    // The guest resets: the client sees the connection end.
    net.write_frame(&reply(5016, ours + 16, TCP_RST, b""))
        .unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(net.tcp.len(), 0);
}

#[test]
fn udp_port_forward_reaches_the_guest_and_back() {
    let cfg = UserNetConfig {
        hostfwd: vec!["udp:127.0.0.1:0-:53".parse().unwrap()],
        ..UserNetConfig::default()
    };
    let mut net = primed(UserNet::with_resolver(cfg, None).unwrap());
    let addr = net.hostfwd_addrs()[0];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.send_to(b"question", addr).unwrap();
    let (src, dst, data) = wait_for(&mut net, as_udp);
    assert_eq!(dst, SocketAddrV4::new(GUEST_IP, 53));
    assert_eq!(*src.ip(), GATEWAY_IP);
    assert_eq!(data, b"question");
    net.write_frame(&udp_frame(dst, src, b"answer")).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"answer"[..], addr));
}

#[test]
fn the_fd_signals_host_events() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = SocketAddrV4::new(GATEWAY_IP, listener.local_addr().unwrap().port());
    let mut net = net_to(&[remote.port()]);
    let outer = vmm_sys_util::epoll::Epoll::new().unwrap();
    outer
        .ctl(
            ControlOperation::Add,
            net.raw_fd().unwrap(),
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 9),
        )
        .unwrap();
    let mut events = [EpollEvent::default(); 4];
    let mut wait = |ms| outer.wait(ms, &mut events).unwrap();
    net.write_frame(&tcp_frame(40_010, remote, 1, 0, TCP_SYN, b""))
        .unwrap();
    // The connect completes on the host: the fd fires, read_frame finds the SYN-ACK.
    assert_eq!(wait(5000), 1);
    let synack = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    assert!(drain(&mut net).is_empty());
    assert_eq!(wait(0), 0, "drained: no more events");
    net.write_frame(&tcp_frame(40_010, remote, 2, synack.seq + 1, TCP_ACK, b""))
        .unwrap();
    let (mut host, _) = listener.accept().unwrap();
    drain(&mut net);
    wait(0);
    host.write_all(b"wake up").unwrap();
    assert_eq!(wait(5000), 1, "host data wakes the loop");
    let s = wait_tcp(&mut net, |s| !s.data.is_empty());
    assert_eq!(s.data, b"wake up");
    // A frame produced by write_frame (an ARP reply) rings the eventfd.
    drain(&mut net);
    wait(0);
    net.write_frame(&arp_request(GATEWAY_IP)).unwrap();
    assert_eq!(wait(5000), 1, "queued frames wake the loop");
}

/// The Internet checksum of a 20-byte IPv4 header, whatever its fields
/// claim (smoltcp's would trust the header length).
fn header_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// xorshift: deterministic noise.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn hostile_frames_are_dropped_without_panicking() {
    let mut net = net();
    let nowhere = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 99), 80);
    let syn = tcp_frame(1, nowhere, 1, 0, TCP_SYN, b"");
    let udp = udp_frame(SocketAddrV4::new(GUEST_IP, 1), nowhere, b"data");
    let dhcp = dhcp_frame(DISCOVER, None);
    // Every truncation of an IP frame falls short of its total length.
    for frame in [&syn, &udp, &dhcp] {
        for len in 0..frame.len() {
            net.write_frame(&frame[..len]).unwrap();
        }
    }
    let arp = arp_request(GATEWAY_IP);
    for len in 0..VNET_HDR_LEN + ETH_HLEN + 28 {
        net.write_frame(&arp[..len]).unwrap();
    }
    assert!(drain(&mut net).is_empty());

    let ip_at = VNET_HDR_LEN + ETH_HLEN;
    let refix = |f: &mut Vec<u8>| {
        f[ip_at + 10..ip_at + 12].copy_from_slice(&[0, 0]);
        let sum = header_checksum(&f[ip_at..ip_at + 20]);
        f[ip_at + 10..ip_at + 12].copy_from_slice(&sum.to_be_bytes());
    };
    let mut bogus = Vec::new();
    for (at, value) in [
        (ip_at, 0x44u8),    // IHL 4
        (ip_at, 0x4f),      // IHL 15, longer than the packet
        (ip_at, 0x65),      // version 6
        (ip_at + 2, 0xff),  // total length past the frame
        (ip_at + 3, 0x00),  // total length 0 ...
        (ip_at + 6, 0x20),  // more fragments
        (ip_at + 7, 0x08),  // fragment offset
        (ip_at + 24, 0x00), // UDP length < 8
        (ip_at + 24, 0xff), // UDP length past the packet
        (ip_at + 32, 0xf0), // TCP data offset 60
        (ip_at + 32, 0x10), // TCP data offset 4
    ] {
        for base in [&syn, &udp] {
            let mut f = base.clone();
            if let Some(b) = f.get_mut(at) {
                *b = value;
            }
            if at == ip_at + 3 {
                f[ip_at + 2] = 0;
            }
            refix(&mut f);
            bogus.push(f);
        }
    }
    // TCP options running off the header.
    let mut f = tcp_frame(1, nowhere, 1, 0, TCP_SYN, b"");
    f[ip_at + 20 + 21] = 40;
    bogus.push(f);
    // A huge frame, and one claiming a 64 KiB packet.
    let mut huge = syn.clone();
    huge.resize(200_000, 0xaa);
    bogus.push(huge);
    for f in &bogus {
        net.write_frame(f).unwrap();
    }
    // Whatever answered (RSTs for the SYN to nowhere), nothing else.
    for f in drain(&mut net) {
        let s = as_tcp(&f).expect("only TCP resets");
        assert!(s.flags & TCP_RST != 0);
    }

    // A fragment flood keeps no state.
    let before = net.stats().fragments;
    let mut frag = udp.clone();
    frag[ip_at + 6] = 0x20;
    refix(&mut frag);
    for _ in 0..10_000 {
        net.write_frame(&frag).unwrap();
    }
    assert_eq!(net.stats().fragments - before, 10_000);
    assert!(drain(&mut net).is_empty());

    // Noise: random bytes, and random corruptions of valid frames.
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000 {
        let mut f = match i % 3 {
            0 => {
                let len = (rng(&mut seed) % 200) as usize;
                (0..len).map(|_| rng(&mut seed) as u8).collect()
            }
            1 => syn.clone(),
            _ => udp.clone(),
        };
        if f.len() > VNET_HDR_LEN + 13 {
            f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[8, 0]);
        }
        for _ in 0..(rng(&mut seed) % 4) {
            if !f.is_empty() {
                let at = (rng(&mut seed) as usize) % f.len();
                f[at] = rng(&mut seed) as u8;
            }
        }
        // Never let noise open real connections to random hosts.
        if let Some(Ok(ip)) = f.get(ip_at..).map(Ipv4Packet::new_checked) {
            let routed = matches!(net.policy.route(ip.dst_addr(), 0), Route::Out { .. });
            if routed || ip.dst_addr() == DNS_IP {
                continue;
            }
        }
        net.write_frame(&f).unwrap();
    }
    drain(&mut net);
    assert_eq!(net.tcp.len(), 0);
    assert_eq!(net.udp.len(), 0);
}

#[test]
fn frames_for_the_guest_fit_small_buffers_truncated() {
    let mut net = net();
    net.write_frame(&arp_request(GATEWAY_IP)).unwrap();
    let mut small = [0u8; 20];
    assert_eq!(net.read_frame(&mut small).unwrap(), 20);
    assert!(matches!(
        net.read_frame(&mut small),
        Err(NetBackendError::WouldBlock)
    ));
}

#[test]
fn tcp_respects_the_guest_window_and_guest_first_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = SocketAddrV4::new(GATEWAY_IP, listener.local_addr().unwrap().port());
    let mut net = net_to(&[remote.port()]);
    let small = |seq: u32, ack: u32, flags: u8, window: u16| {
        let h = TcpHdr {
            src: SocketAddrV4::new(GUEST_IP, 40_020),
            dst: remote,
            seq,
            ack,
            flags,
            window,
            mss: None,
        };
        ip_frame(GUEST_IP, GATEWAY_IP, IpProtocol::Tcp, &build_tcp(&h, b""))
    };
    net.write_frame(&tcp_frame(40_020, remote, 10, 0, TCP_SYN, b""))
        .unwrap();
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    let ours = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0).seq + 1;
    net.write_frame(&small(11, ours, TCP_ACK, 1000)).unwrap();
    host.write_all(&[7u8; 3000]).unwrap();
    let first = wait_tcp(&mut net, |s| !s.data.is_empty());
    assert_eq!(first.data.len(), 1000);
    std::thread::sleep(Duration::from_millis(50));
    let more: Vec<_> = drain(&mut net)
        .iter()
        .filter_map(|f| as_tcp(f))
        .filter(|s| !s.data.is_empty())
        .collect();
    assert!(more.is_empty(), "nothing beyond the window: {more:?}");
    // The guest takes it all and opens its window.
    net.write_frame(&small(11, ours + 1000, TCP_ACK, 60_000))
        .unwrap();
    let rest = wait_tcp(&mut net, |s| !s.data.is_empty());
    assert_eq!(rest.seq, ours + 1000);
    assert_eq!(rest.data.len(), 1460);
    // The guest closes first: the host reads EOF, then closes too.
    net.write_frame(&small(11, ours + 1000, TCP_ACK | TCP_FIN, 60_000))
        .unwrap();
    let mut sink = Vec::new();
    host.read_to_end(&mut sink).unwrap();
    drop(host);
    let fin = wait_tcp(&mut net, |s| s.flags & TCP_FIN != 0);
    assert_eq!(fin.seq, ours + 3000);
    assert_eq!(fin.ack, 12);
    net.write_frame(&small(12, ours + 3001, TCP_ACK, 60_000))
        .unwrap();
    assert_eq!(net.tcp.len(), 0);
}

#[test]
fn a_forward_to_a_guest_not_yet_heard_from_resolves_it_first() {
    let cfg = UserNetConfig {
        hostfwd: vec!["tcp:127.0.0.1:0-:22".parse().unwrap()],
        ..UserNetConfig::default()
    };
    let mut net = UserNet::with_resolver(cfg, None).unwrap();
    let _client = TcpStream::connect(net.hostfwd_addrs()[0]).unwrap();
    // smoltcp asks who has 10.0.2.15 (from the gateway's address) ...
    let who = wait_for(&mut net, as_arp);
    let ArpRepr::EthernetIpv4 {
        operation,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = who
    else {
        panic!("{who:?}")
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!(
        (source_protocol_addr, target_protocol_addr),
        (GATEWAY_IP, GUEST_IP)
    );
    // ... and once the guest answers, the SYN follows at once.
    let mut reply = vec![0, 1, 8, 0, 6, 4, 0, 2];
    reply.extend_from_slice(&GUEST_MAC);
    reply.extend_from_slice(&GUEST_IP.octets());
    reply.extend_from_slice(&GATEWAY_MAC);
    reply.extend_from_slice(&GATEWAY_IP.octets());
    net.write_frame(&eth(GATEWAY_MAC, EthernetProtocol::Arp, &reply))
        .unwrap();
    let syn = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    assert_eq!(syn.dst, SocketAddrV4::new(GUEST_IP, 22));
}

/// A host service: a listener that never blocks the test when nobody came.
fn service(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind(addr).unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A guest SYN to `to` is answered with RST, no host connect behind it.
fn assert_refused(net: &mut UserNet, sport: u16, to: SocketAddrV4) {
    let (refused, conns) = (net.stats().refused, net.tcp.len());
    net.write_frame(&tcp_frame(sport, to, 500, 0, TCP_SYN, b""))
        .unwrap();
    if to.ip().is_unspecified() {
        // smoltcp answers nothing from 0.0.0.0 (no guest dials it anyway).
        assert!(drain(net).is_empty());
    } else {
        let rst = wait_tcp(net, |s| s.flags & TCP_RST != 0);
        assert_eq!((rst.src, rst.ack), (to, 501), "{to}");
    }
    assert_eq!(net.tcp.len(), conns, "no host socket for {to}");
    assert_eq!(net.stats().refused, refused + 1, "{to}");
}

fn assert_nobody_came(l: &TcpListener) {
    std::thread::sleep(Duration::from_millis(50));
    let e = l.accept().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn the_host_is_closed_to_the_guest_by_default() {
    // The agent and another guest's forward listen on every address; a
    // local service on loopback.
    let (any, any_port) = service("0.0.0.0:0");
    let (lo, lo_port) = service("127.0.0.1:0");
    let mut net = net();
    let mut targets = vec![
        SocketAddrV4::new(GATEWAY_IP, lo_port),
        SocketAddrV4::new(GATEWAY_IP, any_port),
        SocketAddrV4::new(GATEWAY_IP, keel_common::host::DEFAULT_AGENT_PORT),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, lo_port),
        SocketAddrV4::new(Ipv4Addr::new(127, 1, 2, 3), any_port),
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, any_port),
    ];
    let local = policy::interface_addrs().unwrap();
    assert!(local.contains(&Ipv4Addr::LOCALHOST), "{local:?}");
    targets.extend(local.iter().map(|ip| SocketAddrV4::new(*ip, any_port)));
    for (sport, to) in (41_000..).zip(targets) {
        assert_refused(&mut net, sport, to);
    }
    assert_nobody_came(&any);
    assert_nobody_came(&lo);

    // UDP to the host is dropped, never sent.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let port = udp.local_addr().unwrap().port();
    let guest = SocketAddrV4::new(GUEST_IP, 5556);
    for ip in [GATEWAY_IP, Ipv4Addr::LOCALHOST] {
        net.write_frame(&udp_frame(guest, SocketAddrV4::new(ip, port), b"psst"))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(udp.recv_from(&mut [0u8; 16]).is_err(), "nothing arrived");
    assert_eq!(net.udp.len(), 0);
}

#[test]
fn a_listed_host_port_is_reachable_and_only_it() {
    let (listed, port) = service("127.0.0.1:0");
    let (other, other_port) = service("127.0.0.1:0");
    let mut net = net_to(&[port]);
    let remote = SocketAddrV4::new(GATEWAY_IP, port);
    net.write_frame(&tcp_frame(41_100, remote, 1, 0, TCP_SYN, b""))
        .unwrap();
    let synack = wait_tcp(&mut net, |s| s.flags & TCP_SYN != 0);
    assert_eq!((synack.flags, synack.src), (TCP_SYN | TCP_ACK, remote));
    assert!(
        listed.accept().is_ok(),
        "the listed port got the connection"
    );
    // Listed at the gateway, not on the host's own addresses.
    assert_refused(
        &mut net,
        41_101,
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
    );
    assert_refused(&mut net, 41_102, SocketAddrV4::new(GATEWAY_IP, other_port));
    assert_nobody_came(&other);
}

#[test]
fn the_agent_port_is_refused_even_if_listed() {
    let (agent, port) = service("127.0.0.1:0");
    let cfg = UserNetConfig {
        host_ports: vec![port],
        agent_port: Some(port),
        ..UserNetConfig::default()
    };
    let mut net = primed(UserNet::with_resolver(cfg, None).unwrap());
    assert_refused(&mut net, 41_200, SocketAddrV4::new(GATEWAY_IP, port));
    assert_nobody_came(&agent);
}

#[test]
fn an_address_of_the_host_not_known_at_start_is_refused_once_connected() {
    // As if the address came after start: the rule does not know it, the
    // connection's source address gives it away.
    let Some(ip) = policy::interface_addrs()
        .unwrap()
        .into_iter()
        .find(|ip| !ip.is_loopback())
    else {
        eprintln!("skipped: the host has no address besides loopback");
        return;
    };
    let (any, port) = service("0.0.0.0:0");
    let rule = HostPolicy::with_local(&[], &[], Vec::new());
    let mut net = primed(UserNet::with_policy(UserNetConfig::default(), None, rule).unwrap());
    let to = SocketAddrV4::new(ip, port);
    net.write_frame(&tcp_frame(41_300, to, 9, 0, TCP_SYN, b""))
        .unwrap();
    let rst = wait_tcp(&mut net, |s| s.flags & TCP_RST != 0);
    assert_eq!((rst.src, rst.ack), (to, 10));
    assert_eq!(net.tcp.len(), 0);
    drop(any);
}

#[test]
fn other_addresses_still_get_a_host_connect() {
    // TEST-NET-3: routed by the default route, if any, and never answering.
    let to = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 80);
    let mut net = net();
    net.write_frame(&tcp_frame(41_400, to, 1, 0, TCP_SYN, b""))
        .unwrap();
    assert_eq!(net.stats().refused, 0);
    if net.tcp.len() == 0 {
        // Only a host without a route may fail the connect at once.
        let e = TcpStream::connect_timeout(&to.into(), Duration::from_millis(10)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NetworkUnreachable, "{e}");
        eprintln!("skipped: no route to {to}");
        return;
    }
    assert_eq!(net.tcp.len(), 1, "the connect to {to} is under way");
}
