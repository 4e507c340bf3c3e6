//! `/dev/disk/by-partuuid/<PARTUUID>` links, as udev makes them on other
//! systems. The appliance has no udev; these are the stable names by
//! which host.toml's `[storage] guest_devices` allow-lists a partition
//! for a guest (a kernel name like `sdb2` can change between boots).

use std::path::Path;

use super::blockdev::BlockDevice;

/// Links each partition with a PARTUUID to its device node, under
/// `dev_root/disk/by-partuuid`. Existing links are replaced, so a
/// partition that moved is found where it is now. Returns how many.
pub fn link_by_partuuid(devices: &[BlockDevice], dev_root: &Path) -> usize {
    let dir = dev_root.join("disk/by-partuuid");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log::warn!("cannot create {}: {e}", dir.display());
        return 0;
    }
    let mut made = 0;
    for device in devices {
        let Some(partuuid) = &device.partuuid else {
            continue;
        };
        // Formatted from GPT bytes by us, but a file name must never
        // carry a path separator whatever the source.
        if partuuid.is_empty() || !partuuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            continue;
        }
        let link = dir.join(partuuid);
        let target = Path::new("../..").join(&device.name);
        let _ = std::fs::remove_file(&link);
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => made += 1,
            Err(e) => log::warn!("cannot link {}: {e}", link.display()),
        }
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{
        data_entry, esp_entry, gpt_disk, test_guid, test_guid_text, FakeSys, Scratch, DATA_START,
        ESP_START,
    };

    #[test]
    fn partitions_are_linked_by_partuuid() {
        let images = Scratch::new("dev-links");
        let disk = images.0.join("disk.img");
        gpt_disk(&disk, &[esp_entry(test_guid(1)), data_entry(test_guid(2))]);
        let sys = FakeSys::new();
        sys.add_disk("sdb", Some(&disk));
        sys.add_partition_at("sdb", 1, &disk, ESP_START);
        sys.add_partition_at("sdb", 2, &disk, DATA_START);
        let probe = sys.probe();
        assert_eq!(link_by_partuuid(&probe.devices(), &probe.dev_root), 2);
        let link = probe
            .dev_root
            .join("disk/by-partuuid")
            .join(test_guid_text(2));
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../sdb2"));
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(probe.dev_root.join("sdb2")).unwrap()
        );
        // Again, as after a rescan: replaced, not refused.
        assert_eq!(link_by_partuuid(&probe.devices(), &probe.dev_root), 2);
    }
}
