//! The `[cloud_init]` table: a NoCloud seed for cloud images.
//!
//! init builds a small read-only FAT volume labelled `cidata` from it
//! (keel-sys's `cloud_init`) at [`cloud_init_image`] on the data
//! partition, and keel-vmm attaches it as one more virtio-blk disk after
//! the spec's own. The seed's files:
//!
//! - `meta-data`: the instance id and `local-hostname`;
//! - `user-data`: the spec's `user_data` file as it is, or else a minimal
//!   `#cloud-config` that sets the hostname and installs
//!   `ssh_authorized_keys` for the image's default user;
//! - `network-config`: the spec's `network_config` file, when it names one.
//!
//! The instance id: cloud-init applies its per-instance settings (the SSH
//! keys among them) only when the id differs from the one it last saw, so
//! by default the id changes exactly when the seed's content does:
//! `keel-<name>-<12 hex digits of a SHA-256 of the seed>`. An unchanged spec
//! keeps the id across restarts; an edited hostname, key or user data is
//! applied at the next start (and, as on any new instance, cloud-init then
//! also makes new SSH host keys). `instance_id` pins the id instead: then
//! an edit reaches only the modules cloud-init runs at every boot.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::guest_file_parts;
use crate::config::{ConfigError, Source};

/// The data partition's directory of the seed images init builds. It is
/// not one of the guest file directories, so no spec can name another
/// guest's seed (its user data may hold secrets).
pub const CLOUD_INIT_DIR: &str = "cloud-init";
/// Most keys in `ssh_authorized_keys`.
pub const MAX_SSH_KEYS: usize = 64;
/// Longest key line: room for a 16384-bit RSA key and a comment.
pub const MAX_SSH_KEY_LEN: usize = 8192;
/// Longest hostname: a fully qualified domain name (RFC 1035).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest label of a hostname.
pub const MAX_HOSTNAME_LABEL_LEN: usize = 63;
/// Longest `instance_id`: cloud-init names a directory after it.
pub const MAX_INSTANCE_ID_LEN: usize = 128;
/// Largest `user_data` file.
pub const MAX_USER_DATA_BYTES: u64 = 1 << 20;
/// Largest `network_config` file.
pub const MAX_NETWORK_CONFIG_BYTES: u64 = 64 << 10;

/// The `[cloud_init]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInitSpec {
    /// See [`CloudInitSpec::hostname`].
    pub hostname: Option<String>,
    /// OpenSSH public keys, one line each: `ssh-ed25519 AAAA... comment`.
    pub ssh_authorized_keys: Option<Vec<String>>,
    /// A user-data file beneath `images/`, used as it is.
    pub user_data: Option<PathBuf>,
    /// A network-config file (v1 or v2) beneath `images/`, used as it is.
    pub network_config: Option<PathBuf>,
    /// Pins the instance id; see the module's documentation.
    pub instance_id: Option<String>,
}

/// A file of the seed that the spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFile {
    UserData,
    NetworkConfig,
}

impl SeedFile {
    /// The spec's field that names it.
    pub fn field(self) -> &'static str {
        match self {
            SeedFile::UserData => "cloud_init.user_data",
            SeedFile::NetworkConfig => "cloud_init.network_config",
        }
    }

    /// How large it may be.
    pub fn max_bytes(self) -> u64 {
        match self {
            SeedFile::UserData => MAX_USER_DATA_BYTES,
            SeedFile::NetworkConfig => MAX_NETWORK_CONFIG_BYTES,
        }
    }
}

/// Where the seed image of guest `name` is, relative to the data partition.
/// init writes it there and keel-vmm opens it there: this is the one place
/// that says where.
pub fn cloud_init_image(name: &str) -> PathBuf {
    Path::new(CLOUD_INIT_DIR).join(format!("{name}.img"))
}

impl CloudInitSpec {
    /// The guest's hostname: the spec's, else the guest's name.
    pub fn hostname<'a>(&'a self, guest: &'a str) -> &'a str {
        self.hostname.as_deref().unwrap_or(guest)
    }

    /// The SSH keys, none when unset.
    pub fn ssh_authorized_keys(&self) -> &[String] {
        self.ssh_authorized_keys.as_deref().unwrap_or_default()
    }

    /// The files the spec names, for the checks on disk and the seed.
    pub fn files(&self) -> impl Iterator<Item = (SeedFile, &Path)> {
        let user = self.user_data.as_deref().map(|p| (SeedFile::UserData, p));
        let net = self
            .network_config
            .as_deref()
            .map(|p| (SeedFile::NetworkConfig, p));
        user.into_iter().chain(net)
    }

