//! Which KEEL-ESP to trust: only the one the firmware booted from, whose
//! PARTUUID is `LoaderDevicePartUUID` (see [`super::efivar`]). Any other
//! partition carrying the label (a guest's raw disk, a second disk in the
//! server) is ignored and named in the log, and so is every one of them
//! when the variable is missing or names no single partition: the seeds
//! and the boot disk's data partition come only from the pinned ESP.

use super::blockdev::{BlockDevice, Probe};
use super::label::FsKind;

impl Probe {
    /// The firmware's `LoaderDevicePartUUID` (lower case), read from
    /// efivarfs under this probe's sysfs root.
    pub fn loader_device_part_uuid(&self) -> Option<String> {
        super::efivar::read_loader_device_part_uuid(&self.sys_root)
    }
}

/// Chooses the ESP among the FAT file systems labelled KEEL-ESP in
/// `devices`, without logging: the one whose PARTUUID is `booted` (the
/// firmware's `LoaderDevicePartUUID`), else none (see [`EspRule`]).
pub fn choose_esp(devices: &[BlockDevice], booted: Option<&str>) -> EspChoice {
    let mut found: Vec<BlockDevice> = devices
        .iter()
        .filter(|d| {
            d.fs.as_ref()
                .is_some_and(|fs| fs.kind == FsKind::Fat && fs.label == super::ESP_LABEL)
        })
        .cloned()
        .collect();
    let candidates: Vec<String> = found.iter().map(|d| d.name.clone()).collect();
    let Some(partuuid) = booted.map(str::to_string) else {
        return EspChoice {
            device: None,
            rule: EspRule::NoBootIdentity,
            candidates,
        };
    };
    let matching: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, d)| d.partuuid.as_deref() == Some(partuuid.as_str()))
        .map(|(i, _)| i)
        .collect();
    let (device, rule) = match matching[..] {
        [] => (None, EspRule::NotBootedFrom { partuuid }),
        [one] => (Some(found.swap_remove(one)), EspRule::Booted { partuuid }),
        _ => {
            let names = matching.iter().map(|&i| found[i].name.clone()).collect();
            (None, EspRule::AmbiguousPartuuid { partuuid, names })
        }
    };
    EspChoice {
        device,
        rule,
        candidates,
    }
}

/// How [`choose_esp`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspRule {
    /// Its PARTUUID is the firmware's `LoaderDevicePartUUID`: the firmware
    /// booted from it, so it is the ESP.
    Booted { partuuid: String },
    /// `LoaderDevicePartUUID` is none of their PARTUUIDs (booted from an
    /// ISO on a virtual CD, or from an ESP without the label): no ESP.
    NotBootedFrom { partuuid: String },
    /// Several carry the PARTUUID the firmware booted from (copies of one
    /// image, or a disk written to look like the boot disk): which one was
    /// booted is unknown, so none is used.
    AmbiguousPartuuid {
        partuuid: String,
        names: Vec<String>,
    },
    /// No readable `LoaderDevicePartUUID` (no EFI, no efivarfs, another
    /// loader, an ISO on a virtual CD): nothing says which one was booted,
    /// so none is used.
    NoBootIdentity,
}

/// The ESP [`choose_esp`] pinned, if any, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspChoice {
    pub device: Option<BlockDevice>,
    pub rule: EspRule,
    /// Every device carrying a FAT KEEL-ESP, by name.
    pub candidates: Vec<String>,
}

impl EspChoice {
    /// What to log about the choice, or `None` when there is nothing worth
    /// saying (no KEEL-ESP anywhere and none booted from).
    pub fn message(&self) -> Option<(log::Level, String)> {
        let label = super::ESP_LABEL;
        let others = self.others();
        match (&self.rule, &self.device) {
            (EspRule::Booted { partuuid }, Some(device)) => {
                let booted = format!(
                    "booted from {} (LoaderDevicePartUUID {partuuid})",
                    device.path.display()
                );
                if others.is_empty() {
                    Some((log::Level::Info, booted))
                } else {
                    Some((
                        log::Level::Warn,
                        format!(
                            "{booted}; ignoring {label} on {others}: not the partition \
                             the firmware booted from"
                        ),
                    ))
                }
            }
            _ if self.candidates.is_empty() => None,
            (EspRule::NotBootedFrom { partuuid }, _) => Some((
                log::Level::Warn,
                format!(
                    "ignoring {label} on {others}: the firmware booted from PARTUUID \
                     {partuuid}, which is none of them (an ISO?); no seeds are read"
                ),
            )),
            (EspRule::AmbiguousPartuuid { partuuid, names }, _) => Some((
                log::Level::Error,
                format!(
                    "ignoring {label} on {others}: {} partitions ({}) have the PARTUUID \
                     {partuuid} the firmware booted from, so which one it booted is unknown \
                     (copies of one image?); remove the copy to use the boot disk",
                    names.len(),
                    names.join(", ")
                ),
            )),
            _ => Some((
                log::Level::Warn,
                format!(
                    "ignoring {label} on {others}: no LoaderDevicePartUUID says the firmware \
                     booted from it (an ISO on a virtual CD?); no seeds are read"
                ),
            )),
        }
    }

    /// The candidates not chosen, comma separated.
    fn others(&self) -> String {
        let chosen = self.device.as_ref().map(|d| d.name.as_str());
        let others: Vec<&str> = self
            .candidates
            .iter()
            .map(String::as_str)
            .filter(|n| Some(*n) != chosen)
            .collect();
        others.join(", ")
    }

