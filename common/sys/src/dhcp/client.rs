//! DHCPv4 client: smoltcp's DHCP state machine (`socket::dhcpv4`) on a
//! smoltcp `Interface` over any Ethernet [`Device`].
//!
//! smoltcp only negotiates; it does not touch the kernel. The caller applies
//! the resulting [`Lease`] with the kernel with netlink. The client is a plain
//! value with an explicit clock (`now`) so that it can be driven by the
//! boot-time loop in init, by a later renewal thread (which keeps polling
//! the same client and re-applies the lease on `Configured`/`Deconfigured`),
//! or by tests with simulated time.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{DhcpMessageType, DhcpRepr, EthernetAddress, HardwareAddress};

use super::{DhcpError, Lease};

/// Size of the buffer that keeps the last DHCP packet (for the lease time,
/// which smoltcp's `Config` does not expose). 1500 covers any unfragmented
/// DHCP message.
pub const PACKET_BUFFER_LEN: usize = 1500;

/// What the client reports after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpEvent {
    /// A lease was acquired or its parameters changed.
    Configured(Lease),
    /// The lease was lost (expired or NAKed); the address must be removed.
    Deconfigured,
}

pub struct DhcpClient<'a, D: Device> {
    ifname: String,
    device: D,
    iface: Interface,
    sockets: SocketSet<'a>,
    handle: SocketHandle,
}

impl<'a, D: Device> DhcpClient<'a, D> {
    /// `packet_buffer` receives a copy of each DHCP reply (see
    /// [`PACKET_BUFFER_LEN`]); `seed` randomises the transaction ids.
    pub fn new(
        ifname: &str,
        mut device: D,
        mac: [u8; 6],
        seed: u64,
        packet_buffer: &'a mut [u8],
        now: Instant,
    ) -> Result<Self, DhcpError> {
        let ether = EthernetAddress(mac);
        // Interface::new panics on a non-unicast address or a non-Ethernet
        // device; check both first.
        if !ether.is_unicast() {
            return Err(DhcpError::BadMac {
                ifname: ifname.to_owned(),
                mac: ether.to_string(),
            });
        }
        if device.capabilities().medium != Medium::Ethernet {
            return Err(DhcpError::NotEthernet {
                ifname: ifname.to_owned(),
            });
        }
        let mut config = Config::new(HardwareAddress::Ethernet(ether));
        config.random_seed = seed;
        let iface = Interface::new(config, &mut device, now);

        let mut socket = dhcpv4::Socket::new();
        // smoltcp's defaults wait 10 s between DISCOVERs; at boot a shorter
        // first retry matters more than network chatter.
        let mut retry = socket.get_retry_config();
        retry.discover_timeout = Duration::from_secs(2);
        retry.initial_request_timeout = Duration::from_secs(2);
        socket.set_retry_config(retry);
        socket.set_receive_packet_buffer(packet_buffer);
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        Ok(Self {
            ifname: ifname.to_owned(),
            device,
            iface,
            sockets,
            handle,
        })
    }

    /// Runs the interface (receive, state machine, transmit) once and
    /// returns a configuration change, if any.
    pub fn poll(&mut self, now: Instant) -> Option<DhcpEvent> {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let socket = self.sockets.get_mut::<dhcpv4::Socket>(self.handle);
        match socket.poll()? {
            dhcpv4::Event::Configured(config) => Some(DhcpEvent::Configured(lease_from_config(
                &self.ifname,
                &config,
            ))),
            dhcpv4::Event::Deconfigured => Some(DhcpEvent::Deconfigured),
        }
    }

    /// How long the caller may sleep (unless a frame arrives) before the
    /// next [`poll`](Self::poll).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface.poll_delay(now, &self.sockets)
    }

    /// Starts over from DISCOVER (after a link outage, say); the next poll
    /// reports `Deconfigured` if a lease was held.
    pub fn reset(&mut self) {
        self.sockets.get_mut::<dhcpv4::Socket>(self.handle).reset();
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }
}

