//! The client's `known_hosts` file: one host per line,
//! `<host> ed25519:<base64 public key>`, where host is what the user typed
//! (name or address, with `:port` if not the default).
//! Blank lines and lines starting with `#` are ignored.

use std::io::Write;
use std::path::Path;

use thiserror::Error;

use crate::keys::{Fingerprint, KeyError, PublicKey};

/// Errors from reading or writing `known_hosts`.
#[derive(Debug, Error)]
pub enum KnownHostsError {
    #[error("Could not read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("known_hosts line {line}: expected \"<host> ed25519:<key>\".")]
    Syntax { line: usize },
    #[error("known_hosts line {line}: {source}")]
    BadKey {
        line: usize,
        #[source]
        source: KeyError,
    },
}

/// The verdict on a presented host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCheck {
    /// The key matches the pinned one.
    Trusted,
    /// No key is pinned for this host; show the fingerprint to the user.
    Unknown(Fingerprint),
    /// A different key is pinned: possibly an attack.
    Changed {
        expected: Fingerprint,
        presented: Fingerprint,
        line: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    host: String,
    key: PublicKey,
    line: usize,
}

/// The parsed `known_hosts` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Reads a file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, KnownHostsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(KnownHostsError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, KnownHostsError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [host, key] = fields[..] else {
                return Err(KnownHostsError::Syntax { line });
            };
            let key =
                PublicKey::parse(key).map_err(|source| KnownHostsError::BadKey { line, source })?;
            entries.push(Entry {
                host: host.to_string(),
                key,
                line,
            });
        }
        Ok(KnownHosts { entries })
    }

    /// Checks `key` against the entry for `host`.
    pub fn check(&self, host: &str, key: &PublicKey) -> HostCheck {
        match self.entries.iter().find(|e| e.host == host) {
            None => HostCheck::Unknown(key.fingerprint()),
            Some(e) if &e.key == key => HostCheck::Trusted,
            Some(e) => HostCheck::Changed {
                expected: e.key.fingerprint(),
                presented: key.fingerprint(),
                line: e.line,
            },
        }
    }

    /// Pins `key` for `host`, replacing any earlier entry. Replacing is
    /// for an explicit user action only; the handshake never does it.
    pub fn add(&mut self, host: &str, key: PublicKey) {
        self.entries.retain(|e| e.host != host);
        let line = self.entries.iter().map(|e| e.line).max().unwrap_or(0) + 1;
        self.entries.push(Entry {
            host: host.to_string(),
            key,
            line,
        });
    }

    /// The file's text form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.host, e.key));
        }
        out
    }

    /// Writes the file atomically: temp file, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<(), KnownHostsError> {
        let io_err = |source| KnownHostsError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(self.to_text().as_bytes()).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_trusted_unknown_changed() {
        let a = PublicKey([1; 32]);
        let b = PublicKey([2; 32]);
        let text = format!("# pinned\nhv01 {a}\n");
        let mut kh = KnownHosts::parse(&text).unwrap();
        assert_eq!(kh.check("hv01", &a), HostCheck::Trusted);
        assert_eq!(kh.check("hv02", &a), HostCheck::Unknown(a.fingerprint()));
        assert_eq!(
            kh.check("hv01", &b),
            HostCheck::Changed {
                expected: a.fingerprint(),
                presented: b.fingerprint(),
                line: 2
            }
        );
        kh.add("hv02", b);
        assert_eq!(
            KnownHosts::parse(&kh.to_text()).unwrap().check("hv02", &b),
            HostCheck::Trusted
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert!(matches!(
            KnownHosts::parse("\nhv01\n"),
            Err(KnownHostsError::Syntax { line: 2 })
        ));
        assert!(matches!(
            KnownHosts::parse("hv01 ed25519:AA==\n"),
            Err(KnownHostsError::BadKey { line: 1, .. })
        ));
    }

    #[test]
    fn save_and_load() {
        let dir = std::env::temp_dir().join(format!("keel-kh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known_hosts");
        assert_eq!(KnownHosts::load(&path).unwrap(), KnownHosts::default());
        let mut kh = KnownHosts::default();
        kh.add("hv01:7444", PublicKey([3; 32]));
        kh.save(&path).unwrap();
        assert_eq!(
            KnownHosts::load(&path)
                .unwrap()
                .check("hv01:7444", &PublicKey([3; 32])),
            HostCheck::Trusted
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
