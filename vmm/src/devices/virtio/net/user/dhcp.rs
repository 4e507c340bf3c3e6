//! A DHCP server for exactly one client (smoltcp has only a client):
//! every DISCOVER is offered 10.0.2.15/24, every REQUEST for it (or for
//! nothing in particular) is acknowledged, a REQUEST for another address
//! is refused (NAK). Messages are parsed and built with smoltcp's
//! [`DhcpPacket`] and [`DhcpRepr`].

use smoltcp::wire::{DhcpMessageType, DhcpOpCode, DhcpOption, DhcpPacket, DhcpRepr, Ipv4Address};

/// The DNS servers option (smoltcp's own field needs `heapless`).
const OPT_DNS: u8 = 6;

use super::{DNS_IP, GATEWAY_IP, GUEST_IP, LEASE_SECS, NETMASK};

/// The server's answer to a client message, or `None` to ignore it.
pub fn reply(msg: &[u8]) -> Option<Vec<u8>> {
    let packet = DhcpPacket::new_checked(msg).ok()?;
    if packet.opcode() != DhcpOpCode::Request {
        return None;
    }
    let request = DhcpRepr::parse(&packet).ok()?;
    let kind = match request.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => {
            let wanted = request.requested_ip.unwrap_or(request.client_ip);
            if wanted == GUEST_IP || wanted.is_unspecified() {
                DhcpMessageType::Ack
            } else {
                DhcpMessageType::Nak
            }
        }
        _ => return None,
    };
    let granted = kind != DhcpMessageType::Nak;
    let dns_ip = DNS_IP.octets();
    let dns = [DhcpOption {
        kind: OPT_DNS,
        data: &dns_ip,
    }];
    let answer = DhcpRepr {
        message_type: kind,
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: request.client_hardware_address,
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: if granted {
            GUEST_IP
        } else {
            Ipv4Address::UNSPECIFIED
        },
        server_ip: if granted {
            GATEWAY_IP
        } else {
            Ipv4Address::UNSPECIFIED
        },
        router: granted.then_some(GATEWAY_IP),
        subnet_mask: granted.then_some(NETMASK),
        relay_agent_ip: request.relay_agent_ip,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(GATEWAY_IP),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: granted.then_some(LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: if granted { &dns } else { &[] },
    };
    let mut out = vec![0u8; answer.buffer_len()];
    answer.emit(&mut DhcpPacket::new_unchecked(&mut out)).ok()?;
    Some(out)
}
