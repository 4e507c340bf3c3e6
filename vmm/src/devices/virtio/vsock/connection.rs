//! One stream between a guest port and a host Unix socket: its state,
//! credit-based flow control in both directions, and the host socket I/O.
//!
//! Flow control (virtio spec 5.10.6.3): each side advertises `buf_alloc`,
//! the bytes it can hold, and `fwd_cnt`, the bytes it has consumed so far.
//! A sender may have at most `buf_alloc - (sent - fwd_cnt)` bytes in
//! flight. Here "consumed" means written to the host socket: what the
//! socket does not take waits in `to_host`, which the guest's credit
//! bounds to [`CONN_BUF_ALLOC`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::packet::{
    PacketHeader, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RW, OP_SHUTDOWN,
    SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::HOST_CID;

/// Bytes from the guest we hold per connection (our `buf_alloc`).
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;

/// Tell the guest about freed space once its view of it falls below this,
/// so that it is never stalled waiting for an update we could send.
const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;

/// Why a connection has to be reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {0} bytes beyond the credit we gave it")]
    CreditExceeded(usize),
    #[error("the guest sent data on a stream it shut down or has not opened")]
    UnexpectedData,
    #[error("the host socket failed: {0}")]
    Host(#[source] io::Error),
    #[error("the host end closed while data was still owed to it")]
    HostGone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: the REQUEST is owed or sent; waiting for RESPONSE.
    Connecting,
    /// Data may flow.
    Established,
}

/// What a connection has for the guest next.
pub enum Next {
    /// A packet with `op`, `flags` and this many payload bytes (at the
    /// start of the buffer given to [`Connection::next_packet`]).
    Packet {
        op: u16,
        flags: u32,
        len: usize,
    },
    Nothing,
    /// The host socket failed: reset the connection.
    Fatal(ConnError),
}

pub struct Connection {
    pub stream: UnixStream,
    pub state: ConnState,
    /// Host side port (the service port, or an ephemeral one for
    /// host-initiated connections) and guest side port.
    pub local_port: u32,
    pub peer_port: u32,

    /// Credit the guest gave us for data going to it.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    sent_cnt: Wrapping<u32>,
    /// Payload bytes received from the guest.
    recv_cnt: Wrapping<u32>,
    /// Of those, bytes written to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_sent: Wrapping<u32>,

    /// Bytes the host socket has not taken yet.
    to_host: VecDeque<u8>,
    /// How many bytes at the front of `to_host` are ours (the `OK` line),
    /// not guest payload, and so do not count in `fwd_cnt`.
    local_bytes: usize,

    owe_request: bool,
    owe_response: bool,
    owe_credit_update: bool,
    owe_credit_request: bool,
    /// A CREDIT_REQUEST went out and no credit came back yet.
    credit_requested: bool,

    /// The host socket may have data (a read has not hit EAGAIN since the
    /// last readiness edge).
    readable: bool,
    /// The host stopped sending (EOF read); the guest has been told.
    host_eof: bool,
    /// The host end is gone entirely (EPOLLHUP).
    host_hup: bool,
    /// SHUTDOWN flags received from the guest.
    guest_shutdown: u32,
    /// Our write side of the host socket is shut (after the guest's
    /// SHUTDOWN_SEND and a drained `to_host`).
    host_write_shut: bool,

    /// Whether EPOLLOUT is in the registered interest set.
    pub out_registered: bool,
    /// Whether the connection is in the muxer's ready list.
    pub queued: bool,
}

impl Connection {
    fn new(stream: UnixStream, state: ConnState, local_port: u32, peer_port: u32) -> Self {
        Connection {
            stream,
            state,
            local_port,
            peer_port,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            sent_cnt: Wrapping(0),
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            to_host: VecDeque::new(),
            local_bytes: 0,
            owe_request: false,
            owe_response: false,
            owe_credit_update: false,
            owe_credit_request: false,
            credit_requested: false,
            readable: false,
            host_eof: false,
            host_hup: false,
            guest_shutdown: 0,
            host_write_shut: false,
            out_registered: false,
            queued: false,
        }
    }

