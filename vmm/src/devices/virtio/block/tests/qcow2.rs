//! virtio-blk over qcow2 images that `qemu-img` makes, compared with what
//! `qemu-img` reads back; the format rule; backing files; hostile images.
//! `qemu-img` (Debian's qemu-utils, installed by `make deps`) is required:
//! without it these tests fail.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::devices::virtio::block::format::QCOW2_MAGIC;

const MIB: u64 = 1 << 20;

/// Runs `qemu-img args`, which must succeed; returns its stdout.
#[track_caller]
fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run qemu-img ({e}): install qemu-utils (`make deps` does)")
        });
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch data partition with `images/` and `disks/`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("keel-vmm-qcow2-")
        .tempdir()
        .expect("temp dir");
    for sub in ["images", "disks"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn open_rw(path: &Path, writable: bool) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .expect("open image")
}

fn options(format: Option<DiskFormat>, read_only: bool) -> BlockOptions {
    BlockOptions {
        read_only,
        serial: String::new(),
        format,
    }
}

fn qcow2_options() -> BlockOptions {
    options(Some(DiskFormat::Qcow2), false)
}

/// Opens `path` as a disk of `dir` named by its path beneath `dir`.
fn open_disk(
    dir: &Path,
    path: &Path,
    options: BlockOptions,
    backing: Option<BackingImage>,
) -> Result<Block, BlockError> {
    let image = DiskImage {
        file: open_rw(path, !options.read_only),
        path: path.strip_prefix(dir).expect("beneath dir").to_path_buf(),
        backing,
    };
    Block::open_image(image, options)
}

/// The spec's `images/NAME`, opened read-only as keel-vmm does.
fn backing(dir: &Path, rel: &str) -> BackingImage {
    BackingImage {
        file: open_rw(&dir.join(rel), false),
        path: PathBuf::from(rel),
        host_path: dir.join(rel),
    }
}

/// A block device with its guest memory and queue, driven like a driver.
struct Guest {
    block: Block,
    mem: GuestMemoryMmap,
    vq: MockSplitQueue<'static, GuestMemoryMmap>,
}

impl Guest {
    fn new(mut block: Block) -> Self {
        // The mock queue borrows guest memory for as long as it lives.
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(guest_mem(&[(0, MEM_SIZE)])));
        let vq = MockSplitQueue::new(mem, 16);
        activate(&mut block, mem, &vq);
        Guest {
            block,
            mem: mem.clone(),
            vq,
        }
    }

    fn request(&mut self, request_type: u32, sector: u64, data: &[(u64, u32, u16)]) -> u8 {
        write_header(&self.mem, request_type, sector);
        let mut descs = vec![(HDR, 16, R)];
        descs.extend_from_slice(data);
        descs.push((STATUS, 1, W));
        submit(&mut self.block, &self.vq, &descs);
        status(&self.mem)
    }

    /// Reads `len` bytes at `sector`; the status and the data.
    fn read(&mut self, sector: u64, len: u32) -> (u8, Vec<u8>) {
        self.mem
            .write_slice(&vec![0xaa; len as usize], GuestAddress(DATA))
            .expect("poison");
        let status = self.request(VIRTIO_BLK_T_IN, sector, &[(DATA, len, W)]);
        (status, read_mem(&self.mem, DATA, len as usize))
    }

    /// Writes `data` at `sector` as two segments, the first `split` bytes.
    fn write_split(&mut self, sector: u64, data: &[u8], split: usize) -> u8 {
        self.mem
            .write_slice(data, GuestAddress(DATA))
            .expect("data");
        let (a, b) = (split as u32, (data.len() - split) as u32);
        let mut segments = vec![(DATA, a, R)];
        if b > 0 {
            segments.push((DATA + u64::from(a), b, R));
        }
        self.request(VIRTIO_BLK_T_OUT, sector, &segments)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        self.write_split(sector, data, data.len())
    }

    fn flush(&mut self) -> u8 {
        self.request(VIRTIO_BLK_T_FLUSH, 0, &[])
    }

    fn qcow2_failed(&self) -> bool {
        match &self.block.disk.backend {
            Backend::Qcow2(image) => image.failed(),
            Backend::Raw(_) => false,
        }
    }
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

