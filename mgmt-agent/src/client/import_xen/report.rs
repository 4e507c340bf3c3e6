//! The import report: one line for each setting Keel does not reproduce
//! and each change the import made, located in the Xen config.

use std::fmt;

/// Whether a report line is a change the import made or something lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Mapped, but written differently (a device renamed, a default
    /// filled in); the guest keeps what the setting meant.
    Changed,
    /// Keel does not do what the setting asks: the import is partial.
    NotMapped,
}

/// What a disk, NIC or command-line parser says about one part of a
/// value, before the mapper knows where the value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: Kind,
    pub text: String,
}

impl Note {
    pub fn changed(text: impl Into<String>) -> Self {
        Note {
            kind: Kind::Changed,
            text: text.into(),
        }
    }

    pub fn not_mapped(text: impl Into<String>) -> Self {
        Note {
            kind: Kind::NotMapped,
            text: text.into(),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The config's line; `None` for a setting the config leaves out.
    pub line: Option<usize>,
    /// The setting, with the element for lists: `disk[1]`, `vif[0]`.
    pub key: String,
    pub kind: Kind,
    pub text: String,
}

/// Every line of the report, in the order the mapper found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    entries: Vec<Entry>,
}

impl Report {
    pub fn add(&mut self, line: Option<usize>, key: impl Into<String>, note: Note) {
        self.entries.push(Entry {
            line,
            key: key.into(),
            kind: note.kind,
            text: note.text,
        });
    }

    pub fn changed(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        text: impl Into<String>,
    ) {
        self.add(line, key, Note::changed(text));
    }

    pub fn not_mapped(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        text: impl Into<String>,
    ) {
        self.add(line, key, Note::not_mapped(text));
    }

    /// The entries by line, settings the config leaves out last; entries
    /// of one line keep the order they were found in.
    pub fn entries(&self) -> Vec<&Entry> {
        let mut out: Vec<&Entry> = self.entries.iter().collect();
        out.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        out
    }

    /// How many settings Keel does not reproduce.
    pub fn not_mapped_count(&self) -> usize {
        self.count(Kind::NotMapped)
    }

    /// How many changes the import made.
    pub fn changed_count(&self) -> usize {
        self.count(Kind::Changed)
    }

    fn count(&self, kind: Kind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// The report's lines, each naming `file`:
    /// `FILE:LINE: KEY: not mapped: REASON` or `FILE:LINE: KEY: CHANGE`.
    pub fn lines(&self, file: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .map(|e| Located { file, entry: e }.to_string())
            .collect()
    }
}

/// An entry with the config file's name, as printed.
struct Located<'a> {
    file: &'a str,
    entry: &'a Entry,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Entry {
            line,
            key,
            kind,
            text,
        } = self.entry;
        match line {
            Some(line) => write!(f, "{}:{line}: {key}: ", self.file)?,
            None => write!(f, "{}: {key}: ", self.file)?,
        }
        match kind {
            Kind::Changed => write!(f, "{text}"),
            Kind::NotMapped => write!(f, "not mapped: {text}"),
        }
    }
}