    /// A connection the guest asked for and the host service accepted; the
    /// RESPONSE is owed.
    pub fn guest_initiated(stream: UnixStream, request: &PacketHeader) -> Self {
        let mut conn = Self::new(
            stream,
            ConnState::Established,
            request.dst_port,
            request.src_port,
        );
        conn.owe_response = true;
        conn.update_peer_credit(request);
        // Whatever the host sends before the first edge must not be missed.
        conn.readable = true;
        conn
    }

    /// A connection a host client asked for with `CONNECT`; the REQUEST
    /// is owed.
    pub fn host_initiated(stream: UnixStream, local_port: u32, peer_port: u32) -> Self {
        let mut conn = Self::new(stream, ConnState::Connecting, local_port, peer_port);
        conn.owe_request = true;
        conn
    }

    /// The header for a packet from us to the guest, carrying our credit.
    pub fn header(&mut self, guest_cid: u64, op: u16, flags: u32, len: usize) -> PacketHeader {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        // Every packet carries fresh credit.
        self.owe_credit_update = false;
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            // len <= MAX_PAYLOAD.
            len: len as u32,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Takes the guest's credit from any packet it sent on this stream.
    pub fn update_peer_credit(&mut self, header: &PacketHeader) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = Wrapping(header.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes we may still send to the guest. A guest claiming to have
    /// consumed more than we sent only stalls its own stream.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.sent_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The guest accepted a host-initiated connection: tell the host client
    /// which port it got, as `OK <port>\n`.
    pub fn accept_response(&mut self, header: &PacketHeader) -> Result<(), ConnError> {
        self.update_peer_credit(header);
        self.state = ConnState::Established;
        let line = format!("OK {}\n", self.local_port);
        self.local_bytes += line.len();
        self.to_host.extend(line.as_bytes());
        self.readable = true;
        self.flush()
    }

    /// Payload of an RW packet from the guest.
    pub fn from_guest(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        if self.state != ConnState::Established || self.guest_shutdown & SHUTDOWN_SEND != 0 {
            return Err(ConnError::UnexpectedData);
        }
        let held = self.to_host.len() - self.local_bytes + payload.len();
        if held > CONN_BUF_ALLOC as usize {
            return Err(ConnError::CreditExceeded(held - CONN_BUF_ALLOC as usize));
        }
        // payload.len() <= MAX_PAYLOAD.
        self.recv_cnt += Wrapping(payload.len() as u32);
        let mut rest = payload;
        if self.to_host.is_empty() {
            // The common case: straight to the socket, no copy.
            while !rest.is_empty() {
                match self.stream.write(rest) {
                    Ok(0) => return Err(ConnError::Host(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        rest = &rest[n..];
                        self.fwd_cnt += Wrapping(n as u32);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(ConnError::Host(e)),
                }
            }
        }
        self.to_host.extend(rest);
        self.check_credit_update();
        Ok(())
    }

    /// Writes what the host socket will take from `to_host`.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnError::Host(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.to_host.drain(..n);
                    let ours = n.min(self.local_bytes);
                    self.local_bytes -= ours;
                    // n - ours <= the 64 KiB front slice.
                    self.fwd_cnt += Wrapping((n - ours) as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ConnError::Host(e)),
            }
        }
        if self.to_host.is_empty() && self.guest_shutdown & SHUTDOWN_SEND != 0 {
            self.shut_host_write();
        }
        self.check_credit_update();
        Ok(())
    }

    /// A SHUTDOWN from the guest.
    pub fn guest_shutdown(&mut self, flags: u32) -> Result<(), ConnError> {
        self.guest_shutdown |= flags & SHUTDOWN_BOTH;
        self.flush()
    }

    /// The guest asked for our credit.
    pub fn credit_requested_by_guest(&mut self) {
        self.owe_credit_update = true;
    }

    /// Readiness of the host socket, from epoll.
    pub fn host_event(&mut self, events: EventSet) -> Result<(), ConnError> {
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            self.readable = true;
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.host_hup = true;
        }
        if events.contains(EventSet::OUT) || !self.to_host.is_empty() {
            self.flush()?;
        }
        // Gone for good: nothing more can be read that the guest wants, or
        // all was read already, and nothing can be written any more.
        if self.host_hup && (self.host_eof || !self.wants_host_data()) {
            return Err(ConnError::HostGone);
        }
        Ok(())
    }

