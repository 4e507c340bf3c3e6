//! A guest never gets a disk that holds Keel's own partitions: not the
//! boot disk, nor any disk carrying a KEEL-DATA or KEEL-ESP file system.
//! Host block devices reach a spec only when host.toml allow-lists them;
//! this check keeps an allow-list mistake (or a by-id link that now points
//! elsewhere) from handing the host's data or boot partition to a guest,
//! which could then plant keys and specs.

use std::path::Path;

use keel_common::config::Source;
use keel_common::GuestSpec;

use crate::storage::blockdev::Probe;
use crate::storage::{DATA_LABEL, ESP_LABEL};

/// The kernel name (`sdb`, `nvme0n1p2`) of the block device `path` names.
pub fn kernel_name(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    Some(real.file_name()?.to_string_lossy().into_owned())
}

/// Refuses `spec` (stored as `file`, from `text`) when one of its host
/// block devices is on a disk that holds a Keel partition. `name_of`
/// gives a device path's kernel name ([`kernel_name`] on the host).
pub fn check(
    spec: &GuestSpec,
    file: &Path,
    text: &str,
    probe: &Probe,
    name_of: impl Fn(&Path) -> Option<String>,
) -> Result<(), String> {
    let devices: Vec<_> = spec
        .disks
        .iter()
        .enumerate()
        .filter(|(_, d)| d.path.is_absolute())
        .collect();
    if devices.is_empty() {
        return Ok(());
    }
    let all = probe.devices();
    for (i, disk) in devices {
        let field = format!("disk[{i}].path");
        let refuse = |message: String| Source::new(file, text).error(&field, message).to_string();
        let Some(name) = name_of(&disk.path) else {
            // Missing devices are reported when the guest starts.
            continue;
        };
        let Some(whole) = all.iter().find(|d| d.name == name).map(|d| d.disk.clone()) else {
            continue;
        };
        let keel = all.iter().find(|d| {
            d.disk == whole
                && d.fs
                    .as_ref()
                    .is_some_and(|fs| fs.label == DATA_LABEL || fs.label == ESP_LABEL)
        });
        if let Some(keel) = keel {
            let label = keel.fs.as_ref().map_or("", |fs| fs.label.as_str());
            return Err(refuse(format!(
                "`{}` is on disk {whole}, which holds Keel's own {label} partition ({}); a guest may not have it",
                disk.path.display(),
                keel.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{mkfs_ext4, FakeSys, Scratch};
    use std::path::PathBuf;

    const BOOT: &str = "/dev/disk/by-id/usb-boot-stick";
    const SPARE: &str = "/dev/disk/by-id/ata-spare";

    fn spec(path: &str) -> (PathBuf, String, GuestSpec) {
        let file = PathBuf::from("/var/lib/keel/guests/web.toml");
        let text = format!(
            "name = \"web\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinuz\"\n\n[[disk]]\npath = \"{path}\"\n"
        );
        let devices = [PathBuf::from(BOOT), PathBuf::from(SPARE)];
        let spec = GuestSpec::parse_with_devices(&file, &text, &devices).unwrap();
        (file, text, spec)
    }

    #[test]
    fn a_device_on_a_disk_with_a_keel_partition_is_refused() {
        let images = Scratch::new("keel-disks");
        let data = images.0.join("data.ext4");
        let other = images.0.join("other.ext4");
        mkfs_ext4(&data, DATA_LABEL, 8);
        mkfs_ext4(&other, "scratch", 8);
        let sys = FakeSys::new();
        // sda: the boot stick, whose second partition is KEEL-DATA.
        sys.add_disk("sda", None);
        sys.add_partition("sda", 1, &other);
        sys.add_partition("sda", 2, &data);
        // sdb: a spare disk with an ordinary file system.
        sys.add_disk("sdb", None);
        sys.add_partition("sdb", 1, &other);
        let probe = sys.probe();
        let name_of =
            |p: &Path| Some(if p == Path::new(BOOT) { "sda1" } else { "sdb1" }.to_string());

        // Even a partition of the boot disk that is not Keel's own.
        let (file, text, boot) = spec(BOOT);
        let e = check(&boot, &file, &text, &probe, name_of).unwrap_err();
        assert!(
            e.starts_with("/var/lib/keel/guests/web.toml:8: field `disk[0].path`"),
            "{e}"
        );
        assert!(e.contains("Keel's own KEEL-DATA partition (sda2)"), "{e}");

        let (file, text, spare) = spec(SPARE);
        check(&spare, &file, &text, &probe, name_of).unwrap();
    }
}
