//! A small synchronous rtnetlink client: links, bridges, IPv4 addresses and
//! the default route, plus a monitor for link changes.
//!
//! Unlike the `SIOC*` ioctls, netlink can create bridges, enslave ports,
//! list addresses and report carrier changes as they happen. Every request asks for an ACK and waits for it, so errors come back with
//! the request that caused them.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags,
    LinkInfo as NlaLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Starting size of receive buffers; dumps come in datagrams of up to 32 KiB.
const RECV_BUFFER_LEN: usize = 32 * 1024;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// How many datagrams [`LinkMonitor::drain`] reads per call, so a flood of
/// notifications cannot keep the caller's event loop busy forever.
const MAX_DRAIN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("Could not open a netlink socket: {0}.")]
    Open(io::Error),
    #[error("{name:?} is not a valid interface name.")]
    BadName { name: String },
    #[error("Network interface {name} does not exist.")]
    NoSuchLink { name: String },
    #[error("Could not create bridge {name}: a link named {name} exists and is not a bridge.")]
    NotABridge { name: String },
    #[error("Prefix length /{prefix_len} for {name} is not between 0 and 32.")]
    BadPrefix { name: String, prefix_len: u8 },
    /// `what` names the operation and the interface, e.g. "bring br0 up".
    #[error("Could not {what}: {source}.")]
    Request {
        ifname: String,
        what: String,
        source: io::Error,
    },
    #[error("Could not list {what}: {source}.")]
    Dump {
        what: &'static str,
        source: io::Error,
    },
    #[error("Could not read link notifications: {0}.")]
    Monitor(io::Error),
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// The hardware address when it is 6 bytes long (all zeros for `lo`).
    pub mac: Option<[u8; 6]>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Up with a carrier (IFF_LOWER_UP).
    pub carrier: bool,
    /// ifindex of the bridge (or bond) this link is a port of.
    pub master: Option<u32>,
    /// Driver kind ("bridge", "tun", "veth", ...) when the kernel says.
    pub kind: Option<String>,
    /// The IP MTU, 1500 when the kernel does not say.
    pub mtu: usize,
}

/// A link change seen by [`LinkMonitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub name: String,
    pub index: u32,
    pub up: bool,
    pub carrier: bool,
    /// RTM_DELLINK: the link is gone.
    pub removed: bool,
}

/// What one [`LinkMonitor::drain`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkChanges {
    pub events: Vec<LinkEvent>,
    /// The kernel dropped notifications (ENOBUFS): re-read the state with
    /// [`Netlink::links`] instead of trusting `events` to be complete.
    pub overrun: bool,
}

impl LinkChanges {
    pub fn iter(&self) -> std::slice::Iter<'_, LinkEvent> {
        self.events.iter()
    }
}

