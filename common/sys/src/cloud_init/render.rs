//! The seed's text: `meta-data`, `user-data` and `network-config`, and the
//! instance id (the rule is keel-common's `guest::cloud_init`).
//!
//! Every value is written as a YAML double-quoted string with everything
//! but printable ASCII escaped, so a key comment such as `alice: "x" # y`
//! or a hostname like `null` stays a string (cloud-init reads these files
//! with PyYAML).

use std::fmt::Write;

use keel_common::guest::CloudInitSpec;
use sha2::{Digest, Sha256};

/// How many hex digits of the seed's digest the default instance id has.
const ID_DIGITS: usize = 12;

/// The files of one guest's seed, as they go on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub instance_id: String,
    pub meta_data: String,
    pub user_data: Vec<u8>,
    pub network_config: Option<Vec<u8>>,
}

impl Seed {
    /// The volume's files, by name, in the order they are written.
    pub fn files(&self) -> Vec<(&'static str, &[u8])> {
        let mut files = vec![
            ("meta-data", self.meta_data.as_bytes()),
            ("user-data", self.user_data.as_slice()),
        ];
        if let Some(net) = &self.network_config {
            files.push(("network-config", net.as_slice()));
        }
        files
    }

    /// A SHA-256 of everything on the volume: its FAT volume id comes
    /// from it, so that even the id changes with the content.
    pub fn digest(&self) -> [u8; 32] {
        digest(&self.files())
    }
}

/// The seed of guest `name` from its `[cloud_init]` table and the contents
/// of the files it names: `user_data` replaces the generated user-data,
/// and then the keys go in meta-data's `public-keys`, which cloud-init
/// installs for the default user whatever the user data says.
pub fn render(
    name: &str,
    spec: &CloudInitSpec,
    user_data: Option<&[u8]>,
    network_config: Option<&[u8]>,
) -> Seed {
    let hostname = spec.hostname(name);
    let keys = spec.ssh_authorized_keys();
    let mut meta_body = format!("local-hostname: {}\n", yaml_string(hostname));
    let user_data = match user_data {
        Some(own) => {
            meta_body.push_str(&yaml_list("public-keys", keys));
            own.to_vec()
        }
        None => cloud_config(hostname, keys).into_bytes(),
    };
    let instance_id = spec.instance_id.clone().unwrap_or_else(|| {
        let mut files = vec![
            ("meta-data", meta_body.as_bytes()),
            ("user-data", &user_data),
        ];
        if let Some(net) = network_config {
            files.push(("network-config", net));
        }
        let hex: String = digest(&files)
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
            .chars()
            .take(ID_DIGITS)
            .collect();
        format!("keel-{name}-{hex}")
    });
    Seed {
        meta_data: format!("instance-id: {}\n{meta_body}", yaml_string(&instance_id)),
        instance_id,
        user_data,
        network_config: network_config.map(<[u8]>::to_vec),
    }
}

/// The generated user-data: the hostname, the image's default user, and
/// the keys, which a top-level `ssh_authorized_keys` gives that user.
fn cloud_config(hostname: &str, keys: &[String]) -> String {
    format!(
        "#cloud-config\nhostname: {}\nusers:\n  - default\n{}",
        yaml_string(hostname),
        yaml_list("ssh_authorized_keys", keys)
    )
}

/// `key:` and one quoted item per line; nothing for no items.
fn yaml_list(key: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = format!("{key}:\n");
    for item in items {
        let _ = writeln!(out, "  - {}", yaml_string(item));
    }
    out
}

/// `text` as a YAML double-quoted scalar.
pub fn yaml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// A SHA-256 of named files, each name and content length-prefixed so no
/// two different sets of files hash alike.
fn digest(files: &[(&str, &[u8])]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"keel cloud-init seed v1\0");
    for (name, content) in files {
        for part in [name.as_bytes(), content] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    hash.finalize().into()
}
