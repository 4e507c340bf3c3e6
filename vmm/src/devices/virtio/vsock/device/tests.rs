use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::devices::virtio::testing::{
    add_chain, event, guest_mem, irq, kick, signalled, used, R, W,
};
use crate::devices::virtio::vsock::connection::CONN_BUF_ALLOC;
use crate::devices::virtio::vsock::packet::*;
use crate::devices::virtio::vsock::HOST_CID;
use crate::devices::virtio::DeviceEvents;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const CID: u64 = 3;
const MEM_SIZE: usize = 0x40_0000;
const QLEN: u16 = 128;
const TX_AREA: u64 = 0x10_0000;
const RX_AREA: u64 = 0x20_0000;
const RX_BUF_LEN: u32 = (HDR_LEN + 4096) as u32;
const GUEST_BUF_ALLOC: u32 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(2);

/// A scratch directory for sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("keel-vmm-test-{}-{tag}-{id}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture<'a> {
    vsock: Vsock,
    /// The device's registrations, in an epoll set of their own.
    events: DeviceEvents,
    mem: &'a GuestMemoryMmap,
    rxq: MockSplitQueue<'a, GuestMemoryMmap>,
    txq: MockSplitQueue<'a, GuestMemoryMmap>,
    dir: TempDir,
    tx_slot: u16,
    rx_slot: u16,
    rx_seen: u16,
    rx_addr: HashMap<u32, u64>,
    /// What the guest side has consumed, for the headers it sends.
    guest_fwd_cnt: u32,
}

impl<'a> Fixture<'a> {
    fn new(mem: &'a GuestMemoryMmap, tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let mut vsock = Vsock::new(CID, &dir.0.join("v.sock")).expect("vsock");
        let events = DeviceEvents::for_test();
        vsock.register_events(events.clone()).expect("register");
        let rxq = MockSplitQueue::create(mem, GuestAddress(0), QLEN);
        let txq = MockSplitQueue::create(mem, GuestAddress(0x1000), QLEN);
        let evq = MockSplitQueue::create(mem, GuestAddress(0x2000), QLEN);
        let queues = vec![
            rxq.create_queue().expect("queue"),
            txq.create_queue().expect("queue"),
            evq.create_queue().expect("queue"),
        ];
        vsock
            .activate(mem.clone(), irq(), queues, VIRTIO_F_VERSION_1)
            .expect("activate");
        Fixture {
            vsock,
            events,
            mem,
            rxq,
            txq,
            dir,
            tx_slot: 0,
            rx_slot: 0,
            rx_seen: 0,
            rx_addr: HashMap::new(),
            guest_fwd_cnt: 0,
        }
    }

    fn uds(&self) -> PathBuf {
        self.dir.0.join("v.sock")
    }

    /// A host service listening for guest connections to `port`.
    fn service(&self, port: u32) -> UnixListener {
        UnixListener::bind(self.dir.0.join(format!("v.sock_{port}"))).expect("bind service")
    }

    fn hdr(&self, op: u16, src_port: u32, dst_port: u32, len: usize) -> PacketHeader {
        PacketHeader {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: len as u32,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: GUEST_BUF_ALLOC,
            fwd_cnt: self.guest_fwd_cnt,
        }
    }

    /// Puts raw descriptors on the transmit queue and kicks it.
    fn transmit(&mut self, descs: &[(u64, u32, u16)]) -> bool {
        add_chain(&self.txq, self.tx_slot, descs);
        self.tx_slot += descs.len() as u16;
        kick(&mut self.vsock, TX_QUEUE)
    }

    /// Sends one packet from the guest, header and payload in separate
    /// descriptors as Linux does.
    fn send(&mut self, header: PacketHeader, payload: &[u8]) -> bool {
        let at = TX_AREA + u64::from(self.tx_slot) * 0x100;
        self.mem
            .write_slice(&header.to_bytes(), GuestAddress(at))
            .expect("header");
        if payload.is_empty() {
            return self.transmit(&[(at, HDR_LEN as u32, R)]);
        }
        let data = RX_AREA + 0x10_0000;
        self.mem
            .write_slice(payload, GuestAddress(data))
            .expect("payload");
        self.transmit(&[(at, HDR_LEN as u32, R), (data, payload.len() as u32, R)])
    }

