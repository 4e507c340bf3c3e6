//! keelctl's configuration directory (the client key, known_hosts and
//! hosts.toml) and how a host as typed becomes an address to connect to.

use std::path::{Path, PathBuf};

use super::ClientError;
use crate::{ClientKey, KnownHosts};
use keel_sys::fsutil::atomic_write;

/// The agent's default TCP port.
pub const DEFAULT_PORT: u16 = 7444;

/// The keelctl configuration directory: `$XDG_CONFIG_HOME/keel`, else
/// `~/.config/keel`.
#[derive(Clone, Debug)]
pub struct ConfigDir {
    pub path: PathBuf,
}

impl ConfigDir {
    pub fn from_env() -> Result<Self, ClientError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => PathBuf::from(h).join(".config"),
                None => {
                    return Err(ClientError::Local(
                        "Neither XDG_CONFIG_HOME nor HOME is set.".into(),
                    ))
                }
            },
        };
        Ok(ConfigDir {
            path: base.join("keel"),
        })
    }

    pub fn key_path(&self) -> PathBuf {
        self.path.join("key")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.path.join("known_hosts")
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.path.join("hosts.toml")
    }

    fn ensure(&self) -> Result<(), ClientError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| ClientError::Local(format!("{}: {e}", self.path.display())))
    }

    /// Generates and saves a client key (PKCS#8, mode 0600). Refuses to
    /// overwrite an existing key unless `force`.
    pub fn keygen(&self, force: bool) -> Result<ClientKey, ClientError> {
        self.ensure()?;
        let path = self.key_path();
        if path.exists() && !force {
            return Err(ClientError::Local(format!(
                "{} already exists; pass --force to replace it (the old key will lose access).",
                path.display()
            )));
        }
        let key = ClientKey::generate().map_err(|e| ClientError::Local(e.to_string()))?;
        atomic_write(&path, key.pkcs8(), 0o600)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
        Ok(key)
    }

    pub fn load_key(&self) -> Result<ClientKey, ClientError> {
        let path = self.key_path();
        let bytes = std::fs::read(&path).map_err(|e| {
            ClientError::Local(format!(
                "Cannot read the client key {}: {e}. Run `keelctl keygen` first.",
                path.display()
            ))
        })?;
        ClientKey::from_pkcs8(&bytes)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))
    }

    pub fn load_known_hosts(&self) -> Result<KnownHosts, ClientError> {
        KnownHosts::load(&self.known_hosts_path()).map_err(|e| ClientError::Local(e.to_string()))
    }

    pub fn save_known_hosts(&self, kh: &KnownHosts) -> Result<(), ClientError> {
        self.ensure()?;
        let path = self.known_hosts_path();
        atomic_write(&path, kh.to_text().as_bytes(), 0o600)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))
    }

    /// Resolves a host as typed: a name from hosts.toml, else
    /// `HOST[:PORT]`. `None` means the default host from hosts.toml.
    pub fn resolve(&self, typed: Option<&str>) -> Result<Target, ClientError> {
        let hosts = HostsFile::load(&self.hosts_path())?;
        let typed = match typed {
            Some(t) => t.to_string(),
            None => hosts.default.clone().ok_or_else(|| {
                ClientError::Local(
                    "No host given: pass --host HOST[:PORT], set KEEL_HOST, or set `default` in hosts.toml.".into(),
                )
            })?,
        };
        if let Some(entry) = hosts.hosts.get(&typed) {
            let (host, port) = split_host_port(&entry.address)?;
            return Ok(Target {
                known_hosts_name: typed,
                host,
                port,
            });
        }
        let (host, port) = split_host_port(&typed)?;
        let known_hosts_name = if port == DEFAULT_PORT {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            known_hosts_name,
            host,
            port,
        })
    }
}

/// `hosts.toml`: optional named hosts.
///
/// ```toml
/// default = "hv01"
/// [hosts.hv01]
/// address = "192.0.2.10:7444"
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    pub default: Option<String>,
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, HostEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub address: String,
}

impl HostsFile {
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ClientError::Local(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostsFile::default()),
            Err(e) => Err(ClientError::Local(format!("{}: {e}", path.display()))),
        }
    }
}

/// Splits `HOST[:PORT]`, with `[v6]:port` or a bare IPv6 address.
pub fn split_host_port(text: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Local(format!("\"{text}\" is not HOST[:PORT]."));
    if text.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match text.matches(':').count() {
        0 => Ok((text.to_string(), DEFAULT_PORT)),
        1 => {
            let (h, p) = text.split_once(':').ok_or_else(bad)?;
            if h.is_empty() {
                return Err(bad());
            }
            Ok((h.to_string(), p.parse().map_err(|_| bad())?))
        }
        _ => Ok((text.to_string(), DEFAULT_PORT)),
    }
}

/// Where to connect and under what name the host key is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub known_hosts_name: String,
    pub host: String,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("hv01").unwrap(), ("hv01".into(), 7444));
        assert_eq!(split_host_port("hv01:80").unwrap(), ("hv01".into(), 80));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 7444));
        assert!(split_host_port("hv01:x").is_err());
        assert!(split_host_port(":1").is_err());
    }
}
