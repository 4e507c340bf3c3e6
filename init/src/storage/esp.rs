//! Which KEEL-ESP to use when several disks carry one: the one the
//! firmware booted from (its PARTUUID is `LoaderDevicePartUUID`, see
//! [`super::efivar`]), else the first by name; and what to say about it.

use super::blockdev::{BlockDevice, Probe};
use super::label::FsKind;

impl Probe {
    /// The firmware's `LoaderDevicePartUUID` (lower case), read from
    /// efivarfs under this probe's sysfs root.
    pub fn loader_device_part_uuid(&self) -> Option<String> {
        super::efivar::read_loader_device_part_uuid(&self.sys_root)
    }

    /// Chooses the ESP among the FAT file systems labelled KEEL-ESP,
    /// without logging: the one whose PARTUUID is the firmware's
    /// `LoaderDevicePartUUID`, else the first by name (see [`EspRule`]).
    pub fn choose_esp(&self) -> Option<EspChoice> {
        let mut found = self.find_all(super::ESP_LABEL);
        found.retain(|d| d.fs.as_ref().is_some_and(|fs| fs.kind == FsKind::Fat));
        if found.is_empty() {
            return None;
        }
        let candidates: Vec<String> = found.iter().map(|d| d.name.clone()).collect();
        let booted = self.loader_device_part_uuid();
        let (pick, rule) = match booted {
            None => (0, EspRule::FirstByName),
            Some(partuuid) => {
                let matching: Vec<usize> = found
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.partuuid.as_deref() == Some(partuuid.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                match matching[..] {
                    [] => (0, EspRule::NotBootedFrom { partuuid }),
                    [one] => (one, EspRule::Booted { partuuid }),
                    [first, ..] => {
                        let names = matching.iter().map(|&i| found[i].name.clone()).collect();
                        (first, EspRule::AmbiguousPartuuid { partuuid, names })
                    }
                }
            }
        };
        Some(EspChoice {
            device: found.swap_remove(pick),
            rule,
            candidates,
        })
    }

    /// [`Probe::choose_esp`], logging how the ESP was chosen.
    pub fn find_esp(&self) -> Option<BlockDevice> {
        let choice = self.choose_esp()?;
        choice.log();
        Some(choice.device)
    }
}

/// How [`Probe::choose_esp`] picked the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspRule {
    /// Its PARTUUID is the firmware's `LoaderDevicePartUUID`: the firmware
    /// booted from it.
    Booted { partuuid: String },
    /// `LoaderDevicePartUUID` is none of their PARTUUIDs (booted from an
    /// ISO on a virtual CD, or from an ESP without the label): the first
    /// by name.
    NotBootedFrom { partuuid: String },
    /// Several carry the PARTUUID the firmware booted from (copies of one
    /// image): the first of those by name.
    AmbiguousPartuuid {
        partuuid: String,
        names: Vec<String>,
    },
    /// No readable `LoaderDevicePartUUID` (no EFI, no efivarfs, another
    /// loader): the first by name.
    FirstByName,
}

/// The ESP [`Probe::choose_esp`] picked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspChoice {
    pub device: BlockDevice,
    pub rule: EspRule,
    /// Every device carrying a FAT KEEL-ESP, by name.
    pub candidates: Vec<String>,
}

impl EspChoice {
    /// What to log about the choice, or `None` when there is nothing worth
    /// saying (a single ESP and no variable).
    pub fn message(&self) -> Option<(log::Level, String)> {
        let label = super::ESP_LABEL;
        let name = &self.device.name;
        let all = self.candidates.join(", ");
        let several = self.candidates.len() > 1;
        match &self.rule {
            EspRule::Booted { partuuid } => {
                let mut text = format!(
                    "booted from {} (LoaderDevicePartUUID {partuuid})",
                    self.device.path.display()
                );
                if several {
                    text.push_str(&format!("; {label} is also on {}", self.others()));
                }
                Some((log::Level::Info, text))
            }
            EspRule::NotBootedFrom { partuuid } => Some((
                if several {
                    log::Level::Warn
                } else {
                    log::Level::Info
                },
                format!(
                    "LoaderDevicePartUUID {partuuid} is not a {label} partition here \
                     ({all}; booted from an ISO?); using {name}, the first by name"
                ),
            )),
            EspRule::AmbiguousPartuuid { partuuid, names } => Some((
                log::Level::Warn,
                format!(
                    "{} partitions have the PARTUUID {partuuid} the firmware booted from \
                     ({}: copies of one image?); using {name}, the first by name",
                    names.len(),
                    names.join(", ")
                ),
            )),
            EspRule::FirstByName if several => Some((
                log::Level::Warn,
                format!(
                    "{} devices carry the label {label} ({all}); using {name} \
                     (no LoaderDevicePartUUID tells which one the firmware booted from)",
                    self.candidates.len()
                ),
            )),
            EspRule::FirstByName => None,
        }
    }

