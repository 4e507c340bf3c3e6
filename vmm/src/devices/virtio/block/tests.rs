use super::*;
use crate::devices::virtio::testing::{
    add_chain, guest_mem, irq, kick, used, TempFile, NEXT, R, W,
};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

const MEM_SIZE: usize = 0x10_0000;
const HDR: u64 = 0x1000;
const STATUS: u64 = 0x1100;
const DATA: u64 = 0x2000;
const DISK_SECTORS: u64 = 16;
/// Status value no request produces, to see whether it was written.
const UNTOUCHED: u8 = 0xee;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

struct Fixture {
    disk: TempFile,
    mem: GuestMemoryMmap,
    block: Block,
}

fn fixture(tag: &str, read_only: bool) -> Fixture {
    let disk = TempFile::new(tag, &pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 0));
    let options = BlockOptions {
        read_only,
        serial: "keel-disk-0".into(),
        format: None,
    };
    let block = Block::new(disk.open(!read_only), options).expect("block");
    Fixture {
        disk,
        mem: guest_mem(&[(0, MEM_SIZE)]),
        block,
    }
}

fn activate(block: &mut Block, mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) {
    let queue: Queue = vq.create_queue().expect("queue");
    let features = block.device_features();
    block
        .activate(mem.clone(), irq(), vec![queue], features)
        .expect("activate");
}

fn write_header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&request_type.to_le_bytes());
    raw[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(HDR)).expect("header");
    mem.write_obj(UNTOUCHED, GuestAddress(STATUS))
        .expect("status");
}

fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).expect("read");
    buf
}

/// Guest memory outside the queue area, with the status byte blanked.
fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut all = read_mem(mem, 0x1000, MEM_SIZE - 0x1000);
    all[(STATUS - 0x1000) as usize] = 0;
    all
}

fn status(mem: &GuestMemoryMmap) -> u8 {
    mem.read_obj(GuestAddress(STATUS)).expect("status")
}

/// Submits one chain and returns the used length reported for it.
fn submit(
    block: &mut Block,
    vq: &MockSplitQueue<GuestMemoryMmap>,
    descs: &[(u64, u32, u16)],
) -> u32 {
    let before = vq.used().idx().load();
    add_chain(vq, 0, descs);
    assert!(kick(block, 0), "the guest should be interrupted");
    let (idx, id, len) = used(vq, usize::from(before % 16));
    assert_eq!(idx, before.wrapping_add(1), "exactly one chain returned");
    assert_eq!(id, 0);
    len
}

fn counter(block: &Block, name: &str) -> u64 {
    block
        .counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .expect("counter")
}

/// Runs a request that must fail with `expect_status` and checks that
/// neither guest memory (besides the status byte) nor the disk changed.
fn expect_refused(
    tag: &str,
    read_only: bool,
    request_type: u32,
    sector: u64,
    data: &[(u64, u32, u16)],
    expect_status: u32,
) {
    let mut f = fixture(tag, read_only);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, request_type, sector);
    let disk_before = f.disk.contents();
    let mem_before = snapshot(&f.mem);

    let mut descs = vec![(HDR, 16, R)];
    descs.extend_from_slice(data);
    descs.push((STATUS, 1, W));
    let len = submit(&mut f.block, &vq, &descs);

    assert_eq!(status(&f.mem), expect_status as u8);
    assert_eq!(len, 1, "only the status byte was written");
    assert_eq!(snapshot(&f.mem), mem_before);
    assert_eq!(f.disk.contents(), disk_before);
    assert_eq!(counter(&f.block, "errors"), 1);
    assert_eq!(
        counter(&f.block, "read_bytes") + counter(&f.block, "write_bytes"),
        0
    );
}

/// Runs a chain that must be returned unprocessed (used length 0) and
/// checks that nothing at all changed.
fn expect_dropped(tag: &str, descs: &[(u64, u32, u16)]) {
    let mut f = fixture(tag, false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_OUT, 0);
    let disk_before = f.disk.contents();
    let mem_before = read_mem(&f.mem, 0x1000, MEM_SIZE - 0x1000);

    assert_eq!(submit(&mut f.block, &vq, descs), 0);
    assert_eq!(read_mem(&f.mem, 0x1000, MEM_SIZE - 0x1000), mem_before);
    assert_eq!(f.disk.contents(), disk_before);
    assert_eq!(counter(&f.block, "errors"), 1);
}

