use std::io;
use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::virtio::net::BACKEND_EVENT;
use crate::devices::virtio::testing::{add_chain, event, guest_mem, irq, kick, used, NEXT, R, W};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const MEM_SIZE: usize = 0x10_0000;
const RXQ: u64 = 0x0;
const TXQ: u64 = 0x1000;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x1_1000;
const RXBUF: u64 = 0x4_0000;
const MAC: MacAddr = MacAddr([0x02, 0x4b, 0x45, 0x45, 0x4c, 0x01]);
const MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;

#[derive(Default)]
struct FakeState {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
    write_error: Option<io::ErrorKind>,
    offload: Vec<u64>,
}

/// A backend that is two queues of frames in memory.
struct FakeBackend {
    state: Arc<Mutex<FakeState>>,
    offloads: u64,
}

impl NetBackend for FakeBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError> {
        let mut state = self.state.lock().expect("lock");
        let frame = state
            .to_guest
            .pop_front()
            .ok_or(NetBackendError::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError> {
        let mut state = self.state.lock().expect("lock");
        if let Some(kind) = state.write_error {
            return Err(io::Error::from(kind).into());
        }
        state.from_guest.push(hdr_and_frame.to_vec());
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn offload_features(&self) -> u64 {
        self.offloads
    }

    fn set_offload(&mut self, acked_features: u64) -> Result<(), NetBackendError> {
        self.state
            .lock()
            .expect("lock")
            .offload
            .push(acked_features);
        Ok(())
    }
}

struct Fixture<'a> {
    net: Net,
    rxq: MockSplitQueue<'a, GuestMemoryMmap>,
    txq: MockSplitQueue<'a, GuestMemoryMmap>,
    state: Arc<Mutex<FakeState>>,
    /// Next free descriptor slot per queue.
    rx_slot: u16,
    tx_slot: u16,
}

impl<'a> Fixture<'a> {
    fn new(mem: &'a GuestMemoryMmap, offloads: u64, acked: u64) -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let backend = FakeBackend {
            state: state.clone(),
            offloads,
        };
        let mut net = Net::new(Box::new(backend), MAC).expect("net");
        let rxq = MockSplitQueue::create(mem, GuestAddress(RXQ), 16);
        let txq = MockSplitQueue::create(mem, GuestAddress(TXQ), 16);
        let queues = vec![
            rxq.create_queue().expect("queue"),
            txq.create_queue().expect("queue"),
        ];
        net.activate(mem.clone(), irq(), queues, acked | VIRTIO_F_VERSION_1)
            .expect("activate");
        Fixture {
            net,
            rxq,
            txq,
            state,
            rx_slot: 0,
            tx_slot: 0,
        }
    }

    fn transmit(&mut self, descs: &[(u64, u32, u16)]) -> bool {
        add_chain(&self.txq, self.tx_slot, descs);
        self.tx_slot += descs.len() as u16;
        kick(&mut self.net, TX_QUEUE)
    }

    fn post_rx(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.rx_slot;
        add_chain(&self.rxq, head, descs);
        self.rx_slot += descs.len() as u16;
        head
    }

    fn queue_frame(&self, packet: Vec<u8>) {
        self.state.lock().expect("lock").to_guest.push_back(packet);
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        self.state.lock().expect("lock").from_guest.clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.net
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .expect("counter")
    }
}

fn header(flags: u8, gso_type: u8) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[HDR_FLAGS] = flags;
    h[HDR_GSO_TYPE] = gso_type;
    h
}

/// A frame of `len` bytes: broadcast, from MAC, then a pattern.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ seed).collect();
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&MAC.0);
    f
}

fn packet(hdr: [u8; VNET_HDR_LEN], frame: &[u8]) -> Vec<u8> {
    let mut p = hdr.to_vec();
    p.extend_from_slice(frame);
    p
}

fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).expect("read");
    buf
}

fn write_mem(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr)).expect("write");
}