    fn post_rx(&mut self, count: u16) {
        for _ in 0..count {
            let at = RX_AREA + u64::from(self.rx_slot) * 0x2000;
            add_chain(&self.rxq, self.rx_slot, &[(at, RX_BUF_LEN, W)]);
            self.rx_addr.insert(u32::from(self.rx_slot), at);
            self.rx_slot += 1;
        }
    }

    /// The next packet the device put in the receive queue.
    fn recv(&mut self) -> Option<(PacketHeader, Vec<u8>)> {
        if self.rxq.used().idx().load() == self.rx_seen {
            return None;
        }
        let (_, id, len) = used(&self.rxq, usize::from(self.rx_seen));
        self.rx_seen += 1;
        let at = *self.rx_addr.get(&id).expect("known buffer");
        let mut raw = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut raw, GuestAddress(at))
            .expect("read");
        let mut hdr = [0u8; HDR_LEN];
        hdr.copy_from_slice(&raw[..HDR_LEN]);
        let header = PacketHeader::from_bytes(&hdr);
        assert_eq!(
            header.len as usize,
            raw.len() - HDR_LEN,
            "len matches used length"
        );
        Some((header, raw[HDR_LEN..].to_vec()))
    }

    fn expect_packet(&mut self, op: u16) -> (PacketHeader, Vec<u8>) {
        let (h, payload) = self
            .recv()
            .unwrap_or_else(|| panic!("no packet, expected op {op}"));
        assert_eq!(h.op, op, "{h:?}");
        assert_eq!(
            (h.src_cid, h.dst_cid, h.type_),
            (HOST_CID, CID, TYPE_STREAM)
        );
        (h, payload)
    }

    /// Waits for one of the device's host sockets to signal, then hands
    /// the device what is ready, as the event loop would. Returns whether
    /// it signalled the guest.
    fn host_event(&mut self) -> bool {
        let ready = self.events.wait(TIMEOUT.as_millis() as i32);
        assert!(!ready.is_empty(), "no host socket became ready");
        irq().take();
        for (id, events) in ready {
            self.vsock.handle_event(id, events);
        }
        signalled()
    }

    /// Hands the device whatever is ready now, without waiting.
    fn pump(&mut self) {
        for (id, events) in self.events.wait(0) {
            self.vsock.handle_event(id, events);
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.vsock
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .expect("counter")
    }

    /// Opens a guest-initiated stream from `src` to host `port`; returns
    /// the service's end.
    fn connect(&mut self, service: &UnixListener, src: u32, port: u32) -> UnixStream {
        self.post_rx(1);
        assert!(self.send(self.hdr(OP_REQUEST, src, port, 0), &[]));
        let (h, _) = self.expect_packet(OP_RESPONSE);
        assert_eq!((h.src_port, h.dst_port), (port, src));
        let (stream, _) = service.accept().expect("accept");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream
    }
}

fn read_exact(stream: &mut UnixStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).expect("host read");
    buf
}

fn is_closed(stream: &mut UnixStream) -> bool {
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    matches!(stream.read(&mut [0u8; 64]), Ok(0) | Err(_))
}

#[test]
fn config_space_and_identity() {
    let dir = TempDir::new("vsock-config");
    let path = dir.0.join("v.sock");
    let vsock = Vsock::new(0x1234_5678, &path).expect("vsock");
    assert_eq!(vsock.device_type(), 19);
    assert_eq!(vsock.queue_max_sizes(), &[QUEUE_SIZE; 3]);
    assert_eq!(vsock.device_features(), VIRTIO_F_VERSION_1);
    assert_eq!(vsock.guest_cid(), 0x1234_5678);
    let mut b8 = [0u8; 8];
    vsock.read_config(0, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), 0x1234_5678);
    let mut b4 = [0xffu8; 4];
    vsock.read_config(4, &mut b4);
    assert_eq!(b4, [0; 4]);
    vsock.read_config(8, &mut b4);
    assert_eq!(b4, [0; 4], "past the end reads as zero");

    // The path is taken; it goes away with the device.
    assert!(matches!(
        Vsock::new(3, &path),
        Err(VsockError::Listen { .. })
    ));
    assert!(path.exists());
    drop(vsock);
    assert!(!path.exists());

    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        assert!(matches!(
            Vsock::new(cid, &dir.0.join("other.sock")),
            Err(VsockError::InvalidCid(c)) if c == cid
        ));
    }
}

