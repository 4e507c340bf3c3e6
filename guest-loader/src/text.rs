//! Small text helpers the parsers share.

use crate::entry::ConfigError;
use crate::fs::{BootFs, FsError};

/// Reads a config as text. `Ok(None)` when there is no such file (or a
/// component of its path is not a directory); any other failure, and a
/// file holding NUL bytes, is the config's fault.
pub(crate) fn read_config(
    fs: &dyn BootFs,
    path: &str,
    cap: u64,
) -> Result<Option<String>, ConfigError> {
    match fs.read_file(path, cap) {
        Ok(bytes) => to_text(path, &bytes).map(Some),
        Err(FsError::NotFound { .. } | FsError::NotADir { .. }) => Ok(None),
        Err(e) => Err(ConfigError::fs(path, 0, &e)),
    }
}

/// Config bytes as text: invalid UTF-8 is replaced, NUL bytes refused.
pub(crate) fn to_text(path: &str, bytes: &[u8]) -> Result<String, ConfigError> {
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        return Err(ConfigError::new(
            path,
            line,
            "this is not a text file (it holds a NUL byte)",
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A boot loader path with its device prefix removed, made absolute:
/// "(hd0,msdos1)/vmlinuz" and "vmlinuz" both become "/vmlinuz".
pub(crate) fn strip_device(path: &str) -> String {
    let rest = match path.strip_prefix('(') {
        Some(r) => match r.find(')') {
            Some(end) => &r[end + 1..],
            None => path,
        },
        None => path,
    };
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// `path` relative to the directory `dir` unless it is absolute.
pub(crate) fn relative_to(dir: &str, path: &str) -> String {
    if path.starts_with('/') || path.starts_with('(') {
        strip_device(path)
    } else if dir.ends_with('/') {
        format!("{dir}{path}")
    } else {
        format!("{dir}/{path}")
    }
}

/// The directory part of an absolute path ("/boot/grub" for "/boot/grub/grub.cfg").
pub(crate) fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether a command line names a console.
pub(crate) fn has_console(cmdline: &str) -> bool {
    cmdline
        .split_ascii_whitespace()
        .any(|w| w.starts_with("console="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_prefixes_and_relative_paths() {
        assert_eq!(strip_device("(hd0,msdos1)/vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("($root)/boot/x"), "/boot/x");
        assert_eq!(strip_device("(hd0)"), "/");
        assert_eq!(strip_device("vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("(unclosed/x"), "/(unclosed/x");
        assert_eq!(
            relative_to("/boot/extlinux", "vmlinuz"),
            "/boot/extlinux/vmlinuz"
        );
        assert_eq!(relative_to("/", "vmlinuz"), "/vmlinuz");
        assert_eq!(relative_to("/boot", "/vmlinuz"), "/vmlinuz");
        assert_eq!(dirname("/boot/grub/grub.cfg"), "/boot/grub");
        assert_eq!(dirname("/grub.cfg"), "/");
        assert!(has_console("ro console=tty0 quiet"));
        assert!(!has_console("ro xconsole=tty0 quiet"));
    }

    #[test]
    fn nul_bytes_are_refused_with_their_line() {
        let err = to_text("/c", b"a\nb\n\0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/c line 3: this is not a text file (it holds a NUL byte)"
        );
    }
}
