//! The temporary files of uploads: how they are named, and the sweep at
//! start that removes those an interrupted agent left behind (a crash or
//! power cut between create and rename).

use std::path::Path;

use super::path::UPLOAD_DIRS;

const TEMP_MARK: &str = ".upload-";
const TEMP_END: &str = ".tmp";

/// The hidden temporary name of an upload to `name`, with 64 random bits.
pub fn temp_name(name: &str, random: u64) -> String {
    format!(".{name}{TEMP_MARK}{random:016x}{TEMP_END}")
}

/// Whether `name` is one that [`temp_name`] makes.
pub fn is_temp_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_END))
    else {
        return false;
    };
    stem.rsplit_once(TEMP_MARK).is_some_and(|(base, hex)| {
        !base.is_empty() && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Removes the upload temporary files below `root`'s upload directories
/// (without following symbolic links); the paths removed.
pub fn sweep(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for dir in UPLOAD_DIRS {
        sweep_dir(&root.join(dir), &mut removed);
    }
    removed
}

fn sweep_dir(dir: &Path, removed: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            sweep_dir(&path, removed);
        } else if kind.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upload_temp_names_match() {
        let name = temp_name("root.img", 0xdead_beef);
        assert_eq!(name, ".root.img.upload-00000000deadbeef.tmp");
        assert!(is_temp_name(&name));
        for other in [
            "root.img",
            ".root.img.tmp",
            ".root.img.upload-xyz.tmp",
            "..upload-00000000deadbeef.tmp",
            "root.img.upload-00000000deadbeef.tmp",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }
}
