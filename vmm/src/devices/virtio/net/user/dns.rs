//! The host resolver behind 10.0.2.3, and the SERVFAIL answer when the host
//! has none.

use std::net::{IpAddr, SocketAddr};

/// The first `nameserver` of a resolv.conf, port 53.
pub fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "nameserver" {
            return None;
        }
        let ip: IpAddr = words.next()?.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// The host's resolver, from /etc/resolv.conf.
pub fn host_resolver() -> Option<SocketAddr> {
    first_nameserver(&std::fs::read_to_string("/etc/resolv.conf").ok()?)
}

/// A SERVFAIL response to `query` (its header and question), or `None` if
/// the query is not even a DNS header or is itself a response.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let flags = be16(query, 2)?;
    if flags & 0x8000 != 0 {
        return None;
    }
    let qdcount = be16(query, 4)?;
    // Keep the question if there is exactly one and it is well-formed.
    let question_end = (qdcount == 1).then(|| question_end(query)).flatten();
    let mut r = Vec::with_capacity(question_end.unwrap_or(12));
    r.extend_from_slice(&query[..2]);
    // QR, the opcode and RD copied, RA, RCODE 2 (server failure).
    let flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2;
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, u8::from(question_end.is_some()), 0, 0, 0, 0, 0, 0]);
    if let Some(end) = question_end {
        r.extend_from_slice(&query[12..end]);
    }
    Some(r)
}

fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 || i > 12 + 255 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= q.len()).then_some(end)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
