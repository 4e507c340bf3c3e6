//! [`BootFs`] over a directory tree, normally a filesystem the loader has
//! mounted read-only. Symlinks are resolved here, one component at a time,
//! relative to the tree's root, as the guest itself would see them; the
//! kernel's own resolution is never trusted with a guest's links.

use std::collections::VecDeque;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{components, join, shorten, BootFs, DirEntry, FileInfo, FileKind, FsError};
use crate::limits::{MAX_DIR_ENTRIES, MAX_PATH_BYTES, MAX_SYMLINK_HOPS};

/// A filesystem rooted at a host directory.
#[derive(Debug, Clone)]
pub struct DirFs {
    root: PathBuf,
}

impl DirFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn host(&self, resolved: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        for c in resolved {
            p.push(c);
        }
        p
    }

    /// Resolves `path` to components under the root, following symlinks in
    /// every component and, if `follow_last`, in the last one too.
    fn walk(&self, path: &str, follow_last: bool) -> Result<Vec<String>, FsError> {
        let mut pending: VecDeque<String> =
            components(path)?.into_iter().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                if resolved.pop().is_none() {
                    return Err(FsError::OutsideRoot {
                        path: shorten(path),
                    });
                }
                continue;
            }
            let host = self.host(&resolved).join(&c);
            let meta = fs::symlink_metadata(&host).map_err(|e| io_error(path, e))?;
            let is_last = pending.is_empty();
            if meta.file_type().is_symlink() && (follow_last || !is_last) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(FsError::TooManyLinks {
                        path: shorten(path),
                        max: MAX_SYMLINK_HOPS,
                    });
                }
                let target = link_text(&host, path)?;
                if target.starts_with('/') {
                    resolved.clear();
                }
                for t in components(&target)?.into_iter().rev() {
                    pending.push_front(t.to_string());
                }
                continue;
            }
            if !is_last && !meta.is_dir() {
                return Err(FsError::NotADir {
                    path: shorten(&join(&resolved_plus(&resolved, &c))),
                });
            }
            resolved.push(c);
        }
        Ok(resolved)
    }
}

fn resolved_plus(resolved: &[String], c: &str) -> Vec<String> {
    let mut v = resolved.to_vec();
    v.push(c.to_string());
    v
}

fn io_error(path: &str, e: std::io::Error) -> FsError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FsError::NotFound {
            path: shorten(path),
        }
    } else {
        FsError::Io {
            path: shorten(path),
            source: e,
        }
    }
}

fn link_text(host: &Path, path: &str) -> Result<String, FsError> {
    let target = fs::read_link(host).map_err(|e| io_error(path, e))?;
    let target = target.to_str().ok_or_else(|| FsError::BadPath {
        path: shorten(path),
        reason: "a symlink on it points at a name that is not UTF-8",
    })?;
    if target.len() > MAX_PATH_BYTES {
        return Err(FsError::BadPath {
            path: shorten(path),
            reason: "a symlink on it is longer than 4096 bytes",
        });
    }
    Ok(target.to_string())
}

fn kind_of(ft: fs::FileType) -> FileKind {
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else {
        FileKind::Other
    }
}

impl BootFs for DirFs {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn resolve(&self, path: &str) -> Result<String, FsError> {
        Ok(join(&self.walk(path, true)?))
    }

    fn metadata(&self, path: &str) -> Result<FileInfo, FsError> {
        let host = self.host(&self.walk(path, true)?);
        // Every component is resolved, so this follows no symlink.
        let meta = fs::symlink_metadata(&host).map_err(|e| io_error(path, e))?;
        Ok(FileInfo {
            kind: kind_of(meta.file_type()),
            size: meta.len(),
        })
    }

