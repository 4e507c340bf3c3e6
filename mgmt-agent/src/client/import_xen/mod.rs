//! `keelctl import xen`: a Xen domain config (xl or xm) turned into a
//! Keel guest spec, with a report of every setting that was changed or
//! could not be mapped.
//!
//! Pure code: the caller reads the config and, for `--upload`, the files
//! the import lists. One file per concern: [`syntax`] reads the config,
//! `disk`, `vif` and `vdev` its device strings, `cmdline` rewrites the
//! kernel command line, `policy` picks the restart policy, `map` builds
//! the spec and `report` holds what it says about each key.

mod cmdline;
mod disk;
mod map;
mod policy;
mod report;
pub mod syntax;
mod vdev;
mod vif;

use std::fmt;
use std::path::Path;

use keel_common::guest::GuestSpec;

use super::exit;
pub use map::{suggest_name, GuestFile, Options, DEFAULT_MEMORY_MIB};
pub use report::{Entry, Kind, Report};

/// The import of one config: a spec that [`GuestSpec::parse`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The domain's name in the config, if it has one.
    pub xen_name: Option<String>,
    pub uuid: Option<String>,
    pub spec: GuestSpec,
    /// The spec as defined on the host: a comment naming the Xen
    /// domain, then the TOML.
    pub spec_toml: String,
    pub report: Report,
    /// The dom0 files the guest needs, and where the spec expects them.
    pub files: Vec<GuestFile>,
}

/// Why a config gave no guest; the message names the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// Imports `text`, a Xen config read from `file` (named in messages).
pub fn import(file: &str, text: &str, options: &Options) -> Result<Import, Failed> {
    let config =
        syntax::parse(text).map_err(|e| Failed(format!("{file}:{}: {}", e.line, e.message)))?;
    map::map(&config, options).map_err(|f| match f.line {
        Some(line) => Failed(format!("{file}:{line}: {}", f.message)),
        None => Failed(format!("{file}: {}", f.message)),
    })
}

/// The text of `spec`, imported from the domain `xen_name`, checked the
/// way the host will check it.
fn render(xen_name: Option<&str>, uuid: Option<&str>, spec: &GuestSpec) -> Result<String, String> {
    let mut header = match xen_name {
        Some(name) => format!("# Imported from Xen domain {}", comment_safe(name)),
        None => "# Imported from a Xen domain config without a name".to_string(),
    };
    if let Some(uuid) = uuid {
        header.push_str(&format!(", uuid {}", comment_safe(uuid)));
    }
    let body = toml::to_string(spec).map_err(|e| e.to_string())?;
    let text = format!("{header}\n{body}");
    let file = format!("{}.toml", spec.name);
    let parsed = GuestSpec::parse(Path::new(&file), &text).map_err(|e| e.to_string())?;
    if parsed != *spec {
        return Err("it does not read back as written".into());
    }
    Ok(text)
}

/// `text` for a `#` comment: a line break or other control character in
/// a name would end the comment and start TOML of the config's choosing.
fn comment_safe(text: &str) -> String {
    if text.chars().any(char::is_control) {
        format!("{text:?}").replace(['\n', '\r'], " ")
    } else {
        text.to_string()
    }
}

impl Import {
    /// Whether every setting was mapped.
    pub fn complete(&self) -> bool {
        self.report.not_mapped_count() == 0
    }

    /// keelctl's exit status for the import: [`exit::OK`] or
    /// [`exit::IMPORT_PARTIAL`].
    pub fn exit_code(&self) -> i32 {
        if self.complete() {
            exit::OK
        } else {
            exit::IMPORT_PARTIAL
        }
    }

    /// The report's lines, naming `file`.
    pub fn report_lines(&self, file: &str) -> Vec<String> {
        self.report.lines(file)
    }

    /// One line after the report.
    pub fn summary(&self, file: &str) -> String {
        let from = match &self.xen_name {
            Some(name) => format!("Xen domain {}", comment_safe(name)),
            None => "the Xen domain".to_string(),
        };
        let changes = match self.report.changed_count() {
            1 => "1 change".to_string(),
            n => format!("{n} changes"),
        };
        let outcome = match self.report.not_mapped_count() {
            0 => format!("complete, {changes}"),
            n => format!("partial: {n} not mapped, {changes}"),
        };
        format!(
            "{file}: imported {from} as guest {}: {outcome}",
            self.spec.name
        )
    }
}