#[test]
fn guest_connects_and_data_flows_both_ways() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-g2h");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    assert_eq!(f.vsock.connection_count(), 1);
    assert_eq!(f.counter("guest_connections"), 1);

    assert!(f.send(f.hdr(OP_RW, 5000, 1234, 5), b"hello"));
    assert_eq!(read_exact(&mut host, 5), b"hello");

    f.post_rx(1);
    host.write_all(b"world!").expect("host write");
    assert!(f.host_event());
    let (h, payload) = f.expect_packet(OP_RW);
    assert_eq!(payload, b"world!");
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    assert_eq!(h.buf_alloc, CONN_BUF_ALLOC);
    assert_eq!(h.fwd_cnt, 5, "the 5 bytes written to the host");
    assert_eq!(f.counter("rx_bytes"), 6);
    assert_eq!(f.counter("tx_bytes"), 5);
}

#[test]
fn guest_connect_without_a_host_service_is_reset() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-nosvc");
    f.post_rx(1);
    assert!(f.send(f.hdr(OP_REQUEST, 5000, 9999, 0), &[]));
    let (h, _) = f.expect_packet(OP_RST);
    assert_eq!((h.src_port, h.dst_port), (9999, 5000));
    assert_eq!(f.counter("refused_connections"), 1);
    assert_eq!(f.vsock.connection_count(), 0);
}

#[test]
fn host_connects_with_a_connect_line() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-h2g");
    f.post_rx(2);
    let mut client = UnixStream::connect(f.uds()).expect("connect");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    // Data right behind the line must not be swallowed by it.
    client.write_all(b"CONNECT 52\nearly").expect("write");
    assert!(f.host_event());
    let (req, _) = f.expect_packet(OP_REQUEST);
    assert_eq!(req.dst_port, 52);
    assert!(req.src_port >= 1 << 30);
    assert_eq!(f.counter("host_connections"), 1);
    // Nothing else before the guest accepts.
    assert!(f.recv().is_none());

    assert!(f.send(f.hdr(OP_RESPONSE, 52, req.src_port, 0), &[]));
    let ok = format!("OK {}\n", req.src_port);
    assert_eq!(read_exact(&mut client, ok.len()), ok.as_bytes());
    let (h, payload) = f.expect_packet(OP_RW);
    assert_eq!(payload, b"early");
    assert_eq!(h.fwd_cnt, 0, "the OK line is not guest data");

    f.post_rx(1);
    client.write_all(b"ping").expect("write");
    assert!(f.host_event());
    assert_eq!(f.expect_packet(OP_RW).1, b"ping");
    assert!(f.send(f.hdr(OP_RW, 52, req.src_port, 4), b"pong"));
    assert_eq!(read_exact(&mut client, 4), b"pong");

    // The guest refusing a second one closes that client.
    let mut refused = UnixStream::connect(f.uds()).expect("connect");
    refused.write_all(b"CONNECT 53\n").expect("write");
    f.post_rx(1);
    assert!(f.host_event());
    let (req2, _) = f.expect_packet(OP_REQUEST);
    assert_ne!(req2.src_port, req.src_port);
    f.send(f.hdr(OP_RST, 53, req2.src_port, 0), &[]);
    assert!(f.recv().is_none(), "a reset is not answered");
    assert!(is_closed(&mut refused));
    assert_eq!(f.vsock.connection_count(), 1);
}

