//! Picks the boot entry across the guest's filesystems and turns it into a
//! plan for kexec: which files, which command line.
//!
//! Formats are tried in a fixed order (BLS Type #1, GRUB 2, extlinux, GRUB
//! legacy, Debian links, UKIs); within a format, filesystems in the order
//! given. A broken config is logged and the next source tried; when nothing
//! is found, every problem seen is in the error.

use std::path::PathBuf;

use crate::entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, RootHint, Source};
use crate::fs::{BootFs, FileKind, FsError};
use crate::limits::MAX_CMDLINE_BYTES;
use crate::text::has_console;
use crate::{bls, debian, extlinux, grub2, grub_legacy, uki};

/// The order formats are tried in: the most explicit boot configuration first.
pub const ORDER: [Format; 6] = [
    Format::Bls,
    Format::Grub2,
    Format::Extlinux,
    Format::GrubLegacy,
    Format::DebianLinks,
    Format::Uki,
];

/// One of the guest's filesystems, mounted by the caller.
pub struct Filesystem<'a> {
    /// The filesystem's UUID as `blkid` prints it; may be empty if it has none.
    pub uuid: String,
    pub label: Option<String>,
    pub fs: &'a dyn BootFs,
}

impl<'a> Filesystem<'a> {
    pub fn new(uuid: impl Into<String>, fs: &'a dyn BootFs) -> Self {
        Self {
            uuid: uuid.into(),
            label: None,
            fs,
        }
    }

    fn name(&self) -> String {
        if self.uuid.is_empty() {
            self.fs.describe()
        } else {
            format!("UUID={}", self.uuid)
        }
    }
}

/// A file the plan boots, found on one of the filesystems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    pub fs_uuid: String,
    /// Resolved (no symlinks) within that filesystem.
    pub path: String,
    pub size: u64,
    /// Where to open it, for filesystems backed by a directory.
    pub host_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub kernel: BootFile,
    pub initrds: Vec<BootFile>,
    pub cmdline: String,
    /// The entry's full title and where it was defined, for the console.
    pub title: String,
    pub source: Source,
    /// The kernel is a unified kernel image: kexec may refuse it.
    pub uki: bool,
}

/// The entry an error is about: its title and where it was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub title: String,
    pub at: Source,
}

impl EntryRef {
    fn of(entry: &BootEntry) -> Box<Self> {
        Box::new(Self {
            title: entry.title(),
            at: entry.source.clone(),
        })
    }
}

impl std::fmt::Display for EntryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry \"{}\" ({})", self.title, self.at)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error("no filesystem was given to look for a boot entry on")]
    NoFilesystems,
    #[error("no boot entry found: looked for {looked} on {filesystems}{problems}")]
    NoEntry {
        looked: String,
        filesystems: String,
        problems: String,
    },
    #[error("entry \"{wanted}\" not found in {file}; entries are:\n{entries}")]
    EntryNotFound {
        wanted: String,
        file: String,
        entries: String,
    },
    #[error("{entry} cannot be booted: {reason}")]
    Unsupported {
        entry: Box<EntryRef>,
        reason: String,
    },
    #[error("{entry} names {what} {path}, which is on none of the filesystems ({searched})")]
    MissingFile {
        entry: Box<EntryRef>,
        what: &'static str,
        path: String,
        searched: String,
    },
    #[error("{entry} names {what} {path}, which cannot be used: {reason}")]
    BadFile {
        entry: Box<EntryRef>,
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "{entry} needs root=UUID= of the filesystem holding it, and that filesystem has no UUID"
    )]
    NoRootUuid { entry: Box<EntryRef> },
    #[error("the command line is {len} bytes, more than the kernel's {max}: {cmdline}")]
    CmdlineTooLong {
        len: usize,
        max: usize,
        cmdline: String,
    },
}