#[test]
fn transmitted_frames_reach_the_backend() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    let hdr = header(0, 0);
    let data = frame(100, 1);
    write_mem(&mem, HDR, &hdr);
    write_mem(&mem, DATA, &data);
    assert!(f.transmit(&[(HDR, 12, R), (DATA, 100, R)]));
    assert_eq!(used(&f.txq, 0), (1, 0, 0));
    // Header and frame in one descriptor, and split over three.
    let whole = packet(hdr, &data);
    write_mem(&mem, DATA + 0x1000, &whole);
    assert!(f.transmit(&[(DATA + 0x1000, 112, R)]));
    assert!(f.transmit(&[
        (DATA + 0x1000, 5, R),
        (DATA + 0x1005, 50, R),
        (DATA + 0x1037, 57, R)
    ]));
    assert_eq!(f.sent(), vec![whole.clone(), whole.clone(), whole]);
    assert_eq!(f.counter("tx_frames"), 3);
    assert_eq!(f.counter("tx_bytes"), 300);
    assert_eq!(f.counter("tx_dropped"), 0);
    assert!(!kick(&mut f.net, TX_QUEUE), "nothing new: no interrupt");
}

#[test]
fn short_and_empty_transmit_chains_are_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    // Shorter than the header; header but less than an Ethernet header;
    // a zero-length descriptor alone.
    assert!(f.transmit(&[(HDR, 10, R)]));
    assert!(f.transmit(&[(HDR, 12, R), (DATA, 13, R)]));
    assert!(f.transmit(&[(HDR, 0, R)]));
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 3);
    // Each chain still went back to the driver.
    assert_eq!(used(&f.txq, 2), (3, 3, 0));
    // The smallest valid frame passes.
    assert!(f.transmit(&[(HDR, 12, R), (DATA, 14, R)]));
    assert_eq!(f.sent().len(), 1);
}

#[test]
fn oversized_transmit_chains_are_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    let max = MAX_PACKET_LEN as u32;
    assert!(f.transmit(&[(DATA, max + 1, R)]));
    // Each descriptor under the limit, together over it.
    assert!(f.transmit(&[(DATA, max / 2 + 1, R), (DATA, max / 2 + 1, R)]));
    // Past 4 GiB the chain iterator gives up by itself.
    assert!(f.transmit(&[(DATA, u32::MAX, R), (DATA, 16, R)]));
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 3);
    // Exactly the limit is fine.
    assert!(f.transmit(&[(DATA, max, R)]));
    assert_eq!(f.sent()[0].len(), MAX_PACKET_LEN);
}

#[test]
fn transmit_buffers_outside_guest_memory_are_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    let end = MEM_SIZE as u64;
    assert!(f.transmit(&[(HDR, 12, R), (end - 50, 100, R)]));
    assert!(f.transmit(&[(u64::MAX - 8, 64, R)]));
    assert!(f.transmit(&[(end, 64, R)]));
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 3);
}

#[test]
fn writable_descriptor_in_a_transmit_chain_is_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    assert!(f.transmit(&[(HDR, 12, R), (DATA, 100, W)]));
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 1);
}

#[test]
fn readable_after_writable_in_a_transmit_chain_is_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    write_mem(&mem, DATA, &packet(header(0, 0), &frame(60, 3)));
    assert!(f.transmit(&[(HDR, 12, W), (DATA, 72, R)]));
    assert_eq!(used(&f.txq, 0), (1, 0, 0));
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 1);
}

#[test]
fn transmit_descriptor_loop_is_bounded() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    // 0 -> 1 -> 0 -> ...: the iterator stops after 16 descriptors.
    let looped = [
        RawDescriptor::from(SplitDescriptor::new(DATA, 20, NEXT, 1)),
        RawDescriptor::from(SplitDescriptor::new(DATA, 20, NEXT, 0)),
    ];
    f.txq.add_desc_chains(&looped, 0).expect("chain");
    assert!(kick(&mut f.net, TX_QUEUE));
    assert_eq!(used(&f.txq, 0), (1, 0, 0));
    let sent: usize = f.sent().iter().map(Vec::len).sum();
    assert!(sent <= 16 * 20);
}