#[test]
fn bad_connect_lines_close_the_client() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-badline");
    f.post_rx(4);
    let lines: [&[u8]; 4] = [
        b"HELLO 52\n",
        b"CONNECT\n",
        b"CONNECT 99999999999\n",
        &[b'A'; 40],
    ];
    for line in lines {
        let mut client = UnixStream::connect(f.uds()).expect("connect");
        client.write_all(line).expect("write");
        f.host_event();
        assert!(
            is_closed(&mut client),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    // A client that hangs up half way.
    let mut client = UnixStream::connect(f.uds()).expect("connect");
    client.write_all(b"CONN").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    f.host_event();
    assert!(is_closed(&mut client));
    assert!(f.recv().is_none());
    assert_eq!(f.vsock.connection_count(), 0);
    assert_eq!(f.counter("refused_connections"), 5);
}

#[test]
fn packets_for_unknown_connections_are_reset() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-unknown");
    f.post_rx(8);
    for op in [
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RESPONSE,
    ] {
        let payload: &[u8] = if op == OP_RW { b"x" } else { b"" };
        assert!(f.send(f.hdr(op, 7000, 80, payload.len()), payload));
        let (h, _) = f.expect_packet(OP_RST);
        assert_eq!((h.src_port, h.dst_port), (80, 7000));
    }
    // A reset is never answered.
    f.send(f.hdr(OP_RST, 7000, 80, 0), &[]);
    assert!(f.recv().is_none());
    assert_eq!(f.counter("resets_sent"), 5);
}

#[test]
fn hostile_headers_are_dropped_or_reset() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-hostile");
    let service = f.service(1234);
    f.post_rx(16);

    // Truncated header.
    assert!(f.transmit(&[(TX_AREA + 0x8000, 20, R)]));
    assert_eq!(f.counter("tx_malformed"), 1);
    // Header outside guest memory, and straddling its end.
    assert!(f.transmit(&[(MEM_SIZE as u64, HDR_LEN as u32, R)]));
    assert!(f.transmit(&[(MEM_SIZE as u64 - 10, HDR_LEN as u32, R)]));
    assert_eq!(f.counter("tx_malformed"), 3);
    // Header only in device-writable descriptors.
    assert!(f.transmit(&[(TX_AREA + 0x8000, HDR_LEN as u32, W)]));
    assert_eq!(f.counter("tx_malformed"), 4);
    assert!(f.recv().is_none());

    // Wrong source or destination CID: dropped without an answer.
    let mut h = f.hdr(OP_REQUEST, 5000, 1234, 0);
    h.src_cid = CID + 1;
    f.send(h, &[]);
    let mut h = f.hdr(OP_REQUEST, 5000, 1234, 0);
    h.dst_cid = 7;
    f.send(h, &[]);
    let mut h = f.hdr(OP_REQUEST, 5000, 1234, 0);
    h.src_cid = HOST_CID;
    f.send(h, &[]);
    assert_eq!(f.counter("tx_bad_cid"), 3);
    assert!(f.recv().is_none());
    assert_eq!(f.vsock.connection_count(), 0);

    // Unknown op, unknown socket type.
    f.send(f.hdr(99, 5000, 1234, 0), &[]);
    f.expect_packet(OP_RST);
    let mut h = f.hdr(OP_REQUEST, 5000, 1234, 0);
    h.type_ = 2;
    f.send(h, &[]);
    f.expect_packet(OP_RST);
    assert_eq!(f.vsock.connection_count(), 0);

    // len beyond what the chain holds, and beyond the limit: the
    // stream is reset and its host end closed.
    let mut host = f.connect(&service, 5000, 1234);
    let mut h = f.hdr(OP_RW, 5000, 1234, 100);
    h.len = 100;
    f.send(h, b"only ten..");
    let (r, _) = f.expect_packet(OP_RST);
    assert_eq!((r.src_port, r.dst_port), (1234, 5000));
    assert!(is_closed(&mut host));
    assert_eq!(f.vsock.connection_count(), 0);

    let mut host = f.connect(&service, 5001, 1234);
    let mut h = f.hdr(OP_RW, 5001, 1234, 0);
    h.len = (MAX_PAYLOAD + 1) as u32;
    f.send(h, b"x");
    f.expect_packet(OP_RST);
    assert!(is_closed(&mut host));

    // Unknown op and a second REQUEST on a live stream reset it too.
    let mut host = f.connect(&service, 5002, 1234);
    f.send(f.hdr(42, 5002, 1234, 0), &[]);
    f.expect_packet(OP_RST);
    assert!(is_closed(&mut host));
    let mut host = f.connect(&service, 5003, 1234);
    f.send(f.hdr(OP_REQUEST, 5003, 1234, 0), &[]);
    f.expect_packet(OP_RST);
    assert!(is_closed(&mut host));
    assert_eq!(f.vsock.connection_count(), 0);
    assert!(f.counter("tx_malformed") >= 6);
}