#[test]
fn write_read_flush_get_id_round_trip() {
    let mut f = fixture("roundtrip", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);

    // Write two sectors at sector 3 from two buffers.
    let payload = pattern(1024, 0x5a);
    f.mem
        .write_slice(&payload[..512], GuestAddress(DATA))
        .expect("data");
    f.mem
        .write_slice(&payload[512..], GuestAddress(DATA + 0x1000))
        .expect("data");
    write_header(&f.mem, VIRTIO_BLK_T_OUT, 3);
    let len = submit(
        &mut f.block,
        &vq,
        &[
            (HDR, 16, R),
            (DATA, 512, R),
            (DATA + 0x1000, 512, R),
            (STATUS, 1, W),
        ],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(len, 1);
    let mut expected = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 0);
    expected[3 * 512..5 * 512].copy_from_slice(&payload);
    assert_eq!(f.disk.contents(), expected);

    // Read sectors 2..6 back into one buffer.
    write_header(&f.mem, VIRTIO_BLK_T_IN, 2);
    let len = submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, R), (0x8000, 2048, W), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(len, 2048 + 1);
    assert_eq!(read_mem(&f.mem, 0x8000, 2048), expected[2 * 512..6 * 512]);
    assert_eq!(
        read_mem(&f.mem, 0x8000 + 2048, 16),
        vec![0; 16],
        "nothing past the buffer"
    );

    write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(
        submit(&mut f.block, &vq, &[(HDR, 16, R), (STATUS, 1, W)]),
        1
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);

    write_header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
    let len = submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, R), (0x9000, 20, W), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(len, 21);
    let mut id = b"keel-disk-0".to_vec();
    id.resize(20, 0);
    assert_eq!(read_mem(&f.mem, 0x9000, 20), id);

    assert_eq!(
        f.block.counters(),
        vec![
            ("read_requests", 1),
            ("write_requests", 1),
            ("flush_requests", 1),
            ("read_bytes", 2048),
            ("write_bytes", 1024),
            ("errors", 0),
        ]
    );
}

#[test]
fn get_id_fills_only_the_buffer_given() {
    let mut f = fixture("shortid", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
    f.mem
        .write_slice(&[0xaa; 16], GuestAddress(0x9000))
        .expect("fill");
    let len = submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, R), (0x9000, 8, W), (STATUS, 1, W)],
    );
    assert_eq!(len, 9);
    assert_eq!(
        read_mem(&f.mem, 0x9000, 16),
        [b"keel-dis".as_slice(), &[0xaa; 8]].concat()
    );
}

