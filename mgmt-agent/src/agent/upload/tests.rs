//! Uploads below a temporary root: the pipeline, the chunk fast path
//! against postcard, and the path rules.

use ring::digest::SHA256;

use super::*;
use crate::messages::{encode_upload_chunk_prefix, ClientMessage, Request};

fn postcard_chunk(plain: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
    match postcard::from_bytes::<ClientMessage>(plain) {
        Ok(ClientMessage {
            id,
            request: Request::UploadChunk { offset, data },
        }) => Some((id, offset, data)),
        _ => None,
    }
}

fn fast_chunk(plain: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
    decode_chunk(plain).map(|(id, offset, r)| (id, offset, plain[r].to_vec()))
}

fn sha(d: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, d).as_ref());
    out
}

fn temp_root(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-upload-unit-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn pipelined_writes_land_in_order_and_buffers_are_reused() {
    let root = temp_root("order");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 997) as u8).collect();
    let mut up = Upload::start(
        &root,
        "images/a/b.bin",
        body.len() as u64,
        body.len() as u64,
        Some(sha(&body)),
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut sent = 0;
    let mut allocations = 0;
    for part in body.chunks(100_000) {
        // A frame as recv leaves it: a prefix, the data, a tail.
        if buf.capacity() == 0 {
            allocations += 1;
        }
        buf.clear();
        buf.extend_from_slice(b"hdr");
        buf.extend_from_slice(part);
        buf.extend_from_slice(b"tail");
        let range = 3..3 + part.len();
        up.write(sent as u64, &mut buf, range, u64::MAX / 2)
            .unwrap();
        sent += part.len();
        assert_eq!(up.received, sent as u64);
    }
    // Buffers come back from the writer: far fewer than one per chunk.
    assert!(allocations <= 2 * PIPELINE_DEPTH + 4, "{allocations}");
    // Out of order, beyond the size, beyond the window: refused.
    let mut one = vec![1u8];
    assert!(up.write(0, &mut one, 0..1, u64::MAX / 2).is_err());
    assert!(up.write(sent as u64, &mut one, 0..1, u64::MAX / 2).is_err());
    assert!(up.write(sent as u64, &mut one, 0..2, u64::MAX / 2).is_err());
    assert_eq!(up.finish(None).unwrap(), body.len() as u64);
    let dir = root.join("images/a");
    assert_eq!(std::fs::read(dir.join("b.bin")).unwrap(), body);
    assert_eq!(entries(&dir), ["b.bin"]);

    // A bad checksum, and an abandoned upload, leave nothing behind.
    let mut up = Upload::start(&root, "images/a/c.bin", 3, 3, Some([0; 32])).unwrap();
    let mut abc = b"abc".to_vec();
    up.write(0, &mut abc, 0..3, 10).unwrap();
    assert_eq!(entries(&dir).len(), 2);
    let (kind, msg) = up.finish(None).unwrap_err();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("SHA-256"), "{msg}");
    let mut up = Upload::start(&root, "images/a/d.bin", 6, 6, Some(sha(b"abcdef"))).unwrap();
    let mut abc = b"abc".to_vec();
    up.write(0, &mut abc, 0..3, 10).unwrap();
    drop(up);
    assert_eq!(entries(&dir), ["b.bin"]);
    // Short: the size is checked too.
    let mut up = Upload::start(&root, "images/a/e.bin", 6, 6, Some(sha(b"abcdef"))).unwrap();
    let mut abc = b"abc".to_vec();
    up.write(0, &mut abc, 0..3, 10).unwrap();
    assert!(up.finish(None).unwrap_err().1.contains("3 of 6"));
    assert_eq!(entries(&dir), ["b.bin"]);
    // A window overrun is refused.
    let mut up = Upload::start(&root, "images/a/f.bin", 6, 6, Some(sha(b"abcdef"))).unwrap();
    let mut six = b"abcdef".to_vec();
    assert!(up
        .write(0, &mut six, 0..6, 5)
        .unwrap_err()
        .1
        .contains("window"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn chunk_fast_path_agrees_with_postcard() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for (id, offset, len) in [
        (0u64, 0u64, 0usize),
        (7, 0, 5),
        (u64::MAX, u64::MAX, 300),
        (1 << 35, 1 << 40, 128),
    ] {
        let mut v = Vec::new();
        encode_upload_chunk_prefix(&mut v, id, offset, len);
        v.extend((0..len).map(|i| i as u8));
        cases.push(v.clone());
        // Trailing bytes are ignored, as by postcard::from_bytes.
        v.push(0xee);
        cases.push(v.clone());
        // Every truncation.
        for cut in 0..v.len() {
            cases.push(v[..cut].to_vec());
        }
    }
    cases.extend([
        // Overlong varints (accepted by postcard).
        vec![0x87, 0x00, 0x0f, 0x80, 0x00, 0x02, 1, 2],
        vec![0x07, 0x8f, 0x00, 0x00, 0x01, 9],
        // Overflowing varints (refused).
        vec![0xff; 12],
        vec![
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x0f, 0, 0,
        ],
        vec![0x07, 0x8f, 0x80, 0x80, 0x80, 0x10, 0, 0],
        // Other variants and garbage.
        vec![0x07, 0x10],
        vec![0x07, 0x0e, 0x01, b'a', 0x00, 0x00],
        vec![],
        vec![
            0x07, 0x0f, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
    ]);
    for c in &cases {
        assert_eq!(fast_chunk(c), postcard_chunk(c), "{c:02x?}");
    }
    let real = postcard::to_stdvec(&ClientMessage {
        id: 9,
        request: Request::UploadChunk {
            offset: 3,
            data: b"xyz".to_vec(),
        },
    })
    .unwrap();
    assert_eq!(decode_chunk(&real), Some((9, 3, 4..7)));
}

#[test]
fn paths() {
    assert_eq!(
        check_path("images/a.img").unwrap(),
        PathBuf::from("images/a.img")
    );
    assert_eq!(
        check_path("images/x/a.img").unwrap(),
        PathBuf::from("images/x/a.img")
    );
    assert_eq!(
        check_path("disks/web1.raw").unwrap(),
        PathBuf::from("disks/web1.raw")
    );
    for bad in [
        "",
        "/etc/passwd",
        "/images/a",
        "..",
        "../x",
        "images/../../x",
        "images/..",
        "images/../disks/x",
        "./images/a",
        "images/a/",
        "images/a\0b",
    ] {
        let (kind, _) = check_path(bad).unwrap_err();
        assert_eq!(kind, ErrorCode::Invalid, "{bad:?}");
    }
    // Only below images/ or disks/, spelt exactly so.
    for outside in [
        "a.img",
        "x.bin",
        "images",
        "disks",
        "Images/a",
        "images.bak/a",
        "imagesx/a",
        "agent/authorized_keys",
        "guests/web1.toml",
    ] {
        let (kind, msg) = check_path(outside).unwrap_err();
        assert_eq!(kind, ErrorCode::Invalid, "{outside:?}");
        assert_eq!(
            msg,
            format!("Bad upload path {outside:?}: it must start with images/ or disks/."),
        );
    }
}

#[test]
fn uploads_stay_below_images_or_disks_of_the_root() {
    use std::os::unix::fs::PermissionsExt;
    let root = temp_root("dirs");
    // Refused before anything is created, even the root.
    let (kind, msg) = Upload::start(&root, "x.bin", 3, 3, Some(sha(b"abc")))
        .err()
        .unwrap();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("images/ or disks/"), "{msg}");
    assert!(!root.exists());
    // Missing directories are made with mode 0700.
    let mut abc = b"abc".to_vec();
    let mut up = Upload::start(&root, "disks/web1.raw", 3, 3, Some(sha(b"abc"))).unwrap();
    up.write(0, &mut abc, 0..3, 10).unwrap();
    assert_eq!(up.finish(None).unwrap(), 3);
    assert_eq!(std::fs::read(root.join("disks/web1.raw")).unwrap(), b"abc");
    for d in [&root, &root.join("disks")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", d.display());
    }
    // An existing images/ (as init makes it) is used as it is.
    std::fs::create_dir(root.join("images")).unwrap();
    std::fs::set_permissions(root.join("images"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut abc = b"abc".to_vec();
    let mut up = Upload::start(&root, "images/vmlinux", 3, 3, Some(sha(b"abc"))).unwrap();
    up.write(0, &mut abc, 0..3, 10).unwrap();
    assert_eq!(up.finish(None).unwrap(), 3);
    assert_eq!(std::fs::read(root.join("images/vmlinux")).unwrap(), b"abc");
    let mode = std::fs::metadata(root.join("images"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(entries(&root), ["disks", "images"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// Writes `data` at `offset` as a chunk frame would carry it.
fn put_at(up: &mut Upload, offset: u64, data: &[u8]) -> Result<(), UploadError> {
    let mut buf = data.to_vec();
    up.write(offset, &mut buf, 0..data.len(), u64::MAX / 2)
}

#[test]
fn sparse_chunks_land_at_their_offsets_and_holes_stay_holes() {
    use std::os::unix::fs::MetadataExt;
    let root = temp_root("sparse");
    const MIB: u64 = 1 << 20;
    let size = 64 * MIB + 5;
    let a = vec![0xa5u8; 8192];
    let b = vec![0x5au8; 4096];
    let mut whole = vec![0u8; size as usize];
    whole[..8192].copy_from_slice(&a);
    let at = 40 * MIB as usize;
    whole[at..at + 4096].copy_from_slice(&b);
    let mut up = Upload::start(&root, "disks/s.raw", size, 8192 + 4096, None).unwrap();
    put_at(&mut up, 0, &a).unwrap();
    put_at(&mut up, 40 * MIB, &b).unwrap();
    // Going back, even into a hole, is refused.
    let (kind, msg) = put_at(&mut up, 20 * MIB, &b).unwrap_err();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("goes back"), "{msg}");
    let (kind, msg) = up.finish(None).unwrap_err();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("without its SHA-256"), "{msg}");
    assert_eq!(entries(&root.join("disks")), Vec::<String>::new());

    let mut up = Upload::start(&root, "disks/s.raw", size, 8192 + 4096, None).unwrap();
    put_at(&mut up, 0, &a).unwrap();
    put_at(&mut up, 40 * MIB, &b).unwrap();
    assert!(up.ack_due());
    assert_eq!(up.finish(Some(sha(&whole))).unwrap(), size);
    let path = root.join("disks/s.raw");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), size);
    assert!(std::fs::read(&path).unwrap() == whole, "content differs");
    // 12 KiB of data, not 64 MiB (a little more for the file system).
    assert!(
        meta.blocks() * 512 < MIB,
        "{} bytes allocated",
        meta.blocks() * 512
    );

    // The wrong digest at the end leaves the old file as it was.
    let mut up = Upload::start(&root, "disks/s.raw", size, 8192, None).unwrap();
    put_at(&mut up, 0, &a).unwrap();
    let (kind, msg) = up.finish(Some(sha(&whole))).unwrap_err();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("SHA-256"), "{msg}");
    assert_eq!(entries(&root.join("disks")), ["s.raw"]);
    assert!(std::fs::read(&path).unwrap() == whole);
    // A digest announced first must match the one sent last.
    let mut up = Upload::start(&root, "disks/t", 3, 3, Some(sha(b"abc"))).unwrap();
    put_at(&mut up, 0, b"abc").unwrap();
    let msg = up.finish(Some(sha(b"abd"))).unwrap_err().1;
    assert!(msg.contains("differs"), "{msg}");
    // Fewer data bytes than announced: refused, even with the right hash.
    let mut up = Upload::start(&root, "disks/t", 8192, 8192, None).unwrap();
    put_at(&mut up, 0, &[0; 4096]).unwrap();
    let msg = up.finish(Some(sha(&[0; 8192]))).unwrap_err().1;
    assert!(msg.contains("4096 of 8192 data bytes"), "{msg}");
    assert_eq!(entries(&root.join("disks")), ["s.raw"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn chunks_cannot_allocate_more_than_the_data_announced() {
    let root = temp_root("charge");
    // 8 KiB of data announced: two blocks. Contiguous chunks that share
    // a block pay for it once.
    let mut up = Upload::start(&root, "images/c", 1 << 30, 8192, None).unwrap();
    put_at(&mut up, 0, &[1; 3000]).unwrap();
    put_at(&mut up, 3000, &[1; 3000]).unwrap();
    put_at(&mut up, 6000, &[1; 2192]).unwrap();
    assert_eq!(up.received, 8192);
    drop(up);
    // Scattered one-byte chunks would allocate a block each.
    let mut up = Upload::start(&root, "images/c", 1 << 30, 8192, None).unwrap();
    put_at(&mut up, 0, &[1]).unwrap();
    put_at(&mut up, 1 << 20, &[1]).unwrap();
    let (kind, msg) = put_at(&mut up, 2 << 20, &[1]).unwrap_err();
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(msg.contains("blocks"), "{msg}");
    drop(up);
    // More data than announced, or past the size, is refused.
    let mut up = Upload::start(&root, "images/c", 1 << 30, 10, None).unwrap();
    let msg = put_at(&mut up, 0, &[1; 11]).unwrap_err().1;
    assert!(msg.contains("10 data bytes"), "{msg}");
    drop(up);
    let mut up = Upload::start(&root, "images/c", 100, 10, None).unwrap();
    let msg = put_at(&mut up, 95, &[1; 6]).unwrap_err().1;
    assert!(msg.contains("size of 100"), "{msg}");
    let msg = put_at(&mut up, u64::MAX, &[1]).unwrap_err().1;
    assert!(msg.contains("size of 100"), "{msg}");
    drop(up);
    assert!(Upload::start(&root, "images/c", 10, 11, None).is_err());
    // A length the file system cannot hold is refused at once.
    for size in [u64::MAX, 1 << 62] {
        let (kind, msg) = Upload::start(&root, "images/c", size, 0, None)
            .err()
            .unwrap();
        assert_eq!(kind, ErrorCode::Invalid);
        assert!(msg.contains("cannot hold a file"), "{msg}");
    }
    assert_eq!(entries(&root.join("images")), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}