/// The places a format is looked for, for "no boot entry found".
fn places(format: Format) -> String {
    let list: Vec<String> = match format {
        Format::Bls => bls::DIRS.iter().map(|d| format!("{d}/*.conf")).collect(),
        Format::Grub2 => grub2::PATHS.iter().map(|p| p.to_string()).collect(),
        Format::Extlinux => extlinux::PATHS.iter().map(|p| p.to_string()).collect(),
        Format::GrubLegacy => grub_legacy::PATHS.iter().map(|p| p.to_string()).collect(),
        Format::DebianLinks => vec!["/vmlinuz".into(), "/boot/vmlinuz".into()],
        Format::Uki => uki::DIRS.iter().map(|d| format!("{d}/*.efi")).collect(),
    };
    list.join(", ")
}

fn discover(format: Format, fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    match format {
        Format::Bls => bls::discover(fs),
        Format::Grub2 => grub2::discover(fs),
        Format::Extlinux => extlinux::discover(fs),
        Format::GrubLegacy => grub_legacy::discover(fs),
        Format::DebianLinks => debian::discover(fs),
        Format::Uki => uki::discover(fs),
    }
}

/// The first format, in [`ORDER`], that has entries on any filesystem, and
/// the index of the filesystem it was found on.
pub fn find_entries(filesystems: &[Filesystem<'_>]) -> Result<(usize, EntryList), ChooseError> {
    if filesystems.is_empty() {
        return Err(ChooseError::NoFilesystems);
    }
    let mut problems = Vec::new();
    for format in ORDER {
        for (i, f) in filesystems.iter().enumerate() {
            match discover(format, f.fs) {
                Ok(Some(list)) if !list.entries.is_empty() => {
                    for p in &problems {
                        log::warn!("{p}");
                    }
                    return Ok((i, list));
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{}: {e}", f.name())),
            }
        }
    }
    Err(ChooseError::NoEntry {
        looked: ORDER
            .iter()
            .map(|f| places(*f))
            .collect::<Vec<_>>()
            .join(", "),
        filesystems: filesystems
            .iter()
            .map(Filesystem::name)
            .collect::<Vec<_>>()
            .join(", "),
        problems: if problems.is_empty() {
            String::new()
        } else {
            format!("; problems seen:\n  {}", problems.join("\n  "))
        },
    })
}

/// Chooses the entry `wanted` names (or the default), finds its files and
/// composes its command line, with `cmdline_append` at the end.
pub fn choose(
    filesystems: &[Filesystem<'_>],
    wanted: Option<&str>,
    cmdline_append: &str,
) -> Result<BootPlan, ChooseError> {
    let (home, list) = find_entries(filesystems)?;
    let entry = match wanted {
        Some(w) => list.find(w).ok_or_else(|| ChooseError::EntryNotFound {
            wanted: w.to_string(),
            file: list.file.clone(),
            entries: list.describe_entries(),
        })?,
        None => list
            .entries
            .get(list.default)
            .ok_or_else(|| ChooseError::EntryNotFound {
                wanted: "default".to_string(),
                file: list.file.clone(),
                entries: list.describe_entries(),
            })?,
    };
    log::info!(
        "booting \"{}\" from {} on {}",
        entry.title(),
        entry.source,
        filesystems[home].name()
    );
    plan(filesystems, home, entry, cmdline_append)
}

/// The plan for one entry found on `filesystems[home]`.
pub fn plan(
    filesystems: &[Filesystem<'_>],
    home: usize,
    entry: &BootEntry,
    cmdline_append: &str,
) -> Result<BootPlan, ChooseError> {
    if let EntryKind::Unsupported(reason) = &entry.kind {
        return Err(ChooseError::Unsupported {
            entry: EntryRef::of(entry),
            reason: reason.clone(),
        });
    }
    let order = search_order(filesystems, home, entry.root_hint.as_ref());
    let kernel = locate(filesystems, &order, entry, "kernel", &entry.kernel)?;
    if kernel.size == 0 {
        return Err(bad(
            entry,
            "kernel",
            &entry.kernel,
            "it is empty".to_string(),
        ));
    }
    let initrds = entry
        .initrds
        .iter()
        .map(|i| locate(filesystems, &order, entry, "initrd", i))
        .collect::<Result<Vec<_>, _>>()?;

    let mut parts: Vec<String> = Vec::new();
    if entry.needs_root {
        let uuid = &filesystems[home].uuid;
        if uuid.is_empty() {
            return Err(ChooseError::NoRootUuid {
                entry: EntryRef::of(entry),
            });
        }
        parts.push(format!("root=UUID={uuid} ro"));
    }
    parts.push(entry.options.clone());
    if !has_console(&entry.options) && !has_console(cmdline_append) {
        parts.push("console=ttyS0".to_string());
    }
    parts.push(cmdline_append.to_string());
    let cmdline = parts
        .iter()
        .flat_map(|p| p.split_ascii_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    if cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(ChooseError::CmdlineTooLong {
            len: cmdline.len(),
            max: MAX_CMDLINE_BYTES,
            cmdline: crate::fs::shorten(&cmdline),
        });
    }
    Ok(BootPlan {
        kernel,
        initrds,
        cmdline,
        title: entry.title(),
        source: entry.source.clone(),
        uki: entry.kind == EntryKind::Uki,
    })
}

/// Filesystems to look for an entry's files on: the one `search` named,
/// then the entry's own, then the rest.
fn search_order(
    filesystems: &[Filesystem<'_>],
    home: usize,
    hint: Option<&RootHint>,
) -> Vec<usize> {
    let hinted = hint.and_then(|h| {
        filesystems.iter().position(|f| match h {
            RootHint::Uuid(u) => !f.uuid.is_empty() && f.uuid.eq_ignore_ascii_case(u),
            RootHint::Label(l) => f.label.as_deref() == Some(l.as_str()),
            RootHint::File(p) => f.fs.metadata(p).is_ok_and(|m| m.kind == FileKind::File),
        })
    });
    if hint.is_some() && hinted.is_none() {
        log::warn!(
            "the entry's filesystem ({hint:?}) is not among the guest's; looking on all of them"
        );
    }
    let mut order: Vec<usize> = hinted.into_iter().collect();
    for i in std::iter::once(home).chain(0..filesystems.len()) {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// `path` as written, and with "/boot" added or removed: a separate /boot
/// partition holds /boot's files at its root.
fn variants(path: &str) -> Vec<String> {
    match path.strip_prefix("/boot/") {
        Some(rest) => vec![path.to_string(), format!("/{rest}")],
        None => vec![path.to_string(), format!("/boot{path}")],
    }
}

fn locate(
    filesystems: &[Filesystem<'_>],
    order: &[usize],
    entry: &BootEntry,
    what: &'static str,
    path: &str,
) -> Result<BootFile, ChooseError> {
    let mut refused: Option<String> = None;
    for &i in order {
        let f = &filesystems[i];
        for p in variants(path) {
            match f.fs.metadata(&p) {
                Ok(m) if m.kind == FileKind::File => {
                    let resolved = f.fs.resolve(&p).unwrap_or(p);
                    return Ok(BootFile {
                        fs_uuid: f.uuid.clone(),
                        host_path: f.fs.host_path(&resolved),
                        path: resolved,
                        size: m.size,
                    });
                }
                Ok(_) => {
                    refused
                        .get_or_insert_with(|| format!("on {} it is not a regular file", f.name()));
                }
                Err(FsError::NotFound { .. } | FsError::NotADir { .. }) => {}
                Err(e) => {
                    refused.get_or_insert_with(|| format!("on {}: {e}", f.name()));
                }
            }
        }
    }
    if let Some(reason) = refused {
        return Err(bad(entry, what, path, reason));
    }
    Err(ChooseError::MissingFile {
        entry: EntryRef::of(entry),
        what,
        path: path.to_string(),
        searched: order
            .iter()
            .map(|i| filesystems[*i].name())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn bad(entry: &BootEntry, what: &'static str, path: &str, reason: String) -> ChooseError {
    ChooseError::BadFile {
        entry: EntryRef::of(entry),
        what,
        path: path.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests;
