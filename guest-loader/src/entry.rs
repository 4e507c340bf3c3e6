//! The boot entry every parser produces, and how entries are named.

use std::fmt;

/// Which kind of boot configuration an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bls,
    Grub2,
    Extlinux,
    GrubLegacy,
    DebianLinks,
    Uki,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Bls => "Boot Loader Specification entries",
            Format::Grub2 => "GRUB 2 config",
            Format::Extlinux => "extlinux/syslinux config",
            Format::GrubLegacy => "GRUB legacy menu",
            Format::DebianLinks => "Debian kernel links",
            Format::Uki => "unified kernel images",
        })
    }
}

/// Where an entry was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub format: Format,
    pub file: String,
    /// 1-based; 0 when the entry is a whole file or a link.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{} line {}", self.file, self.line)
        }
    }
}

/// One level of a menu: the entry's (or its submenu's) position, title and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuStep {
    pub index: usize,
    pub title: String,
    pub id: Option<String>,
}

/// What an entry boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A Linux kernel with initrds and a command line.
    Linux,
    /// A unified kernel image; kexec of one may not work.
    Uki,
    /// Something the loader cannot boot (chainloader, a COM32 module...).
    Unsupported(String),
}

/// Which filesystem a GRUB entry's paths are on (`search --set=root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootHint {
    Uuid(String),
    Label(String),
    File(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Submenus first, the entry itself last; never empty.
    pub path: Vec<MenuStep>,
    /// Absolute within its filesystem; empty for unsupported entries.
    pub kernel: String,
    pub initrds: Vec<String>,
    pub options: String,
    pub kind: EntryKind,
    pub source: Source,
    pub root_hint: Option<RootHint>,
    /// No config gave a command line: the chooser composes `root=UUID=`.
    pub needs_root: bool,
    pub version: Option<String>,
}

impl BootEntry {
    /// A top-level entry with no kernel yet.
    pub(crate) fn new(index: usize, title: String, id: Option<String>, source: Source) -> Self {
        Self {
            path: vec![MenuStep { index, title, id }],
            kernel: String::new(),
            initrds: Vec::new(),
            options: String::new(),
            kind: EntryKind::Linux,
            source,
            root_hint: None,
            needs_root: false,
            version: None,
        }
    }

    /// Titles joined the way GRUB names submenu entries: "Advanced>Debian".
    pub fn title(&self) -> String {
        self.path
            .iter()
            .map(|s| s.title.as_str())
            .collect::<Vec<_>>()
            .join(">")
    }

    /// Positions joined the same way: "1>2".
    pub fn index_path(&self) -> String {
        self.path
            .iter()
            .map(|s| s.index.to_string())
            .collect::<Vec<_>>()
            .join(">")
    }

    pub fn id(&self) -> Option<&str> {
        self.path.last().and_then(|s| s.id.as_deref())
    }

    /// Whether `wanted` names this entry: a '>'-separated path whose parts
    /// each match a level by position, title or id, or the whole title,
    /// or the entry's own id or title alone.
    pub fn matches(&self, wanted: &str) -> bool {
        let parts: Vec<&str> = wanted.split('>').collect();
        if parts.len() == self.path.len()
            && parts.iter().zip(&self.path).all(|(p, s)| {
                p.parse::<usize>().is_ok_and(|n| n == s.index)
                    || *p == s.title
                    || s.id.as_deref() == Some(*p)
            })
        {
            return true;
        }
        let last = self.path.last();
        wanted == self.title()
            || self.id() == Some(wanted)
            || last.is_some_and(|s| s.title == wanted)
    }

    /// One line for lists in messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} \"{}\"", self.index_path(), self.title());
        if let Some(id) = self.id() {
            s.push_str(&format!(" (id {id})"));
        }
        s
    }
}

/// The entries of one config, in menu order, and which one is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryList {
    pub format: Format,
    /// The config read (or the directory of entries).
    pub file: String,
    pub entries: Vec<BootEntry>,
    /// An index into `entries`, valid whenever `entries` is not empty.
    pub default: usize,
}