#[test]
fn qcow2_converted_by_qemu_img_reads_back_with_zeroes_where_unallocated() {
    let dir = scratch();
    let raw = dir.path().join("images/src.raw");
    let mut content = vec![0u8; (4 * MIB) as usize];
    content[..64 * 1024].copy_from_slice(&pattern(64 * 1024, 1));
    content[(3 * MIB) as usize..(3 * MIB) as usize + 4096].copy_from_slice(&pattern(4096, 2));
    std::fs::write(&raw, &content).expect("raw");
    let qcow2 = dir.path().join("images/conv.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&qcow2)]);
    // convert leaves zero clusters unallocated: the file is much smaller.
    assert!(std::fs::metadata(&qcow2).expect("size").len() < MIB);

    let block = open_disk(
        dir.path(),
        &qcow2,
        options(Some(DiskFormat::Qcow2), true),
        None,
    )
    .expect("qcow2 opens");
    assert_eq!(block.capacity(), 4 * MIB / SECTOR_SIZE);
    let mut g = Guest::new(block);
    assert_ne!(g.block.device_features() & (1 << VIRTIO_BLK_F_RO), 0);
    for (sector, len) in [(0u64, 65536u32), (3 * MIB / 512, 4096), (6, 1024)] {
        let (status, data) = g.read(sector, len);
        assert_eq!(status, OK);
        let at = (sector * 512) as usize;
        assert_eq!(data, &content[at..at + len as usize], "sector {sector}");
    }
    // Unallocated: zeroes, not the poison the buffer held.
    let (status, data) = g.read(2 * MIB / 512, 8192);
    assert_eq!(status, OK);
    assert!(data.iter().all(|&b| b == 0));
    // Read-only stays read-only, and past the virtual size is refused.
    assert_eq!(g.write(0, &[1; 512]), IOERR);
    assert_eq!(g.read(4 * MIB / 512, 512).0, IOERR);
}

#[test]
fn writes_through_the_device_match_an_equivalent_raw_image() {
    let dir = scratch();
    let qcow2 = dir.path().join("disks/web.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&qcow2), "8M"]);
    let raw = dir.path().join("disks/web.raw");
    let raw_file = File::create(&raw).expect("raw");
    raw_file.set_len(8 * MIB).expect("size");

    let mut g = Guest::new(open_disk(dir.path(), &qcow2, qcow2_options(), None).expect("open"));
    // One sector, a run across a cluster boundary (64 KiB clusters) in two
    // segments, an overwrite, and a write at the last sector.
    let writes: [(u64, Vec<u8>, usize); 4] = [
        (1, pattern(512, 3), 512),
        (127, pattern(8 * 512, 4), 1536),
        (2, pattern(1024, 5), 512),
        (8 * MIB / 512 - 1, pattern(512, 6), 512),
    ];
    for (sector, data, split) in &writes {
        assert_eq!(g.write_split(*sector, data, *split), OK);
        raw_file
            .write_all_at(data, sector * 512)
            .expect("raw write");
        let (status, back) = g.read(*sector, data.len() as u32);
        assert_eq!((status, &back), (OK, data));
    }
    assert_eq!(g.flush(), OK);
    assert_eq!(counter(&g.block, "flush_requests"), 1);
    drop(g);

    qemu_img(&["check", "-q", s(&qcow2)]);
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        s(&qcow2),
        s(&raw),
    ]);
}