#[test]
fn request_reaching_the_last_sector_is_served() {
    let mut f = fixture("lastsector", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
    submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
}

#[test]
fn header_too_short_is_an_io_error() {
    let mut f = fixture("shorthdr", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_OUT, 0);
    let disk_before = f.disk.contents();
    submit(
        &mut f.block,
        &vq,
        &[(HDR, 8, R), (DATA, 512, R), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(f.disk.contents(), disk_before);
}

#[test]
fn writable_header_is_an_io_error() {
    let mut f = fixture("wrhdr", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
    let mem_before = snapshot(&f.mem);
    submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, W), (DATA, 512, W), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(snapshot(&f.mem), mem_before);
}

#[test]
fn header_outside_guest_memory_is_an_io_error() {
    let mut f = fixture("oomhdr", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
    submit(
        &mut f.block,
        &vq,
        &[(MEM_SIZE as u64 - 8, 16, R), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn chain_without_status_descriptor_is_dropped() {
    expect_dropped("nostatus", &[(HDR, 16, R)]);
    expect_dropped("nostatus2", &[(HDR, 16, R), (DATA, 512, R)]);
}

#[test]
fn read_only_status_descriptor_is_dropped() {
    expect_dropped("rostatus", &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, R)]);
}

#[test]
fn empty_status_descriptor_is_dropped() {
    expect_dropped(
        "emptystatus",
        &[(HDR, 16, R), (DATA, 512, R), (STATUS, 0, W)],
    );
}

#[test]
fn status_outside_guest_memory_is_dropped() {
    expect_dropped(
        "oomstatus",
        &[(HDR, 16, R), (DATA, 512, R), (MEM_SIZE as u64, 1, W)],
    );
    expect_dropped(
        "oomstatus2",
        &[(HDR, 16, R), (DATA, 512, R), (u64::MAX, 1, W)],
    );
}

#[test]
fn sector_past_the_end_is_an_io_error() {
    expect_refused(
        "pastend",
        false,
        VIRTIO_BLK_T_IN,
        DISK_SECTORS,
        &[(DATA, 512, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "pastend2",
        false,
        VIRTIO_BLK_T_OUT,
        DISK_SECTORS,
        &[(DATA, 512, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn request_straddling_the_end_is_an_io_error() {
    expect_refused(
        "straddle",
        false,
        VIRTIO_BLK_T_OUT,
        DISK_SECTORS - 1,
        &[(DATA, 1024, R)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "straddle2",
        false,
        VIRTIO_BLK_T_IN,
        DISK_SECTORS - 1,
        &[(DATA, 1024, W)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn overflowing_sector_is_an_io_error() {
    expect_refused(
        "overflow",
        false,
        VIRTIO_BLK_T_IN,
        u64::MAX,
        &[(DATA, 512, W)],
        VIRTIO_BLK_S_IOERR,
    );
    // sector * 512 fits, adding the length does not.
    expect_refused(
        "overflow2",
        false,
        VIRTIO_BLK_T_OUT,
        u64::MAX / 512,
        &[(DATA, 1024, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn partial_sector_is_an_io_error() {
    expect_refused(
        "partial",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(DATA, 100, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "partial2",
        false,
        VIRTIO_BLK_T_OUT,
        0,
        &[(DATA, 512, R), (DATA + 0x1000, 1, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn write_to_read_only_disk_is_an_io_error() {
    expect_refused(
        "rodisk",
        true,
        VIRTIO_BLK_T_OUT,
        0,
        &[(DATA, 512, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn read_only_disk_offers_ro_and_still_reads() {
    let mut f = fixture("roread", true);
    assert_ne!(f.block.device_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 1);
    submit(
        &mut f.block,
        &vq,
        &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
    );
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_mem(&f.mem, DATA, 512), f.disk.contents()[512..1024]);
}

#[test]
fn data_in_the_wrong_direction_is_an_io_error() {
    expect_refused(
        "dir",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(DATA, 512, R)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "dir2",
        false,
        VIRTIO_BLK_T_OUT,
        0,
        &[(DATA, 512, R), (DATA + 0x1000, 512, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "dir3",
        false,
        VIRTIO_BLK_T_GET_ID,
        0,
        &[(DATA, 20, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn zero_length_data_descriptor_is_an_io_error() {
    expect_refused(
        "zerolen",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(DATA, 512, W), (DATA + 0x1000, 0, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "zerolen2",
        false,
        VIRTIO_BLK_T_OUT,
        0,
        &[(DATA, 0, R)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn data_outside_guest_memory_is_an_io_error() {
    let end = MEM_SIZE as u64;
    expect_refused(
        "oomdata",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(end, 512, W)],
        VIRTIO_BLK_S_IOERR,
    );
    // Straddling the end: the part inside must not be written either.
    expect_refused(
        "oomdata2",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(DATA, 512, W), (end - 512, 1024, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "oomdata3",
        false,
        VIRTIO_BLK_T_OUT,
        0,
        &[(end - 512, 1024, R)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "oomdata4",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(u64::MAX - 511, 512, W)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "oomdata5",
        false,
        VIRTIO_BLK_T_GET_ID,
        0,
        &[(end - 4, 20, W)],
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn data_across_a_hole_in_guest_memory_is_an_io_error() {
    let disk = TempFile::new("hole", &pattern(8192, 0));
    let mut block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
    // Two regions with a hole between 0x10000 and 0x20000.
    let mem = guest_mem(&[(0, 0x1_0000), (0x2_0000, 0x1_0000)]);
    let vq = MockSplitQueue::new(&mem, 16);
    activate(&mut block, &mem, &vq);
    write_header(&mem, VIRTIO_BLK_T_IN, 0);
    add_chain(
        &vq,
        0,
        &[(HDR, 16, R), (0x1_0000 - 512, 1024, W), (STATUS, 1, W)],
    );
    assert!(kick(&mut block, 0));
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(read_mem(&mem, 0x1_0000 - 512, 512), vec![0; 512]);

    // Adjacent regions are fine: one buffer may span both.
    let mem = guest_mem(&[(0, 0x1_0000), (0x1_0000, 0x1_0000)]);
    let vq = MockSplitQueue::new(&mem, 16);
    block.reset();
    activate(&mut block, &mem, &vq);
    write_header(&mem, VIRTIO_BLK_T_IN, 0);
    add_chain(
        &vq,
        0,
        &[(HDR, 16, R), (0x1_0000 - 512, 1024, W), (STATUS, 1, W)],
    );
    assert!(kick(&mut block, 0));
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_mem(&mem, 0x1_0000 - 512, 1024), pattern(1024, 0));
}

#[test]
fn oversized_request_is_an_io_error() {
    let len = (MAX_REQUEST_BYTES + 512) as u32;
    expect_refused(
        "huge",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[(DATA, len, W)],
        VIRTIO_BLK_S_IOERR,
    );
    // Descriptors each under the limit but together over it.
    let two_mib = 2 << 20;
    let many = [(DATA, two_mib, W), (DATA, two_mib, W), (DATA, two_mib, W)];
    expect_refused(
        "huge2",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &many,
        VIRTIO_BLK_S_IOERR,
    );
    // Past 4 GiB in total the chain iterator itself stops, leaving a
    // chain without status: dropped.
    expect_dropped(
        "huge3",
        &[(HDR, 16, R), (DATA, u32::MAX, W), (STATUS, 1, W)],
    );
}

#[test]
fn request_at_the_size_limit_is_served() {
    let disk = TempFile::new("limit", &[]);
    let file = disk.open(true);
    file.set_len(MAX_REQUEST_BYTES).expect("grow disk");
    let mut block = Block::new(file, BlockOptions::default()).expect("block");
    let mem = guest_mem(&[(0, 2 * MAX_REQUEST_BYTES as usize)]);
    let vq = MockSplitQueue::new(&mem, 16);
    activate(&mut block, &mem, &vq);
    mem.write_slice(&[0x77; 4096], GuestAddress(MAX_REQUEST_BYTES - 4096))
        .expect("fill");
    write_header(&mem, VIRTIO_BLK_T_OUT, 0);
    add_chain(
        &vq,
        0,
        &[
            (HDR, 16, R),
            (0x10000, MAX_REQUEST_BYTES as u32 - 0x10000, R),
            (0, 0x10000, R),
            (STATUS, 1, W),
        ],
    );
    assert!(kick(&mut block, 0));
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(counter(&block, "write_bytes"), MAX_REQUEST_BYTES);
    let contents = disk.contents();
    let tail = (MAX_REQUEST_BYTES - 0x10000 - 4096) as usize;
    assert_eq!(contents[tail..tail + 4096], [0x77; 4096]);
}

#[test]
fn unsupported_request_type_is_reported() {
    expect_refused(
        "unsupp",
        false,
        11,
        0,
        &[(DATA, 512, R)],
        VIRTIO_BLK_S_UNSUPP,
    );
    expect_refused("unsupp2", false, u32::MAX, 0, &[], VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn descriptor_loop_is_bounded_by_the_queue_size() {
    let mut f = fixture("loop", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
    // 0 -> 1 -> 0 -> ...: the chain iterator stops after 16 descriptors.
    let looped = [
        RawDescriptor::from(SplitDescriptor::new(HDR, 16, NEXT, 1)),
        RawDescriptor::from(SplitDescriptor::new(STATUS, 1, W | NEXT, 0)),
    ];
    vq.add_desc_chains(&looped, 0).expect("chain");
    let queue: Queue = vq.create_queue().expect("queue");
    let mut probe = queue;
    let chain = probe.pop_descriptor_chain(&f.mem).expect("chain");
    assert_eq!(chain.count(), 16);

    let mem_before = snapshot(&f.mem);
    assert!(kick(&mut f.block, 0));
    let (idx, id, len) = used(&vq, 0);
    assert_eq!((idx, id, len), (1, 0, 1));
    // The chain ends on the writable descriptor, but the header repeats
    // among the data: refused.
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(snapshot(&f.mem), mem_before);
}

#[test]
fn chain_longer_than_the_request_limit_is_dropped() {
    let disk = TempFile::new("longchain", &pattern(512, 0));
    let mut block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, 256);
    activate(&mut block, &mem, &vq);
    write_header(&mem, VIRTIO_BLK_T_OUT, 0);
    let mut descs = vec![(HDR, 16, R)];
    descs.extend((0..MAX_DESCRIPTORS as u64).map(|i| (0x4000 + i * 0x1000, 512, R)));
    descs.push((STATUS, 1, W));
    add_chain(&vq, 0, &descs);
    assert!(kick(&mut block, 0));
    assert_eq!(used(&vq, 0), (1, 0, 0));
    assert_eq!(status(&mem), UNTOUCHED);
    assert_eq!(disk.contents(), pattern(512, 0));
}

#[test]
fn several_chains_are_served_in_one_notify() {
    let mut f = fixture("several", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
    add_chain(&vq, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    add_chain(
        &vq,
        3,
        &[(HDR, 16, R), (DATA + 0x1000, 512, W), (STATUS + 1, 1, W)],
    );
    assert!(kick(&mut f.block, 0));
    assert_eq!(used(&vq, 0), (2, 0, 513));
    assert_eq!(used(&vq, 1), (2, 3, 513));
    assert_eq!(counter(&f.block, "read_requests"), 2);
    assert!(!kick(&mut f.block, 0), "nothing new: no interrupt");
}

#[test]
fn avail_index_far_ahead_is_ignored() {
    let mut f = fixture("availidx", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    vq.avail().idx().store(100);
    assert!(!kick(&mut f.block, 0));
    assert_eq!(vq.used().idx().load(), 0);
}

#[test]
fn head_index_outside_the_table_is_dropped() {
    let mut f = fixture("badhead", false);
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    vq.avail().ring().ref_at(0).expect("ring").store(40);
    vq.avail().idx().store(1);
    // Nothing can be returned for a head the used ring cannot name.
    assert!(!kick(&mut f.block, 0));
    assert_eq!(counter(&f.block, "errors"), 1);
    // The queue keeps working afterwards.
    write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
    assert!(kick(&mut f.block, 0));
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
}

#[test]
fn inactive_device_or_unknown_queue_does_nothing() {
    let mut f = fixture("inactive", false);
    assert!(!kick(&mut f.block, 0));
    let vq = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &vq);
    write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
    assert!(!kick(&mut f.block, 1));
    assert!(!kick(&mut f.block, u16::MAX));
    f.block.reset();
    assert!(!kick(&mut f.block, 0));
    assert_eq!(status(&f.mem), UNTOUCHED);
}

#[test]
fn activation_checks_queue_count_and_state() {
    let mut f = fixture("activate", false);
    let mem = f.mem.clone();
    assert!(matches!(
        f.block.activate(mem.clone(), irq(), vec![], 0),
        Err(ActivateError::QueueCount {
            expected: 1,
            got: 0
        })
    ));
    let two = vec![
        Queue::new(16).expect("queue"),
        Queue::new(16).expect("queue"),
    ];
    assert!(matches!(
        f.block.activate(mem.clone(), irq(), two, 0),
        Err(ActivateError::QueueCount {
            expected: 1,
            got: 2
        })
    ));
    f.block
        .activate(mem.clone(), irq(), vec![Queue::new(16).expect("queue")], 0)
        .expect("activate");
    assert!(matches!(
        f.block
            .activate(mem.clone(), irq(), vec![Queue::new(16).expect("queue")], 0),
        Err(ActivateError::AlreadyActive)
    ));
    f.block.reset();
    f.block
        .activate(mem, irq(), vec![Queue::new(16).expect("queue")], 0)
        .expect("activate after reset");
}

#[test]
fn config_space_describes_the_disk() {
    let mut f = fixture("config", false);
    assert_eq!(f.block.device_type(), 2);
    assert_eq!(f.block.queue_max_sizes(), &[QUEUE_SIZE]);
    assert_eq!(f.block.capacity(), DISK_SECTORS);
    let features = f.block.device_features();
    for bit in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
    ] {
        assert_ne!(features & (1 << bit), 0, "feature {bit}");
    }
    assert_eq!(features & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);

    let mut b8 = [0u8; 8];
    f.block.read_config(0, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), DISK_SECTORS);
    let mut b4 = [0u8; 4];
    f.block.read_config(8, &mut b4);
    assert_eq!(u32::from_le_bytes(b4), SEGMENT_SIZE_MAX);
    f.block.read_config(12, &mut b4);
    assert_eq!(u32::from_le_bytes(b4), SEG_MAX);
    f.block.read_config(20, &mut b4);
    assert_eq!(u32::from_le_bytes(b4), 512);
    f.block.read_config(22, &mut b4);
    assert_eq!(b4, [0, 0, 0, 0], "past the end reads as zero");
    f.block.read_config(0xf00, &mut b8);
    assert_eq!(b8, [0; 8]);

    f.block.write_config(0, &[0xff; 8]);
    f.block.read_config(0, &mut b8);
    assert_eq!(
        u64::from_le_bytes(b8),
        DISK_SECTORS,
        "capacity is read-only"
    );
}

#[test]
fn partial_trailing_sector_is_not_exposed() {
    let disk = TempFile::new("ragged", &pattern(1000, 0));
    let block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
    assert_eq!(block.capacity(), 1);
}

#[test]
fn serial_longer_than_20_bytes_is_refused() {
    let disk = TempFile::new("serial", &pattern(512, 0));
    let options = BlockOptions {
        read_only: false,
        serial: "x".repeat(21),
        format: None,
    };
    assert!(matches!(
        Block::new(disk.open(true), options),
        Err(BlockError::SerialTooLong(21))
    ));
    let options = BlockOptions {
        read_only: false,
        serial: "y".repeat(20),
        format: None,
    };
    Block::new(disk.open(true), options).expect("20 bytes fit");
}

#[test]
fn open_reports_missing_files() {
    let path =
        std::env::temp_dir().join(format!("keel-vmm-test-{}-missing.img", std::process::id()));
    assert!(matches!(
        Block::open(&path, BlockOptions::default()),
        Err(BlockError::Open { .. })
    ));
}

#[test]
fn reset_mid_io_then_reactivation_behaves_as_fresh() {
    let mut f = fixture("reset", false);
    let old = MockSplitQueue::new(&f.mem, 16);
    activate(&mut f.block, &f.mem, &old);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 1);
    assert_eq!(
        submit(
            &mut f.block,
            &old,
            &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]
        ),
        513
    );
    // A second request made available but never kicked: half done when
    // the driver resets (a kexec'd kernel does exactly this).
    write_header(&f.mem, VIRTIO_BLK_T_OUT, 0);
    add_chain(&old, 3, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    let disk_before = f.disk.contents();
    f.block.reset();
    assert!(!kick(&mut f.block, 0), "reset: no queue, no interrupt");

    // New queues elsewhere, as the next kernel sets them up.
    let new = MockSplitQueue::create(&f.mem, GuestAddress(0x8_0000), 16);
    activate(&mut f.block, &f.mem, &new);
    write_header(&f.mem, VIRTIO_BLK_T_IN, 2);
    add_chain(&new, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert!(kick(&mut f.block, 0));
    assert_eq!(used(&new, 0), (1, 0, 513));
    assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_mem(&f.mem, DATA, 512), disk_before[1024..1536]);
    // The old queue's pending request was never served.
    assert_eq!(old.used().idx().load(), 1);
    assert_eq!(f.disk.contents(), disk_before);
    // Counters survive the reset.
    assert_eq!(counter(&f.block, "read_requests"), 2);
    assert_eq!(counter(&f.block, "write_requests"), 0);
}

#[test]
fn readable_after_writable_is_an_io_error_whatever_the_request() {
    // The direction rule, even for a flush that ignores its data.
    expect_refused(
        "order-flush",
        false,
        VIRTIO_BLK_T_FLUSH,
        0,
        &[(DATA, 512, W), (DATA + 0x1000, 512, R)],
        VIRTIO_BLK_S_IOERR,
    );
    expect_refused(
        "order-in",
        false,
        VIRTIO_BLK_T_IN,
        0,
        &[
            (DATA, 512, W),
            (DATA + 0x1000, 512, R),
            (DATA + 0x2000, 512, W),
        ],
        VIRTIO_BLK_S_IOERR,
    );
}

mod qcow2;
