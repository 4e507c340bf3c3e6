//! Importing the seed configuration from the ESP's `keel/` folder, which an
//! operator can edit from any laptop, into the data partition.
//!
//! - `host.toml` replaces `data/host.toml` when it differs and parses;
//! - `authorized_keys` lines whose key is new are appended to
//!   `data/agent/authorized_keys`;
//! - `guests/NAME.toml` becomes `data/guests/NAME.toml` when no guest of
//!   that file name exists yet, the operator did not undefine it (see
//!   [`undefined`]) and the spec validates.
//!
//! An invalid seed is logged with its file, line and field and otherwise
//! ignored: the copy on the data partition stays as it was.

use std::path::{Path, PathBuf};

use keel_common::{authorized_keys, GuestSpec, HostConfig};
use keel_sys::fsutil::atomic_write;

pub mod undefined;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// `host.toml` was copied.
    pub host_config_updated: bool,
    /// Lines appended to `agent/authorized_keys`.
    pub keys_added: usize,
    /// Guest file names imported.
    pub guests_imported: Vec<String>,
    /// One sentence per seed that was refused or could not be copied; each
    /// names the file (and line and field for configuration errors).
    pub errors: Vec<String>,
}

/// The directories the data partition must have.
pub const DATA_SUBDIRS: [&str; 5] = ["guests", "images", "disks", "logs", "agent"];

/// Creates the standard directories on the data partition.
pub fn create_data_dirs(data_dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    for sub in DATA_SUBDIRS {
        let dir = data_dir.join(sub);
        if let Err(err) = std::fs::create_dir_all(&dir) {
            let msg = format!("Cannot create {}: {err}.", dir.display());
            log::error!("{msg}");
            errors.push(msg);
        }
    }
    // The agent's keys are secret.
    let agent = data_dir.join("agent");
    if agent.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o700)) {
            log::warn!("cannot restrict {}: {err}", agent.display());
        }
    }
    errors
}

/// Imports the seeds in `esp_keel_dir` into `data_dir`. Never fails: every
/// problem is logged and listed in the report.
pub fn import_seeds(esp_keel_dir: &Path, data_dir: &Path) -> SeedReport {
    let mut report = SeedReport {
        errors: create_data_dirs(data_dir),
        ..SeedReport::default()
    };
    import_host_config(esp_keel_dir, data_dir, &mut report);
    import_authorized_keys(esp_keel_dir, data_dir, &mut report);
    import_guests(esp_keel_dir, data_dir, &mut report);
    report
}

/// Reads a seed file; `None` when it does not exist (nothing to import).
fn read_seed(path: &Path, report: &mut SeedReport) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(_) => {
                fail(
                    report,
                    format!("{} is not UTF-8 text; it is ignored.", path.display()),
                );
                None
            }
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            fail(report, format!("Cannot read {}: {err}.", path.display()));
            None
        }
    }
}

fn fail(report: &mut SeedReport, message: String) {
    log::error!("{message}");
    report.errors.push(message);
}

fn write(path: &Path, bytes: &[u8], mode: u32, report: &mut SeedReport) -> bool {
    match atomic_write(path, bytes, mode) {
        Ok(()) => true,
        Err(err) => {
            fail(report, format!("Cannot write {}: {err}.", path.display()));
            false
        }
    }
}

fn import_host_config(esp: &Path, data: &Path, report: &mut SeedReport) {
    let seed = esp.join("host.toml");
    let Some(text) = read_seed(&seed, report) else {
        return;
    };
    let target = data.join("host.toml");
    if std::fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
        return;
    }
    if let Err(err) = HostConfig::parse(&seed, &text) {
        fail(
            report,
            format!("The seed {err}; {} is kept as it was.", target.display()),
        );
        return;
    }
    if write(&target, text.as_bytes(), 0o644, report) {
        log::info!("imported {} into {}", seed.display(), target.display());
        report.host_config_updated = true;
    }
}

fn import_authorized_keys(esp: &Path, data: &Path, report: &mut SeedReport) {
    let seed = esp.join("authorized_keys");
    let Some(text) = read_seed(&seed, report) else {
        return;
    };
    let target = data.join("agent/authorized_keys");
    let existing = match std::fs::read_to_string(&target) {
        Ok(existing) => existing,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            fail(
                report,
                format!(
                    "Cannot read {}: {err}; the seed keys are not merged.",
                    target.display()
                ),
            );
            return;
        }
    };
    // The agent's parser, so that what is merged here is what it loads.
    let mut known: Vec<[u8; 32]> = authorized_keys::parse(&existing)
        .entries
        .iter()
        .map(|e| e.key)
        .collect();
    let mut additions = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let key = match authorized_keys::parse_line(line) {
            Ok(None) => continue,
            Ok(Some((_, key, _))) => key,
            Err(problem) => {
                let at = format!("{}:{}", seed.display(), i + 1);
                fail(report, format!("{at}: {problem}; the line is skipped."));
                continue;
            }
        };
        // A key already there keeps its line: the first one wins.
        if known.contains(&key) {
            continue;
        }
        known.push(key);
        additions.push(line.trim().to_string());
    }
    if additions.is_empty() {
        return;
    }
    let mut merged = existing;
    if !merged.is_empty() && !merged.ends_with('\n') {
        merged.push('\n');
    }
    for line in &additions {
        merged.push_str(line);
        merged.push('\n');
    }
    if write(&target, merged.as_bytes(), 0o600, report) {
        log::info!(
            "added {} key(s) from {} to {}",
            additions.len(),
            seed.display(),
            target.display()
        );
        report.keys_added += additions.len();
    }
}

fn import_guests(esp: &Path, data: &Path, report: &mut SeedReport) {
    let dir = esp.join("guests");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            fail(report, format!("Cannot list {}: {err}.", dir.display()));
            return;
        }
    };
    let mut seeds: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("toml"))
                && p.is_file()
        })
        .collect();
    seeds.sort();
    let undefined = undefined::names(data);
    for seed in seeds {
        let Some(file_name) = seed.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let target = data.join("guests").join(&file_name);
        if seed
            .file_stem()
            .is_some_and(|stem| undefined.contains(&*stem.to_string_lossy()))
        {
            log::info!(
                "the operator undefined the guest of seed {}; it is not imported",
                seed.display()
            );
            continue;
        }
        if target.exists() {
            log::debug!(
                "{} exists; seed {} not imported",
                target.display(),
                seed.display()
            );
            continue;
        }
        let Some(text) = read_seed(&seed, report) else {
            continue;
        };
        if let Err(err) = GuestSpec::parse(&seed, &text) {
            fail(report, format!("The seed {err}; it is not imported."));
            continue;
        }
        if write(&target, text.as_bytes(), 0o644, report) {
            log::info!("imported guest {}", target.display());
            report.guests_imported.push(file_name);
        }
    }
}

#[cfg(test)]
mod tests;