impl<'a> IntoIterator for &'a LinkChanges {
    type Item = &'a LinkEvent;
    type IntoIter = std::slice::Iter<'a, LinkEvent>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

/// A NETLINK_ROUTE socket for requests and dumps.
pub struct Netlink {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        let addr = socket.bind_auto().map_err(NetlinkError::Open)?;
        Ok(Self {
            socket,
            port: addr.port_number(),
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER_LEN),
        })
    }

    /// ifindex of the link called `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(name)?.index)
    }

    /// The link called `name`, as the kernel reports it.
    pub fn link(&mut self, name: &str) -> Result<LinkInfo, NetlinkError> {
        match self.get_link(name)? {
            Some(msg) => Ok(link_info(&msg)),
            None => Err(NetlinkError::NoSuchLink {
                name: name.to_owned(),
            }),
        }
    }

    /// All links, in the kernel's order (by ifindex).
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|source| NetlinkError::Dump {
                what: "network links",
                source,
            })?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(msg)
                    if msg.header.interface_family == AddressFamily::Unspec =>
                {
                    Some(link_info(msg))
                }
                _ => None,
            })
            .collect())
    }

    pub fn set_up(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.set_flags(name, true)
    }

    fn set_flags(&mut self, name: &str, up: bool) -> Result<(), NetlinkError> {
        let mut msg = link_message(self.link_index(name)?);
        msg.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        msg.header.change_mask = LinkFlags::Up;
        let state = if up { "up" } else { "down" };
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(request_error(name, format!("bring {name} {state}")))
    }

    /// Creates bridge `name` (or reconfigures it if it exists) with STP off
    /// and no forward delay, so ports forward as soon as they are up. With
    /// `mac`, the bridge takes that address instead of following its ports'.
    pub fn create_bridge(&mut self, name: &str, mac: Option<[u8; 6]>) -> Result<(), NetlinkError> {
        if let Some(existing) = self.get_link(name)? {
            if link_info(&existing).kind.as_deref() != Some("bridge") {
                return Err(NetlinkError::NotABridge {
                    name: name.to_owned(),
                });
            }
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlaLinkInfo::Kind(InfoKind::Bridge),
            NlaLinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::ForwardDelay(0),
                InfoBridge::StpState(BridgeStpState::Disabled),
            ])),
        ]));
        // No NLM_F_EXCL: on an existing bridge the same message updates it.
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE)
            .map_err(request_error(name, format!("create bridge {name}")))
    }

    /// Makes `port` a port of `bridge`.
    pub fn set_master(&mut self, port: &str, bridge: &str) -> Result<(), NetlinkError> {
        let bridge_index = self.link_index(bridge)?;
        let mut msg = link_message(self.link_index(port)?);
        msg.attributes.push(LinkAttribute::Controller(bridge_index));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(request_error(
                port,
                format!("add {port} to bridge {bridge}"),
            ))
    }

    /// Adds `addr/prefix_len` with its broadcast address; Ok if present.
    pub fn add_address(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let msg = self.address_message(name, addr, prefix_len)?;
        match self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map_err(request_error(
                name,
                format!("add {addr}/{prefix_len} to {name}"),
            )),
        }
    }

    pub fn del_address(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let msg = self.address_message(name, addr, prefix_len)?;
        self.ack(RouteNetlinkMessage::DelAddress(msg), 0)
            .map_err(request_error(
                name,
                format!("remove {addr}/{prefix_len} from {name}"),
            ))
    }

    fn address_message(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<AddressMessage, NetlinkError> {
        if prefix_len > 32 {
            return Err(NetlinkError::BadPrefix {
                name: name.to_owned(),
                prefix_len,
            });
        }
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = self.link_index(name)?;
        msg.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(addr)),
            AddressAttribute::Address(IpAddr::V4(addr)),
        ];
        // /31 and /32 have no broadcast address (RFC 3021).
        if prefix_len < 31 {
            let host_bits = u32::MAX >> prefix_len;
            let broadcast = Ipv4Addr::from(u32::from(addr) | host_bits);
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        Ok(msg)
    }

    /// The IPv4 addresses on `name` with their prefix lengths.
    pub fn addresses(&mut self, name: &str) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let index = self.link_index(name)?;
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self
            .request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)
            .map_err(request_error(name, format!("list the addresses of {name}")))?;
        // Without strict checking the kernel ignores the index: filter here.
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) if m.header.index == index => Some(m),
                _ => None,
            })
            .filter_map(|m| {
                // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on
                // point-to-point links.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                Some((local.or(address)?, m.header.prefix_len))
            })
            .collect())
    }

    /// `ip route replace default via gateway dev name`.
    pub fn replace_default_route(
        &mut self,
        name: &str,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let mut msg = default_route_message(self.link_index(name)?);
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(request_error(
            name,
            format!("set the default route via {gateway} on {name}"),
        ))
    }

    /// Deletes the IPv4 default routes through `name`; Ok if there are none.
    pub fn del_default_route(&mut self, name: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name)?;
        // Each RTM_DELROUTE removes one route; there may be several metrics.
        for _ in 0..16 {
            let mut msg = default_route_message(index);
            // NOWHERE (and type/protocol unspec) match routes of any scope.
            msg.header.scope = RouteScope::NoWhere;
            match self.ack(RouteNetlinkMessage::DelRoute(msg), 0) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {
                    return Ok(());
                }
                Err(e) => {
                    return Err(request_error(
                        name,
                        format!("remove the default route on {name}"),
                    )(e))
                }
            }
        }
        Ok(())
    }

    /// The main table's IPv4 default route with the lowest metric, as
    /// (gateway, ifindex).
    pub fn default_route(&mut self) -> Result<Option<(Ipv4Addr, u32)>, NetlinkError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self
            .request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)
            .map_err(|source| NetlinkError::Dump {
                what: "routes",
                source,
            })?;
        let mut best: Option<(u32, Ipv4Addr, u32)> = None;
        for reply in &replies {
            let RouteNetlinkMessage::NewRoute(m) = reply else {
                continue;
            };
            if m.header.address_family != AddressFamily::Inet
                || m.header.destination_prefix_length != 0
                || m.header.kind != RouteType::Unicast
            {
                continue;
            }
            let (mut gateway, mut oif, mut table, mut metric) =
                (None, None, u32::from(m.header.table), 0);
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Priority(p) => metric = *p,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            if let (Some(gateway), Some(oif)) = (gateway, oif) {
                if best.is_none_or(|(m, _, _)| metric < m) {
                    best = Some((metric, gateway, oif));
                }
            }
        }
        Ok(best.map(|(_, gateway, oif)| (gateway, oif)))
    }

    /// RTM_GETLINK by name; `None` if there is no such link.
    fn get_link(&mut self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        check_name(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(m),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(request_error(name, format!("look up {name}"))(e)),
        }
    }

    /// Sends a request that has no reply but the ACK.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags).map(drop)
    }

    /// Sends `msg` and collects the replies: up to the ACK for a request,
    /// up to NLMSG_DONE for a dump (`flags` has NLM_F_DUMP).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;

        let mut replies = Vec::new();
        loop {
            if !recv_datagram(&self.socket, &mut self.buf)? {
                continue;
            }
            for raw in split_datagram(&self.buf) {
                let raw = raw.map_err(invalid_data)?;
                let header = NetlinkBuffer::new(raw);
                // Leftovers of an earlier, abandoned request are skipped.
                if header.sequence_number() != seq || header.port_number() != self.port {
                    continue;
                }
                let kind = header.message_type();
                let parsed = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) {
                    Ok(parsed) => parsed,
                    // Without the ACK or DONE we would wait forever.
                    Err(e) if kind == NLMSG_ERROR || kind == NLMSG_DONE => {
                        return Err(invalid_data(e))
                    }
                    Err(e) => {
                        log::debug!("netlink: skipping a reply of type {kind}: {e}");
                        continue;
                    }
                };
                match parsed.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) if !dump => return Ok(replies),
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(io::Error::from_raw_os_error(-d.code))
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }
}

