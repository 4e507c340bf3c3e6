//! Parsing and building the few packet formats the user-mode stack speaks:
//! Ethernet, ARP, IPv4, ICMP echo, UDP and TCP. Parsers take untrusted
//! bytes and return `None` for anything short, inconsistent or unsupported;
//! they never index without checking.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// The Internet checksum over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        let mut bytes = part.iter();
        if let Some(hi) = odd.take() {
            match bytes.next() {
                Some(&lo) => sum += u64::from(u16::from_be_bytes([hi, lo])),
                None => {
                    odd = Some(hi);
                    continue;
                }
            }
        }
        let rest = bytes.as_slice();
        let mut chunks = rest.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            odd = Some(*last);
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// An ARP request or reply for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub fn parse_arp(p: &[u8]) -> Option<Arp> {
    if be16(p, 0)? != 1 || be16(p, 2)? != ETHERTYPE_IPV4 || p.get(4..6)? != [6, 4] {
        return None;
    }
    Some(Arp {
        op: be16(p, 6)?,
        sender_mac: p.get(8..14)?.try_into().ok()?,
        sender_ip: ip_at(p, 14)?,
        target_ip: ip_at(p, 24)?,
    })
}

pub fn build_arp_reply(
    our_mac: [u8; 6],
    our_ip: Ipv4Addr,
    to_mac: [u8; 6],
    to_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    p.extend_from_slice(&our_mac);
    p.extend_from_slice(&our_ip.octets());
    p.extend_from_slice(&to_mac);
    p.extend_from_slice(&to_ip.octets());
    p
}

/// Why an IPv4 packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpDrop {
    Malformed,
    Fragment,
}

/// A whole (unfragmented) IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub payload: &'a [u8],
}

pub fn parse_ipv4(p: &[u8]) -> Result<Ipv4<'_>, IpDrop> {
    let first = *p.first().ok_or(IpDrop::Malformed)?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || p.len() < ihl {
        return Err(IpDrop::Malformed);
    }
    let total = usize::from(be16(p, 2).ok_or(IpDrop::Malformed)?);
    if total < ihl || total > p.len() {
        return Err(IpDrop::Malformed);
    }
    if checksum(&[&p[..ihl]]) != 0 {
        return Err(IpDrop::Malformed);
    }
    let frag = be16(p, 6).ok_or(IpDrop::Malformed)?;
    // More-fragments set or a non-zero offset: not reassembled, dropped.
    if frag & 0x3fff != 0 {
        return Err(IpDrop::Fragment);
    }
    Ok(Ipv4 {
        src: ip_at(p, 12).ok_or(IpDrop::Malformed)?,
        dst: ip_at(p, 16).ok_or(IpDrop::Malformed)?,
        proto: p[9],
        payload: &p[ihl..total],
    })
}

pub fn build_ipv4(id: u16, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()).min(usize::from(u16::MAX)) as u16;
    let mut p = Vec::with_capacity(20 + l4.len());
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// A UDP datagram: ports and payload (as far as the length field says).
#[derive(Debug, Clone, Copy)]
pub struct Udp<'a> {
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

pub fn parse_udp(p: &[u8]) -> Option<Udp<'_>> {
    let len = usize::from(be16(p, 4)?);
    if len < 8 || len > p.len() {
        return None;
    }
    Some(Udp {
        sport: be16(p, 0)?,
        dport: be16(p, 2)?,
        payload: &p[8..len],
    })
}

pub fn build_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let pseudo = pseudo_header(*src.ip(), *dst.ip(), IPPROTO_UDP, len);
    let mut sum = checksum(&[&pseudo, &p]);
    if sum == 0 {
        sum = 0xffff;
    }
    p[6..8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// A TCP segment from the guest.
#[derive(Debug, Clone, Copy)]
pub struct Tcp<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

pub fn parse_tcp(p: &[u8]) -> Option<Tcp<'_>> {
    let off = usize::from(*p.get(12)? >> 4) * 4;
    if off < 20 || off > p.len() {
        return None;
    }
    let mut mss = None;
    let opts = &p[20..off];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == 2 && len == 4 {
                    mss = be16(opts, i + 2);
                }
                i += len;
            }
        }
    }
    Some(Tcp {
        sport: be16(p, 0)?,
        dport: be16(p, 2)?,
        seq: be32(p, 4)?,
        ack: be32(p, 8)?,
        flags: p[13],
        window: be16(p, 14)?,
        mss,
        payload: &p[off..],
    })
}

/// The header fields of a TCP segment to build.
#[derive(Debug, Clone, Copy)]
pub struct TcpHdr {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
}

pub fn build_tcp(h: &TcpHdr, payload: &[u8]) -> Vec<u8> {
    let hlen = if h.mss.is_some() { 24 } else { 20 };
    let mut p = Vec::with_capacity(hlen + payload.len());
    p.extend_from_slice(&h.src.port().to_be_bytes());
    p.extend_from_slice(&h.dst.port().to_be_bytes());
    p.extend_from_slice(&h.seq.to_be_bytes());
    p.extend_from_slice(&h.ack.to_be_bytes());
    p.push(((hlen / 4) as u8) << 4);
    p.push(h.flags);
    p.extend_from_slice(&h.window.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    if let Some(mss) = h.mss {
        p.extend_from_slice(&[2, 4]);
        p.extend_from_slice(&mss.to_be_bytes());
    }
    p.extend_from_slice(payload);
    let pseudo = pseudo_header(*h.src.ip(), *h.dst.ip(), IPPROTO_TCP, p.len());
    let sum = checksum(&[&pseudo, &p]);
    p[16..18].copy_from_slice(&sum.to_be_bytes());
    p
}