#[test]
fn one_sector_written_into_a_large_image_allocates_one_cluster() {
    let dir = scratch();
    let qcow2 = dir.path().join("disks/big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&qcow2), "1G"]);
    let before = std::fs::metadata(&qcow2).expect("size").len();

    let block = open_disk(dir.path(), &qcow2, qcow2_options(), None).expect("open");
    assert_eq!(block.capacity(), 1024 * MIB / SECTOR_SIZE);
    let mut g = Guest::new(block);
    let sector = 700 * MIB / 512 + 3;
    let (status, zero) = g.read(sector, 4096);
    assert_eq!(status, OK);
    assert!(zero.iter().all(|&b| b == 0));
    assert_eq!(g.write(sector, &pattern(512, 7)), OK);
    assert_eq!(g.flush(), OK);
    assert_eq!(g.read(sector, 512), (OK, pattern(512, 7)));
    // Its neighbours in the new cluster read as zero.
    let (_, around) = g.read(sector - 3, 4096);
    assert!(around[..1536].iter().all(|&b| b == 0));
    assert!(around[2048..].iter().all(|&b| b == 0));
    drop(g);

    // One 64 KiB data cluster plus an L2 table; nowhere near 1 GiB.
    let after = std::fs::metadata(&qcow2).expect("size").len();
    assert!(after <= before + 3 * 64 * 1024, "{before} -> {after}");
    qemu_img(&["check", "-q", s(&qcow2)]);
    // The guest bytes the image holds data for: that one cluster.
    let map = qemu_img(&["map", "--output=json", s(&qcow2)]);
    let present: u64 = map
        .lines()
        .filter(|l| l.contains("\"present\": true"))
        .map(|l| {
            let length = l.split("\"length\": ").nth(1).expect("length");
            length
                .split(',')
                .next()
                .expect("number")
                .parse::<u64>()
                .expect("u64")
        })
        .sum();
    assert_eq!(present, 64 * 1024, "{map}");
}

#[test]
fn the_format_must_be_declared_and_match_the_header() {
    let dir = scratch();
    let qcow2 = dir.path().join("disks/q.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&qcow2), "1M"]);
    let raw = dir.path().join("disks/r.raw");
    std::fs::write(&raw, pattern(MIB as usize, 8)).expect("raw");

    // Declared qcow2 but raw: refused.
    let err = open_disk(dir.path(), &raw, qcow2_options(), None)
        .err()
        .expect("raw is not qcow2")
        .to_string();
    assert!(
        err.contains("disk `disks/r.raw`") && err.contains("declared qcow2"),
        "{err}"
    );
    // qcow2 with no format declared: refused, never detected.
    let err = open_disk(dir.path(), &qcow2, options(None, false), None)
        .err()
        .expect("undeclared qcow2")
        .to_string();
    assert!(err.contains("format = \"qcow2\""), "{err}");
    // Declared raw: the bytes as they are, header and all.
    let block = open_disk(
        dir.path(),
        &qcow2,
        options(Some(DiskFormat::Raw), true),
        None,
    )
    .expect("raw");
    let file_len = std::fs::metadata(&qcow2).expect("len").len();
    assert_eq!(block.capacity(), file_len / SECTOR_SIZE);
    let (status, head) = Guest::new(block).read(0, 512);
    assert_eq!((status, &head[..4]), (OK, &QCOW2_MAGIC[..]));
    // A raw disk with no format stays raw.
    let block = open_disk(dir.path(), &raw, options(None, false), None).expect("raw");
    assert_eq!(block.capacity(), MIB / SECTOR_SIZE);
    // A backing file is for qcow2 only.
    std::fs::write(dir.path().join("images/b.raw"), [0u8; 512]).expect("b");
    let err = open_disk(
        dir.path(),
        &raw,
        options(Some(DiskFormat::Raw), false),
        Some(backing(dir.path(), "images/b.raw")),
    )
    .err()
    .expect("raw with backing")
    .to_string();
    assert!(err.contains("only a qcow2 image"), "{err}");
}

#[test]
fn a_qcow2_header_a_guest_writes_into_its_raw_disk_is_never_read_as_qcow2() {
    let dir = scratch();
    let raw = dir.path().join("disks/guest.raw");
    std::fs::write(&raw, vec![0u8; MIB as usize]).expect("raw");
    // What the guest writes: a real qcow2 header naming a host file as
    // its backing file.
    let evil = dir.path().join("disks/evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        s(&evil),
        "1M",
    ]);
    let header = std::fs::read(&evil).expect("evil")[..4096].to_vec();

    let mut g = Guest::new(open_disk(dir.path(), &raw, options(None, false), None).expect("raw"));
    assert_eq!(g.write(0, &header), OK);
    assert_eq!(g.flush(), OK);
    drop(g);

    // Next boot with the same spec: refused, not reinterpreted.
    let err = open_disk(dir.path(), &raw, options(None, false), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("names no format"), "{err}");
    // Even declared qcow2, its backing file is refused.
    let err = open_disk(dir.path(), &raw, qcow2_options(), None)
        .err()
        .expect("backing refused")
        .to_string();
    assert!(
        err.contains("/etc/passwd") && err.contains("refused"),
        "{err}"
    );
    // Declared raw, the guest gets its bytes back.
    let block = open_disk(
        dir.path(),
        &raw,
        options(Some(DiskFormat::Raw), false),
        None,
    )
    .expect("raw");
    assert_eq!(block.capacity(), MIB / SECTOR_SIZE);
    let (status, back) = Guest::new(block).read(0, 4096);
    assert_eq!((status, back), (OK, header));
}

/// `images/base.qcow2` holding a pattern in its first 64 KiB, and
/// `disks/web.qcow2` over it, naming it as `backing_name`.
fn overlay(dir: &Path, backing_name: &str) -> (PathBuf, PathBuf) {
    let src = dir.join("images/base.raw");
    std::fs::write(&src, {
        let mut v = pattern(64 * 1024, 9);
        v.resize(MIB as usize, 0);
        v
    })
    .expect("src");
    let base = dir.join("images/base.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&base)]);
    let web = dir.join("disks/web.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing_name,
        "-F",
        "qcow2",
        s(&web),
    ]);
    (base, web)
}

#[test]
fn a_backing_file_is_refused_unless_the_spec_allows_that_one() {
    let dir = scratch();
    let (base, web) = overlay(dir.path(), "../images/base.qcow2");

    let err = open_disk(dir.path(), &web, qcow2_options(), None)
        .err()
        .expect("refused by default")
        .to_string();
    assert!(err.contains("backing files are refused"), "{err}");
    assert!(err.contains("images/base.qcow2"), "{err}");

    // Another file allowed than the one the header names: refused.
    std::fs::copy(&base, dir.path().join("images/other.qcow2")).expect("copy");
    let err = open_disk(
        dir.path(),
        &web,
        qcow2_options(),
        Some(backing(dir.path(), "images/other.qcow2")),
    )
    .err()
    .expect("other backing")
    .to_string();
    assert!(err.contains("allows only `images/other.qcow2`"), "{err}");

    // The spec names a backing file the image does not have.
    let plain = dir.path().join("disks/plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&plain), "1M"]);
    let err = open_disk(
        dir.path(),
        &plain,
        qcow2_options(),
        Some(backing(dir.path(), "images/base.qcow2")),
    )
    .err()
    .expect("unused backing")
    .to_string();
    assert!(err.contains("the image has none"), "{err}");
}

#[test]
fn an_allowed_backing_file_is_read_beneath_and_never_written() {
    for name in ["../images/base.qcow2", "ABSOLUTE"] {
        let dir = scratch();
        let absolute = dir.path().join("images/base.qcow2");
        let name = if name == "ABSOLUTE" {
            s(&absolute)
        } else {
            name
        };
        let (base, web) = overlay(dir.path(), name);
        let base_before = std::fs::read(&base).expect("base");

        let block = open_disk(
            dir.path(),
            &web,
            qcow2_options(),
            Some(backing(dir.path(), "images/base.qcow2")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(block.capacity(), MIB / SECTOR_SIZE);
        let mut g = Guest::new(block);
        assert_eq!(g.read(0, 65536), (OK, pattern(64 * 1024, 9)));
        // A write into a backed cluster copies the rest of it up.
        assert_eq!(g.write(4, &pattern(512, 10)), OK);
        let (status, data) = g.read(0, 4096);
        let mut want = pattern(4096, 9);
        want[2048..2560].copy_from_slice(&pattern(512, 10));
        assert_eq!((status, data), (OK, want));
        assert_eq!(g.flush(), OK);
        drop(g);

        assert_eq!(std::fs::read(&base).expect("base"), base_before, "{name}");
        qemu_img(&["check", "-q", s(&web)]);
    }
}

#[test]
fn a_backing_file_with_a_backing_file_of_its_own_is_refused() {
    let dir = scratch();
    let root = dir.path().join("images/root.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&root), "1M"]);
    let base = dir.path().join("images/base.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "root.qcow2",
        "-F",
        "qcow2",
        s(&base),
    ]);
    let web = dir.path().join("disks/web.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "../images/base.qcow2",
        "-F",
        "qcow2",
        s(&web),
    ]);
    let err = open_disk(
        dir.path(),
        &web,
        qcow2_options(),
        Some(backing(dir.path(), "images/base.qcow2")),
    )
    .err()
    .expect("chain refused")
    .to_string();
    assert!(err.contains("no backing file of its own"), "{err}");
}

#[test]
fn an_external_data_file_is_refused() {
    let dir = scratch();
    let web = dir.path().join("disks/web.qcow2");
    let data = dir.path().join("disks/web.data");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(&data)),
        s(&web),
        "1M",
    ]);
    let err = open_disk(dir.path(), &web, qcow2_options(), None)
        .err()
        .expect("data file refused")
        .to_string();
    assert!(err.contains("external data file"), "{err}");
}