#[test]
fn transmit_offloads_must_have_been_negotiated() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let data = frame(100, 2);
    let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    let tso4 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;

    let mut f = Fixture::new(&mem, OFFLOAD_FEATURES, 0);
    for (i, hdr) in [header(csum, 0), header(csum, tso4), header(0, 0x80)]
        .into_iter()
        .enumerate()
    {
        let at = DATA + i as u64 * 0x1000;
        write_mem(&mem, at, &packet(hdr, &data));
        assert!(f.transmit(&[(at, 112, R)]));
    }
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("tx_dropped"), 3);

    let acked = (1 << VIRTIO_NET_F_CSUM) | (1 << VIRTIO_NET_F_HOST_TSO4);
    let mut f = Fixture::new(&mem, OFFLOAD_FEATURES, acked);
    assert!(f.transmit(&[(DATA, 112, R)]));
    assert!(f.transmit(&[(DATA + 0x1000, 112, R)]));
    assert_eq!(f.sent().len(), 2);
    // Still nothing the guest did not ask for.
    assert!(f.transmit(&[(DATA + 0x2000, 112, R)]));
    assert_eq!(f.counter("tx_dropped"), 1);
}

#[test]
fn backend_refusals_drop_the_frame_and_return_the_chain() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    write_mem(&mem, DATA, &packet(header(0, 0), &frame(60, 3)));
    f.state.lock().expect("lock").write_error = Some(io::ErrorKind::WouldBlock);
    assert!(f.transmit(&[(DATA, 72, R)]));
    f.state.lock().expect("lock").write_error = Some(io::ErrorKind::BrokenPipe);
    assert!(f.transmit(&[(DATA, 72, R)]));
    assert_eq!(used(&f.txq, 1), (2, 1, 0));
    assert_eq!(f.counter("tx_dropped"), 2);
    assert_eq!(f.counter("tx_frames"), 0);
}

