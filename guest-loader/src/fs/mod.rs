//! The filesystem contract the parsers read through.
//!
//! Paths are absolute within one filesystem ("/boot/grub/grub.cfg"); an
//! implementation must never let a path or a symlink reach outside it.

mod dir;

pub use dir::DirFs;

use std::path::PathBuf;

use crate::limits::MAX_PATH_BYTES;

/// What a path names, after following symlinks (or not, for `read_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A file's kind and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: FileKind,
    pub size: u64,
}

/// One name in a directory listing; `kind` does not follow symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path} leads outside the filesystem (through \"..\" above its root)")]
    OutsideRoot { path: String },
    #[error("{path} goes through more than {max} symlinks (a loop?)")]
    TooManyLinks { path: String, max: usize },
    #[error("{path} is {size} bytes, more than the {cap} allowed")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error("{path} is not a directory")]
    NotADir { path: String },
    #[error("{path} is not a symlink")]
    NotALink { path: String },
    #[error("{path} is not a usable path: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::NotFound { .. })
    }
}

/// Read access to one guest filesystem.
pub trait BootFs {
    /// A name for messages, e.g. the device or mount point.
    fn describe(&self) -> String;
    /// The path with every symlink resolved, still within this filesystem.
    fn resolve(&self, path: &str) -> Result<String, FsError>;
    /// Kind and size of what `path` names, following symlinks.
    fn metadata(&self, path: &str) -> Result<FileInfo, FsError>;
    /// A regular file's bytes, refused when it is larger than `cap`.
    fn read_file(&self, path: &str, cap: u64) -> Result<Vec<u8>, FsError>;
    /// The target of the symlink `path` (its last component is not followed).
    fn read_link(&self, path: &str) -> Result<String, FsError>;
    /// A directory's entries sorted by name, at most `limits::MAX_DIR_ENTRIES`.
    fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError>;
    /// Where the caller can open the resolved `path` (for kexec), if it is a
    /// real file; `None` for filesystems that are not.
    fn host_path(&self, _path: &str) -> Option<PathBuf> {
        None
    }
}

/// Splits `path` into components, treating it as absolute, dropping "" and
/// "." and keeping ".." for the resolver to judge.
pub(crate) fn components(path: &str) -> Result<Vec<&str>, FsError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(FsError::BadPath {
            path: shorten(path),
            reason: "it is longer than 4096 bytes",
        });
    }
    if path.contains('\0') {
        return Err(FsError::BadPath {
            path: shorten(path),
            reason: "it holds a NUL byte",
        });
    }
    Ok(path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect())
}

/// Joins components back into an absolute path.
pub(crate) fn join(components: &[String]) -> String {
    if components.is_empty() {
        return "/".to_string();
    }
    let mut out = String::new();
    for c in components {
        out.push('/');
        out.push_str(c);
    }
    out
}

/// A path cut short for messages, so hostile input cannot flood the console.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
