use super::*;
use crate::storage::test_support::{mkfs_ext4, mkfs_vfat, Scratch, ESP_TYPE, LINUX_TYPE};
use gptman::GPTPartitionEntry;

const MIB: u64 = 1 << 20;

/// A sparse disk image laid out like keel.img: 1 MiB gap, the ESP, then
/// `data_label`'s ext4 partition, 1 MiB for the backup GPT. Returns the
/// image path.
fn build_disk(dir: &Path, data_label: &str, extra_last: bool) -> PathBuf {
    let esp = dir.join("esp.img");
    let data = dir.join("data.ext4");
    mkfs_vfat(&esp, "KEEL-ESP", 34, true);
    mkfs_ext4(&data, data_label, 8);
    let mut parts = vec![
        ("KEEL-ESP", ESP_TYPE, std::fs::read(&esp).expect("esp")),
        ("KEEL-DATA", LINUX_TYPE, std::fs::read(&data).expect("data")),
    ];
    if extra_last {
        parts.push(("OTHER", LINUX_TYPE, vec![0u8; MIB as usize]));
    }
    let img = dir.join("disk.img");
    let total: u64 = MIB + parts.iter().map(|p| p.2.len() as u64).sum::<u64>() + MIB;
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .expect("create");
    file.set_len(total).expect("size");
    let mut gpt = GPT::new_from(&mut file, 512, [7; 16]).expect("gpt");
    let mut offset = MIB;
    for (i, (name, ty, bytes)) in parts.iter().enumerate() {
        let sectors = bytes.len() as u64 / 512;
        gpt[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: *ty,
            unique_partition_guid: [i as u8 + 1; 16],
            starting_lba: offset / 512,
            ending_lba: offset / 512 + sectors - 1,
            attribute_bits: 0,
            partition_name: (*name).into(),
        };
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.write_all(bytes).expect("write");
        offset += bytes.len() as u64;
    }
    GPT::write_protective_mbr_into(&mut file, 512).expect("mbr");
    gpt.write_into(&mut file).expect("write gpt");
    img
}

fn open_rw(path: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .expect("open")
}

#[test]
fn grows_the_last_partition_to_the_new_end_and_moves_the_backup() {
    let s = Scratch::new("grow");
    let img = build_disk(&s.0, "KEEL-DATA", false);
    let before = GPT::find_from(&mut File::open(&img).expect("open")).expect("gpt");
    let old_len = std::fs::metadata(&img).expect("stat").len();
    let old_backup = before.header.backup_lba;
    // As if dd'ed onto a 256 MiB stick.
    let new_size = 256 * MIB;
    open_rw(&img).set_len(new_size).expect("extend");

    let outcome = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
    let after = GPT::find_from(&mut File::open(&img).expect("open")).expect("gpt");
    let sectors = new_size / 512;
    assert_eq!(after.header.backup_lba, sectors - 1);
    assert_eq!(after.header.last_usable_lba, sectors - 34);
    assert_eq!(after[2].ending_lba, sectors - 34);
    assert_eq!(after[2].starting_lba, before[2].starting_lba);
    assert_eq!(after[1], before[1], "the ESP is untouched");
    assert_eq!(
        outcome,
        GrowOutcome::Grown {
            partition: 2,
            start: before[2].starting_lba * 512,
            old_len: (before[2].ending_lba - before[2].starting_lba + 1) * 512,
            new_len: (sectors - 34 - before[2].starting_lba + 1) * 512,
        }
    );
    // The backup table at the new end is valid on its own.
    let mut file = File::open(&img).expect("open");
    file.seek(SeekFrom::Start((sectors - 1) * 512))
        .expect("seek");
    let backup = gptman::GPTHeader::read_from(&mut file).expect("backup header");
    assert_eq!(backup.primary_lba, sectors - 1);
    assert_eq!(backup.partition_entry_lba, sectors - 33);
    // The stale backup header is gone.
    let bytes = std::fs::read(&img).expect("read");
    let at = (old_backup * 512) as usize;
    assert!(old_backup * 512 < old_len);
    assert_ne!(&bytes[at..at + 8], b"EFI PART");
    // The protective MBR covers the disk.
    let mbr_size = u32::from_le_bytes(bytes[0x1BE + 12..0x1BE + 16].try_into().expect("4"));
    assert_eq!(u64::from(mbr_size), sectors - 1);
    // The file system inside is intact.
    let fs = read_label_at(
        &mut File::open(&img).expect("open"),
        after[2].starting_lba * 512,
    )
    .expect("read");
    assert_eq!(fs.map(|f| f.label), Some("KEEL-DATA".into()));

    // A second run is a no-op.
    let again = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("again");
    assert_eq!(again, GrowOutcome::AlreadyFull { partition: 2 });
    assert_eq!(std::fs::read(&img).expect("read"), bytes);
}