#[test]
fn the_connection_table_is_bounded() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-full");
    f.vsock.muxer_mut().set_max_connections(2);
    let service = f.service(1234);
    let _a = f.connect(&service, 5000, 1234);
    let _b = f.connect(&service, 5001, 1234);
    f.post_rx(1);
    f.send(f.hdr(OP_REQUEST, 5002, 1234, 0), &[]);
    f.expect_packet(OP_RST);
    let mut client = UnixStream::connect(f.uds()).expect("connect");
    client.write_all(b"CONNECT 52\n").expect("write");
    f.host_event();
    assert!(is_closed(&mut client));
    assert_eq!(f.vsock.connection_count(), 2);
    assert_eq!(f.counter("refused_connections"), 2);
}

#[test]
fn host_data_respects_the_guest_credit() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-credit");
    let service = f.service(1234);
    f.post_rx(1);
    let mut req = f.hdr(OP_REQUEST, 5000, 1234, 0);
    req.buf_alloc = 100;
    f.send(req, &[]);
    f.expect_packet(OP_RESPONSE);
    let (mut host, _) = service.accept().expect("accept");

    f.post_rx(4);
    host.write_all(&[7u8; 300]).expect("write");
    assert!(f.host_event());
    assert_eq!(f.expect_packet(OP_RW).1, vec![7u8; 100]);
    // Out of credit: ask for more, once.
    f.expect_packet(OP_CREDIT_REQUEST);
    assert!(f.recv().is_none());
    host.write_all(&[8u8; 10]).expect("write");
    f.host_event();
    assert!(f.recv().is_none());

    let mut update = f.hdr(OP_CREDIT_UPDATE, 5000, 1234, 0);
    update.buf_alloc = 100;
    update.fwd_cnt = 100;
    assert!(f.send(update, &[]));
    assert_eq!(f.expect_packet(OP_RW).1, vec![7u8; 100]);
    f.expect_packet(OP_CREDIT_REQUEST);
    // A guest claiming it consumed more than it got gains nothing.
    let mut lie = f.hdr(OP_CREDIT_UPDATE, 5000, 1234, 0);
    lie.buf_alloc = 100;
    lie.fwd_cnt = 1_000_000;
    f.send(lie, &[]);
    assert!(f.recv().is_none());
}

#[test]
fn credit_requests_and_updates_for_guest_data() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-update");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    f.post_rx(4);
    f.send(f.hdr(OP_CREDIT_REQUEST, 5000, 1234, 0), &[]);
    let (h, _) = f.expect_packet(OP_CREDIT_UPDATE);
    assert_eq!((h.buf_alloc, h.fwd_cnt), (CONN_BUF_ALLOC, 0));

    // Three quarters of our credit: the guest still sees room.
    let chunk = vec![0x5au8; MAX_PAYLOAD];
    for _ in 0..3 {
        f.send(f.hdr(OP_RW, 5000, 1234, chunk.len()), &chunk);
    }
    assert!(f.recv().is_none());
    // All of it: the guest has to learn what was forwarded.
    f.send(f.hdr(OP_RW, 5000, 1234, chunk.len()), &chunk);
    let (h, _) = f.expect_packet(OP_CREDIT_UPDATE);
    assert!(h.fwd_cnt > 0);
    // The host drains it all; the device finishes writing.
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < 4 * MAX_PAYLOAD {
        let n = host.read(&mut buf).expect("host read");
        assert!(buf[..n].iter().all(|&b| b == 0x5a));
        got += n;
        if f.vsock.connection_count() == 1 && got < 4 * MAX_PAYLOAD {
            // Lets the device refill the socket when it can.
            f.pump();
        }
    }
    assert_eq!(got, 4 * MAX_PAYLOAD);
}

