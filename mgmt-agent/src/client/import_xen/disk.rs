//! Xen disk specifications (xl-disk-configuration(5)): the positional
//! `TARGET,FORMAT,VDEV,ACCESS`, xend's `PREFIX:TARGET,VDEV[:cdrom],ACCESS`
//! with its prefixes (`phy:`, `file:`, `tap:aio:`, `tap:qcow2:`, ...), and
//! `key=value` parameters, where `target=` comes last and takes the rest.

use super::report::Note;
use super::vdev::Vdev;

/// An image format Xen reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow,
    Qcow2,
    Vhd,
    Qed,
}

impl Format {
    fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "raw" => Format::Raw,
            "qcow" => Format::Qcow,
            "qcow2" => Format::Qcow2,
            "vhd" => Format::Vhd,
            "qed" => Format::Qed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Qed => "qed",
        }
    }
}

/// One parsed disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenDisk {
    /// The image or block device in dom0; empty for an empty CD-ROM drive.
    pub target: String,
    pub format: Format,
    pub vdev: Vdev,
    pub read_only: bool,
    pub cdrom: bool,
    /// `phy:`, or a target under `/dev/`: a block device, not a file.
    pub block_device: bool,
    /// What Keel makes of the disk's other parameters.
    pub notes: Vec<Note>,
}

/// Prefixes xl strips and ignores.
const IGNORED_PREFIXES: &[&str] = &["tapdisk", "tap", "tap2", "aio", "ioemu", "file", "phy"];
/// Prefixes that name a block script (`iscsi:` is `script=block-iscsi`).
const SCRIPT_PREFIXES: &[&str] = &["iscsi", "nbd", "enbd", "drbd"];
/// Parameters that are bare words.
const FLAGS: &[&str] = &[
    "cdrom",
    "discard",
    "no-discard",
    "direct-io-safe",
    "trusted",
    "untrusted",
    "colo",
];

#[derive(Default)]
struct Fields {
    target: Option<String>,
    /// The next positional parameter: 0 target, 1 format, 2 vdev, 3 access.
    slot: u8,
    /// A deprecated prefix was given: the format is not positional.
    had_prefix: bool,
    format: Option<Option<Format>>,
    vdev: Option<String>,
    access: Option<String>,
    cdrom: Option<bool>,
    block_device: bool,
    script: Option<String>,
    notes: Vec<Note>,
}

/// Parses one element of `disk = [...]`.
pub fn parse(spec: &str) -> Result<XenDisk, String> {
    let mut f = Fields::default();
    let mut rest = spec;
    loop {
        if let Some(target) = rest.trim_start().strip_prefix("target=") {
            if f.target.as_deref().is_some_and(|t| !t.is_empty()) {
                return Err("the target is given twice".into());
            }
            f.target = Some(target.to_string());
            break;
        }
        let (field, more) = match rest.split_once(',') {
            Some((field, more)) => (field, Some(more)),
            None => (rest, None),
        };
        f.field(field.trim())?;
        match more {
            Some(more) if !more.is_empty() => rest = more,
            _ => break,
        }
    }
    f.finish()
}

impl Fields {
    fn field(&mut self, field: &str) -> Result<(), String> {
        if let Some((key, value)) = keyword(field) {
            return self.keyword(key, value);
        }
        if FLAGS.contains(&field) {
            return self.flag(field);
        }
        self.positional(field)
    }