    /// Whether host data should be read for the guest at all.
    fn wants_host_data(&self) -> bool {
        self.state == ConnState::Established
            && self.guest_shutdown & SHUTDOWN_RCV == 0
            && !self.host_eof
    }

    /// The next packet for the guest, reading host data into `buf` (at most
    /// `buf.len()` bytes, within the guest's credit).
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Next {
        if self.owe_request {
            self.owe_request = false;
            return Next::Packet {
                op: OP_REQUEST,
                flags: 0,
                len: 0,
            };
        }
        if self.state == ConnState::Connecting {
            return Next::Nothing;
        }
        if self.owe_response {
            self.owe_response = false;
            return Next::Packet {
                op: OP_RESPONSE,
                flags: 0,
                len: 0,
            };
        }
        if self.readable && self.wants_host_data() {
            let credit = self.peer_credit() as usize;
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    self.owe_credit_request = true;
                }
            } else if !buf.is_empty() {
                let want = buf.len().min(credit);
                loop {
                    match self.stream.read(&mut buf[..want]) {
                        Ok(0) => {
                            self.host_eof = true;
                            self.readable = false;
                            // Half-closed hosts may still read the guest's reply.
                            let flags = if self.host_hup {
                                SHUTDOWN_BOTH
                            } else {
                                SHUTDOWN_SEND
                            };
                            return Next::Packet {
                                op: OP_SHUTDOWN,
                                flags,
                                len: 0,
                            };
                        }
                        Ok(n) => {
                            // n <= MAX_PAYLOAD.
                            self.sent_cnt += Wrapping(n as u32);
                            return Next::Packet {
                                op: OP_RW,
                                flags: 0,
                                len: n,
                            };
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.readable = false;
                            break;
                        }
                        Err(e) => return Next::Fatal(ConnError::Host(e)),
                    }
                }
            }
        }
        if self.owe_credit_update {
            return Next::Packet {
                op: OP_CREDIT_UPDATE,
                flags: 0,
                len: 0,
            };
        }
        if self.owe_credit_request {
            self.owe_credit_request = false;
            return Next::Packet {
                op: OP_CREDIT_REQUEST,
                flags: 0,
                len: 0,
            };
        }
        Next::Nothing
    }

    /// Whether `next_packet` may have something.
    pub fn has_rx_work(&self) -> bool {
        self.owe_request
            || (self.state == ConnState::Established
                && (self.owe_response
                    || self.owe_credit_update
                    || self.owe_credit_request
                    || (self.readable
                        && self.wants_host_data()
                        && (self.peer_credit() > 0 || !self.credit_requested))))
    }

    /// Whether both directions are done and flushed: time to reset the
    /// stream, which is how a clean close ends (virtio spec 5.10.6.6).
    pub fn finished(&self) -> bool {
        let guest_done = self.guest_shutdown & SHUTDOWN_SEND != 0;
        let host_done = self.host_eof || self.guest_shutdown & SHUTDOWN_RCV != 0;
        guest_done && host_done && self.to_host.is_empty() && !self.has_rx_work()
    }

    /// Whether EPOLLOUT is needed: only while data waits for the socket.
    pub fn wants_out(&self) -> bool {
        !self.to_host.is_empty()
    }

    fn shut_host_write(&mut self) {
        if !self.host_write_shut {
            self.host_write_shut = true;
            // The host end may be gone already; it then reads nothing anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Owes the guest a CREDIT_UPDATE once its view of our free space is
    /// low and we have freed some since we last told it.
    fn check_credit_update(&mut self) {
        let unacked = (self.recv_cnt - self.last_fwd_cnt_sent).0;
        let free_in_guest_view = CONN_BUF_ALLOC.saturating_sub(unacked);
        if free_in_guest_view < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.owe_credit_update = true;
        }
    }
}
