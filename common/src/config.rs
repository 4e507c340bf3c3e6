//! TOML loading with errors that point at the file, line and field.
//!
//! Fields are named the way serde_path_to_error names them: `disk[0].path`,
//! `network[1].match.mac`, array elements counted from zero. An error found
//! while deserialising has its span from toml; an error found by validation
//! afterwards names its field, and [`Source`] looks that field up in the
//! parsed text. So the validated types hold plain values, and a value that
//! came from elsewhere (no text) still validates, at line 0.

use std::cell::OnceCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{DeserializeOwned, Deserializer, Visitor};
use toml_edit::{ImDocument, Item};

/// A configuration error located in its source file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but a field is malformed or invalid.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        /// One-based line number, 0 when no position is known.
        line: usize,
        field: String,
        message: String,
    },
}

/// One-based line number of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML text and the file it came from, for errors found after parsing.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    /// Parsed for the first error only: valid input never pays for it.
    document: OnceCell<Option<ImDocument<&'a str>>>,
}

impl<'a> Source<'a> {
    /// `text` as read from `path`; `""` for a value that came from
    /// elsewhere, whose errors then say line 0.
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Source {
            path,
            text,
            document: OnceCell::new(),
        }
    }

    /// An error in `field`, located at its value.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        self.error_at(field, field, message)
    }

    /// An error in `field`, located at the value of field `at`: a missing
    /// field is pointed at by the one that requires it.
    pub fn error_at(&self, at: &str, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self
                .span(at)
                .map_or(0, |span| line_of(self.text, span.start)),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Where `field`'s value (or a table's header) sits in the text.
    fn span(&self, field: &str) -> Option<Range<usize>> {
        let document = self
            .document
            .get_or_init(|| ImDocument::parse(self.text).ok())
            .as_ref()?;
        let mut item: &Item = document.as_item();
        for part in field.split('.') {
            let mut pieces = part.split('[');
            item = item.get(pieces.next()?)?;
            for index in pieces {
                let index: usize = index.strip_suffix(']')?.parse().ok()?;
                item = item.get(index)?;
            }
        }
        item.span()
    }
}

/// Deserialises a `T` written as a string, through its `FromStr`. Parsing
/// inside the visitor lets toml locate a refusal at the string itself, even
/// as an element of an array.
pub fn deserialize_from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct FromStrVisitor<T>(PhantomData<T>);

    impl<T> Visitor<'_> for FromStrVisitor<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }
    }

    deserializer.deserialize_str(FromStrVisitor(PhantomData))
}

/// Parses `text` (read from `path`) into `T`, locating any error.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: inner.span().map_or(0, |span| line_of(text, span.start)),
            field: if field == "." {
                "(document)".to_string()
            } else {
                field
            },
            message: inner.message().trim().to_string(),
        }
    })
}

/// Reads and parses the TOML file at `path`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = parse_toml(path, &text)?;
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_from_one() {
        let text = "a = 1\nb = 2\nc = 3\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, 12), 3);
        assert_eq!(line_of(text, 10_000), 4);
    }

    /// The line `Source` gives an error in `field` of `text`.
    fn line(text: &str, field: &str) -> usize {
        match Source::new(Path::new("t.toml"), text).error(field, "bad") {
            ConfigError::Invalid { line, .. } => line,
            ConfigError::Read { .. } => unreachable!("Source only builds Invalid"),
        }
    }

    #[test]
    fn source_finds_nested_indexed_and_inline_fields() {
        let text = "a = 1\n[t]\nb = \"x\"\n[[list]]\nc = 1\n[[list]]\nc = [\n  2,\n  3,\n]\n\
                    d = { e = { f = 4 } }\n";
        assert_eq!(line(text, "a"), 1);
        assert_eq!(line(text, "t"), 2);
        assert_eq!(line(text, "t.b"), 3);
        assert_eq!(line(text, "list[0].c"), 5);
        assert_eq!(line(text, "list[1]"), 6);
        assert_eq!(line(text, "list[1].c"), 7);
        assert_eq!(line(text, "list[1].c[1]"), 9);
        assert_eq!(line(text, "list[1].d.e.f"), 11);
        assert_eq!(line("x.y = 5\n", "x.y"), 1);
    }

    #[test]
    fn source_without_the_field_says_line_zero() {
        assert_eq!(line("a = 1\n", "b"), 0);
        assert_eq!(line("a = [1]\n", "a[1]"), 0);
        assert_eq!(line("a = [1]\n", "a[x]"), 0);
        assert_eq!(line("", "a"), 0);
        assert_eq!(line("not toml", "a"), 0);
    }
}