#[test]
fn an_unchanged_disk_is_a_no_op() {
    let s = Scratch::new("same");
    let img = build_disk(&s.0, "KEEL-DATA", false);
    let bytes = std::fs::read(&img).expect("read");
    // keel.img leaves room for the backup GPT only: the partition can
    // still grow by the rest of that last MiB.
    let first = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
    assert!(matches!(first, GrowOutcome::Grown { .. }), "{first:?}");
    let after_first = std::fs::read(&img).expect("read");
    assert_eq!(after_first.len(), bytes.len());
    let second = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
    assert_eq!(second, GrowOutcome::AlreadyFull { partition: 2 });
    assert_eq!(std::fs::read(&img).expect("read"), after_first);
}

#[test]
fn a_disk_without_keel_data_is_untouched() {
    let s = Scratch::new("foreign");
    let img = build_disk(&s.0, "SOMETHING", false);
    open_rw(&img).set_len(256 * MIB).expect("extend");
    let bytes = std::fs::read(&img).expect("read");
    let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
    assert!(matches!(err, StorageError::NoDataPartition { .. }), "{err}");
    assert_eq!(std::fs::read(&img).expect("read"), bytes);
}

#[test]
fn keel_data_that_is_not_last_is_untouched() {
    let s = Scratch::new("notlast");
    let img = build_disk(&s.0, "KEEL-DATA", true);
    open_rw(&img).set_len(256 * MIB).expect("extend");
    let bytes = std::fs::read(&img).expect("read");
    let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
    assert!(
        matches!(err, StorageError::NotLastPartition { partition: 2, .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&img).expect("read"), bytes);
}

#[test]
fn a_disk_without_a_gpt_is_untouched() {
    let s = Scratch::new("nogpt");
    let img = s.0.join("plain.ext4");
    mkfs_ext4(&img, "KEEL-DATA", 8);
    let bytes = std::fs::read(&img).expect("read");
    let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
    assert!(matches!(err, StorageError::Gpt { .. }), "{err}");
    assert_eq!(std::fs::read(&img).expect("read"), bytes);
}

#[test]
fn a_disk_smaller_than_its_table_is_not_shrunk() {
    let s = Scratch::new("shrink");
    let img = build_disk(&s.0, "KEEL-DATA", false);
    let len = std::fs::metadata(&img).expect("stat").len();
    // Cut into the data partition (as if dd'ed onto a too-small stick).
    open_rw(&img).set_len(len - 2 * MIB).expect("truncate");
    let bytes = std::fs::read(&img).expect("read");
    let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
    assert!(matches!(err, StorageError::WouldShrink { .. }), "{err}");
    assert_eq!(std::fs::read(&img).expect("read"), bytes);
}

#[test]
fn reads_ext4_geometry() {
    let s = Scratch::new("geom");
    let img = s.0.join("g.ext4");
    mkfs_ext4(&img, "KEEL-DATA", 16);
    let g = ext_geometry(&mut File::open(&img).expect("open")).expect("ext");
    assert_eq!(g.block_size * g.blocks, 16 * MIB);
    let zero = s.0.join("zero");
    std::fs::write(&zero, vec![0u8; 8192]).expect("write");
    assert_eq!(ext_geometry(&mut File::open(&zero).expect("open")), None);
}