    /// Logs [`EspChoice::message`].
    pub fn log(&self) {
        if let Some((level, text)) = self.message() {
            log::log!(level, "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{
        find_by_label, mkfs_vfat, set_loader_device_part_uuid, test_guid_text, two_keel_disks,
        FakeSys, Scratch, ESP_START,
    };

    fn choose(probe: &Probe) -> EspChoice {
        choose_esp(&probe.devices(), probe.loader_device_part_uuid().as_deref())
    }

    #[test]
    fn only_the_esp_the_firmware_booted_from_is_used() {
        let images = Scratch::new("booted");
        let sys = two_keel_disks(&images);
        let probe = sys.probe();
        let root = &sys.root.0;

        // Without the variable nothing says which disk is the host's: no
        // ESP and no data partition, and both ESPs named in a warning.
        let choice = choose(&probe);
        assert_eq!(choice.device, None);
        assert_eq!(choice.rule, EspRule::NoBootIdentity);
        assert_eq!(choice.candidates, vec!["sda1", "sdb1"]);
        let (level, text) = choice.message().expect("a warning");
        assert_eq!(level, log::Level::Warn);
        assert!(
            text.starts_with("ignoring KEEL-ESP on sda1, sdb1: no LoaderDevicePartUUID"),
            "{text}"
        );
        assert_eq!(find_by_label(&probe, "KEEL-ESP"), None);
        assert_eq!(find_by_label(&probe, "KEEL-DATA"), None);

        // systemd-stub says it was started from the stick's ESP (upper case,
        // as systemd writes it): that ESP, and the data on its disk, win;
        // the other disk's ESP is named as ignored.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1).to_uppercase());
        let choice = choose(&probe);
        assert_eq!(choice.device.map(|d| d.name), Some("sdb1".into()));
        assert_eq!(
            choice.rule,
            EspRule::Booted {
                partuuid: test_guid_text(0xb1)
            }
        );
        let (level, text) = choose(&probe).message().expect("a message");
        assert_eq!(level, log::Level::Warn);
        assert_eq!(
            text,
            format!(
                "booted from {} (LoaderDevicePartUUID {}); ignoring KEEL-ESP on sda1: \
                 not the partition the firmware booted from",
                root.join("dev/sdb1").display(),
                test_guid_text(0xb1)
            )
        );
        assert_eq!(
            find_by_label(&probe, "KEEL-ESP"),
            Some(root.join("dev/sdb1"))
        );
        assert_eq!(
            find_by_label(&probe, "KEEL-DATA"),
            Some(root.join("dev/sdb2"))
        );

        // And the disk's, when that is where the firmware started it.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xa1));
        assert_eq!(
            find_by_label(&probe, "KEEL-DATA"),
            Some(root.join("dev/sda2"))
        );

        // A GUID that is neither (the ISO's appended ESP on a virtual CD):
        // none of them, said so.
        set_loader_device_part_uuid(&probe, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        let choice = choose(&probe);
        assert_eq!(choice.device, None);
        assert_eq!(
            choice.rule,
            EspRule::NotBootedFrom {
                partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            }
        );
        assert_eq!(choice.message().map(|m| m.0), Some(log::Level::Warn));
        assert_eq!(find_by_label(&probe, "KEEL-DATA"), None);

        // A variable that is not a GUID counts as none.
        set_loader_device_part_uuid(&probe, "garbage");
        assert_eq!(choose(&probe).rule, EspRule::NoBootIdentity);
        assert_eq!(find_by_label(&probe, "KEEL-ESP"), None);
    }

    #[test]
    fn a_copy_of_the_boot_disk_makes_the_boot_disk_unknown() {
        let images = Scratch::new("clones");
        let sys = two_keel_disks(&images);
        // sdc is a byte copy of sda (the public image written to a guest's
        // disk, say): which of the two the firmware booted is unknown.
        let esp = images.0.join("esp.img");
        sys.add_disk("sdc", Some(&images.0.join("sda.img")));
        sys.add_partition_at("sdc", 1, &esp, ESP_START);
        let probe = sys.probe();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xa1));
        let choice = choose(&probe);
        assert_eq!(choice.device, None);
        assert_eq!(
            choice.rule,
            EspRule::AmbiguousPartuuid {
                partuuid: test_guid_text(0xa1),
                names: vec!["sda1".into(), "sdc1".into()]
            }
        );
        let (level, text) = choice.message().expect("an error");
        assert_eq!(level, log::Level::Error);
        assert!(
            text.starts_with("ignoring KEEL-ESP on sda1, sdb1, sdc1: 2 partitions"),
            "{text}"
        );
        assert_eq!(find_by_label(&probe, "KEEL-ESP"), None);
        assert_eq!(find_by_label(&probe, "KEEL-DATA"), None);
    }

    #[test]
    fn a_lone_esp_is_not_used_without_the_variable() {
        let images = Scratch::new("single");
        let esp = images.0.join("esp.img");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        let sys = FakeSys::new();
        sys.add_disk("vda", None);
        sys.add_partition("vda", 1, &esp);
        let choice = choose(&sys.probe());
        assert_eq!(choice.device, None);
        assert_eq!(choice.rule, EspRule::NoBootIdentity);
        assert!(choice
            .message()
            .is_some_and(|(_, text)| text.starts_with("ignoring KEEL-ESP on vda1:")));
        // Nothing at all: nothing to say.
        let none = choose(&FakeSys::new().probe());
        assert_eq!(none.device, None);
        assert_eq!(none.message(), None);
    }
}
