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