impl EntryList {
    /// Builds the list, resolving the config's default by name; a default
    /// that names nothing falls back to the first entry, as GRUB does.
    pub(crate) fn new(
        format: Format,
        file: String,
        entries: Vec<BootEntry>,
        default: Option<&str>,
    ) -> Self {
        let default = match default {
            None => 0,
            Some(d) => find_entry(&entries, d).unwrap_or_else(|| {
                log::warn!("{file}: the default \"{d}\" names no entry; using the first");
                0
            }),
        };
        Self {
            format,
            file,
            entries,
            default,
        }
    }

    pub fn find(&self, wanted: &str) -> Option<&BootEntry> {
        find_entry(&self.entries, wanted).and_then(|i| self.entries.get(i))
    }

    /// The entries for a message, one per line, at most 20.
    pub fn describe_entries(&self) -> String {
        let mut lines: Vec<String> = self
            .entries
            .iter()
            .take(20)
            .map(|e| format!("  {}", e.describe()))
            .collect();
        if self.entries.len() > 20 {
            lines.push(format!("  ... and {} more", self.entries.len() - 20));
        }
        lines.join("\n")
    }
}

/// The first entry `wanted` names; an exact path match wins over a loose one.
pub(crate) fn find_entry(entries: &[BootEntry], wanted: &str) -> Option<usize> {
    entries.iter().position(|e| e.matches(wanted))
}

/// A config at fault, named by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file, if *line == 0 { String::new() } else { format!(" line {line}") })]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }

    /// A failed read of `file`, reported against the line that asked for it.
    pub(crate) fn fs(file: &str, line: usize, e: &crate::fs::FsError) -> Self {
        Self::new(file, line, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[(usize, &str, Option<&str>)]) -> BootEntry {
        let mut e = BootEntry::new(
            0,
            String::new(),
            None,
            Source {
                format: Format::Grub2,
                file: "/boot/grub/grub.cfg".into(),
                line: 1,
            },
        );
        e.path = path
            .iter()
            .map(|(i, t, id)| MenuStep {
                index: *i,
                title: t.to_string(),
                id: id.map(str::to_string),
            })
            .collect();
        e
    }

    #[test]
    fn entries_match_by_position_title_and_id_per_level() {
        let e = entry(&[
            (1, "Advanced", Some("adv")),
            (2, "Debian, recovery", Some("rec")),
        ]);
        for wanted in [
            "1>2",
            "Advanced>Debian, recovery",
            "adv>rec",
            "1>rec",
            "rec",
            "Debian, recovery",
        ] {
            assert!(e.matches(wanted), "{wanted}");
        }
        for wanted in ["1", "2", "0>2", "1>2>3", "Advanced", "adv"] {
            assert!(!e.matches(wanted), "{wanted}");
        }
        assert_eq!(e.title(), "Advanced>Debian, recovery");
        assert_eq!(e.index_path(), "1>2");
        assert_eq!(e.describe(), "1>2 \"Advanced>Debian, recovery\" (id rec)");
    }

    #[test]
    fn an_unknown_default_falls_back_to_the_first_entry() {
        let list = EntryList::new(
            Format::Grub2,
            "f".into(),
            vec![entry(&[(0, "a", None)]), entry(&[(1, "b", None)])],
            Some("nope"),
        );
        assert_eq!(list.default, 0);
        let list = EntryList::new(Format::Grub2, "f".into(), list.entries, Some("b"));
        assert_eq!(list.default, 1);
    }

    #[test]
    fn config_errors_name_file_and_line() {
        assert_eq!(
            ConfigError::new("/a.cfg", 3, "bad").to_string(),
            "/a.cfg line 3: bad"
        );
        assert_eq!(
            ConfigError::new("/a.cfg", 0, "bad").to_string(),
            "/a.cfg: bad"
        );
    }
}
