//! The GPT disk image: protective MBR, primary and backup GPT, the ESP and
//! the KEEL-DATA partition, ready for `dd` to a USB stick or boot disk.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use gptman::{GPTPartitionEntry, GPT};

use crate::reproducible::{derived_guid, guid_from_str};
use crate::ImageError;

pub const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// A partition's contents and GPT identity.
pub struct Partition<'a> {
    pub name: &'a str,
    pub type_guid: &'a str,
    pub contents: &'a [u8],
}

/// Lays `partitions` out 1 MiB-aligned and writes the disk to `out`.
/// Returns the byte offset of each partition.
pub fn write(out: &Path, epoch: u64, partitions: &[Partition]) -> Result<Vec<u64>, ImageError> {
    let gpt_err = |e: gptman::Error| ImageError::Input(format!("GPT: {e}"));
    let mut offsets = Vec::new();
    let mut next = MIB;
    for p in partitions {
        offsets.push(next);
        next += (p.contents.len() as u64).div_ceil(MIB) * MIB;
    }
    // One MiB at the end holds the backup GPT.
    let total = next + MIB;

    let mut file = File::create(out).map_err(|e| ImageError::io(out, e))?;
    file.set_len(total).map_err(|e| ImageError::io(out, e))?;
    let mut gpt = GPT::new_from(&mut file, SECTOR, derived_guid("disk", epoch).to_bytes_le())
        .map_err(gpt_err)?;
    for (i, (p, offset)) in partitions.iter().zip(&offsets).enumerate() {
        let type_guid = guid_from_str(p.type_guid)
            .ok_or_else(|| ImageError::Input(format!("bad type GUID {}", p.type_guid)))?;
        let sectors = (p.contents.len() as u64).div_ceil(SECTOR);
        gpt[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: type_guid,
            unique_partition_guid: derived_guid(p.name, epoch).to_bytes_le(),
            starting_lba: offset / SECTOR,
            ending_lba: offset / SECTOR + sectors - 1,
            attribute_bits: 0,
            partition_name: p.name.into(),
        };
    }
    GPT::write_protective_mbr_into(&mut file, SECTOR).map_err(gpt_err)?;
    gpt.write_into(&mut file).map_err(gpt_err)?;
    // Zero chunks stay holes: the image is sparse on disk, and a fresh
    // file already reads as zeros there.
    const CHUNK: usize = 64 << 10;
    for (p, offset) in partitions.iter().zip(&offsets) {
        for (i, chunk) in p.contents.chunks(CHUNK).enumerate() {
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            file.seek(SeekFrom::Start(offset + (i * CHUNK) as u64))
                .map_err(|e| ImageError::io(out, e))?;
            file.write_all(chunk).map_err(|e| ImageError::io(out, e))?;
        }
    }

    file.sync_all().map_err(|e| ImageError::io(out, e))?;
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_named_and_hold_their_contents() {
        let path = std::env::temp_dir().join(format!("keel-disk-test-{}.img", std::process::id()));
        let esp = vec![0xaa; 3 * MIB as usize];
        let data = vec![0x55; MIB as usize + 1];
        let parts = [
            Partition {
                name: "KEEL-ESP",
                type_guid: ESP_TYPE,
                contents: &esp,
            },
            Partition {
                name: "KEEL-DATA",
                type_guid: LINUX_FS_TYPE,
                contents: &data,
            },
        ];
        let offsets = write(&path, 42, &parts).expect("write");
        assert_eq!(offsets, vec![MIB, 4 * MIB]);

        let mut file = File::open(&path).expect("open");
        let gpt = GPT::find_from(&mut file).expect("valid GPT");
        assert_eq!(gpt[1].partition_name.as_str(), "KEEL-ESP");
        assert_eq!(gpt[2].partition_name.as_str(), "KEEL-DATA");
        assert_eq!(gpt[1].starting_lba, 2048);
        assert_eq!(
            gpt[2].ending_lba - gpt[2].starting_lba + 1,
            (MIB + 1).div_ceil(SECTOR)
        );
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[510..512], &[0x55, 0xaa], "protective MBR signature");
        assert_eq!(bytes[MIB as usize], 0xaa);
        assert_eq!(bytes[4 * MIB as usize], 0x55);
        assert_eq!(bytes.len() as u64, 7 * MIB);
        std::fs::remove_file(&path).expect("cleanup");
    }
}