#[test]
fn received_frames_reach_the_guest() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    let data = frame(60, 4);
    f.queue_frame(packet(header(0, 0), &data));
    f.post_rx(&[(RXBUF, 2048, W)]);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(used(&f.rxq, 0), (1, 0, 72));
    let mut expect = packet(header(0, 0), &data);
    expect[HDR_NUM_BUFFERS] = 1;
    assert_eq!(read_mem(&mem, RXBUF, 72), expect);
    assert_eq!(f.counter("rx_frames"), 1);
    assert_eq!(f.counter("rx_bytes"), 60);
    assert!(
        !event(&mut f.net, BACKEND_EVENT, EventSet::IN),
        "nothing new: no interrupt"
    );

    // A buffer split over descriptors.
    f.queue_frame(packet(header(0, 0), &data));
    f.post_rx(&[(RXBUF + 0x1000, 20, W), (RXBUF + 0x2000, 100, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    assert_eq!(used(&f.rxq, 1), (2, 1, 72));
    let mut got = read_mem(&mem, RXBUF + 0x1000, 20);
    got.extend(read_mem(&mem, RXBUF + 0x2000, 52));
    assert_eq!(got, expect);
}

#[test]
fn frames_wait_for_receive_buffers() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    for seed in 0..3 {
        f.queue_frame(packet(header(0, 0), &frame(60, seed)));
    }
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    // One frame taken and held; the others stay in the backend.
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 2);
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 2);

    f.post_rx(&[(RXBUF, 2048, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    assert_eq!(used(&f.rxq, 0), (1, 0, 72));
    assert_eq!(read_mem(&mem, RXBUF + 12, 60), frame(60, 0));
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 1);

    f.post_rx(&[(RXBUF + 0x1000, 2048, W)]);
    f.post_rx(&[(RXBUF + 0x2000, 2048, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    assert_eq!(read_mem(&mem, RXBUF + 0x1000 + 12, 60), frame(60, 1));
    assert_eq!(read_mem(&mem, RXBUF + 0x2000 + 12, 60), frame(60, 2));
    assert_eq!(f.counter("rx_frames"), 3);
    assert_eq!(f.counter("rx_dropped"), 0);
}

#[test]
fn mergeable_buffers_carry_large_frames() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, MRG);
    let data = frame(3000, 5);
    f.queue_frame(packet(header(0, 0), &data));
    f.post_rx(&[(RXBUF, 1024, W)]);
    // One buffer is not enough: it is held, nothing is returned.
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.rxq.used().idx().load(), 0);
    f.post_rx(&[(RXBUF + 0x1000, 1024, W)]);
    f.post_rx(&[(RXBUF + 0x2000, 1024, W)]);
    f.post_rx(&[(RXBUF + 0x3000, 1024, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    assert_eq!(used(&f.rxq, 0), (3, 0, 1024));
    assert_eq!(used(&f.rxq, 1), (3, 1, 1024));
    assert_eq!(used(&f.rxq, 2), (3, 2, 3012 - 2048));
    let hdr = read_mem(&mem, RXBUF, 12);
    assert_eq!(&hdr[HDR_NUM_BUFFERS..], &[3, 0]);
    let mut got = read_mem(&mem, RXBUF + 12, 1012);
    got.extend(read_mem(&mem, RXBUF + 0x1000, 1024));
    got.extend(read_mem(&mem, RXBUF + 0x2000, 964));
    assert_eq!(got, data);

    // The fourth buffer, held back, takes the next frame.
    f.queue_frame(packet(header(0, 0), &frame(60, 6)));
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(used(&f.rxq, 3), (4, 3, 72));
    assert_eq!(
        &read_mem(&mem, RXBUF + 0x3000, 12)[HDR_NUM_BUFFERS..],
        &[1, 0]
    );
}

#[test]
fn frames_larger_than_a_non_mergeable_buffer_are_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    f.queue_frame(packet(header(0, 0), &frame(3000, 7)));
    f.queue_frame(packet(header(0, 0), &frame(100, 8)));
    f.post_rx(&[(RXBUF, 1024, W)]);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.counter("rx_dropped"), 1);
    assert_eq!(used(&f.rxq, 0), (1, 0, 112));
    assert_eq!(read_mem(&mem, RXBUF + 12, 100), frame(100, 8));
}

#[test]
fn unusable_receive_buffers_are_returned_empty() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, MRG);
    let before = read_mem(&mem, RXBUF, 0x4000);
    let end = MEM_SIZE as u64;
    f.queue_frame(packet(header(0, 0), &frame(60, 9)));
    // Read-only, outside memory, straddling its end, too small for
    // the header, empty.
    f.post_rx(&[(RXBUF, 2048, R)]);
    f.post_rx(&[(end, 2048, W)]);
    f.post_rx(&[(end - 16, 2048, W)]);
    f.post_rx(&[(RXBUF + 0x1000, 8, W)]);
    f.post_rx(&[(RXBUF + 0x2000, 0, W)]);
    f.post_rx(&[(RXBUF + 0x3000, 1024, W), (RXBUF + 0x3400, 64, R)]);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    for i in 0..6 {
        assert_eq!(used(&f.rxq, i), (6, i as u32, 0));
    }
    assert_eq!(read_mem(&mem, RXBUF, 0x4000), before);
    assert_eq!(read_mem(&mem, end - 16, 16), vec![0; 16]);
    assert_eq!(f.counter("rx_bad_buffers"), 6);
    // The frame waited for a good buffer.
    f.post_rx(&[(RXBUF + 0x5000, 2048, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    assert_eq!(used(&f.rxq, 6), (7, 7, 72));
    assert_eq!(f.counter("rx_dropped"), 0);
}

#[test]
fn receive_descriptor_loop_is_bounded() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    let looped = [
        RawDescriptor::from(SplitDescriptor::new(RXBUF, 32, W | NEXT, 1)),
        RawDescriptor::from(SplitDescriptor::new(RXBUF + 0x100, 32, W | NEXT, 0)),
    ];
    f.rxq.add_desc_chains(&looped, 0).expect("chain");
    f.queue_frame(packet(header(0, 0), &frame(400, 10)));
    // 16 descriptors of 32 bytes hold the 412-byte packet; nothing
    // beyond the two buffers is written.
    let outside = read_mem(&mem, RXBUF + 0x200, 0x1000);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(used(&f.rxq, 0), (1, 0, 412));
    assert_eq!(read_mem(&mem, RXBUF + 0x200, 0x1000), outside);
}

#[test]
fn received_frames_are_checked() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    let tso4 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    let data = frame(100, 11);

    let mut f = Fixture::new(&mem, OFFLOAD_FEATURES, 0);
    f.queue_frame(packet(header(csum, 0), &data));
    f.queue_frame(packet(header(csum, tso4), &data));
    f.queue_frame(vec![0; 5]);
    f.queue_frame(packet(header(0, 0), &data[..13]));
    f.queue_frame(packet(header(0, 0), &data));
    f.post_rx(&[(RXBUF, 2048, W)]);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.counter("rx_dropped"), 4);
    assert_eq!(f.counter("rx_frames"), 1);
    assert_eq!(used(&f.rxq, 0), (1, 0, 112));

    let acked = (1 << VIRTIO_NET_F_GUEST_CSUM) | (1 << VIRTIO_NET_F_GUEST_TSO4);
    let mut f = Fixture::new(&mem, OFFLOAD_FEATURES, acked);
    f.queue_frame(packet(header(csum, tso4), &data));
    f.post_rx(&[(RXBUF, 2048, W)]);
    assert!(event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.counter("rx_frames"), 1);
    assert_eq!(read_mem(&mem, RXBUF, 2), vec![csum, tso4]);
}

