//! Boot Loader Specification Type #2: unified kernel images, `*.efi` under
//! `EFI/Linux/`. Only listed: kexec_file_load may refuse a UKI, so they
//! come last in the chooser's order and are flagged as such.

use crate::entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, Source};
use crate::fs::{BootFs, FileKind, FsError};
use crate::limits::MAX_ENTRIES;
use crate::version;

/// The ESP mounted on its own, or at /boot/efi or /efi of a root filesystem.
pub const DIRS: &[&str] = &[
    "/EFI/Linux",
    "/boot/efi/EFI/Linux",
    "/efi/EFI/Linux",
    "/boot/EFI/Linux",
];

pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    for dir in DIRS {
        let listing = match fs.list_dir(dir) {
            Ok(l) => l,
            Err(FsError::NotFound { .. } | FsError::NotADir { .. }) => continue,
            Err(e) => return Err(ConfigError::fs(dir, 0, &e)),
        };
        let mut names: Vec<String> = listing
            .into_iter()
            .filter(|e| matches!(e.kind, FileKind::File | FileKind::Symlink))
            .map(|e| e.name)
            .filter(|n| n.len() > 4 && n.to_ascii_lowercase().ends_with(".efi"))
            .take(MAX_ENTRIES)
            .collect();
        if names.is_empty() {
            continue;
        }
        // Newest first, as for Type #1 entries without a sort key.
        names.sort_by(|a, b| version::compare(b, a));
        let entries = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let file = format!("{dir}/{name}");
                let id = name[..name.len() - 4].to_string();
                let source = Source {
                    format: Format::Uki,
                    file: file.clone(),
                    line: 0,
                };
                let mut e = BootEntry::new(i, id.clone(), Some(id), source);
                e.kernel = file;
                e.kind = EntryKind::Uki;
                e
            })
            .collect();
        return Ok(Some(EntryList::new(
            Format::Uki,
            dir.to_string(),
            entries,
            None,
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    #[test]
    fn lists_ukis_newest_first() {
        let t = Tree::new();
        t.file("/EFI/Linux/arch-6.6.1.efi", b"MZ");
        t.file("/EFI/Linux/arch-6.10.2.EFI", b"MZ");
        t.file("/EFI/Linux/notes.txt", b"");
        t.dir("/EFI/Linux/dir.efi");
        let list = discover(&t.fs()).unwrap().unwrap();
        let kernels: Vec<_> = list.entries.iter().map(|e| e.kernel.as_str()).collect();
        assert_eq!(
            kernels,
            ["/EFI/Linux/arch-6.10.2.EFI", "/EFI/Linux/arch-6.6.1.efi"]
        );
        assert!(list
            .entries
            .iter()
            .all(|e| e.kind == EntryKind::Uki && e.initrds.is_empty()));
        assert_eq!(list.entries[1].id(), Some("arch-6.6.1"));
    }

    #[test]
    fn no_ukis_is_none() {
        let t = Tree::new();
        t.dir("/EFI/Linux");
        t.file("/boot/efi/EFI/Linux", b"a file, not a dir");
        assert_eq!(discover(&t.fs()).unwrap(), None);
    }
}
