//! The `authorized_keys` format, one parser for keel-agent (which owns the
//! file) and init's seed importer (which merges an ESP seed into it):
//! one key per line, `<role> ed25519:<base64 public key> [comment...]`;
//! blank lines and lines starting with `#` are ignored.
//!
//! A bad line never spoils the others: [`parse`] keeps every good line
//! and reports each bad one with its line number. A key listed twice is
//! folded: the first line wins (as in OpenSSH), the later one is reported.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Prefix of the text form of a public key.
pub const KEY_PREFIX: &str = "ed25519:";

/// What a client key may do. Ordered: each role can do everything the
/// previous one can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Read-only: host info, guest list and details, logs.
    Reader,
    /// Reader plus guest power control, the console and uploads.
    Operator,
    /// Everything: define, undefine, audit log, key management.
    Admin,
}

impl Role {
    /// The wire byte used in the handshake's authentication result.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Reader => 1,
            Role::Operator => 2,
            Role::Admin => 3,
        }
    }

    /// Inverse of [`Role::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Role::Reader),
            2 => Some(Role::Operator),
            3 => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// Why the text form of a public key is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum KeyTextError {
    #[error("The public key must start with \"ed25519:\".")]
    BadPrefix,
    #[error("The public key is not valid base64.")]
    BadBase64,
    #[error("The public key must be 32 bytes, not {0}.")]
    BadLength(usize),
}

/// Decodes `ed25519:<base64>` into the raw key.
pub fn decode_public_key(text: &str) -> Result<[u8; 32], KeyTextError> {
    let b64 = text
        .strip_prefix(KEY_PREFIX)
        .ok_or(KeyTextError::BadPrefix)?;
    let raw = STANDARD.decode(b64).map_err(|_| KeyTextError::BadBase64)?;
    raw.as_slice()
        .try_into()
        .map_err(|_| KeyTextError::BadLength(raw.len()))
}

/// The text form of a raw key, `ed25519:<base64>`.
pub fn encode_public_key(key: &[u8; 32]) -> String {
    format!("{KEY_PREFIX}{}", STANDARD.encode(key))
}

/// Why one line is skipped.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LineError {
    #[error("unknown role \"{0}\" (expected admin, operator or reader)")]
    BadRole(String),
    #[error("missing the public key")]
    MissingKey,
    #[error("{0}")]
    BadKey(KeyTextError),
    #[error("the key is already listed on line {first}, which wins")]
    Duplicate { first: usize },
}

/// One good line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    pub role: Role,
    pub key: [u8; 32],
    pub comment: String,
}

/// One skipped line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    pub error: LineError,
}

/// A parsed file: its good lines (one per key) and the skipped ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
}

/// Parses one line: `None` for a blank line or a comment.
pub fn parse_line(raw: &str) -> Result<Option<(Role, [u8; 32], String)>, LineError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut fields = trimmed.splitn(3, char::is_whitespace);
    let role_text = fields.next().unwrap_or_default();
    let role = role_text
        .parse::<Role>()
        .map_err(|()| LineError::BadRole(role_text.to_string()))?;
    let key_text = fields
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(LineError::MissingKey)?;
    let key = decode_public_key(key_text).map_err(LineError::BadKey)?;
    let comment = fields.next().unwrap_or_default().trim().to_string();
    Ok(Some((role, key, comment)))
}

/// Parses a whole file, folding duplicate keys (the first line wins).
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((role, key, comment))) => {
                if let Some(first) = parsed.entries.iter().find(|e| e.key == key) {
                    let error = LineError::Duplicate { first: first.line };
                    parsed.skipped.push(Skipped { line, error });
                } else {
                    parsed.entries.push(Entry {
                        line,
                        role,
                        key,
                        comment,
                    });
                }
            }
            Err(error) => parsed.skipped.push(Skipped { line, error }),
        }
    }
    parsed
}

/// One line of the file for `entry`'s role, key and comment.
pub fn format_line(role: Role, key: &[u8; 32], comment: &str) -> String {
    let key = encode_public_key(key);
    if comment.is_empty() {
        format!("{role} {key}")
    } else {
        format!("{role} {key} {comment}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "ed25519:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    #[test]
    fn bad_lines_are_skipped_with_their_number_and_the_rest_kept() {
        let text = format!(
            "# keys\n\nadmin {KEY} alice (main)\nroot {KEY_B}\noperator\nreader ed25519:AAAA\n\
             reader {KEY} again\noperator {KEY_B} bob\n"
        );
        let parsed = parse(&text);
        let good: Vec<(usize, Role, &str)> = parsed
            .entries
            .iter()
            .map(|e| (e.line, e.role, e.comment.as_str()))
            .collect();
        assert_eq!(
            good,
            [(3, Role::Admin, "alice (main)"), (8, Role::Operator, "bob")]
        );
        let bad: Vec<(usize, LineError)> = parsed
            .skipped
            .into_iter()
            .map(|s| (s.line, s.error))
            .collect();
        assert_eq!(
            bad,
            [
                (4, LineError::BadRole("root".into())),
                (5, LineError::MissingKey),
                (6, LineError::BadKey(KeyTextError::BadLength(3))),
                (7, LineError::Duplicate { first: 3 }),
            ]
        );
    }

    #[test]
    fn key_text_round_trips() {
        let key = decode_public_key(KEY_B).unwrap();
        assert_eq!(encode_public_key(&key), KEY_B);
        assert_eq!(decode_public_key("ssh:AA"), Err(KeyTextError::BadPrefix));
        assert_eq!(
            decode_public_key("ed25519:!!"),
            Err(KeyTextError::BadBase64)
        );
        let line = format_line(Role::Reader, &key, "");
        assert_eq!(
            parse_line(&line),
            Ok(Some((Role::Reader, key, String::new())))
        );
    }

    #[test]
    fn role_bytes_round_trip() {
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::from_byte(r.to_byte()), Some(r));
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert_eq!(Role::from_byte(0), None);
    }
}