#[test]
fn guest_exceeding_our_credit_is_reset() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-overrun");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    f.post_rx(8);
    // The host never reads: the socket fills, then our buffer, then
    // the guest is over its credit.
    let chunk = vec![1u8; MAX_PAYLOAD];
    let mut reset = false;
    for _ in 0..16 {
        f.send(f.hdr(OP_RW, 5000, 1234, chunk.len()), &chunk);
        while let Some((h, _)) = f.recv() {
            reset |= h.op == OP_RST;
        }
        if reset {
            break;
        }
    }
    assert!(reset, "16 x 64 KiB into a socket nobody reads");
    assert_eq!(f.vsock.connection_count(), 0);
    // The host end is closed once it reads what got through.
    host.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = vec![0u8; 65536];
    while host.read(&mut buf).expect("read") > 0 {}
}

#[test]
fn shutdowns_end_in_a_reset() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-shutdown");
    let service = f.service(1234);
    f.post_rx(8);

    // Guest stops sending: the host reads EOF but can still answer.
    let mut host = f.connect(&service, 5000, 1234);
    f.send(f.hdr(OP_RW, 5000, 1234, 3), b"bye");
    let mut h = f.hdr(OP_SHUTDOWN, 5000, 1234, 0);
    h.flags = SHUTDOWN_SEND;
    f.send(h, &[]);
    let mut buf = Vec::new();
    host.read_to_end(&mut buf).expect("read to EOF");
    assert_eq!(buf, b"bye");
    host.write_all(b"ack").expect("write");
    f.host_event();
    assert_eq!(f.expect_packet(OP_RW).1, b"ack");
    // Then it stops receiving too: the device resets and forgets.
    h.flags = SHUTDOWN_RCV;
    f.send(h, &[]);
    f.expect_packet(OP_RST);
    assert_eq!(f.vsock.connection_count(), 0);

    // Host closes entirely: the guest is told neither side will send.
    let host = f.connect(&service, 5001, 1234);
    drop(host);
    f.host_event();
    let (h, _) = f.expect_packet(OP_SHUTDOWN);
    assert_eq!(h.flags, SHUTDOWN_BOTH);
    f.send(f.hdr(OP_RST, 5001, 1234, 0), &[]);
    assert!(f.recv().is_none());
    assert_eq!(f.vsock.connection_count(), 0);

    // Host half-closes: the guest may still send to it.
    let mut host = f.connect(&service, 5002, 1234);
    host.shutdown(Shutdown::Write).expect("shutdown");
    f.host_event();
    let (h, _) = f.expect_packet(OP_SHUTDOWN);
    assert_eq!(h.flags, SHUTDOWN_SEND);
    f.send(f.hdr(OP_RW, 5002, 1234, 5), b"still");
    assert_eq!(read_exact(&mut host, 5), b"still");
    // The guest is done too: reset, and the host sees its end close.
    let mut h = f.hdr(OP_SHUTDOWN, 5002, 1234, 0);
    h.flags = SHUTDOWN_BOTH;
    f.send(h, &[]);
    f.expect_packet(OP_RST);
    assert!(is_closed(&mut host));
    assert_eq!(f.vsock.connection_count(), 0);
}

#[test]
fn guest_reset_closes_the_host_end() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-guestrst");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    f.post_rx(1);
    f.send(f.hdr(OP_RST, 5000, 1234, 0), &[]);
    assert!(f.recv().is_none());
    assert!(is_closed(&mut host));
    assert_eq!(f.vsock.connection_count(), 0);
}

#[test]
fn receive_buffers_are_checked_and_kept_when_unused() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-rxbuf");
    // Nothing to send: the buffer stays with the driver.
    f.post_rx(1);
    assert!(!kick(&mut f.vsock, RX_QUEUE));
    assert_eq!(f.rxq.used().idx().load(), 0);
    // ... and carries the next packet.
    f.send(f.hdr(OP_RW, 1, 2, 0), &[]);
    f.expect_packet(OP_RST);

    // Read-only, too small for a header, outside memory: returned
    // empty, while the reset waits for a usable buffer.
    f.send(f.hdr(OP_RW, 1, 2, 0), &[]);
    add_chain(&f.rxq, f.rx_slot, &[(RX_AREA, RX_BUF_LEN, R)]);
    add_chain(&f.rxq, f.rx_slot + 1, &[(RX_AREA, 20, W)]);
    add_chain(
        &f.rxq,
        f.rx_slot + 2,
        &[(MEM_SIZE as u64 - 8, RX_BUF_LEN, W)],
    );
    f.rx_slot += 3;
    assert!(kick(&mut f.vsock, RX_QUEUE));
    for i in 1..4 {
        assert_eq!(used(&f.rxq, i), (4, i as u32, 0));
    }
    assert_eq!(f.counter("rx_bad_buffers"), 3);
    f.rx_seen = 4;
    f.post_rx(1);
    assert!(kick(&mut f.vsock, RX_QUEUE));
    f.expect_packet(OP_RST);
}

