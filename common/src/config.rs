//! TOML loading with errors that point at the file, line and field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

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

impl ConfigError {
    /// Builds an error for `field` at byte `offset` of `text`.
    pub fn at(
        path: &Path,
        text: &str,
        offset: usize,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            field: field.to_string(),
            message: message.into(),
        }
    }
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

/// Parses `text` (read from `path`) into `T`, locating any error.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // toml::Spanned deserialises through private wrapper fields that
        // would otherwise show up in the path.
        let field = err
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "")
            .replace("$__serde_spanned_private_value.", "")
            .replace("$__serde_spanned_private_value", ".");
        let inner = err.into_inner();
        let offset = inner.span().map(|span| span.start).unwrap_or(0);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: if inner.span().is_some() {
                line_of(text, offset)
            } else {
                0
            },
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
}