#[test]
fn config_space_holds_mac_and_link_status() {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let backend = FakeBackend { state, offloads: 0 };
    let mut net = Net::new(Box::new(backend), MAC).expect("net");
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    assert_eq!(net.mac(), MAC);
    let mut b6 = [0u8; 6];
    net.read_config(0, &mut b6);
    assert_eq!(b6, MAC.0);
    let mut b2 = [0u8; 2];
    net.read_config(6, &mut b2);
    assert_eq!(u16::from_le_bytes(b2), VIRTIO_NET_S_LINK_UP as u16);
    let mut b4 = [0xffu8; 4];
    net.read_config(4, &mut b4);
    assert_eq!(b4, [MAC.0[4], MAC.0[5], 1, 0]);
    net.read_config(7, &mut b4);
    assert_eq!(b4, [0, 0, 0, 0], "past the end reads as zero");
    net.read_config(u64::MAX, &mut b4);
    assert_eq!(b4, [0; 4]);
    net.write_config(0, &[0; 6]);
    assert_eq!(net.mac(), MAC, "the MAC is read-only");
}

#[test]
fn invalid_macs_are_refused() {
    for mac in [[0u8; 6], [0x01, 0, 0x5e, 0, 0, 1], [0xff; 6]] {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let backend = FakeBackend { state, offloads: 0 };
        assert!(matches!(
            Net::new(Box::new(backend), MacAddr(mac)),
            Err(NetError::InvalidMac(_))
        ));
    }
}

#[test]
fn features_follow_the_backend_and_the_guest() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let state = Arc::new(Mutex::new(FakeState::default()));
    let plain = Net::new(
        Box::new(FakeBackend {
            state: state.clone(),
            offloads: 0,
        }),
        MAC,
    )
    .expect("net");
    assert_eq!(plain.device_features(), BASE_FEATURES);

    let mut net = Net::new(
        Box::new(FakeBackend {
            state: state.clone(),
            offloads: u64::MAX,
        }),
        MAC,
    )
    .expect("net");
    assert_eq!(net.device_features(), BASE_FEATURES | OFFLOAD_FEATURES);
    // Segmentation without checksum offload is not passed on; features
    // never offered are dropped.
    let acked = (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_HOST_TSO6)
        | (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_TSO6)
        | (1 << 60);
    let queues = vec![
        Queue::new(16).expect("queue"),
        Queue::new(16).expect("queue"),
    ];
    net.activate(mem.clone(), irq(), queues, acked)
        .expect("activate");
    let expect = (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_GUEST_TSO6);
    assert_eq!(state.lock().expect("lock").offload, vec![expect]);

    let acked = (1 << VIRTIO_NET_F_GUEST_TSO4) | (1 << VIRTIO_NET_F_HOST_TSO6);
    assert_eq!(sanitize_features(acked), 0);
    net.reset();
    assert_eq!(state.lock().expect("lock").offload, vec![expect, 0]);
}