#[test]
fn reset_closes_every_connection_but_keeps_listening() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-reset");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    let _pending = UnixStream::connect(f.uds()).expect("connect");
    f.host_event();
    assert_eq!(f.vsock.connection_count(), 2);
    f.vsock.reset();
    assert_eq!(f.vsock.connection_count(), 0);
    assert!(is_closed(&mut host));
    assert!(!kick(&mut f.vsock, RX_QUEUE));
    assert!(!kick(&mut f.vsock, TX_QUEUE));

    // Host clients connecting meanwhile are served after activation.
    let mut client = UnixStream::connect(f.uds()).expect("connect");
    client.write_all(b"CONNECT 52\n").expect("write");
    assert!(!f.host_event(), "inactive: nothing signalled");
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0x4000), QLEN);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x5000), QLEN);
    let evq = MockSplitQueue::create(&mem, GuestAddress(0x6000), QLEN);
    let queues = vec![
        rxq.create_queue().expect("queue"),
        txq.create_queue().expect("queue"),
        evq.create_queue().expect("queue"),
    ];
    f.vsock
        .activate(mem.clone(), irq(), queues, VIRTIO_F_VERSION_1)
        .expect("activate again");
    add_chain(&rxq, 0, &[(RX_AREA, RX_BUF_LEN, W)]);
    assert!(kick(&mut f.vsock, RX_QUEUE));
    let mut raw = [0u8; HDR_LEN];
    mem.read_slice(&mut raw, GuestAddress(RX_AREA))
        .expect("read");
    let h = PacketHeader::from_bytes(&raw);
    assert_eq!((h.op, h.dst_port), (OP_REQUEST, 52));
}

#[test]
fn inactive_device_and_odd_queues_do_nothing() {
    let dir = TempDir::new("vsock-inactive");
    let mut vsock = Vsock::new(3, &dir.0.join("v.sock")).expect("vsock");
    assert!(!kick(&mut vsock, RX_QUEUE));
    assert!(!kick(&mut vsock, TX_QUEUE));
    // Not registered: an id that is no socket of the device is ignored.
    assert!(!event(&mut vsock, u32::MAX, EventSet::IN));
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let q = || Queue::new(16).expect("queue");
    assert!(matches!(
        vsock.activate(mem.clone(), irq(), vec![q(), q()], 0),
        Err(ActivateError::QueueCount {
            expected: 3,
            got: 2
        })
    ));
    vsock
        .activate(mem.clone(), irq(), vec![q(), q(), q()], 0)
        .expect("activate");
    assert!(matches!(
        vsock.activate(mem, irq(), vec![q(), q(), q()], 0),
        Err(ActivateError::AlreadyActive)
    ));
    assert!(!kick(&mut vsock, EVENT_QUEUE));
    assert!(!kick(&mut vsock, u16::MAX));
}

#[test]
fn avail_index_far_ahead_is_ignored() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-availidx");
    f.txq.avail().idx().store(1000);
    assert!(!kick(&mut f.vsock, TX_QUEUE));
    assert_eq!(f.txq.used().idx().load(), 0);
    // A reset owed, and a receive ring claiming 1000 buffers.
    f.txq.avail().idx().store(0);
    f.send(f.hdr(OP_RW, 1, 2, 0), &[]);
    f.rxq.avail().idx().store(1000);
    assert!(!kick(&mut f.vsock, RX_QUEUE));
    assert_eq!(f.rxq.used().idx().load(), 0);
}