    pub(super) fn validate(&self, at: &Source) -> Result<(), ConfigError> {
        if let Some(hostname) = &self.hostname {
            validate_hostname(hostname).map_err(|m| at.error("cloud_init.hostname", m))?;
        }
        let keys = self.ssh_authorized_keys();
        if keys.len() > MAX_SSH_KEYS {
            return Err(at.error(
                "cloud_init.ssh_authorized_keys",
                format!("at most {MAX_SSH_KEYS} keys, not {}", keys.len()),
            ));
        }
        let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let field = format!("cloud_init.ssh_authorized_keys[{i}]");
            let blob = check_ssh_key(key).map_err(|m| at.error(&field, m))?;
            if let Some(first) = blobs.iter().position(|b| *b == blob) {
                return Err(at.error(
                    &field,
                    format!("the key is already listed as ssh_authorized_keys[{first}]"),
                ));
            }
            blobs.push(blob);
        }
        for (kind, path) in self.files() {
            check_seed_file_path(path).map_err(|m| at.error(kind.field(), m))?;
        }
        if let Some(id) = &self.instance_id {
            validate_instance_id(id).map_err(|m| at.error("cloud_init.instance_id", m))?;
        }
        Ok(())
    }
}

/// Checks a hostname: dot-separated labels of 1 to 63 letters, digits and
/// inner hyphens (RFC 1123), at most 253 bytes in all, no trailing dot.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_HOSTNAME_LEN} characters long, not {}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_HOSTNAME_LABEL_LEN {
            return Err(format!(
                "`{name}` is not a hostname: each dot-separated part must be 1 to \
                 {MAX_HOSTNAME_LABEL_LEN} characters long"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "character {bad:?} is not allowed in a hostname (use letters, digits, hyphens and dots)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{name}` is not a hostname: a part must not start or end with a hyphen"
            ));
        }
    }
    Ok(())
}

/// Checks an instance id: 1 to 128 letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit (cloud-init makes a directory of it).
pub fn validate_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
        return Err(format!(
            "must be 1 to {MAX_INSTANCE_ID_LEN} characters long, not {}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "character {bad:?} is not allowed (use letters, digits, `.`, `_` and `-`)"
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

/// Whether `kind` is a key type cloud images' OpenSSH takes.
fn is_key_type(kind: &str) -> bool {
    let named = kind == "ssh-ed25519"
        || kind == "ssh-rsa"
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-");
    named
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-@.".contains(&b))
}

/// Checks one `ssh_authorized_keys` line, `TYPE BASE64 [COMMENT]`, as
/// OpenSSH writes a `.pub` file: one line, a known type, and base64 whose
/// decoded key names that same type. Returns the decoded key. Options
/// before the type (`command="..."`) are not taken: put such lines in a
/// `user_data` file.
pub fn check_ssh_key(line: &str) -> Result<Vec<u8>, String> {
    if line.len() > MAX_SSH_KEY_LEN {
        return Err(format!(
            "must be at most {MAX_SSH_KEY_LEN} bytes, not {}",
            line.len()
        ));
    }
    // YAML and cloud-init take these as line breaks too.
    if let Some(bad) = line
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
    {
        return Err(format!(
            "character {bad:?} is not allowed: a key is one line of printable text"
        ));
    }
    let mut fields = line.splitn(3, ' ');
    let kind = fields.next().unwrap_or_default();
    let example = "(e.g. \"ssh-ed25519 AAAAC3Nza... alice@laptop\", as in ~/.ssh/id_ed25519.pub)";
    if !is_key_type(kind) {
        return Err(format!(
            "does not start with an OpenSSH key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*) {example}"
        ));
    }
    let encoded = fields.next().unwrap_or_default();
    if encoded.is_empty() {
        return Err(format!("has no base64 key after `{kind}` {example}"));
    }
    let blob = STANDARD
        .decode(encoded)
        .map_err(|_| format!("the key after `{kind}` is not base64 {example}"))?;
    // The key itself starts with its type as an SSH string.
    let named = blob
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map(u32::from_be_bytes)
        .and_then(|len| blob.get(4..4 + usize::try_from(len).ok()?));
    if named != Some(kind.as_bytes()) {
        return Err(format!("the base64 key is not a `{kind}` key {example}"));
    }
    if blob.len() <= 4 + kind.len() {
        return Err(format!("the `{kind}` key holds no key material"));
    }
    Ok(blob)
}

/// Checks a `user_data` or `network_config` path: a guest file beneath
/// `images/`, the operator's, never `disks/`, which guests write.
pub fn check_seed_file_path(path: &Path) -> Result<(), String> {
    match guest_file_parts(path)? {
        ("images", _) => Ok(()),
        _ => Err(format!(
            "`{}` is not beneath images/; a cloud-init file is one of the data \
             partition's images (e.g. \"images/web1.user-data\")",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests;
