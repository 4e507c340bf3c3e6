//! The `authorized_keys` file: one key per line,
//! `<role> ed25519:<base64 public key> [comment...]`.
//! Blank lines and lines starting with `#` are ignored.

use std::path::Path;

use thiserror::Error;

use crate::keys::{KeyError, PublicKey};
use crate::roles::Role;

/// Errors from reading `authorized_keys`. Each names the line.
#[derive(Debug, Error)]
pub enum AuthorizedKeysError {
    #[error("Could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("authorized_keys line {line}: unknown role \"{role}\" (expected admin, operator or reader).")]
    BadRole { line: usize, role: String },
    #[error("authorized_keys line {line}: missing the public key.")]
    MissingKey { line: usize },
    #[error("authorized_keys line {line}: {source}")]
    BadKey {
        line: usize,
        #[source]
        source: KeyError,
    },
}

/// One entry of `authorized_keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub role: Role,
    pub key: PublicKey,
    pub comment: String,
}

/// The parsed `authorized_keys` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    entries: Vec<AuthorizedKey>,
}

impl AuthorizedKeys {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, AuthorizedKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthorizedKeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, AuthorizedKeysError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.splitn(3, char::is_whitespace);
            let role_text = fields.next().unwrap_or_default();
            let role = role_text
                .parse::<Role>()
                .map_err(|()| AuthorizedKeysError::BadRole {
                    line,
                    role: role_text.to_string(),
                })?;
            let key_text = fields
                .next()
                .filter(|s| !s.is_empty())
                .ok_or(AuthorizedKeysError::MissingKey { line })?;
            let key = PublicKey::parse(key_text)
                .map_err(|source| AuthorizedKeysError::BadKey { line, source })?;
            let comment = fields.next().unwrap_or_default().trim().to_string();
            entries.push(AuthorizedKey { role, key, comment });
        }
        Ok(AuthorizedKeys { entries })
    }

    /// The role and comment of `key`, if it is authorised. If a key is
    /// listed twice the first line wins, as in OpenSSH.
    pub fn lookup(&self, key: &PublicKey) -> Option<(Role, &str)> {
        self.entries
            .iter()
            .find(|e| &e.key == key)
            .map(|e| (e.role, e.comment.as_str()))
    }

    /// Appends an entry (used when enrolling a key with a pairing code).
    pub fn add(&mut self, role: Role, key: PublicKey, comment: &str) {
        self.entries.push(AuthorizedKey {
            role,
            key,
            comment: comment.to_string(),
        });
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[AuthorizedKey] {
        &self.entries
    }

    /// The file's text form; parsing it gives back the same entries.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("{} {} {}\n", e.role, e.key, e.comment));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn parses_roles_and_comments() {
        let text = format!("# keys\n\nadmin {KEY} alice@laptop (main)\nreader {KEY}\n");
        let keys = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(keys.entries().len(), 2);
        let key = PublicKey([0; 32]);
        assert_eq!(
            keys.lookup(&key),
            Some((Role::Admin, "alice@laptop (main)"))
        );
        assert_eq!(keys.lookup(&PublicKey([1; 32])), None);
        assert_eq!(AuthorizedKeys::parse(&keys.to_text()).unwrap(), keys);
    }

    #[test]
    fn errors_name_the_line() {
        let e = AuthorizedKeys::parse(&format!("admin {KEY}\nroot {KEY}\n")).unwrap_err();
        assert!(matches!(e, AuthorizedKeysError::BadRole { line: 2, .. }));
        assert!(e.to_string().contains("line 2"));
        let e = AuthorizedKeys::parse("\n\noperator\n").unwrap_err();
        assert!(matches!(e, AuthorizedKeysError::MissingKey { line: 3 }));
        let e = AuthorizedKeys::parse("reader ed25519:AAAA c").unwrap_err();
        assert!(matches!(
            e,
            AuthorizedKeysError::BadKey {
                line: 1,
                source: KeyError::BadLength(3)
            }
        ));
    }
}