/// A valid 64 MiB qcow2 image with data in its first cluster, as bytes.
fn valid_image(dir: &Path) -> Vec<u8> {
    let src = dir.join("images/src.raw");
    let mut content = pattern(128 * 1024, 11);
    content.resize((64 * MIB) as usize, 0);
    std::fs::write(&src, content).expect("src");
    let qcow2 = dir.join("images/valid.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&qcow2)]);
    std::fs::read(&qcow2).expect("valid")
}

fn be_u64(image: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(image[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn hostile_images_fail_at_open_or_with_io_errors_never_a_panic() {
    let dir = scratch();
    let valid = valid_image(dir.path());
    let l1_offset = be_u64(&valid, 40) as usize;
    let refcount_table = be_u64(&valid, 48) as usize;
    let set = |at: usize, bytes: &[u8]| {
        let mut image = valid.clone();
        image[at..at + bytes.len()].copy_from_slice(bytes);
        image
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", valid[..4].to_vec()),
        ("truncated header", valid[..60].to_vec()),
        ("huge cluster_bits", set(20, &63u32.to_be_bytes())),
        ("cluster_bits 31", set(20, &31u32.to_be_bytes())),
        ("tiny cluster_bits", set(20, &8u32.to_be_bytes())),
        ("L1 table past EOF", set(40, &(1u64 << 40).to_be_bytes())),
        ("unaligned L1 table", set(40, &0x10200u64.to_be_bytes())),
        ("huge L1 size", set(36, &u32::MAX.to_be_bytes())),
        ("huge virtual size", set(24, &u64::MAX.to_be_bytes())),
        (
            "refcount table past EOF",
            set(48, &(1u64 << 50).to_be_bytes()),
        ),
        ("refcount table garbage", set(refcount_table, &[0xa5; 4096])),
        ("refcount order 7", set(96, &7u32.to_be_bytes())),
        (
            "L1 entry past EOF",
            set(
                l1_offset,
                &(0x8000_0000_0000_0000u64 | 1 << 40).to_be_bytes(),
            ),
        ),
        ("L1 entry garbage", set(l1_offset, &[0xff; 8])),
        ("header length garbage", set(100, &u32::MAX.to_be_bytes())),
        (
            "unknown incompatible feature",
            set(72, &(1u64 << 40).to_be_bytes()),
        ),
    ];
    for (name, image) in cases {
        let path = dir.path().join("disks/hostile.qcow2");
        std::fs::write(&path, &image).expect("hostile");
        let block = match open_disk(dir.path(), &path, qcow2_options(), None) {
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with("disk `disks/hostile.qcow2`"),
                    "{name}: {message}"
                );
                assert!(
                    !message.contains("failed on its header"),
                    "{name}: imago panicked"
                );
                continue;
            }
            Ok(block) => block,
        };
        // Opened: every request either works or fails with IOERR.
        let mut g = Guest::new(block);
        let last = g.block.capacity().saturating_sub(8);
        for sector in [0, 128, last] {
            let (status, _) = g.read(sector, 4096);
            assert!(
                status == OK || status == IOERR,
                "{name}: read status {status}"
            );
            let status = g.write(sector, &pattern(4096, 12));
            assert!(
                status == OK || status == IOERR,
                "{name}: write status {status}"
            );
        }
        let status = g.flush();
        assert!(
            status == OK || status == IOERR,
            "{name}: flush status {status}"
        );
        assert!(!g.qcow2_failed(), "{name}: imago panicked");
    }
}
