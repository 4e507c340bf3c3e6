//! The `[boot]` table: a kernel (and initrd) named by the spec, or
//! `from = "disk"`, where the guest's own boot configuration on its disks
//! chooses the kernel.
//!
//! A disk is hostile data, so the host never reads its boot configuration
//! (pygrub, which did in Xen's dom0, had a run of host compromises).
//! keel-vmm instead boots the Keel kernel with keel-loader as its init
//! ([`LOADER_KERNEL`], [`LOADER_INITRD`]); inside the guest the loader
//! mounts the disks read-only, picks the entry and kexecs that kernel.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{check_spec_path, MAX_CMDLINE_LEN};
use crate::cmdline_arg;
use crate::config::{ConfigError, Source};

/// The kernel keel-vmm boots a `from = "disk"` guest with: the Keel
/// kernel, which init puts in the data partition at boot.
pub const LOADER_KERNEL: &str = "images/keel-loader/vmlinuz";
/// keel-loader's initramfs, beside it.
pub const LOADER_INITRD: &str = "images/keel-loader/initrd.cpio.zst";
/// The loader's own command line, before those words: `panic=-1` so a
/// loader that dies ends the VM rather than hanging it.
pub const LOADER_CMDLINE: &str = "console=ttyS0 quiet panic=-1";
/// Longest `entry` (a GRUB menu path can be long, but not this long).
pub const MAX_ENTRY_LEN: usize = 512;
/// Longest `cmdline_append`: room is left for the entry's own arguments.
pub const MAX_APPEND_LEN: usize = 1024;

/// Where the guest's kernel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootFrom {
    /// `kernel` (and `initrd`, `cmdline`) name the files.
    #[default]
    Kernel,
    /// The guest's own boot configuration on its disks.
    Disk,
}

impl BootFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            BootFrom::Kernel => "kernel",
            BootFrom::Disk => "disk",
        }
    }
}

impl fmt::Display for BootFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[boot]` table. Paths are beneath the data partition's `images/`
/// or `disks/`; see [`check_spec_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    pub from: Option<BootFrom>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// `from = "disk"`: the boot entry to use instead of the default one,
    /// by id, title, or menu path (`"1>2"`, `"Advanced options...>..."`).
    pub entry: Option<String>,
    /// `from = "disk"`: arguments added to the entry's command line.
    pub cmdline_append: Option<String>,
}

/// What keel-vmm loads: files beneath the data partition and a command
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Empty for the VMM's default.
    pub cmdline: String,
}

impl KernelBoot {
    /// The kernel, then the initrd if any.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.kernel.as_path()).chain(self.initrd.as_deref())
    }
}

impl BootSpec {
    /// Where the kernel comes from (default: the spec's `kernel`).
    pub fn from(&self) -> BootFrom {
        self.from.unwrap_or_default()
    }

    /// The kernel command line, empty when unset.
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_deref().unwrap_or("")
    }

    /// The files and command line keel-vmm boots: the spec's own, or for
    /// `from = "disk"` the loader's, told the entry and the additions.
    pub fn kernel_boot(&self) -> KernelBoot {
        match self.from() {
            BootFrom::Kernel => KernelBoot {
                kernel: self.kernel.clone().unwrap_or_default(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline().to_string(),
            },
            BootFrom::Disk => {
                let mut cmdline = LOADER_CMDLINE.to_string();
                for (arg, value) in [
                    (cmdline_arg::ENTRY_KEY, &self.entry),
                    (cmdline_arg::APPEND_KEY, &self.cmdline_append),
                ] {
                    if let Some(value) = value {
                        cmdline.push_str(&format!(" {arg}={}", cmdline_arg::encode(value)));
                    }
                }
                KernelBoot {
                    kernel: PathBuf::from(LOADER_KERNEL),
                    initrd: Some(PathBuf::from(LOADER_INITRD)),
                    cmdline,
                }
            }
        }
    }

    /// The guest files the spec itself names (the loader's are init's).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.kernel
            .as_deref()
            .into_iter()
            .chain(self.initrd.as_deref())
    }

    pub(super) fn validate(&self, at: &Source, disks: usize) -> Result<(), ConfigError> {
        match self.from() {
            BootFrom::Kernel => {
                let Some(kernel) = &self.kernel else {
                    return Err(at.error_at(
                        "boot",
                        "boot.kernel",
                        "required unless `from = \"disk\"`",
                    ));
                };
                check_spec_path(kernel).map_err(|m| at.error("boot.kernel", m))?;
                if let Some(initrd) = &self.initrd {
                    check_spec_path(initrd).map_err(|m| at.error("boot.initrd", m))?;
                }
                if let Some(cmdline) = &self.cmdline {
                    check_words(cmdline, MAX_CMDLINE_LEN)
                        .map_err(|m| at.error("boot.cmdline", m))?;
                }
                for field in ["entry", "cmdline_append"] {
                    let set = match field {
                        "entry" => self.entry.is_some(),
                        _ => self.cmdline_append.is_some(),
                    };
                    if set {
                        return Err(at.error(
                            &format!("boot.{field}"),
                            "only for `from = \"disk\"`; with a kernel, `cmdline` says it all",
                        ));
                    }
                }
            }
            BootFrom::Disk => {
                for (field, set) in [
                    ("kernel", self.kernel.is_some()),
                    ("initrd", self.initrd.is_some()),
                    ("cmdline", self.cmdline.is_some()),
                ] {
                    if set {
                        return Err(at.error(
                            &format!("boot.{field}"),
                            "not with `from = \"disk\"`: the guest's disks choose the kernel (use `entry` and `cmdline_append`)",
                        ));
                    }
                }
                if disks == 0 {
                    return Err(at.error(
                        "boot.from",
                        "\"disk\" needs at least one [[disk]] to boot from",
                    ));
                }
                if let Some(entry) = &self.entry {
                    check_words(entry, MAX_ENTRY_LEN).map_err(|m| at.error("boot.entry", m))?;
                    if entry.is_empty() {
                        return Err(at.error("boot.entry", "must not be empty"));
                    }
                }
                if let Some(append) = &self.cmdline_append {
                    check_words(append, MAX_APPEND_LEN)
                        .map_err(|m| at.error("boot.cmdline_append", m))?;
                }
            }
        }
        Ok(())
    }
}

/// Text that goes on a kernel command line: bounded, and no NUL, at
/// which the kernel would silently stop reading.
fn check_words(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("must be at most {max} bytes, not {}", text.len()));
    }
    if text.contains('\0') {
        return Err("must not contain NUL bytes".into());
    }
    Ok(())
}