    fn read_file(&self, path: &str, cap: u64) -> Result<Vec<u8>, FsError> {
        let host = self.host(&self.walk(path, true)?);
        let meta = fs::symlink_metadata(&host).map_err(|e| io_error(path, e))?;
        if !meta.is_file() {
            return Err(FsError::NotAFile {
                path: shorten(path),
            });
        }
        if meta.len() > cap {
            return Err(FsError::TooLarge {
                path: shorten(path),
                size: meta.len(),
                cap,
            });
        }
        let file = fs::File::open(&host).map_err(|e| io_error(path, e))?;
        let mut bytes = Vec::new();
        // The size may change under us; the cap holds regardless.
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(path, e))?;
        if bytes.len() as u64 > cap {
            return Err(FsError::TooLarge {
                path: shorten(path),
                size: bytes.len() as u64,
                cap,
            });
        }
        Ok(bytes)
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        let host = self.host(&self.walk(path, false)?);
        let meta = fs::symlink_metadata(&host).map_err(|e| io_error(path, e))?;
        if !meta.file_type().is_symlink() {
            return Err(FsError::NotALink {
                path: shorten(path),
            });
        }
        link_text(&host, path)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let host = self.host(&self.walk(path, true)?);
        let meta = fs::symlink_metadata(&host).map_err(|e| io_error(path, e))?;
        if !meta.is_dir() {
            return Err(FsError::NotADir {
                path: shorten(path),
            });
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&host).map_err(|e| io_error(path, e))? {
            let entry = entry.map_err(|e| io_error(path, e))?;
            // Names that are not UTF-8 cannot be named by a config either.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = entry
                .file_type()
                .map(kind_of)
                .map_err(|e| io_error(path, e))?;
            out.push(DirEntry { name, kind });
            if out.len() >= MAX_DIR_ENTRIES {
                log::warn!(
                    "{path}: more than {MAX_DIR_ENTRIES} entries, looking at the first only"
                );
                break;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn host_path(&self, path: &str) -> Option<PathBuf> {
        self.walk(path, true).ok().map(|r| self.host(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    #[test]
    fn reads_files_and_follows_relative_and_absolute_links() {
        let t = Tree::new();
        t.file("/boot/vmlinuz-6.1.0-18-amd64", b"kernel");
        t.link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
        t.link("/abs", "/boot/vmlinuz-6.1.0-18-amd64");
        t.link("/boot/up", "../vmlinuz");
        let fs = t.fs();
        assert_eq!(fs.read_file("/vmlinuz", 100).unwrap(), b"kernel");
        assert_eq!(fs.read_file("/abs", 100).unwrap(), b"kernel");
        assert_eq!(
            fs.resolve("/boot/up").unwrap(),
            "/boot/vmlinuz-6.1.0-18-amd64"
        );
        assert_eq!(
            fs.read_link("/vmlinuz").unwrap(),
            "boot/vmlinuz-6.1.0-18-amd64"
        );
        assert_eq!(fs.metadata("/vmlinuz").unwrap().size, 6);
        assert!(fs
            .host_path("/vmlinuz")
            .unwrap()
            .ends_with("boot/vmlinuz-6.1.0-18-amd64"));
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let outside = Tree::new();
        outside.file("/secret", b"host file");
        let t = Tree::new();
        // An absolute target means the guest's root, never the host's.
        t.link("/etc-link", &outside.path("/secret").display().to_string());
        let fs = t.fs();
        assert!(fs.read_file("/etc-link", 100).unwrap_err().is_not_found());
    }

    #[test]
    fn dotdot_above_the_root_is_refused() {
        let t = Tree::new();
        t.file("/a/b", b"x");
        t.link("/a/escape", "../../etc/passwd");
        let fs = t.fs();
        assert!(matches!(
            fs.read_file("/a/escape", 100),
            Err(FsError::OutsideRoot { .. })
        ));
        assert!(matches!(
            fs.read_file("/../etc/passwd", 100),
            Err(FsError::OutsideRoot { .. })
        ));
        assert_eq!(fs.read_file("/a/../a/b", 100).unwrap(), b"x");
    }

    #[test]
    fn link_loops_stop_at_the_hop_limit() {
        let t = Tree::new();
        t.link("/a", "b");
        t.link("/b", "a");
        let err = t.fs().read_file("/a", 100).unwrap_err();
        assert!(matches!(err, FsError::TooManyLinks { .. }), "{err}");
        assert!(err.to_string().contains("more than 40 symlinks"));
    }

    #[test]
    fn caps_and_kinds_are_enforced() {
        let t = Tree::new();
        t.file("/big", &[b'x'; 100]);
        t.file("/d/f", b"");
        let fs = t.fs();
        let err = fs.read_file("/big", 99).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/big is 100 bytes, more than the 99 allowed"
        );
        assert!(matches!(
            fs.read_file("/d", 99),
            Err(FsError::NotAFile { .. })
        ));
        assert!(matches!(fs.list_dir("/big"), Err(FsError::NotADir { .. })));
        assert!(matches!(
            fs.read_file("/big/x", 99),
            Err(FsError::NotADir { .. })
        ));
        assert!(matches!(
            fs.read_link("/big"),
            Err(FsError::NotALink { .. })
        ));
        assert!(matches!(
            fs.read_file("/a\0b", 99),
            Err(FsError::BadPath { .. })
        ));
        let names: Vec<_> = fs
            .list_dir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["big", "d"]);
    }
}
