//! Which KEEL-DATA to trust: the one partition of the boot disk (the disk
//! of the pinned ESP, see [`super::esp`]) that carries it, or the one the
//! operator claims with `keel.data=PARTUUID=` ([`super::claim`]). A
//! KEEL-DATA anywhere else is ignored and named in the log with the reason:
//! a guest can write any label on a raw disk it is given, so the label
//! alone never makes a disk the host's.

use super::blockdev::BlockDevice;
use super::claim::{DataClaim, DATA_PARAMETER};
use super::label::FsKind;
use super::DATA_LABEL;

/// The data partition [`choose_data`] picked, if any, and the log lines
/// that say why (and name every KEEL-DATA it ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChoice {
    pub device: Option<BlockDevice>,
    pub messages: Vec<(log::Level, String)>,
}

impl DataChoice {
    pub fn log(&self) {
        for (level, text) in &self.messages {
            log::log!(*level, "{text}");
        }
    }
}

/// Chooses the data partition among the ext4 file systems labelled
/// KEEL-DATA in `devices`, without logging:
///
/// - with a claim: the single partition whose PARTUUID it names, else none;
/// - without one: the single partition on the disk of `esp` (the ESP the
///   firmware booted from), else none.
pub fn choose_data(
    devices: &[BlockDevice],
    esp: Option<&BlockDevice>,
    claim: Option<&DataClaim>,
) -> DataChoice {
    let candidates: Vec<&BlockDevice> = devices
        .iter()
        .filter(|d| {
            d.fs.as_ref()
                .is_some_and(|fs| fs.kind == FsKind::Ext && fs.label == DATA_LABEL)
        })
        .collect();
    let mut messages = Vec::new();
    let (chosen, why_not) = match (claim, esp) {
        (Some(DataClaim::Invalid(reason)), _) => {
            messages.push((
                log::Level::Error,
                format!("{reason}: no data partition is used"),
            ));
            (Vec::new(), format!("{DATA_PARAMETER}= is invalid"))
        }
        (Some(DataClaim::PartUuid(partuuid)), _) => {
            let chosen: Vec<&BlockDevice> = candidates
                .iter()
                .copied()
                .filter(|d| d.partuuid.as_deref() == Some(partuuid.as_str()))
                .collect();
            if chosen.is_empty() {
                messages.push((
                    log::Level::Error,
                    format!(
                        "{DATA_PARAMETER}=PARTUUID={partuuid} names no ext4 partition \
                         labelled {DATA_LABEL} here: no data partition is used"
                    ),
                ));
            }
            let why_not = format!("{DATA_PARAMETER}= claims PARTUUID {partuuid}");
            (chosen, why_not)
        }
        (None, Some(esp)) => {
            let chosen: Vec<&BlockDevice> = candidates
                .iter()
                .copied()
                .filter(|d| d.is_partition() && d.disk == esp.disk)
                .collect();
            if chosen.is_empty() {
                messages.push((
                    log::Level::Info,
                    format!("the boot disk {} has no {DATA_LABEL} partition", esp.disk),
                ));
            }
            (chosen, format!("not on the boot disk {}", esp.disk))
        }
        (None, None) => (
            Vec::new(),
            format!(
                "no boot disk is known (booted from an ISO?) and no {DATA_PARAMETER}= \
                 on the kernel command line claims it"
            ),
        ),
    };
    if chosen.len() > 1 {
        let names: Vec<&str> = chosen.iter().map(|d| d.name.as_str()).collect();
        messages.push((
            log::Level::Error,
            format!(
                "{} partitions qualify as {DATA_LABEL} ({}): no data partition is used",
                chosen.len(),
                names.join(", ")
            ),
        ));
    }
    let device = match chosen[..] {
        [one] => Some(one.clone()),
        _ => None,
    };
    // Several qualifying ones are named in the error above.
    for ignored in candidates
        .iter()
        .filter(|d| !chosen.iter().any(|c| c.name == d.name))
    {
        messages.push((log::Level::Warn, ignored_line(ignored, &why_not)));
    }
    DataChoice { device, messages }
}