/// Converts smoltcp's DHCP configuration into a [`Lease`].
pub fn lease_from_config(ifname: &str, config: &dhcpv4::Config<'_>) -> Lease {
    let address = config.address.address();
    // The lease time is only in the raw packet. The buffer holds the last
    // accepted reply, so make sure it is the ACK for this address.
    let lease_secs = config.packet.as_ref().and_then(|packet| {
        let repr = DhcpRepr::parse(packet).ok()?;
        (repr.message_type == DhcpMessageType::Ack && repr.your_ip == address)
            .then_some(repr.lease_duration)
            .flatten()
    });
    Lease {
        ifname: ifname.to_owned(),
        address,
        prefix_len: config.address.prefix_len(),
        router: config.router,
        dns: config.dns_servers.iter().copied().collect(),
        lease_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities};
    use smoltcp::wire::{
        DhcpPacket, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Cidr,
        Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    };
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;

    const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SERVER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const YOUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
    const LEASE_SECS: u32 = 86400;

    fn config_with(packet: Option<DhcpPacket<&[u8]>>) -> dhcpv4::Config<'_> {
        let mut config = dhcpv4::Config {
            server: dhcpv4::ServerInfo {
                address: SERVER_IP,
                identifier: SERVER_IP,
            },
            address: Ipv4Cidr::new(YOUR_IP, 24),
            router: Some(SERVER_IP),
            dns_servers: Default::default(),
            packet,
        };
        config.dns_servers.push(DNS_IP).unwrap();
        config
    }

    #[test]
    fn lease_from_smoltcp_config() {
        let lease = lease_from_config("eth0", &config_with(None));
        assert_eq!(
            lease,
            Lease {
                ifname: "eth0".into(),
                address: YOUR_IP,
                prefix_len: 24,
                router: Some(SERVER_IP),
                dns: vec![DNS_IP],
                lease_secs: None,
            }
        );
    }

    #[test]
    fn lease_time_comes_from_the_ack_packet() {
        let ack = reply_repr(DhcpMessageType::Ack, 7, EthernetAddress(CLIENT_MAC));
        let mut buf = vec![0u8; PACKET_BUFFER_LEN];
        ack.emit(&mut DhcpPacket::new_unchecked(&mut buf)).unwrap();
        let lease = lease_from_config("eth0", &config_with(Some(DhcpPacket::new_unchecked(&buf))));
        assert_eq!(lease.lease_secs, Some(LEASE_SECS));

        // An OFFER left in the buffer does not count.
        let offer = reply_repr(DhcpMessageType::Offer, 7, EthernetAddress(CLIENT_MAC));
        offer
            .emit(&mut DhcpPacket::new_unchecked(&mut buf))
            .unwrap();
        let lease = lease_from_config("eth0", &config_with(Some(DhcpPacket::new_unchecked(&buf))));
        assert_eq!(lease.lease_secs, None);
    }

    /// Two ends of a wire: frames the client sent, frames queued for it.
    #[derive(Default)]
    struct FakeLan {
        to_client: VecDeque<Vec<u8>>,
        from_client: Vec<Vec<u8>>,
    }

    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut Vec<Vec<u8>>);

    impl phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl phy::TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = vec![0; len];
            let r = f(&mut frame);
            self.0.push(frame);
            r
        }
    }

    impl Device for FakeLan {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps
        }

        fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
            let frame = self.to_client.pop_front()?;
            Some((Rx(frame), Tx(&mut self.from_client)))
        }

        fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
            Some(Tx(&mut self.from_client))
        }
    }

    fn reply_repr(kind: DhcpMessageType, xid: u32, chaddr: EthernetAddress) -> DhcpRepr<'static> {
        let mut repr = DhcpRepr {
            message_type: kind,
            transaction_id: xid,
            secs: 0,
            client_hardware_address: chaddr,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: YOUR_IP,
            server_ip: SERVER_IP,
            router: Some(SERVER_IP),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER_IP),
            parameter_request_list: None,
            dns_servers: Some(Default::default()),
            max_size: None,
            lease_duration: Some(LEASE_SECS),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        if let Some(dns) = repr.dns_servers.as_mut() {
            dns.push(DNS_IP).unwrap();
        }
        repr
    }

    /// A minimal DHCP server in the spirit of QEMU's slirp: OFFER for a
    /// DISCOVER, ACK for a REQUEST, broadcast replies. `drop_discovers`
    /// DISCOVERs are ignored first, to exercise smoltcp's retries.
    #[derive(Default)]
    struct Server {
        drop_discovers: usize,
        seen: Vec<DhcpMessageType>,
        /// Lease time granted; `None` means [`LEASE_SECS`].
        lease_secs: Option<u32>,
        /// Answer nothing once this many ACKs were sent (the server died).
        acks_left: Option<usize>,
    }

    impl Server {
        fn serve(&mut self, lan: &mut FakeLan) {
            for frame in std::mem::take(&mut lan.from_client) {
                let Some((kind, xid, chaddr)) = parse_request(&frame) else {
                    continue;
                };
                self.seen.push(kind);
                let reply = match kind {
                    DhcpMessageType::Discover if self.drop_discovers > 0 => {
                        self.drop_discovers -= 1;
                        continue;
                    }
                    DhcpMessageType::Discover => DhcpMessageType::Offer,
                    DhcpMessageType::Request => match self.acks_left.as_mut() {
                        Some(0) => continue,
                        Some(left) => {
                            *left -= 1;
                            DhcpMessageType::Ack
                        }
                        None => DhcpMessageType::Ack,
                    },
                    _ => continue,
                };
                let mut repr = reply_repr(reply, xid, chaddr);
                repr.lease_duration = Some(self.lease_secs.unwrap_or(LEASE_SECS));
                lan.to_client.push_back(reply_frame(&repr));
            }
        }
    }

    fn parse_request(frame: &[u8]) -> Option<(DhcpMessageType, u32, EthernetAddress)> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.next_header() != IpProtocol::Udp {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != DHCP_SERVER_PORT {
            return None;
        }
        let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
        let repr = DhcpRepr::parse(&dhcp).ok()?;
        Some((
            repr.message_type,
            repr.transaction_id,
            repr.client_hardware_address,
        ))
    }

    fn reply_frame(reply: &DhcpRepr<'_>) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let udp = UdpRepr {
            src_port: DHCP_SERVER_PORT,
            dst_port: DHCP_CLIENT_PORT,
        };
        let udp_len = udp.header_len() + reply.buffer_len();
        let ip = Ipv4Repr {
            src_addr: SERVER_IP,
            dst_addr: Ipv4Addr::BROADCAST,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(SERVER_MAC),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut frame = vec![0u8; eth.buffer_len() + ip.buffer_len() + udp_len];
        let mut eth_frame = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut eth_frame);
        let mut ip_packet = Ipv4Packet::new_unchecked(eth_frame.payload_mut());
        ip.emit(&mut ip_packet, &caps);
        let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
        udp.emit(
            &mut udp_packet,
            &IpAddress::Ipv4(SERVER_IP),
            &IpAddress::Ipv4(Ipv4Addr::BROADCAST),
            reply.buffer_len(),
            |payload| {
                reply.emit(&mut DhcpPacket::new_unchecked(payload)).unwrap();
            },
            &caps,
        );
        frame
    }

    /// Drives client and server with a simulated clock in 50 ms steps until
    /// a lease or `limit_ms`.
    fn run(server: &mut Server, limit_ms: i64) -> (Option<Lease>, i64) {
        let mut buf = vec![0u8; PACKET_BUFFER_LEN];
        let start = Instant::from_millis(0);
        let mut client =
            DhcpClient::new("eth0", FakeLan::default(), CLIENT_MAC, 42, &mut buf, start).unwrap();
        let mut ms = 0;
        while ms <= limit_ms {
            let now = Instant::from_millis(ms);
            if let Some(DhcpEvent::Configured(lease)) = client.poll(now) {
                return (Some(lease), ms);
            }
            server.serve(client.device_mut());
            ms += 50;
        }
        (None, ms)
    }

    #[test]
    fn acquires_a_lease_from_a_fake_server() {
        let mut server = Server::default();
        let (lease, ms) = run(&mut server, 20_000);
        assert_eq!(
            lease,
            Some(Lease {
                ifname: "eth0".into(),
                address: YOUR_IP,
                prefix_len: 24,
                router: Some(SERVER_IP),
                dns: vec![DNS_IP],
                lease_secs: Some(LEASE_SECS),
            })
        );
        assert!(ms < 1000, "took {ms} ms of simulated time");
        assert_eq!(
            server.seen,
            [DhcpMessageType::Discover, DhcpMessageType::Request]
        );
    }

    #[test]
    fn retries_discover_when_unanswered() {
        let mut server = Server {
            drop_discovers: 2,
            ..Default::default()
        };
        let (lease, ms) = run(&mut server, 20_000);
        assert_eq!(lease.map(|l| l.address), Some(YOUR_IP));
        // Two 2 s discover timeouts before the third DISCOVER is answered.
        assert!((4000..6000).contains(&ms), "took {ms} ms of simulated time");
        assert_eq!(count(&server, DhcpMessageType::Discover), 3);
    }

    #[test]
    fn no_server_means_no_lease() {
        let mut server = Server {
            drop_discovers: usize::MAX,
            ..Default::default()
        };
        let (lease, _) = run(&mut server, 10_000);
        assert_eq!(lease, None);
        assert!(server.seen.len() >= 4, "{:?}", server.seen);
    }

    /// Drives client and server for `limit_ms` of simulated time in 100 ms
    /// steps; returns every event with its time.
    fn drive(server: &mut Server, limit_ms: i64) -> Vec<(i64, DhcpEvent)> {
        let mut buf = vec![0u8; PACKET_BUFFER_LEN];
        let mut client = DhcpClient::new(
            "eth0",
            FakeLan::default(),
            CLIENT_MAC,
            42,
            &mut buf,
            Instant::ZERO,
        )
        .unwrap();
        let mut events = Vec::new();
        let mut ms = 0;
        while ms <= limit_ms {
            match client.poll(Instant::from_millis(ms)) {
                // smoltcp reports "deconfigured" once at start-up.
                Some(DhcpEvent::Deconfigured) if events.is_empty() => {}
                Some(event) => events.push((ms, event)),
                None => {}
            }
            server.serve(client.device_mut());
            ms += 100;
        }
        events
    }

    fn count(server: &Server, kind: DhcpMessageType) -> usize {
        server.seen.iter().filter(|k| **k == kind).count()
    }

    fn requests(server: &Server) -> usize {
        count(server, DhcpMessageType::Request)
    }

    #[test]
    fn renews_the_lease_and_keeps_it() {
        let mut server = Server {
            lease_secs: Some(100),
            ..Default::default()
        };
        // Two and a half lease times: without renewals it would be lost.
        let events = drive(&mut server, 250_000);
        assert!(
            matches!(events.first(), Some((_, DhcpEvent::Configured(_)))),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|(_, e)| *e == DhcpEvent::Deconfigured),
            "the lease was lost: {events:?}"
        );
        // One REQUEST to get it, then at least one renewal per lease time.
        assert!(requests(&server) >= 3, "{:?}", server.seen);
        assert_eq!(
            count(&server, DhcpMessageType::Discover),
            1,
            "a renewal must not start over: {:?}",
            server.seen
        );
    }

    #[test]
    fn a_lease_nobody_renews_is_given_up_when_it_ends() {
        let mut server = Server {
            lease_secs: Some(100),
            acks_left: Some(1),
            ..Default::default()
        };
        let events = drive(&mut server, 150_000);
        let lost = events
            .iter()
            .find(|(_, e)| *e == DhcpEvent::Deconfigured)
            .map(|(ms, _)| *ms);
        // Granted at ~0 s for 100 s: given up at expiry, not before.
        assert!(
            lost.is_some_and(|ms| (100_000..=101_000).contains(&ms)),
            "lost at {lost:?}: {events:?}"
        );
        assert!(
            requests(&server) >= 3,
            "renewal and rebinding were tried: {:?}",
            server.seen
        );
    }

    #[test]
    fn rejects_multicast_mac() {
        let mut buf = vec![0u8; PACKET_BUFFER_LEN];
        let mac = [0x01, 0, 0x5e, 0, 0, 1];
        let err = DhcpClient::new("eth0", FakeLan::default(), mac, 0, &mut buf, Instant::ZERO)
            .err()
            .unwrap();
        assert!(err.to_string().contains("eth0"), "{err}");
    }
}
