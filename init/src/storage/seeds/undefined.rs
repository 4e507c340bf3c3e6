//! The guests the operator undefined, recorded in `<data>/guests/undefined`
//! (one name a line) so that a seed of the same name on the ESP does not
//! bring the guest back at the next boot. Defining the guest again by hand
//! takes its name off the list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use keel_sys::fsutil::atomic_write;

fn file(data: &Path) -> PathBuf {
    data.join("guests").join("undefined")
}

/// The recorded names; none when the list is missing or unreadable.
pub fn names(data: &Path) -> BTreeSet<String> {
    let path = file(data);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => {
            log::error!("cannot read {}: {e}", path.display());
            BTreeSet::new()
        }
    }
}

/// Adds (`undefined`) or removes `name`, writing the list atomically.
pub fn set(data: &Path, name: &str, undefined: bool) -> Result<(), String> {
    let path = file(data);
    let mut names = names(data);
    let changed = if undefined {
        names.insert(name.to_string())
    } else {
        names.remove(name)
    };
    if !changed {
        return Ok(());
    }
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("Cannot create {}: {e}.", parent.display()))?;
    }
    atomic_write(&path, text.as_bytes(), 0o644)
        .map_err(|e| format!("Cannot store {}: {e}.", path.display()))
}