/// "ignoring KEEL-DATA on /dev/sdb1 (...): why; how to claim it".
fn ignored_line(device: &BlockDevice, why: &str) -> String {
    let path = device.path.display();
    match &device.partuuid {
        Some(partuuid) => format!(
            "ignoring {DATA_LABEL} on {path} (PARTUUID {partuuid}): {why}; to make it the \
             data partition, boot with {DATA_PARAMETER}=PARTUUID={partuuid}"
        ),
        None => format!(
            "ignoring {DATA_LABEL} on {path}: {why}; it is not a GPT partition, so it \
             cannot be claimed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{
        data_entry, esp_entry, gpt_disk, mkfs_ext4, mkfs_vfat, set_loader_device_part_uuid,
        test_guid, test_guid_text, FakeSys, Scratch, DATA_START, ESP_START,
    };
    use crate::storage::{select, Probe, Selection};

    /// The server's Keel disk `sdb` (ESP 0xb1, KEEL-DATA 0xb2), a raw disk
    /// `sda` a guest was given and wrote a GPT with a KEEL-DATA (0xa2) on,
    /// sorting first, and a guest's unpartitioned KEEL-DATA disk `vdc`.
    fn boot_disk_and_guest_disks(images: &Scratch) -> FakeSys {
        let esp = images.0.join("esp.img");
        let data = images.0.join("data.ext4");
        let planted = images.0.join("planted.ext4");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        mkfs_ext4(&data, "KEEL-DATA", 8);
        mkfs_ext4(&planted, "KEEL-DATA", 8);
        let sys = FakeSys::new();
        let guest = images.0.join("sda.img");
        gpt_disk(&guest, &[data_entry(test_guid(0xa2))]);
        sys.add_disk("sda", Some(&guest));
        sys.add_partition_at("sda", 1, &planted, DATA_START);
        let keel = images.0.join("sdb.img");
        gpt_disk(
            &keel,
            &[esp_entry(test_guid(0xb1)), data_entry(test_guid(0xb2))],
        );
        sys.add_disk("sdb", Some(&keel));
        sys.add_partition_at("sdb", 1, &esp, ESP_START);
        sys.add_partition_at("sdb", 2, &data, DATA_START);
        sys.add_disk("vdc", Some(&planted));
        sys
    }

    fn chosen(selection: &Selection) -> Option<&str> {
        selection.data.device.as_ref().map(|d| d.name.as_str())
    }

    /// The data choice's lines at `level` that contain `needle`.
    fn said(selection: &Selection, level: log::Level, needle: &str) -> bool {
        selection
            .data
            .messages
            .iter()
            .any(|(l, text)| *l == level && text.contains(needle))
    }

    fn booted(probe: &Probe) -> Option<String> {
        probe.loader_device_part_uuid()
    }

    #[test]
    fn only_the_boot_disks_keel_data_is_used() {
        let images = Scratch::new("pin-disk");
        let sys = boot_disk_and_guest_disks(&images);
        let probe = sys.probe();
        let dev = |name: &str| sys.root.0.join("dev").join(name).display().to_string();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1));
        let selection = select(&probe, booted(&probe).as_deref(), None);
        assert_eq!(
            selection.esp.device.as_ref().map(|d| d.name.as_str()),
            Some("sdb1")
        );
        assert_eq!(chosen(&selection), Some("sdb2"));
        // Each planted KEEL-DATA is named, with why and how to claim it.
        let guest = test_guid_text(0xa2);
        assert!(
            said(
                &selection,
                log::Level::Warn,
                &format!(
                    "ignoring KEEL-DATA on {} (PARTUUID {guest}): not on the boot disk sdb; \
                     to make it the data partition, boot with keel.data=PARTUUID={guest}",
                    dev("sda1")
                )
            ),
            "{:?}",
            selection.data.messages
        );
        assert!(said(
            &selection,
            log::Level::Warn,
            &format!(
                "ignoring KEEL-DATA on {}: not on the boot disk sdb; it is not a GPT \
                 partition, so it cannot be claimed",
                dev("vdc")
            )
        ));
    }

    #[test]
    fn a_boot_disk_without_keel_data_takes_none_from_another_disk() {
        // An ISO written to a USB stick: its ESP is booted, it has no
        // KEEL-DATA, and the guest's disk has one.
        let images = Scratch::new("pin-stick");
        let sys = boot_disk_and_guest_disks(&images);
        let stick = images.0.join("sdd.img");
        gpt_disk(&stick, &[esp_entry(test_guid(0xd1))]);
        sys.add_disk("sdd", Some(&stick));
        sys.add_partition_at("sdd", 1, &images.0.join("esp.img"), ESP_START);
        let probe = sys.probe();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xd1));
        let selection = select(&probe, booted(&probe).as_deref(), None);
        assert_eq!(
            selection.esp.device.as_ref().map(|d| d.name.as_str()),
            Some("sdd1")
        );
        assert_eq!(chosen(&selection), None);
        assert!(said(
            &selection,
            log::Level::Info,
            "the boot disk sdd has no KEEL-DATA partition"
        ));
        assert!(said(
            &selection,
            log::Level::Warn,
            "not on the boot disk sdd"
        ));
    }

    #[test]
    fn without_a_boot_disk_keel_data_is_used_only_when_claimed() {
        // An ISO on a virtual CD: no LoaderDevicePartUUID.
        let images = Scratch::new("pin-iso");
        let sys = boot_disk_and_guest_disks(&images);
        let probe = sys.probe();
        let selection = select(&probe, None, None);
        assert_eq!(selection.esp.device, None);
        assert_eq!(chosen(&selection), None);
        let why = "no boot disk is known (booted from an ISO?) and no keel.data= on the kernel \
                   command line claims it";
        for name in ["sda1", "sdb2", "vdc"] {
            assert!(
                selection.data.messages.iter().any(|(level, text)| {
                    *level == log::Level::Warn && text.contains(name) && text.contains(why)
                }),
                "{name}: {:?}",
                selection.data.messages
            );
        }

        // The operator's claim names the partition: that one, whichever disk.
        let claim = DataClaim::PartUuid(test_guid_text(0xb2));
        let selection = select(&probe, None, Some(&claim));
        assert_eq!(chosen(&selection), Some("sdb2"));
        let because = format!("keel.data= claims PARTUUID {}", test_guid_text(0xb2));
        assert!(said(&selection, log::Level::Warn, &because));
        assert!(!selection
            .data
            .messages
            .iter()
            .any(|(_, text)| text.contains("sdb2")));
        // The claim wins over the boot disk too: it is the operator's word.
        let claim = DataClaim::PartUuid(test_guid_text(0xa2));
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1));
        let selection = select(&probe, booted(&probe).as_deref(), Some(&claim));
        assert_eq!(chosen(&selection), Some("sda1"));
    }

    #[test]
    fn a_claim_that_names_nothing_or_is_invalid_uses_nothing() {
        let images = Scratch::new("pin-claim");
        let sys = boot_disk_and_guest_disks(&images);
        let probe = sys.probe();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1));
        let booted = booted(&probe);

        // A partition that is not there (or not KEEL-DATA ext4: the ESP's).
        for missing in [test_guid_text(0xee), test_guid_text(0xb1)] {
            let claim = DataClaim::PartUuid(missing.clone());
            let selection = select(&probe, booted.as_deref(), Some(&claim));
            assert_eq!(chosen(&selection), None, "{missing}");
            assert!(said(
                &selection,
                log::Level::Error,
                &format!(
                    "keel.data=PARTUUID={missing} names no ext4 partition labelled KEEL-DATA \
                     here: no data partition is used"
                )
            ));
        }

        // A typo does not fall back to the boot disk.
        let claim = DataClaim::Invalid("keel.data=sdb2 is not PARTUUID=<guid>".into());
        let selection = select(&probe, booted.as_deref(), Some(&claim));
        assert_eq!(chosen(&selection), None);
        assert!(said(
            &selection,
            log::Level::Error,
            "keel.data=sdb2 is not PARTUUID=<guid>: no data partition is used"
        ));
    }

    #[test]
    fn a_claimed_partuuid_on_two_disks_uses_neither() {
        // A guest that learnt the claimed PARTUUID writes it on its disk.
        let images = Scratch::new("pin-twice");
        let sys = boot_disk_and_guest_disks(&images);
        let copy = images.0.join("sde.img");
        gpt_disk(&copy, &[data_entry(test_guid(0xb2))]);
        sys.add_disk("sde", Some(&copy));
        sys.add_partition_at("sde", 1, &images.0.join("planted.ext4"), DATA_START);
        let probe = sys.probe();
        let claim = DataClaim::PartUuid(test_guid_text(0xb2));
        let selection = select(&probe, None, Some(&claim));
        assert_eq!(chosen(&selection), None);
        assert!(said(
            &selection,
            log::Level::Error,
            "2 partitions qualify as KEEL-DATA (sdb2, sde1): no data partition is used"
        ));
        // And on the boot disk, two KEEL-DATA partitions: neither.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1));
        let mut devices = probe.devices();
        let mut second = devices
            .iter()
            .find(|d| d.name == "sdb2")
            .cloned()
            .expect("sdb2");
        second.name = "sdb3".into();
        devices.push(second);
        let esp = devices.iter().find(|d| d.name == "sdb1").cloned();
        let choice = choose_data(&devices, esp.as_ref(), None);
        assert_eq!(choice.device, None);
    }
}
