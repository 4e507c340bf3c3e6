//! Upload paths: relative to the upload root and below its `images/` or
//! `disks/` only.

use std::path::{Component, Path, PathBuf};

use super::UploadError;
use crate::messages::ErrorCode;

/// The directories of the upload root that uploads may go to: the first
/// component of every upload path is one of these. Guest specs name their
/// kernels, initrds and disks the same way, relative to the data partition.
pub const UPLOAD_DIRS: [&str; 2] = ["images", "disks"];

/// Checks an upload path and returns it as a relative path: not empty,
/// not absolute, only normal components (no `..`, no `.`), no NUL, at
/// most 1024 bytes, naming a file below one of [`UPLOAD_DIRS`] (so its
/// first component is exactly `images` or `disks`, and there is more).
pub fn check_path(path: &str) -> Result<PathBuf, UploadError> {
    let bad = |why: &str| {
        (
            ErrorCode::Invalid,
            format!("Bad upload path {path:?}: {why}."),
        )
    };
    if path.is_empty() || path.len() > 1024 || path.contains('\0') {
        return Err(bad("empty, too long or containing NUL"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(bad(
            "it must be relative to the upload root, starting with images/ or disks/",
        ));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(bad("`..` is not allowed")),
            _ => return Err(bad("only plain path components are allowed")),
        }
    }
    if out.as_os_str().is_empty() || path.ends_with('/') {
        return Err(bad("it must name a file"));
    }
    let mut parts = out.components();
    let under_upload_dir = parts
        .next()
        .is_some_and(|first| UPLOAD_DIRS.iter().any(|d| first.as_os_str() == *d));
    if !under_upload_dir || parts.next().is_none() {
        return Err(bad("it must start with images/ or disks/"));
    }
    Ok(out)
}