    fn others(&self) -> String {
        let others: Vec<&str> = self
            .candidates
            .iter()
            .filter(|n| **n != self.device.name)
            .map(String::as_str)
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

    #[test]
    fn the_esp_the_firmware_booted_from_wins() {
        let images = Scratch::new("booted");
        let sys = two_keel_disks(&images);
        let probe = sys.probe();
        let root = &sys.root.0;

        // Without the variable: the old rule, first by name, with a warning.
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(choice.rule, EspRule::FirstByName);
        assert_eq!(choice.candidates, vec!["sda1", "sdb1"]);
        let (level, text) = choice.message().expect("a warning");
        assert_eq!(level, log::Level::Warn);
        assert!(
            text.starts_with("2 devices carry the label KEEL-ESP (sda1, sdb1); using sda1"),
            "{text}"
        );
        assert_eq!(
            find_by_label(&probe, "KEEL-DATA"),
            Some(root.join("dev/sda2"))
        );

        // systemd-stub says it was started from the stick's ESP (upper case,
        // as systemd writes it): that ESP, and the data on its disk, win.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1).to_uppercase());
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sdb1");
        assert_eq!(
            choice.rule,
            EspRule::Booted {
                partuuid: test_guid_text(0xb1)
            }
        );
        let (level, text) = choice.message().expect("a message");
        assert_eq!(level, log::Level::Info);
        assert!(
            text.starts_with(&format!(
                "booted from {} (LoaderDevicePartUUID {})",
                root.join("dev/sdb1").display(),
                test_guid_text(0xb1)
            )),
            "{text}"
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
        // the old rule again, said so.
        set_loader_device_part_uuid(&probe, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(
            choice.rule,
            EspRule::NotBootedFrom {
                partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            }
        );
        assert_eq!(choice.message().map(|m| m.0), Some(log::Level::Warn));

        // A variable that is not a GUID counts as none.
        set_loader_device_part_uuid(&probe, "garbage");
        assert_eq!(
            probe.choose_esp().map(|c| c.rule),
            Some(EspRule::FirstByName)
        );
    }

    #[test]
    fn copies_of_one_image_share_a_partuuid() {
        let images = Scratch::new("clones");
        let sys = two_keel_disks(&images);
        // sdc is a byte copy of sda (same image written twice).
        let esp = images.0.join("esp.img");
        sys.add_disk("sdc", Some(&images.0.join("sda.img")));
        sys.add_partition_at("sdc", 1, &esp, ESP_START);
        let probe = sys.probe();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xa1));
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(
            choice.rule,
            EspRule::AmbiguousPartuuid {
                partuuid: test_guid_text(0xa1),
                names: vec!["sda1".into(), "sdc1".into()]
            }
        );
        assert_eq!(choice.message().map(|m| m.0), Some(log::Level::Warn));
    }

    #[test]
    fn a_single_esp_needs_no_variable_and_says_nothing() {
        let images = Scratch::new("single");
        let esp = images.0.join("esp.img");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        let sys = FakeSys::new();
        sys.add_disk("vda", None);
        sys.add_partition("vda", 1, &esp);
        let choice = sys.probe().choose_esp().expect("an ESP");
        assert_eq!(choice.rule, EspRule::FirstByName);
        assert_eq!(choice.message(), None);
        assert_eq!(FakeSys::new().probe().choose_esp(), None);
    }
}
