//! Real images made by the real mkfs tools, checked against blkid. The
//! tools are test dependencies (`make deps` installs them); a missing one
//! fails the test rather than skipping it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The named tool, from PATH or the sbin directories a non-root PATH lacks.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: install the Debian package {package} (make deps)")
    })
}

fn run(name: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(tool(name, package))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A sparse file of `mib` MiB in a fresh temporary directory.
fn image(mib: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    File::create(&path).unwrap().set_len(mib << 20).unwrap();
    (dir, path)
}

/// What blkid says, with its low-level probe (no cache).
fn blkid(path: &Path, tag: &str) -> String {
    let out = Command::new(tool("blkid", "util-linux"))
        .args(["-p", "-o", "value", "-s", tag])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn probed(path: &Path) -> Option<Identified> {
    probe(&File::open(path).unwrap()).unwrap()
}

/// Probes `path` and checks kind, UUID and label against blkid and the
/// values the image was made with.
fn check(path: &Path, kind: FsKind, uuid: &str, label: Option<&str>) {
    let found = probed(path).unwrap_or_else(|| panic!("nothing found on {}", path.display()));
    assert_eq!(found.kind, kind);
    assert_eq!(found.uuid, blkid(path, "UUID"), "blkid disagrees");
    assert_eq!(found.uuid, uuid);
    assert_eq!(found.label.as_deref().unwrap_or(""), blkid(path, "LABEL"));
    assert_eq!(found.label.as_deref(), label);
}

const UUID: &str = "3f0c4e2a-9b1d-4c6e-8a5f-1e2d3c4b5a69";

#[test]
fn ext2_ext3_ext4_match_blkid() {
    for mkfs in ["mkfs.ext2", "mkfs.ext3", "mkfs.ext4"] {
        let (_dir, path) = image(16);
        let p = path.to_str().unwrap();
        run(
            mkfs,
            "e2fsprogs",
            &["-q", "-F", "-U", UUID, "-L", "rootfs", p],
        );
        check(&path, FsKind::Ext, UUID, Some("rootfs"));
    }
}

#[test]
fn ext4_without_uuid_or_label() {
    let (_dir, path) = image(16);
    run(
        "mkfs.ext4",
        "e2fsprogs",
        &["-q", "-F", "-U", "clear", path.to_str().unwrap()],
    );
    check(&path, FsKind::Ext, "", None);
}

#[test]
fn ext4_external_journal_is_not_a_filesystem() {
    let (_dir, path) = image(16);
    run(
        "mkfs.ext4",
        "e2fsprogs",
        &["-q", "-F", "-O", "journal_dev", path.to_str().unwrap()],
    );
    assert_eq!(probed(&path), None);
}

#[test]
fn xfs_matches_blkid() {
    // mkfs.xfs refuses filesystems under 300 MiB; the file stays sparse.
    let (_dir, path) = image(320);
    let uuid = format!("uuid={UUID}");
    run(
        "mkfs.xfs",
        "xfsprogs",
        &[
            "-q",
            "-f",
            "-m",
            &uuid,
            "-L",
            "xfsroot",
            path.to_str().unwrap(),
        ],
    );
    check(&path, FsKind::Xfs, UUID, Some("xfsroot"));
}

#[test]
fn btrfs_matches_blkid() {
    let (_dir, path) = image(256);
    run(
        "mkfs.btrfs",
        "btrfs-progs",
        &[
            "-q",
            "-f",
            "-U",
            UUID,
            "-L",
            "a longer btrfs label",
            path.to_str().unwrap(),
        ],
    );
    check(&path, FsKind::Btrfs, UUID, Some("a longer btrfs label"));
}

#[test]
fn vfat_12_16_32_match_blkid() {
    for (bits, mib, id, uuid) in [
        ("12", 4, "0a1b2c3d", "0A1B-2C3D"),
        ("16", 32, "DEADBEEF", "DEAD-BEEF"),
        ("32", 64, "1234abcd", "1234-ABCD"),
    ] {
        let (_dir, path) = image(mib);
        run(
            "mkfs.vfat",
            "dosfstools",
            &["-F", bits, "-i", id, "-n", "ESP", path.to_str().unwrap()],
        );
        check(&path, FsKind::Vfat, uuid, Some("ESP"));
    }
}

#[test]
fn vfat_without_label() {
    let (_dir, path) = image(64);
    run(
        "mkfs.vfat",
        "dosfstools",
        &["-F", "32", "-i", "00000001", path.to_str().unwrap()],
    );
    check(&path, FsKind::Vfat, "0000-0001", None);
}

/// A hand-made LVM2 label in sector 1, laid out as pvcreate writes it
/// (no lvm2 tools here; the UUID grouping is LVM's 6-4-4-4-4-4-6).
fn lvm_label(offset: u32, uuid: &[u8; 32]) -> Vec<u8> {
    let mut disk = vec![0u8; 4096];
    let s = &mut disk[512..1024];
    s[..8].copy_from_slice(b"LABELONE");
    s[8..16].copy_from_slice(&1u64.to_le_bytes());
    s[20..24].copy_from_slice(&offset.to_le_bytes());
    s[24..32].copy_from_slice(b"LVM2 001");
    if let Some(at) = s.get_mut(offset as usize..offset as usize + 32) {
        at.copy_from_slice(uuid);
    }
    disk
}

fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn lvm_pv_is_recognised_with_its_uuid() {
    let (_dir, path) = file_with(&lvm_label(32, b"abcdef0123456789ABCDEFghijklmnop"));
    let found = probed(&path).unwrap();
    assert_eq!(found.kind, FsKind::LvmPv);
    assert_eq!(found.kind.mount_type(), None);
    assert_eq!(found.uuid, "abcdef-0123-4567-89AB-CDEF-ghij-klmnop");
    // A PV header offset past the sector: still an LVM PV, no UUID.
    let (_dir, path) = file_with(&lvm_label(0xffff_fff0, b"abcdef0123456789ABCDEFghijklmnop"));
    assert_eq!(probed(&path).unwrap().uuid, "");
}

/// Fixed-seed xorshift: reproducible garbage.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn empty_zero_and_garbage_devices_hold_nothing() {
    for bytes in [
        Vec::new(),
        vec![0u8; 1 << 20],
        garbage(1 << 20, 0x9e37_79b9_7f4a_7c15),
    ] {
        let (_dir, path) = file_with(&bytes);
        assert_eq!(probed(&path), None);
    }
}

#[test]
fn truncated_images_hold_nothing() {
    let (_dir, path) = image(16);
    run(
        "mkfs.ext4",
        "e2fsprogs",
        &["-q", "-F", "-U", UUID, path.to_str().unwrap()],
    );
    let full = std::fs::read(&path).unwrap();
    assert!(probed(&path).is_some());
    // Cut inside the superblock, and just after the magic.
    for len in [1100, 1082, 1024, 100] {
        let (_dir, cut) = file_with(&full[..len]);
        assert_eq!(probed(&cut), None, "cut at {len}");
    }
    // A btrfs image cut before its superblock at 64 KiB.
    let (_dir, path) = image(256);
    run(
        "mkfs.btrfs",
        "btrfs-progs",
        &["-q", "-f", path.to_str().unwrap()],
    );
    let head = std::fs::read(&path).unwrap()[..0x10050].to_vec();
    let (_dir, cut) = file_with(&head);
    assert_eq!(probed(&cut), None);
}

#[test]
fn magic_with_insane_fields_is_refused() {
    // ext magic with a block size of 2^(10+200).
    let mut disk = vec![0u8; 4096];
    disk[1080..1082].copy_from_slice(&0xEF53u16.to_le_bytes());
    disk[1024 + 24..1024 + 28].copy_from_slice(&200u32.to_le_bytes());
    assert_eq!(probe_bytes(&disk), None);
    disk[1024 + 24..1024 + 28].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(probe_bytes(&disk).map(|f| f.kind), Some(FsKind::Ext));
    // XFS magic with a block size that is not a power of two.
    let mut disk = vec![0u8; 4096];
    disk[..4].copy_from_slice(b"XFSB");
    disk[4..8].copy_from_slice(&4095u32.to_be_bytes());
    assert_eq!(probe_bytes(&disk), None);
    // A FAT type string with a zero sector size or no sectors per cluster.
    let mut disk = vec![0u8; 4096];
    disk[82..90].copy_from_slice(b"FAT32   ");
    assert_eq!(probe_bytes(&disk), None);
    disk[11..13].copy_from_slice(&512u16.to_le_bytes());
    assert_eq!(probe_bytes(&disk), None);
    disk[13] = 8;
    assert_eq!(probe_bytes(&disk).map(|f| f.kind), Some(FsKind::Vfat));
}

fn probe_bytes(bytes: &[u8]) -> Option<Identified> {
    let (_dir, path) = file_with(bytes);
    probed(&path)
}

#[test]
fn read_errors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = probe(&File::open(dir.path()).unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
}

#[test]
fn uuid_formatting() {
    let mut u = [0u8; 16];
    assert_eq!(format_uuid(&u), "");
    u[0] = 0xAB;
    u[15] = 0x01;
    assert_eq!(format_uuid(&u), "ab000000-0000-0000-0000-000000000001");
}
