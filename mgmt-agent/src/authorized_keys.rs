//! The agent's `authorized_keys` file, in keel-common's format (shared with
//! init's seed importer): one key per line,
//! `<role> ed25519:<base64 public key> [comment...]`.
//!
//! Loading never fails on content: a bad line is skipped and reported
//! with its number, and kept as it is (like comments) when the agent
//! rewrites the file, so an operator can still fix it. A key listed twice
//! is folded: the first line wins, as in OpenSSH, and the later line is
//! dropped at the next rewrite.

use std::path::Path;

use keel_common::authorized_keys::{self as format, LineError};
use thiserror::Error;

use crate::keys::{Fingerprint, KeyError, PublicKey};
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
    #[error("authorized_keys line {line}: the key is already listed on line {first}, which wins.")]
    Duplicate { line: usize, first: usize },
}

impl AuthorizedKeysError {
    fn from_line(line: usize, error: LineError) -> Self {
        match error {
            LineError::BadRole(role) => AuthorizedKeysError::BadRole { line, role },
            LineError::MissingKey => AuthorizedKeysError::MissingKey { line },
            LineError::BadKey(e) => AuthorizedKeysError::BadKey {
                line,
                source: KeyError::Text(e),
            },
            LineError::Duplicate { first } => AuthorizedKeysError::Duplicate { line, first },
        }
    }
}

/// One entry of `authorized_keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub role: Role,
    pub key: PublicKey,
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Key(AuthorizedKey),
    /// A blank line, a comment or a skipped line, written back as it was.
    Kept(String),
}

/// The parsed `authorized_keys` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    lines: Vec<Line>,
}

impl AuthorizedKeys {
    /// Reads a file, skipping bad lines; each skipped line comes back as
    /// an error naming it. Only a file that cannot be read is an error.
    pub fn load(path: &Path) -> Result<(Self, Vec<AuthorizedKeysError>), AuthorizedKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthorizedKeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse_lenient(&text))
    }

    /// Parses the file's text, refusing it at the first bad line.
    pub fn parse(text: &str) -> Result<Self, AuthorizedKeysError> {
        let (keys, mut skipped) = Self::parse_lenient(text);
        match skipped.is_empty() {
            true => Ok(keys),
            false => Err(skipped.remove(0)),
        }
    }

    /// Parses the file's text, skipping bad lines and reporting each.
    pub fn parse_lenient(text: &str) -> (Self, Vec<AuthorizedKeysError>) {
        let parsed = format::parse(text);
        let mut entries = parsed.entries.into_iter().peekable();
        let mut skipped = parsed.skipped.into_iter().peekable();
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            if let Some(e) = entries.next_if(|e| e.line == n) {
                lines.push(Line::Key(AuthorizedKey {
                    role: e.role,
                    key: PublicKey(e.key),
                    comment: e.comment,
                }));
            } else if let Some(s) = skipped.next_if(|s| s.line == n) {
                if !matches!(s.error, LineError::Duplicate { .. }) {
                    lines.push(Line::Kept(raw.to_string()));
                }
                errors.push(AuthorizedKeysError::from_line(n, s.error));
            } else {
                lines.push(Line::Kept(raw.to_string()));
            }
        }
        (AuthorizedKeys { lines }, errors)
    }

    /// The role and comment of `key`, if it is authorised.
    pub fn lookup(&self, key: &PublicKey) -> Option<(Role, &str)> {
        self.entries()
            .find(|e| &e.key == key)
            .map(|e| (e.role, e.comment.as_str()))
    }

    /// The entry whose key has fingerprint `fp`.
    pub fn find(&self, fp: &Fingerprint) -> Option<&AuthorizedKey> {
        self.entries().find(|e| &e.key.fingerprint() == fp)
    }

    /// Authorises `key` with `role`: appended, or, for a key already
    /// listed, its role and comment replaced.
    pub fn add(&mut self, role: Role, key: PublicKey, comment: &str) {
        let comment = comment.to_string();
        match self.entry_mut(&key.fingerprint()) {
            Some(e) => {
                e.role = role;
                e.comment = comment;
            }
            None => self
                .lines
                .push(Line::Key(AuthorizedKey { role, key, comment })),
        }
    }

    /// Removes the key with fingerprint `fp`, giving back its entry.
    pub fn remove(&mut self, fp: &Fingerprint) -> Option<AuthorizedKey> {
        let at = self
            .lines
            .iter()
            .position(|l| matches!(l, Line::Key(e) if &e.key.fingerprint() == fp))?;
        match self.lines.remove(at) {
            Line::Key(e) => Some(e),
            Line::Kept(_) => None,
        }
    }

    /// Changes the role of the key with fingerprint `fp`, giving back the
    /// old role.
    pub fn set_role(&mut self, fp: &Fingerprint, role: Role) -> Option<Role> {
        let e = self.entry_mut(fp)?;
        Some(std::mem::replace(&mut e.role, role))
    }

    fn entry_mut(&mut self, fp: &Fingerprint) -> Option<&mut AuthorizedKey> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Key(e) if &e.key.fingerprint() == fp => Some(e),
            _ => None,
        })
    }

    /// All keys, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &AuthorizedKey> {
        self.lines.iter().filter_map(|l| match l {
            Line::Key(e) => Some(e),
            Line::Kept(_) => None,
        })
    }

    /// How many admin keys there are.
    pub fn admins(&self) -> usize {
        self.entries().filter(|e| e.role == Role::Admin).count()
    }

    /// The file's text form; parsing it gives back the same keys.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Line::Key(e) => out.push_str(&format::format_line(e.role, &e.key.0, &e.comment)),
                Line::Kept(raw) => out.push_str(raw),
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "ed25519:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    #[test]
    fn parses_roles_and_comments() {
        let text = format!("# keys\n\nadmin {KEY} alice@laptop (main)\nreader {KEY_B}\n");
        let keys = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(keys.entries().count(), 2);
        let key = PublicKey([0; 32]);
        assert_eq!(
            keys.lookup(&key),
            Some((Role::Admin, "alice@laptop (main)"))
        );
        assert_eq!(keys.lookup(&PublicKey([1; 32])), None);
        assert_eq!(keys.to_text(), text);
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
                source: KeyError::Text(keel_common::authorized_keys::KeyTextError::BadLength(3))
            }
        ));
    }

    #[test]
    fn bad_lines_are_skipped_and_kept_duplicates_folded() {
        let text = format!("admin {KEY} a\nadmni {KEY_B} typo\nreader {KEY} again\n");
        let (mut keys, errors) = AuthorizedKeys::parse_lenient(&text);
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("line 2"), "{lines:?}");
        assert!(lines[1].contains("line 3") && lines[1].contains("line 1"));
        assert_eq!(keys.lookup(&PublicKey([0; 32])), Some((Role::Admin, "a")));
        // The typo stays for the operator to fix; the duplicate goes.
        assert_eq!(
            keys.to_text(),
            format!("admin {KEY} a\nadmni {KEY_B} typo\n")
        );

        let fp = PublicKey([0; 32]).fingerprint();
        assert_eq!(keys.set_role(&fp, Role::Reader), Some(Role::Admin));
        keys.add(Role::Operator, PublicKey([0; 32]), "new");
        assert_eq!(keys.entries().count(), 1);
        assert_eq!(
            keys.lookup(&PublicKey([0; 32])),
            Some((Role::Operator, "new"))
        );
        assert_eq!(keys.admins(), 0);
        assert!(keys.remove(&fp).is_some());
        assert!(keys.remove(&fp).is_none());
        assert_eq!(keys.to_text(), format!("admni {KEY_B} typo\n"));
    }
}
