//! A smoltcp [`Device`] over an `AF_PACKET` socket bound to one interface.
//!
//! This replaces `smoltcp::phy::RawSocket`, which opens the same kind of
//! socket but panics on any send/receive error other than `EAGAIN` (e.g.
//! `ENETDOWN` when the link drops, `ENXIO` when the device goes away). A
//! panic in PID 1 is not acceptable, so errors are recorded here and the
//! DHCP loop decides what to do with them.

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::DhcpError;

/// Ethernet header (14) on top of the IP MTU.
const ETH_HEADER: usize = 14;

pub struct PacketDevice {
    fd: OwnedFd,
    mtu: usize,
    /// The last errno of a failed send or receive, for the caller to look at.
    error: Cell<Option<i32>>,
}

impl PacketDevice {
    /// Opens a non-blocking `AF_PACKET` socket bound to `ifname`.
    /// `ip_mtu` is the interface MTU (as in `/sys/class/net/<if>/mtu`).
    pub fn open(ifname: &str, ip_mtu: usize) -> Result<Self, DhcpError> {
        let fail = |source: io::Error| DhcpError::PacketSocket {
            ifname: ifname.to_owned(),
            source,
        };
        let name = CString::new(ifname).map_err(|_| DhcpError::BadName {
            ifname: ifname.to_owned(),
        })?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if fd < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::c_int::try_from(index)
            .map_err(|_| fail(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `sll` is a sockaddr_ll and the length passed matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // Ask for each frame's tpacket_auxdata, which says when the kernel
        // never computed its checksum (see `checksum_not_ready`).
        let one: libc::c_int = 1;
        // SAFETY: `one` is a c_int and the length passed matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            mtu: ip_mtu.saturating_add(ETH_HEADER),
            error: Cell::new(None),
        })
    }

    /// Returns and clears the last I/O error seen by the device.
    pub fn take_error(&self) -> Option<io::Error> {
        self.error.take().map(io::Error::from_raw_os_error)
    }
}

impl AsFd for PacketDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Device for PacketDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let mut buffer = vec![0u8; self.mtu];
        loop {
            // SAFETY: sockaddr_ll and msghdr are plain data; all-zero is valid.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            // u64s: aligned for cmsghdr; room for one PACKET_AUXDATA.
            let mut control = [0u64; 8];
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&control) as _;
            // SAFETY: msg points at buffer, from and control, all valid for
            // the lengths it gives.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {}
                    errno => self.error.set(errno),
                }
                return None;
            }
            // The socket also sees our own transmissions; skip them.
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buffer.truncate(usize::try_from(n).unwrap_or(0));
            if checksum_not_ready(&msg) {
                clear_udp_checksum(&mut buffer);
            }
            let tx = TxToken {
                fd: self.fd.as_fd(),
                error: &self.error,
            };
            return Some((RxToken { buffer }, tx));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: self.fd.as_fd(),
            error: &self.error,
        })
    }
}

/// Whether the kernel says the frame's transport checksum was never filled
/// in (TP_STATUS_CSUMNOTREADY): checksum offload on a frame that never
/// crossed a wire, e.g. from a DHCP server on the same machine through a
/// veth, or from the hypervisor through virtio-net.
fn checksum_not_ready(msg: &libc::msghdr) -> bool {
    // SAFETY: recvmsg filled in msg and its control buffer; the CMSG_*
    // macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    false
}

/// Zeroes the UDP checksum of an unfragmented IPv4 frame, which means "no
/// checksum" (RFC 768), so that smoltcp does not drop a frame whose
/// checksum the kernel never computed as corrupt.
fn clear_udp_checksum(frame: &mut [u8]) {
    if frame.len() < ETH_HEADER + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &frame[ETH_HEADER..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if ip[0] >> 4 != 4 || ip[9] != libc::IPPROTO_UDP as u8 || fragment_offset != 0 {
        return;
    }
    let at = ETH_HEADER + header_len + 6;
    if let Some(checksum) = frame.get_mut(at..at + 2) {
        checksum.fill(0);
    }
}

pub struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.buffer)
    }
}

pub struct TxToken<'a> {
    fd: BorrowedFd<'a>,
    error: &'a Cell<Option<i32>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = vec![0u8; len];
        let result = f(&mut buffer);
        // SAFETY: buffer is valid for its length; the socket is bound, so no
        // destination address is needed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buffer.as_ptr().cast(), buffer.len(), 0) };
        if n < 0 {
            // A lost frame is like a lost packet: DHCP retransmits. Record it
            // so the caller can notice a dead interface.
            self.error.set(io::Error::last_os_error().raw_os_error());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + a 20-byte IPv4 header + a UDP header with checksum 0xabcd.
    fn frame(protocol: u8, fragment: [u8; 2]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HEADER + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[ETH_HEADER] = 0x45;
        f[ETH_HEADER + 6..ETH_HEADER + 8].copy_from_slice(&fragment);
        f[ETH_HEADER + 9] = protocol;
        f[ETH_HEADER + 26..ETH_HEADER + 28].copy_from_slice(&[0xab, 0xcd]);
        f
    }

    #[test]
    fn only_the_udp_checksum_of_a_whole_ipv4_datagram_is_cleared() {
        let mut udp = frame(17, [0x40, 0]);
        clear_udp_checksum(&mut udp);
        assert_eq!(udp[ETH_HEADER + 26..ETH_HEADER + 28], [0, 0]);

        for mut other in [frame(6, [0, 0]), frame(17, [0, 8])] {
            let before = other.clone();
            clear_udp_checksum(&mut other);
            assert_eq!(other, before, "TCP and later fragments are left alone");
        }
        let mut short = frame(17, [0, 0]);
        short.truncate(ETH_HEADER + 10);
        let before = short.clone();
        clear_udp_checksum(&mut short);
        assert_eq!(short, before);
    }
}
