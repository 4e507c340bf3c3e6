//! Debian's kernel links: `/vmlinuz` and `/initrd.img` (or the same in
//! /boot), kept by the kernel packages. They carry no command line, so the
//! chooser composes `root=UUID=<this filesystem> ro`.

use crate::entry::{BootEntry, ConfigError, EntryList, Format, Source};
use crate::fs::{BootFs, FileKind, FsError};
use crate::text::{dirname, relative_to};

/// The link pairs, newest first: `.old` is the previous kernel.
const LINKS: &[(&str, &str)] = &[
    ("/vmlinuz", "/initrd.img"),
    ("/boot/vmlinuz", "/boot/initrd.img"),
    ("/vmlinuz.old", "/initrd.img.old"),
    ("/boot/vmlinuz.old", "/boot/initrd.img.old"),
];

pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    let mut entries = Vec::new();
    for (kernel, initrd) in LINKS {
        let Some(k) = target(fs, kernel)? else {
            continue;
        };
        let source = Source {
            format: Format::DebianLinks,
            file: kernel.to_string(),
            line: 0,
        };
        let mut e = BootEntry::new(
            entries.len(),
            format!("{kernel} -> {k}"),
            Some(kernel.trim_start_matches('/').to_string()),
            source,
        );
        e.kernel = k;
        e.initrds = target(fs, initrd)?.into_iter().collect();
        e.needs_root = true;
        entries.push(e);
    }
    if entries.is_empty() {
        return Ok(None);
    }
    Ok(Some(EntryList::new(
        Format::DebianLinks,
        entries[0].source.file.clone(),
        entries,
        None,
    )))
}

/// Where a link points, resolved when it can be. A link whose target is
/// missing here is still reported, by its text: with a separate /boot
/// partition, `/vmlinuz -> boot/vmlinuz-6.1.0-18-amd64` points into a
/// filesystem the chooser has and this one does not.
fn target(fs: &dyn BootFs, path: &str) -> Result<Option<String>, ConfigError> {
    match fs.resolve(path) {
        Ok(resolved) => match fs.metadata(&resolved) {
            Ok(m) if m.kind == FileKind::File => Ok(Some(resolved)),
            Ok(_) => Ok(None),
            Err(e) => Err(ConfigError::fs(path, 0, &e)),
        },
        Err(FsError::NotFound { .. }) => match fs.read_link(path) {
            Ok(t) => Ok(Some(relative_to(dirname(path), &t))),
            Err(FsError::NotFound { .. } | FsError::NotALink { .. } | FsError::NotADir { .. }) => {
                Ok(None)
            }
            Err(e) => Err(ConfigError::fs(path, 0, &e)),
        },
        Err(FsError::NotADir { .. }) => Ok(None),
        Err(e) => Err(ConfigError::fs(path, 0, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    #[test]
    fn debian_links_resolve_inside_the_root() {
        let t = Tree::new();
        t.file("/boot/vmlinuz-6.1.0-18-amd64", b"k");
        t.file("/boot/initrd.img-6.1.0-18-amd64", b"i");
        t.file("/boot/vmlinuz-6.1.0-13-amd64", b"k");
        t.link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
        t.link("/initrd.img", "boot/initrd.img-6.1.0-18-amd64");
        t.link("/vmlinuz.old", "/boot/vmlinuz-6.1.0-13-amd64");
        t.link("/initrd.img.old", "boot/initrd.img-6.1.0-13-amd64");
        let list = discover(&t.fs()).unwrap().unwrap();
        assert_eq!(list.entries.len(), 2);
        let e = &list.entries[0];
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
        assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-18-amd64"]);
        assert!(e.needs_root);
        assert_eq!(e.id(), Some("vmlinuz"));
        assert_eq!(list.entries[1].kernel, "/boot/vmlinuz-6.1.0-13-amd64");
        // The old initrd's target is missing here: reported by its text.
        assert_eq!(list.entries[1].initrds, ["/boot/initrd.img-6.1.0-13-amd64"]);
    }

    #[test]
    fn escaping_links_are_refused() {
        let t = Tree::new();
        t.link("/vmlinuz", "../../../../boot/vmlinuz-host");
        let err = discover(&t.fs()).unwrap_err();
        assert!(err.message.contains("outside the filesystem"), "{err}");
    }

    #[test]
    fn no_links_is_none() {
        let t = Tree::new();
        t.dir("/boot");
        t.dir("/vmlinuz");
        assert_eq!(discover(&t.fs()).unwrap(), None);
    }
}
