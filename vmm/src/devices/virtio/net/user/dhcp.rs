//! A DHCP server for exactly one client: every DISCOVER is offered
//! 10.0.2.15/24, every REQUEST for it (or for nothing in particular) is
//! acknowledged, a REQUEST for another address is refused (NAK).

use std::net::Ipv4Addr;

use super::{DNS_IP, GATEWAY_IP, GUEST_IP, LEASE_SECS, NETMASK};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPTIONS_AT: usize = 240;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// Finds option `code` in a DHCP message's options.
pub fn option(msg: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = OPTIONS_AT;
    while i < msg.len() {
        match msg[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = usize::from(*msg.get(i + 1)?);
                let data = msg.get(i + 2..i + 2 + len)?;
                if c == code {
                    return Some(data);
                }
                i += 2 + len;
            }
        }
    }
    None
}

/// The server's answer to a client message, or `None` to ignore it.
pub fn reply(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < OPTIONS_AT || msg[0] != 1 || msg[1] != 1 || msg[2] != 6 {
        return None;
    }
    if msg[236..240] != MAGIC {
        return None;
    }
    let kind = match *option(msg, 53)?.first()? {
        DISCOVER => OFFER,
        REQUEST => {
            let wanted = match option(msg, 50) {
                Some(ip) => <[u8; 4]>::try_from(ip).ok().map(Ipv4Addr::from),
                None => Some(Ipv4Addr::new(msg[12], msg[13], msg[14], msg[15])),
            };
            match wanted {
                Some(ip) if ip == GUEST_IP || ip.is_unspecified() => ACK,
                _ => NAK,
            }
        }
        _ => return None,
    };
    let mut r = vec![0u8; OPTIONS_AT];
    r[0] = 2;
    r[1] = 1;
    r[2] = 6;
    r[4..8].copy_from_slice(&msg[4..8]); // xid
    r[10..12].copy_from_slice(&msg[10..12]); // flags
    if kind != NAK {
        r[16..20].copy_from_slice(&GUEST_IP.octets());
        r[20..24].copy_from_slice(&GATEWAY_IP.octets());
    }
    r[24..28].copy_from_slice(&msg[24..28]); // giaddr
    r[28..44].copy_from_slice(&msg[28..44]); // chaddr
    r[236..240].copy_from_slice(&MAGIC);
    r.extend_from_slice(&[53, 1, kind]);
    r.extend_from_slice(&[54, 4]);
    r.extend_from_slice(&GATEWAY_IP.octets());
    if kind != NAK {
        r.extend_from_slice(&[51, 4]);
        r.extend_from_slice(&LEASE_SECS.to_be_bytes());
        r.extend_from_slice(&[1, 4]);
        r.extend_from_slice(&NETMASK.octets());
        r.extend_from_slice(&[3, 4]);
        r.extend_from_slice(&GATEWAY_IP.octets());
        r.extend_from_slice(&[6, 4]);
        r.extend_from_slice(&DNS_IP.octets());
    }
    r.push(255);
    Some(r)
}