    fn keyword(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "format" => {
                let format = match value {
                    "" => None,
                    v => Some(Format::parse(v).ok_or_else(|| not_a_format(v))?),
                };
                once(&mut self.format, format, "format")
            }
            "vdev" => once(&mut self.vdev, value.to_string(), "vdev"),
            "access" => once(&mut self.access, value.to_string(), "access"),
            "devtype" => match value {
                "cdrom" => once(&mut self.cdrom, true, "devtype"),
                "disk" | "" => once(&mut self.cdrom, false, "devtype"),
                other => Err(format!("`devtype={other}` is not cdrom or disk")),
            },
            "script" => {
                self.script = Some(value.to_string());
                Ok(())
            }
            "backendtype" => {
                self.notes.push(Note::changed(format!(
                    "backendtype={value}: Keel serves the disk with its own virtio-blk"
                )));
                Ok(())
            }
            "backend" => {
                self.notes.push(Note::not_mapped(format!(
                    "backend={value}: Keel has no driver domains; the host serves the disk"
                )));
                Ok(())
            }
            // Keel's disks are virtio whatever Xen's protocol was.
            "specification" if matches!(value, "xen" | "virtio" | "") => Ok(()),
            "colo-host" | "colo-port" | "colo-export" | "active-disk" | "hidden-disk" => {
                self.notes.push(Note::not_mapped(format!(
                    "{key}={value}: Keel has no COLO replication"
                )));
                Ok(())
            }
            _ => {
                self.notes
                    .push(Note::not_mapped(format!("{key}={value}: unknown to Keel")));
                Ok(())
            }
        }
    }

    fn flag(&mut self, flag: &str) -> Result<(), String> {
        let note = match flag {
            "cdrom" => return once(&mut self.cdrom, true, "devtype"),
            // Keel never passes discards on: what the flag asks for.
            "no-discard" => return Ok(()),
            "discard" => {
                Note::not_mapped("discard: Keel's virtio-blk does not pass discards (TRIM) on")
            }
            "direct-io-safe" => {
                Note::changed("direct-io-safe: a dom0 workaround Keel does not need")
            }
            "colo" => Note::not_mapped("colo: Keel has no COLO replication"),
            other => Note::changed(format!(
                "{other}: a hint to Xen's disk frontend; Keel's virtio-blk has none"
            )),
        };
        self.notes.push(note);
        Ok(())
    }

    /// The next positional parameter; an empty one takes the default.
    fn positional(&mut self, field: &str) -> Result<(), String> {
        match self.slot {
            0 => {
                let target = self.strip_prefixes(field)?;
                once(&mut self.target, target.to_string(), "target")?;
                // After a deprecated prefix comes the vdev.
                self.slot = if self.had_prefix { 2 } else { 1 };
                return Ok(());
            }
            // The format, unless (as xend wrote them) it is already the
            // vdev: of an empty CD-ROM drive (`,hdc:cdrom,r`), or after a
            // target with no prefix.
            1 if looks_like_vdev(field) => {
                self.vdev_field(field)?;
                self.slot = 3;
                return Ok(());
            }
            1 if !field.is_empty() => {
                let format = Format::parse(field).ok_or_else(|| not_a_format(field))?;
                once(&mut self.format, Some(format), "format")?;
            }
            2 => self.vdev_field(field)?,
            3 if !field.is_empty() => once(&mut self.access, field.to_string(), "access")?,
            1..=3 => {}
            _ => return Err(format!("too many parameters at `{field}`")),
        }
        self.slot += 1;
        Ok(())
    }

    /// `[ioemu:]VDEV[:cdrom|:disk]`; empty for none.
    fn vdev_field(&mut self, field: &str) -> Result<(), String> {
        if field.is_empty() {
            return Ok(());
        }
        let field = field.strip_prefix("ioemu:").unwrap_or(field);
        let vdev = match field.rsplit_once(':') {
            Some((vdev, "cdrom")) => {
                once(&mut self.cdrom, true, "devtype")?;
                vdev
            }
            Some((vdev, "disk")) => vdev,
            Some((_, other)) => {
                return Err(format!("`:{other}` is not a device type (cdrom or disk)"))
            }
            None => field,
        };
        once(&mut self.vdev, vdev.to_string(), "vdev")
    }

    /// Strips the deprecated prefixes of the target (`tap:aio:`, `phy:`,
    /// `qcow2:`, ...), recording what they say.
    fn strip_prefixes<'a>(&mut self, mut target: &'a str) -> Result<&'a str, String> {
        while let Some((word, rest)) = target.split_once(':') {
            if word == "phy" {
                self.block_device = true;
            } else if let Some(format) = Format::parse(word) {
                once(&mut self.format, Some(format), "format")?;
            } else if SCRIPT_PREFIXES.contains(&word) {
                self.script = Some(format!("block-{word}"));
            } else if !IGNORED_PREFIXES.contains(&word) {
                // A script's target may hold colons of its own.
                if self.script.is_none()
                    && !word.is_empty()
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    return Err(format!("`{word}:` is not a disk prefix Xen knows"));
                }
                break;
            }
            self.had_prefix = true;
            target = rest;
        }
        Ok(target)
    }

    fn finish(self) -> Result<XenDisk, String> {
        let Some(vdev_name) = self.vdev else {
            return Err("no vdev (the guest's name for the disk, such as xvda)".into());
        };
        let vdev = Vdev::parse(&vdev_name).ok_or_else(|| {
            format!("`{vdev_name}` is not a Xen vdev (such as xvda, xvda1, hdc or sda)")
        })?;
        let cdrom = self.cdrom.unwrap_or(false);
        let (read_only, shared) = match self.access.as_deref().unwrap_or("") {
            "" => (cdrom, false),
            "r" | "ro" => (true, false),
            "w" | "rw" => (false, false),
            "w!" => (false, true),
            other => {
                return Err(format!(
                    "`{other}` is not an access mode (r, ro, w, rw or w!)"
                ))
            }
        };
        let mut target = self.target.unwrap_or_default();
        if target.is_empty() && !cdrom {
            return Err("no target: only a CD-ROM drive may be empty".into());
        }
        let mut notes = self.notes;
        if let Some(script) = &self.script {
            notes.insert(
                0,
                Note::not_mapped(format!(
                    "script={script}: Keel runs no block scripts; the target must be a file or block device keelctl can read"
                )),
            );
        } else if !target.is_empty() && !target.starts_with('/') {
            // xl-disk-configuration(5): a relative target is under /dev.
            target = format!("/dev/{target}");
        }
        if shared {
            notes.push(Note::not_mapped(
                "access w!: Keel never gives one writable disk to two guests; this guest alone writes it",
            ));
        }
        Ok(XenDisk {
            block_device: self.block_device || target.starts_with("/dev/"),
            target,
            format: self.format.flatten().unwrap_or(Format::Raw),
            vdev,
            read_only,
            cdrom,
            notes,
        })
    }
}

/// `key=value` with a parameter name for key (lowercase letters, digits,
/// `-` and `_`, starting with a letter).
fn keyword(field: &str) -> Option<(&str, &str)> {
    let (key, value) = field.split_once('=')?;
    let name = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    name.then_some((key, value))
}

fn looks_like_vdev(field: &str) -> bool {
    let field = field.strip_prefix("ioemu:").unwrap_or(field);
    let vdev = field.split_once(':').map_or(field, |(v, _)| v);
    Vdev::parse(vdev).is_some()
}

fn not_a_format(field: &str) -> String {
    format!("`{field}` is not a disk format (raw, qcow, qcow2, vhd or qed) nor a vdev")
}

/// Sets a parameter that may be given once.
fn once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("the {name} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests;