#[test]
fn reset_mid_io_then_reactivation_behaves_as_fresh() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-reset-fresh");
    // A host-initiated stream the guest accepted: its port is a fresh
    // device's first.
    let mut first = UnixStream::connect(f.uds()).expect("connect");
    first.write_all(b"CONNECT 52\n").expect("write");
    f.post_rx(1);
    assert!(f.host_event());
    let (request, _) = f.expect_packet(OP_REQUEST);
    let fresh_port = request.src_port;
    let mut response = f.hdr(OP_RESPONSE, 52, fresh_port, 0);
    response.dst_port = fresh_port;
    f.send(response, &[]);
    let ok = format!("OK {fresh_port}\n");
    assert_eq!(read_exact(&mut first, ok.len()), ok.as_bytes());
    // An open guest-initiated stream with data the guest has not read,
    // a reset owed with no buffer to carry it, and a host client that
    // has not said what it wants.
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    host.write_all(b"unread").expect("host write");
    assert!(!f.host_event(), "no receive buffer: nothing signalled");
    f.send(f.hdr(OP_RW, 1, 2, 0), &[]);
    let _quiet = UnixStream::connect(f.uds()).expect("connect");
    f.host_event();
    assert_eq!(f.vsock.connection_count(), 3);

    f.vsock.reset();
    assert_eq!(f.vsock.connection_count(), 0);
    assert!(is_closed(&mut host));
    assert!(is_closed(&mut first));
    assert!(!kick(&mut f.vsock, RX_QUEUE));

    // The next driver, with new queues: nothing from before reaches it.
    f.rxq = MockSplitQueue::create(&mem, GuestAddress(0x4000), QLEN);
    f.txq = MockSplitQueue::create(&mem, GuestAddress(0x5000), QLEN);
    let evq = MockSplitQueue::create(&mem, GuestAddress(0x6000), QLEN);
    let queues = vec![
        f.rxq.create_queue().expect("queue"),
        f.txq.create_queue().expect("queue"),
        evq.create_queue().expect("queue"),
    ];
    (f.tx_slot, f.rx_slot, f.rx_seen) = (0, 0, 0);
    f.rx_addr.clear();
    f.vsock
        .activate(mem.clone(), irq(), queues, VIRTIO_F_VERSION_1)
        .expect("activate again");
    f.post_rx(1);
    assert!(!kick(&mut f.vsock, RX_QUEUE));
    assert!(f.recv().is_none(), "no stale reset, request or data");

    // It numbers host streams as a fresh device does, and streams work.
    let mut again = UnixStream::connect(f.uds()).expect("connect");
    again.write_all(b"CONNECT 52\n").expect("write");
    assert!(f.host_event());
    let (request, _) = f.expect_packet(OP_REQUEST);
    assert_eq!((request.src_port, request.dst_port), (fresh_port, 52));
    let mut host = f.connect(&service, 5000, 1234);
    assert!(f.send(f.hdr(OP_RW, 5000, 1234, 5), b"hello"));
    assert_eq!(read_exact(&mut host, 5), b"hello");
    drop(again);
}

#[test]
fn transmit_chains_with_writable_descriptors_are_malformed() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, "vsock-direction");
    let service = f.service(1234);
    let mut host = f.connect(&service, 5000, 1234);
    f.post_rx(4);
    // A valid header and payload, with a writable descriptor after them
    // or between them: nothing is read, so nothing reaches the host and
    // the stream it names is not even reset.
    let at = TX_AREA + 0x8000;
    mem.write_slice(&f.hdr(OP_RW, 5000, 1234, 5).to_bytes(), GuestAddress(at))
        .expect("header");
    mem.write_slice(b"hello", GuestAddress(at + 0x100))
        .expect("payload");
    assert!(f.transmit(&[
        (at, HDR_LEN as u32, R),
        (at + 0x100, 5, R),
        (at + 0x200, 64, W),
    ]));
    assert!(f.transmit(&[
        (at, HDR_LEN as u32, R),
        (at + 0x200, 64, W),
        (at + 0x100, 5, R),
    ]));
    assert_eq!(f.counter("tx_malformed"), 2);
    assert_eq!(f.counter("tx_bytes"), 0);
    assert!(f.recv().is_none());
    assert_eq!(f.vsock.connection_count(), 1);
    // The stream still works.
    assert!(f.send(f.hdr(OP_RW, 5000, 1234, 5), b"world"));
    assert_eq!(read_exact(&mut host, 5), b"world");
}