/// A socket subscribed to link notifications (RTMGRP_LINK). Non-blocking:
/// poll its fd for readability, then call [`LinkMonitor::drain`].
pub struct LinkMonitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl LinkMonitor {
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket
            .bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))
            .map_err(NetlinkError::Open)?;
        socket.set_non_blocking(true).map_err(NetlinkError::Open)?;
        Ok(Self {
            socket,
            buf: Vec::with_capacity(RECV_BUFFER_LEN),
        })
    }

    /// Reads the pending notifications without blocking.
    pub fn drain(&mut self) -> Result<LinkChanges, NetlinkError> {
        let mut changes = LinkChanges::default();
        for _ in 0..MAX_DRAIN {
            match recv_datagram(&self.socket, &mut self.buf) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The socket keeps working after an overrun; only the
                // dropped notifications are lost.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    changes.overrun = true;
                    continue;
                }
                Err(e) => return Err(NetlinkError::Monitor(e)),
            }
            for raw in split_datagram(&self.buf) {
                let parsed = raw.and_then(NetlinkMessage::<RouteNetlinkMessage>::deserialize);
                let (msg, removed) = match parsed.map(|p| p.payload) {
                    Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))) => (m, false),
                    Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))) => (m, true),
                    Ok(_) => continue,
                    Err(e) => {
                        log::debug!("netlink: skipping a link notification: {e}");
                        continue;
                    }
                };
                // The bridge also reports port changes (AF_BRIDGE), with an
                // RTM_DELLINK when a port merely leaves it.
                if msg.header.interface_family != AddressFamily::Unspec {
                    continue;
                }
                let info = link_info(&msg);
                changes.events.push(LinkEvent {
                    name: info.name,
                    index: info.index,
                    up: info.up,
                    carrier: info.carrier,
                    removed,
                });
            }
        }
        Ok(changes)
    }
}

impl AsFd for LinkMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Receives one datagram into `buf`, growing it if the datagram is larger.
/// Returns whether it came from the kernel (port 0). Retries on EINTR, as
/// PID 1 takes signals (SIGCHLD) all the time.
fn recv_datagram(socket: &Socket, buf: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        buf.clear();
        // MSG_TRUNC makes the peek return the full length of the datagram.
        let peeked = socket
            .recv_from(buf, libc::MSG_PEEK | libc::MSG_TRUNC)
            .and_then(|(len, _)| {
                buf.clear();
                buf.reserve(len);
                socket.recv_from(buf, 0)
            });
        match peeked {
            Ok((_, from)) => return Ok(from.port_number() == 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Splits a datagram into its netlink messages.
fn split_datagram(mut rest: &[u8]) -> impl Iterator<Item = Result<&[u8], DecodeError>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = match NetlinkBuffer::new_checked(rest) {
            Ok(buffer) => buffer.length() as usize,
            Err(e) => {
                rest = &[];
                return Some(Err(e));
            }
        };
        let (message, next) = rest.split_at(len);
        // Messages are 4-byte aligned; the last one may omit its padding.
        rest = next.get(len.next_multiple_of(4) - len..).unwrap_or(&[]);
        Some(Ok(message))
    })
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: msg.header.index,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        master: None,
        kind: None,
        mtu: 1500,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Controller(master) => info.master = Some(*master),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu as usize,
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlaLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    info
}

fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// An IPv4 default route in the main table through `oif`.
fn default_route_message(oif: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.attributes.push(RouteAttribute::Oif(oif));
    msg
}

/// Rejects names the kernel would (empty, too long, '/', ':' or blanks) so
/// the error says why instead of a bare EINVAL.
fn check_name(name: &str) -> Result<(), NetlinkError> {
    let bad = |c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0';
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains(bad) {
        return Err(NetlinkError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn request_error(ifname: &str, what: String) -> impl FnOnce(io::Error) -> NetlinkError {
    let ifname = ifname.to_owned();
    move |source| NetlinkError::Request {
        ifname,
        what,
        source,
    }
}

fn invalid_data(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests;
