//! What keel-vmm asks of the loader, from the Keel kernel's command line:
//! `keel.entry=` and `keel.append=`, each one word in the encoding of
//! [`keel_common::cmdline_arg`].

use keel_common::cmdline_arg::{decode, DecodeError, APPEND_KEY, ENTRY_KEY};
use keel_guest_rt::cmdline_value;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The entry to boot; None for the configuration's default.
    pub entry: Option<String>,
    /// Appended to the chosen entry's command line.
    pub append: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the kernel command line's {key}= is not well encoded: {source}")]
pub struct SettingsError {
    key: &'static str,
    #[source]
    source: DecodeError,
}

fn setting(cmdline: &str, key: &'static str) -> Result<String, SettingsError> {
    cmdline_value(cmdline, key)
        .map(|word| decode(&word).map_err(|source| SettingsError { key, source }))
        .transpose()
        .map(Option::unwrap_or_default)
}

impl Settings {
    pub fn from_cmdline(cmdline: &str) -> Result<Self, SettingsError> {
        let entry = setting(cmdline, ENTRY_KEY)?;
        Ok(Self {
            entry: (!entry.is_empty()).then_some(entry),
            append: setting(cmdline, APPEND_KEY)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_common::cmdline_arg::encode;

    #[test]
    fn reads_encoded_settings() {
        let cmdline = format!(
            "console=ttyS0 keel.entry={} keel.append={} panic=-1",
            encode("Debian GNU/Linux, with Linux 6.1.0-18-amd64"),
            encode("quiet systemd.unit=rescue.target")
        );
        let s = Settings::from_cmdline(&cmdline).unwrap();
        assert_eq!(
            s.entry.as_deref(),
            Some("Debian GNU/Linux, with Linux 6.1.0-18-amd64")
        );
        assert_eq!(s.append, "quiet systemd.unit=rescue.target");
    }

    #[test]
    fn absent_or_empty_means_default() {
        assert_eq!(
            Settings::from_cmdline("console=ttyS0").unwrap(),
            Settings::default()
        );
        assert_eq!(
            Settings::from_cmdline("keel.entry= keel.append=").unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn a_bad_word_is_a_sentence() {
        let err = Settings::from_cmdline("keel.append=a%2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel command line's keel.append= is not well encoded: \"%\" at byte 1 is not followed by two hex digits"
        );
    }
}
