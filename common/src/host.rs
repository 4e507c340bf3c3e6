//! `host.toml`: the appliance's own configuration.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{load_toml, parse_toml, ConfigError};

/// Hostname used when `host.toml` sets none.
pub const DEFAULT_HOSTNAME: &str = "keel";

/// The parsed and validated `host.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub agent: AgentConfig,
}

/// The `[agent]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default = "AgentConfig::default_listen")]
    pub listen: std::net::SocketAddr,
}

impl AgentConfig {
    fn default_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([0, 0, 0, 0], 7444))
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: Self::default_listen(),
        }
    }
}

impl HostConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, text): (HostConfig, String) = load_toml(path)?;
        config.validate(path, &text)?;
        Ok(config)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: HostConfig = parse_toml(path, text)?;
        config.validate(path, text)?;
        Ok(config)
    }

    /// The hostname to set, falling back to [`DEFAULT_HOSTNAME`].
    pub fn hostname(&self) -> &str {
        self.hostname
            .as_ref()
            .map(|h| h.get_ref().as_str())
            .unwrap_or(DEFAULT_HOSTNAME)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        if let Some(hostname) = &self.hostname {
            if let Err(message) = validate_hostname(hostname.get_ref()) {
                return Err(ConfigError::at(
                    path,
                    text,
                    hostname.span().start,
                    "hostname",
                    message,
                ));
            }
        }
        Ok(())
    }
}

/// Checks RFC 1123 hostname syntax: dot-separated labels of letters, digits
/// and inner hyphens, each 1 to 63 bytes, 253 bytes in all.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "must be 1 to 253 characters long, not {}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label `{label}` must be 1 to 63 characters long"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label `{label}` must not start or end with a hyphen"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "character {bad:?} is not allowed (use letters, digits and hyphens)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(Path::new("host.toml"), text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").expect("empty config is valid");
        assert_eq!(config.hostname(), "keel");
        assert_eq!(config.agent.listen.port(), 7444);
    }

    #[test]
    fn hostname_and_listen_are_read() {
        let config =
            parse("hostname = \"hv01\"\n[agent]\nlisten = \"127.0.0.1:9000\"\n").expect("valid");
        assert_eq!(config.hostname(), "hv01");
        assert_eq!(config.agent.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn bad_hostname_names_file_line_and_field() {
        let err = parse("# comment\nhostname = \"bad_name\"\n").expect_err("invalid hostname");
        let text = err.to_string();
        assert!(text.starts_with("host.toml:2: field `hostname`:"), "{text}");
        assert!(text.contains("'_'"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let err = parse("hostname = \"a\"\n[agent]\nlisten = 7444\n").expect_err("wrong type");
        let text = err.to_string();
        assert!(
            text.starts_with("host.toml:3: field `agent.listen`:"),
            "{text}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = parse("hostnme = \"hv01\"\n").expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("host.toml:1:"), "{text}");
        assert!(text.contains("hostnme"), "{text}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("hostname = \"hv01\"\n[agent\n").expect_err("syntax");
        assert!(err.to_string().starts_with("host.toml:2:"), "{err}");
    }

    #[test]
    fn hostname_rules() {
        assert!(validate_hostname("hv01.example.com").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("-a").is_err());
        assert!(validate_hostname("a..b").is_err());
        assert!(validate_hostname(&"a".repeat(64)).is_err());
        assert!(validate_hostname("a b").is_err());
    }
}