#[test]
fn activation_checks_queue_count_and_state() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let state = Arc::new(Mutex::new(FakeState::default()));
    let mut net = Net::new(Box::new(FakeBackend { state, offloads: 0 }), MAC).expect("net");
    let q = || Queue::new(16).expect("queue");
    assert!(matches!(
        net.activate(mem.clone(), irq(), vec![q()], 0),
        Err(ActivateError::QueueCount {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        net.activate(mem.clone(), irq(), vec![q(), q(), q()], 0),
        Err(ActivateError::QueueCount {
            expected: 2,
            got: 3
        })
    ));
    net.activate(mem.clone(), irq(), vec![q(), q()], 0)
        .expect("activate");
    assert!(matches!(
        net.activate(mem.clone(), irq(), vec![q(), q()], 0),
        Err(ActivateError::AlreadyActive)
    ));
    net.reset();
    net.activate(mem, irq(), vec![q(), q()], 0)
        .expect("activate after reset");
}

#[test]
fn inactive_device_or_unknown_queue_does_nothing() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    f.queue_frame(packet(header(0, 0), &frame(60, 12)));
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert!(!kick(&mut f.net, 2));
    assert!(!kick(&mut f.net, u16::MAX));
    // Reset drops the frame held for the guest.
    f.net.reset();
    assert_eq!(f.counter("rx_dropped"), 1);
    f.post_rx(&[(RXBUF, 2048, W)]);
    f.queue_frame(packet(header(0, 0), &frame(60, 13)));
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert!(!kick(&mut f.net, RX_QUEUE));
    assert!(!kick(&mut f.net, TX_QUEUE));
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 1);
    assert_eq!(f.rxq.used().idx().load(), 0);
    assert!(f.net.backend_fd().is_none());
}

#[test]
fn avail_index_far_ahead_is_ignored() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, 0);
    f.queue_frame(packet(header(0, 0), &frame(60, 14)));
    f.rxq.avail().idx().store(100);
    f.txq.avail().idx().store(100);
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert!(!kick(&mut f.net, TX_QUEUE));
    assert_eq!(f.rxq.used().idx().load(), 0);
    assert_eq!(f.txq.used().idx().load(), 0);
    // The frame was not even taken from the backend.
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 1);
}

#[test]
fn reset_mid_io_then_reactivation_behaves_as_fresh() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut f = Fixture::new(&mem, 0, MRG);
    // A frame staged for the guest, and a receive buffer held for it.
    f.queue_frame(packet(header(0, 0), &frame(3000, 7)));
    f.post_rx(&[(RXBUF, 1024, W)]);
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 0);

    f.net.reset();
    assert_eq!(f.counter("rx_dropped"), 1, "the staged frame is gone");
    f.queue_frame(packet(header(0, 0), &frame(60, 8)));
    assert!(!event(&mut f.net, BACKEND_EVENT, EventSet::IN));
    assert!(!kick(&mut f.net, RX_QUEUE));
    assert_eq!(f.state.lock().expect("lock").to_guest.len(), 1);

    // The next driver: new queues elsewhere, no mergeable buffers.
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0x2000), 16);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x3000), 16);
    let queues = vec![
        rxq.create_queue().expect("queue"),
        txq.create_queue().expect("queue"),
    ];
    f.net
        .activate(mem.clone(), irq(), queues, VIRTIO_F_VERSION_1)
        .expect("activate again");
    add_chain(&rxq, 0, &[(RXBUF + 0x8000, 2048, W)]);
    assert!(kick(&mut f.net, RX_QUEUE));
    // The frame queued after the reset, in the new buffer, alone.
    assert_eq!(used(&rxq, 0), (1, 0, 72));
    let mut expect = packet(header(0, 0), &frame(60, 8));
    expect[HDR_NUM_BUFFERS] = 1;
    assert_eq!(read_mem(&mem, RXBUF + 0x8000, 72), expect);
    // The buffer held from the old queue was never used.
    assert_eq!(f.rxq.used().idx().load(), 0);
    assert_eq!(f.counter("rx_frames"), 1);

    // Transmit works on the new queue.
    write_mem(&mem, DATA, &packet(header(0, 0), &frame(60, 9)));
    add_chain(&txq, 0, &[(DATA, 72, R)]);
    assert!(kick(&mut f.net, TX_QUEUE));
    assert_eq!(used(&txq, 0), (1, 0, 0));
    assert_eq!(f.sent().len(), 1);
}
