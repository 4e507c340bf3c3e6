//! `guests/NAME.toml`: one guest's specification.
//!
//! [`GuestSpec::parse`] checks everything that needs no file system;
//! [`GuestSpec::validate_files`] then checks the kernel, initrd and disks
//! against the data partition. Every error names the file, line and field,
//! with array elements counted from zero as serde does (`disk[0].path`).
//!
//! The public types hold plain values, not `toml::Spanned`, so that they also
//! round-trip through non-TOML formats such as postcard on the management
//! channel. Line numbers come from a second, lenient pass over the text that
//! records only where each checked value sits (`Positions`).
//!
//! Fields with a default are `Option`s read through accessors
//! ([`GuestSpec::restart`], [`GuestSpec::rng_enabled`], ...) so that a spec
//! written back out says only what its author said. `None` fields are not
//! skipped when serialising: postcard is not self-describing and needs every
//! field (the TOML serialiser leaves them out by itself).
//!
//! virtio-rng is a boolean, `rng = false` to disable it, rather than an
//! `[rng]` table: it has no settings today.

use crate::hostfwd::{HostFwd, HostFwdParseError};
use std::collections::HashMap;
use std::fmt;
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use crate::config::{line_of, load_toml, parse_toml, ConfigError};

/// Longest guest name: one DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Most vCPUs a guest may have.
pub const MAX_VCPUS: u32 = 64;
/// Smallest guest memory: below this no Linux kernel boots.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest memory: 1 TiB.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Longest kernel command line in bytes: x86 `COMMAND_LINE_SIZE` (2048)
/// less the terminating NUL, as the boot protocol's `cmdline_size` says.
pub const MAX_CMDLINE_LEN: usize = 2047;
/// Longest disk serial: virtio-blk's `VIRTIO_BLK_ID_BYTES`.
pub const MAX_SERIAL_LEN: usize = 20;
/// Longest interface name: `IFNAMSIZ` less the NUL.
pub const MAX_IFNAME_LEN: usize = 15;
/// Lowest guest CID: 0 to 2 are the hypervisor, local and host addresses.
pub const MIN_GUEST_CID: u32 = 3;
/// Guest CID used when `[vsock]` sets none. Each VMM has its own vsock
/// device behind a Unix socket, so every guest can use the same one.
pub const DEFAULT_GUEST_CID: u32 = 3;
/// Longest Unix socket path in bytes: `sun_path` (108) less the NUL.
pub const MAX_UDS_PATH_LEN: usize = 107;

/// The parsed and validated `guests/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub autostart: Option<bool>,
    pub restart: Option<RestartPolicy>,
    /// virtio-rng; see [`GuestSpec::rng_enabled`].
    pub rng: Option<bool>,
    pub boot: BootSpec,
    #[serde(rename = "disk", default)]
    pub disks: Vec<DiskSpec>,
    #[serde(rename = "net", default)]
    pub nets: Vec<NetSpec>,
    pub vsock: Option<VsockSpec>,
}

/// What init does when the guest's VMM exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whatever the exit status.
    Always,
    /// Restart only after a crash or a non-zero exit.
    #[default]
    OnFailure,
    /// Leave the guest stopped.
    Never,
}

impl RestartPolicy {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[boot]` table. Paths are relative to the data partition unless
/// absolute; see [`GuestSpec::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

impl BootSpec {
    /// The kernel command line, empty when unset.
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_deref().unwrap_or("")
    }
}

/// One `[[disk]]`: a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// A regular file (raw image) or a block device.
    pub path: PathBuf,
    pub read_only: Option<bool>,
    /// Printable ASCII, at most [`MAX_SERIAL_LEN`] bytes.
    pub serial: Option<String>,
}

impl DiskSpec {
    /// Whether the guest gets the disk read-only (default: no).
    pub fn read_only(&self) -> bool {
        self.read_only.unwrap_or(false)
    }
}

/// How a NIC reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A tap device named by `tap` (opened by name or handed over as an fd).
    Tap,
    /// A tap that init creates on the host bridge.
    Bridge,
    /// User-mode NAT inside the VMM.
    User,
}

impl NetMode {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Tap => "tap",
            NetMode::Bridge => "bridge",
            NetMode::User => "user",
        }
    }
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[net]]`: a virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub mode: NetMode,
    /// The tap's name; required for, and only allowed with, [`NetMode::Tap`].
    pub tap: Option<String>,
    /// A unicast address; the VMM picks one when unset.
    pub mac: Option<MacAddr>,
    /// Inbound port forwards for user-mode NAT, in QEMU's syntax:
    /// `"tcp:127.0.0.1:8022-:22"` (host 127.0.0.1:8022 to guest port 22).
    pub hostfwd: Option<Vec<String>>,
}

/// The `[vsock]` table: virtio-vsock in Firecracker's hybrid model, where
/// the host side is a Unix socket rather than a host CID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    pub cid: Option<u32>,
    /// The host Unix socket, resolved like every other spec path.
    pub uds_path: PathBuf,
}

impl VsockSpec {
    /// The guest CID, [`DEFAULT_GUEST_CID`] when unset.
    pub fn cid(&self) -> u32 {
        self.cid.unwrap_or(DEFAULT_GUEST_CID)
    }
}

/// An Ethernet address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for an individual (not group) address: low bit of octet 0 clear.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a MAC address (expected six hex pairs separated by colons, \
                 like 52:54:00:12:34:56)"
            )
        };
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would accept "+f" and single digits.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl GuestSpec {
    /// Reads `path`, parses and validates it, and checks its files against
    /// `base_dir` (the data partition).
    pub fn load(path: &Path, base_dir: &Path) -> Result<Self, ConfigError> {
        let (spec, text): (GuestSpec, String) = load_toml(path)?;
        spec.validate(path, &text)?;
        spec.validate_files(path, &text, base_dir)?;
        Ok(spec)
    }

    /// Parses and validates `text` as if read from `path`, without touching
    /// the file system.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let spec: GuestSpec = parse_toml(path, text)?;
        spec.validate(path, text)?;
        Ok(spec)
    }

    /// Whether init starts the guest at boot (default: no).
    pub fn autostart(&self) -> bool {
        self.autostart.unwrap_or(false)
    }

    /// The restart policy (default: on-failure).
    pub fn restart(&self) -> RestartPolicy {
        self.restart.unwrap_or_default()
    }

    /// Whether the guest gets a virtio-rng device (default: yes).
    pub fn rng_enabled(&self) -> bool {
        self.rng.unwrap_or(true)
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// `rel` as a host path: unchanged when absolute, else under `base_dir`.
    pub fn resolve(&self, base_dir: &Path, rel: &Path) -> PathBuf {
        if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            base_dir.join(rel)
        }
    }

    /// Checks every rule that needs no file system. `text` is the source
    /// the spec was parsed from and only locates errors: a spec that came
    /// from elsewhere (the wire) can pass `""` and gets line 0.
    pub fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let at = Locator::new(path, text);
        let pos = &at.positions;

        validate_guest_name(&self.name).map_err(|m| at.error(&pos.name, "name", m))?;
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(at.error(
                &pos.vcpus,
                "vcpus",
                format!("must be 1 to {MAX_VCPUS}, not {}", self.vcpus),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(at.error(
                &pos.memory_mib,
                "memory_mib",
                format!(
                    "must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} (1 TiB), not {}",
                    self.memory_mib
                ),
            ));
        }

        self.validate_boot(&at)?;
        self.validate_disks(&at)?;
        self.validate_nets(&at)?;

        if let Some(vsock) = &self.vsock {
            let cid = vsock.cid();
            if cid < MIN_GUEST_CID {
                return Err(at.error(
                    &pos.vsock.cid,
                    "vsock.cid",
                    format!("must be at least {MIN_GUEST_CID} (0 to 2 are reserved), not {cid}"),
                ));
            }
            if cid == u32::MAX {
                return Err(at.error(
                    &pos.vsock.cid,
                    "vsock.cid",
                    "4294967295 is reserved (VMADDR_CID_ANY)",
                ));
            }
            check_spec_path(&vsock.uds_path)
                .map_err(|m| at.error(&pos.vsock.uds_path, "vsock.uds_path", m))?;
        }
        Ok(())
    }

    fn validate_boot(&self, at: &Locator) -> Result<(), ConfigError> {
        let pos = &at.positions.boot;
        check_spec_path(&self.boot.kernel).map_err(|m| at.error(&pos.kernel, "boot.kernel", m))?;
        if let Some(initrd) = &self.boot.initrd {
            check_spec_path(initrd).map_err(|m| at.error(&pos.initrd, "boot.initrd", m))?;
        }
        if let Some(cmdline) = &self.boot.cmdline {
            if cmdline.len() > MAX_CMDLINE_LEN {
                return Err(at.error(
                    &pos.cmdline,
                    "boot.cmdline",
                    format!(
                        "must be at most {MAX_CMDLINE_LEN} bytes, not {}",
                        cmdline.len()
                    ),
                ));
            }
            // The kernel would silently stop reading at the first NUL.
            if cmdline.contains('\0') {
                return Err(at.error(&pos.cmdline, "boot.cmdline", "must not contain NUL bytes"));
            }
        }
        Ok(())
    }

    fn validate_disks(&self, at: &Locator) -> Result<(), ConfigError> {
        let mut paths: HashMap<PathBuf, usize> = HashMap::new();
        let mut serials: HashMap<&str, usize> = HashMap::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let pos = at.positions.disk.get(i);
            let path_at = pos.and_then(|p| p.path.as_ref());
            let field = format!("disk[{i}].path");
            check_spec_path(&disk.path).map_err(|m| at.error_opt(path_at, &field, m))?;
            // Two devices on one image would corrupt it; compare the paths
            // as written here, validate_files compares the files themselves.
            if let Some(first) = paths.insert(normalize(&disk.path), i) {
                return Err(at.error_opt(
                    path_at,
                    &field,
                    format!("`{}` is already used by disk[{first}]", disk.path.display()),
                ));
            }
            if let Some(serial) = &disk.serial {
                let serial_at = pos.and_then(|p| p.serial.as_ref());
                let field = format!("disk[{i}].serial");
                validate_disk_serial(serial).map_err(|m| at.error_opt(serial_at, &field, m))?;
                // The guest names /dev/disk/by-id links after the serial.
                if let Some(first) = serials.insert(serial, i) {
                    return Err(at.error_opt(
                        serial_at,
                        &field,
                        format!("`{serial}` is already used by disk[{first}]"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_nets(&self, at: &Locator) -> Result<(), ConfigError> {
        let mut macs: HashMap<MacAddr, usize> = HashMap::new();
        let mut taps: HashMap<&str, usize> = HashMap::new();
        let mut forwards: Vec<(String, HostFwd)> = Vec::new();
        for (i, net) in self.nets.iter().enumerate() {
            let pos = at.positions.net.get(i);
            let tap_at = pos.and_then(|p| p.tap.as_ref());
            let field = format!("net[{i}].tap");
            match (net.mode, &net.tap) {
                (NetMode::Tap, None) => {
                    // Nothing to point at but the mode that asks for it.
                    let mode_at = pos.and_then(|p| p.mode.as_ref());
                    return Err(at.error_opt(mode_at, &field, "required when mode is \"tap\""));
                }
                (NetMode::Tap, Some(tap)) => {
                    validate_ifname(tap).map_err(|m| at.error_opt(tap_at, &field, m))?;
                    if let Some(first) = taps.insert(tap, i) {
                        return Err(at.error_opt(
                            tap_at,
                            &field,
                            format!("`{tap}` is already used by net[{first}]"),
                        ));
                    }
                }
                (mode, Some(_)) => {
                    return Err(at.error_opt(
                        tap_at,
                        &field,
                        format!("only allowed when mode is \"tap\", not \"{mode}\""),
                    ));
                }
                (_, None) => {}
            }
            if let Some(rules) = &net.hostfwd {
                let fwd_at = pos.and_then(|p| p.hostfwd.as_ref());
                if net.mode != NetMode::User {
                    let message =
                        format!("only allowed when mode is \"user\", not \"{}\"", net.mode);
                    return Err(at.error_opt(fwd_at, &format!("net[{i}].hostfwd"), message));
                }
                for (j, rule) in rules.iter().enumerate() {
                    let field = format!("net[{i}].hostfwd[{j}]");
                    let fwd: HostFwd = rule.parse().map_err(|e: HostFwdParseError| {
                        at.error_opt(fwd_at, &field, e.to_string())
                    })?;
                    if let Some((other, _)) = forwards.iter().find(|(_, f)| f.overlaps(&fwd)) {
                        let message = format!("`{rule}` listens on the same host port as {other}");
                        return Err(at.error_opt(fwd_at, &field, message));
                    }
                    forwards.push((field, fwd));
                }
            }
            if let Some(mac) = net.mac {
                let mac_at = pos.and_then(|p| p.mac.as_ref());
                let field = format!("net[{i}].mac");
                if mac.is_zero() {
                    return Err(at.error_opt(mac_at, &field, "must not be all zeros"));
                }
                if !mac.is_unicast() {
                    return Err(at.error_opt(
                        mac_at,
                        &field,
                        format!(
                            "`{mac}` is a multicast address; a NIC needs a unicast one \
                             (low bit of the first octet clear)"
                        ),
                    ));
                }
                if let Some(first) = macs.insert(mac, i) {
                    return Err(at.error_opt(
                        mac_at,
                        &field,
                        format!("`{mac}` is already used by net[{first}]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the spec's files under `base_dir` (the data partition): the
    /// kernel and initrd must be regular files, each disk a regular file or
    /// a block device, distinct from the other disks, and the vsock socket
    /// path short enough and not taken by anything but a socket. Symbolic
    /// links are followed. `text` only locates errors, as for
    /// [`GuestSpec::validate`].
    pub fn validate_files(
        &self,
        path: &Path,
        text: &str,
        base_dir: &Path,
    ) -> Result<(), ConfigError> {
        let at = Locator::new(path, text);
        let pos = &at.positions;

        self.inspect(base_dir, &self.boot.kernel, Expect::Regular)
            .map_err(|m| at.error(&pos.boot.kernel, "boot.kernel", m))?;
        if let Some(initrd) = &self.boot.initrd {
            self.inspect(base_dir, initrd, Expect::Regular)
                .map_err(|m| at.error(&pos.boot.initrd, "boot.initrd", m))?;
        }

        // Catches one image reached twice through different spellings,
        // absolute paths, links or two nodes for one block device.
        let mut seen: HashMap<(bool, u64, u64), usize> = HashMap::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let path_at = pos.disk.get(i).and_then(|p| p.path.as_ref());
            let field = format!("disk[{i}].path");
            let meta = self
                .inspect(base_dir, &disk.path, Expect::RegularOrBlock)
                .map_err(|m| at.error_opt(path_at, &field, m))?;
            let key = if meta.file_type().is_block_device() {
                (true, meta.rdev(), 0)
            } else {
                (false, meta.dev(), meta.ino())
            };
            if let Some(first) = seen.insert(key, i) {
                return Err(at.error_opt(
                    path_at,
                    &field,
                    format!(
                        "`{}` is the same file as disk[{first}]",
                        self.resolve(base_dir, &disk.path).display()
                    ),
                ));
            }
        }

        if let Some(vsock) = &self.vsock {
            self.check_socket_path(base_dir, &vsock.uds_path)
                .map_err(|m| at.error(&pos.vsock.uds_path, "vsock.uds_path", m))?;
        }
        Ok(())
    }

    fn inspect(&self, base_dir: &Path, rel: &Path, expect: Expect) -> Result<Metadata, String> {
        // Repeated here for specs that did not come through parse.
        check_spec_path(rel)?;
        let full = self.resolve(base_dir, rel);
        let meta = std::fs::metadata(&full).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => format!("`{}` does not exist", full.display()),
            _ => format!("cannot inspect `{}`: {err}", full.display()),
        })?;
        let kind = meta.file_type();
        let fits = match expect {
            Expect::Regular => kind.is_file(),
            Expect::RegularOrBlock => kind.is_file() || kind.is_block_device(),
        };
        if !fits {
            return Err(format!(
                "`{}` is {}, not {}",
                full.display(),
                describe(kind),
                match expect {
                    Expect::Regular => "a regular file",
                    Expect::RegularOrBlock => "a regular file or a block device",
                }
            ));
        }
        Ok(meta)
    }

    fn check_socket_path(&self, base_dir: &Path, rel: &Path) -> Result<(), String> {
        check_spec_path(rel)?;
        let full = self.resolve(base_dir, rel);
        let len = full.as_os_str().len();
        if len > MAX_UDS_PATH_LEN {
            return Err(format!(
                "`{}` is {len} bytes long; a Unix socket path has at most {MAX_UDS_PATH_LEN}",
                full.display()
            ));
        }
        // A stale socket is normal (the VMM replaces it); anything else
        // there is a mistake the VMM must not delete.
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if !meta.file_type().is_socket() => Err(format!(
                "`{}` is {}, not a socket",
                full.display(),
                describe(meta.file_type())
            )),
            _ => Ok(()),
        }
    }
}

/// What a spec path must name.
#[derive(Clone, Copy)]
enum Expect {
    Regular,
    RegularOrBlock,
}

/// "a directory", "a character device", ... for error messages.
fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "an unknown kind of file"
    }
}

/// Checks a guest name: 1 to 63 lowercase letters, digits and inner
/// hyphens, so it fits in a hostname label, a file name and a socket path.
pub fn validate_guest_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_NAME_LEN} characters long, not {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit() && *c != '-')
    {
        return Err(format!(
            "character {bad:?} is not allowed (use lowercase letters, digits and hyphens)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with a hyphen".to_string());
    }
    Ok(())
}

/// Checks a network interface name the way the kernel's `dev_valid_name`
/// does: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_IFNAME_LEN} bytes long, not {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "character {bad:?} is not allowed in an interface name"
        ));
    }
    Ok(())
}

/// Checks a virtio-blk serial: 1 to 20 bytes of printable ASCII.
pub fn validate_disk_serial(serial: &str) -> Result<(), String> {
    if serial.is_empty() {
        return Err("must not be empty (leave it out instead)".to_string());
    }
    if let Some(bad) = serial.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "character {bad:?} is not allowed (use printable ASCII)"
        ));
    }
    if serial.len() > MAX_SERIAL_LEN {
        return Err(format!(
            "must be at most {MAX_SERIAL_LEN} bytes, not {}",
            serial.len()
        ));
    }
    Ok(())
}

/// Checks a path from a spec: not empty, and no `..` so that a relative
/// path stays inside the data partition.
fn check_spec_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must not be empty".to_string());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`{}` must not contain `..` (paths stay inside the data partition)",
            path.display()
        ));
    }
    Ok(())
}

/// `path` without `.` components, so `./a` and `a` compare equal.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// Where a checked value sits in the text.
type At = Option<Spanned<IgnoredAny>>;

/// The positions of the values that validation checks. It reads the same
/// text as [`GuestSpec`] but accepts anything, so it never adds errors of
/// its own; only leaf values are spanned because toml gives no span for
/// some tables.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Positions {
    name: At,
    vcpus: At,
    memory_mib: At,
    boot: BootPositions,
    disk: Vec<DiskPositions>,
    net: Vec<NetPositions>,
    vsock: VsockPositions,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct BootPositions {
    kernel: At,
    initrd: At,
    cmdline: At,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct DiskPositions {
    path: At,
    serial: At,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NetPositions {
    mode: At,
    tap: At,
    mac: At,
    hostfwd: At,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct VsockPositions {
    cid: At,
    uds_path: At,
}

/// Builds located errors for one source text.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
    positions: Positions,
}

impl<'a> Locator<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        // Text that does not parse (or none, for a spec from the wire) only
        // costs the line numbers: errors then say line 0.
        let positions = toml::from_str(text).unwrap_or_default();
        Locator {
            path,
            text,
            positions,
        }
    }

    fn error(&self, at: &At, field: &str, message: impl Into<String>) -> ConfigError {
        self.error_opt(at.as_ref(), field, message)
    }

    fn error_opt(
        &self,
        at: Option<&Spanned<IgnoredAny>>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: at.map_or(0, |s| line_of(self.text, s.span().start)),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"name = "web1"
vcpus = 2
memory_mib = 512
autostart = true
restart = "always"
rng = false

[boot]
kernel = "images/vmlinux"
initrd = "images/web1.initrd"
cmdline = "console=ttyS0 root=/dev/vda rw"

[[disk]]
path = "disks/web1.raw"
read_only = false
serial = "web1-root"

[[disk]]
path = "disks/web1-data.raw"
read_only = true

[[net]]
mode = "tap"
tap = "tap0"
mac = "52:54:00:12:34:56"

[[net]]
mode = "bridge"

[[net]]
mode = "user"
mac = "52:54:00:AB:cd:EF"

[vsock]
cid = 7
uds_path = "vsock/web1.sock"
"#;

    /// The smallest valid spec; tests append to it.
    const MINIMAL: &str =
        "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

    fn parse(text: &str) -> Result<GuestSpec, ConfigError> {
        GuestSpec::parse(Path::new("web1.toml"), text)
    }

    /// Asserts that `text` fails with the exact `file:line: field` prefix.
    #[track_caller]
    fn assert_refused(text: &str, line: usize, field: &str) -> String {
        let err = parse(text).expect_err("spec should be refused");
        let message = err.to_string();
        let prefix = format!("web1.toml:{line}: field `{field}`: ");
        assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
        message
    }

    /// MINIMAL with its first line replaced.
    fn with_name(value: &str) -> String {
        MINIMAL.replacen("name = \"web1\"", &format!("name = {value}"), 1)
    }

    #[test]
    fn full_example_parses() {
        let spec = parse(FULL).expect("valid spec");
        assert_eq!(spec.name, "web1");
        assert_eq!(spec.vcpus, 2);
        assert_eq!(spec.memory_mib, 512);
        assert_eq!(spec.memory_bytes(), 512 << 20);
        assert!(spec.autostart());
        assert_eq!(spec.restart(), RestartPolicy::Always);
        assert!(!spec.rng_enabled());
        assert_eq!(spec.boot.kernel, Path::new("images/vmlinux"));
        assert_eq!(
            spec.boot.initrd.as_deref(),
            Some(Path::new("images/web1.initrd"))
        );
        assert_eq!(spec.boot.cmdline(), "console=ttyS0 root=/dev/vda rw");
        assert_eq!(spec.disks.len(), 2);
        assert_eq!(spec.disks[0].serial.as_deref(), Some("web1-root"));
        assert!(!spec.disks[0].read_only());
        assert!(spec.disks[1].read_only());
        assert_eq!(spec.nets.len(), 3);
        assert_eq!(spec.nets[0].mode, NetMode::Tap);
        assert_eq!(spec.nets[0].tap.as_deref(), Some("tap0"));
        assert_eq!(
            spec.nets[0].mac,
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(spec.nets[1].mode, NetMode::Bridge);
        assert_eq!(spec.nets[2].mode, NetMode::User);
        assert_eq!(
            spec.nets[2].mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        let vsock = spec.vsock.as_ref().expect("vsock");
        assert_eq!(vsock.cid(), 7);
        assert_eq!(vsock.uds_path, Path::new("vsock/web1.sock"));
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse(MINIMAL).expect("valid spec");
        assert!(!spec.autostart());
        assert_eq!(spec.restart(), RestartPolicy::OnFailure);
        assert!(spec.rng_enabled());
        assert_eq!(spec.boot.cmdline(), "");
        assert!(spec.boot.initrd.is_none());
        assert!(spec.disks.is_empty() && spec.nets.is_empty() && spec.vsock.is_none());

        let spec = parse(&format!(
            "{MINIMAL}[[disk]]\npath = \"d.raw\"\n[vsock]\nuds_path = \"v.sock\"\n"
        ))
        .expect("valid spec");
        assert!(!spec.disks[0].read_only());
        assert_eq!(spec.vsock.map(|v| v.cid()), Some(DEFAULT_GUEST_CID));
    }

    #[test]
    fn memory_above_3_gib_and_limits_are_accepted() {
        for mib in [3 * 1024 + 1, 8 * 1024, MAX_MEMORY_MIB, MIN_MEMORY_MIB] {
            let text = MINIMAL.replace("memory_mib = 64", &format!("memory_mib = {mib}"));
            let spec = parse(&text).expect("valid memory size");
            assert_eq!(spec.memory_mib, mib);
        }
        let spec = parse(&MINIMAL.replace("memory_mib = 64", "memory_mib = 8192")).expect("8 GiB");
        assert_eq!(spec.memory_bytes(), 8 << 30);
    }

    #[test]
    fn memory_out_of_range_is_refused() {
        for mib in ["15", "0", "1048577"] {
            let text = MINIMAL.replace("memory_mib = 64", &format!("memory_mib = {mib}"));
            assert_refused(&text, 3, "memory_mib");
        }
        // Negative sizes are a type error, still located.
        assert_refused(
            &MINIMAL.replace("memory_mib = 64", "memory_mib = -1"),
            3,
            "memory_mib",
        );
    }

    #[test]
    fn vcpus_out_of_range_is_refused() {
        assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = 0"), 2, "vcpus");
        let message = assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = 65"), 2, "vcpus");
        assert!(message.contains("1 to 64"), "{message}");
        assert!(parse(&MINIMAL.replace("vcpus = 1", "vcpus = 64")).is_ok());
        assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = \"two\""), 2, "vcpus");
    }

    #[test]
    fn name_rules() {
        for bad in [
            "\"\"",
            "\"Web1\"",
            "\"web_1\"",
            "\"web.1\"",
            "\"-web1\"",
            "\"web1-\"",
            "\"wéb\"",
        ] {
            assert_refused(&with_name(bad), 1, "name");
        }
        let long = format!("\"{}\"", "a".repeat(64));
        let message = assert_refused(&with_name(&long), 1, "name");
        assert!(message.contains("not 64"), "{message}");
        let max = format!("\"{}\"", "a".repeat(63));
        assert!(parse(&with_name(&max)).is_ok());
        assert!(parse(&with_name("\"0-web-1\"")).is_ok());
    }

    #[test]
    fn restart_must_be_a_known_policy() {
        let text = MINIMAL.replace(
            "memory_mib = 64\n",
            "memory_mib = 64\nrestart = \"sometimes\"\n",
        );
        let message = assert_refused(&text, 4, "restart");
        assert!(message.contains("on-failure"), "{message}");
        for (value, policy) in [
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
        ] {
            let text = MINIMAL.replace(
                "memory_mib = 64\n",
                &format!("memory_mib = 64\nrestart = \"{value}\"\n"),
            );
            assert_eq!(parse(&text).expect("valid").restart(), policy);
        }
    }

    #[test]
    fn missing_kernel_is_refused() {
        let text = "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\ninitrd = \"i\"\n";
        let message = parse(text).expect_err("no kernel").to_string();
        assert!(message.starts_with("web1.toml:"), "{message}");
        assert!(message.contains("kernel"), "{message}");
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let message = parse(&format!("memroy_mib = 1\n{MINIMAL}"))
            .expect_err("typo")
            .to_string();
        assert!(message.starts_with("web1.toml:1:"), "{message}");
        assert!(message.contains("memroy_mib"), "{message}");

        let text = format!("{MINIMAL}[[disk]]\npath = \"d.raw\"\nreadonly = true\n");
        let message = parse(&text).expect_err("typo").to_string();
        assert!(message.starts_with("web1.toml:8:"), "{message}");
        assert!(message.contains("readonly"), "{message}");

        // The design suggested an [rng] table; this spec uses a boolean.
        let message = parse(&format!("{MINIMAL}[rng]\n"))
            .expect_err("table")
            .to_string();
        assert!(message.contains("rng"), "{message}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let message = parse(&format!("{MINIMAL}[[disk]\n"))
            .expect_err("syntax")
            .to_string();
        assert!(message.starts_with("web1.toml:6:"), "{message}");
    }

    #[test]
    fn cmdline_limits() {
        let spec = |cmdline: &str| {
            format!("name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"k\"\ncmdline = \"{cmdline}\"\n")
        };
        assert!(parse(&spec(&"x".repeat(MAX_CMDLINE_LEN))).is_ok());
        let message = assert_refused(&spec(&"x".repeat(MAX_CMDLINE_LEN + 1)), 6, "boot.cmdline");
        assert!(message.contains("2047"), "{message}");
        assert_refused(&spec("a\\u0000b"), 6, "boot.cmdline");
    }

    #[test]
    fn parent_components_are_refused() {
        let text = MINIMAL.replace("images/vmlinux", "images/../../etc/passwd");
        let message = assert_refused(&text, 5, "boot.kernel");
        assert!(message.contains("`..`"), "{message}");
        assert_refused(&MINIMAL.replace("images/vmlinux", ""), 5, "boot.kernel");
        assert_refused(
            &format!("{MINIMAL}initrd = \"/data/../i\"\n"),
            6,
            "boot.initrd",
        );
        assert_refused(
            &format!("{MINIMAL}[[disk]]\npath = \"../d.raw\"\n"),
            7,
            "disk[0].path",
        );
        assert_refused(
            &format!("{MINIMAL}[vsock]\nuds_path = \"../v.sock\"\n"),
            7,
            "vsock.uds_path",
        );
    }

    #[test]
    fn duplicate_disks_are_refused() {
        let text = format!(
            "{MINIMAL}[[disk]]\npath = \"disks/a.raw\"\n[[disk]]\npath = \"disks/b.raw\"\n[[disk]]\npath = \"./disks//a.raw\"\n"
        );
        let message = assert_refused(&text, 11, "disk[2].path");
        assert!(message.contains("disk[0]"), "{message}");
    }

    #[test]
    fn disk_serial_rules() {
        let disk =
            |serial: &str| format!("{MINIMAL}[[disk]]\npath = \"d.raw\"\nserial = \"{serial}\"\n");
        assert!(parse(&disk(&"s".repeat(MAX_SERIAL_LEN))).is_ok());
        assert_refused(&disk(&"s".repeat(MAX_SERIAL_LEN + 1)), 8, "disk[0].serial");
        assert_refused(&disk("séri"), 8, "disk[0].serial");
        assert_refused(&disk("a\\tb"), 8, "disk[0].serial");
        assert_refused(&disk(""), 8, "disk[0].serial");
        let twice = format!(
            "{MINIMAL}[[disk]]\npath = \"a\"\nserial = \"s1\"\n[[disk]]\npath = \"b\"\nserial = \"s1\"\n"
        );
        assert_refused(&twice, 11, "disk[1].serial");
    }

    #[test]
    fn mac_rules() {
        let net = |mac: &str| format!("{MINIMAL}[[net]]\nmode = \"user\"\nmac = \"{mac}\"\n");
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:5",
            "52:54:00:12:34:+5",
            "525400123456",
            "",
        ] {
            let message = assert_refused(&net(bad), 8, "net[0].mac");
            assert!(message.contains("not a MAC address"), "{message}");
        }
        let message = assert_refused(&net("01:00:5e:00:00:01"), 8, "net[0].mac");
        assert!(message.contains("multicast"), "{message}");
        assert_refused(&net("ff:ff:ff:ff:ff:ff"), 8, "net[0].mac");
        let message = assert_refused(&net("00:00:00:00:00:00"), 8, "net[0].mac");
        assert!(message.contains("all zeros"), "{message}");
        assert!(parse(&net("02:00:00:00:00:01")).is_ok());
    }

    #[test]
    fn duplicate_macs_are_refused_whatever_the_case() {
        let text = format!(
            "{MINIMAL}[[net]]\nmode = \"user\"\nmac = \"52:54:00:aa:bb:cc\"\n[[net]]\nmode = \"bridge\"\nmac = \"52:54:00:AA:BB:CC\"\n"
        );
        let message = assert_refused(&text, 11, "net[1].mac");
        assert!(message.contains("net[0]"), "{message}");
    }

    #[test]
    fn tap_rules() {
        let tap = |mode: &str, tap: &str| {
            format!("{MINIMAL}[[net]]\nmode = \"{mode}\"\ntap = \"{tap}\"\n")
        };
        assert!(parse(&tap("tap", &"t".repeat(MAX_IFNAME_LEN))).is_ok());
        let message = assert_refused(&tap("tap", &"t".repeat(16)), 8, "net[0].tap");
        assert!(message.contains("15"), "{message}");
        assert_refused(&tap("tap", ""), 8, "net[0].tap");
        assert_refused(&tap("tap", "tap 0"), 8, "net[0].tap");
        assert_refused(&tap("tap", "a/b"), 8, "net[0].tap");
        assert_refused(&tap("tap", ".."), 8, "net[0].tap");
        // A tap name with another mode is a mistake, not something to ignore.
        assert_refused(&tap("bridge", "tap0"), 8, "net[0].tap");
        assert_refused(&tap("user", "tap0"), 8, "net[0].tap");

        // Missing: located at the mode that requires it.
        let missing = format!("{MINIMAL}[[net]]\nmac = \"52:54:00:00:00:01\"\nmode = \"tap\"\n");
        let message = assert_refused(&missing, 8, "net[0].tap");
        assert!(message.contains("required"), "{message}");

        let message = assert_refused(
            &format!("{MINIMAL}[[net]]\nmode = \"macvtap\"\n"),
            7,
            "net[0].mode",
        );
        assert!(message.contains("bridge"), "{message}");
    }

    #[test]
    fn duplicate_taps_are_refused() {
        let text = format!(
            "{MINIMAL}[[net]]\nmode = \"tap\"\ntap = \"tap0\"\n[[net]]\nmode = \"tap\"\ntap = \"tap0\"\n"
        );
        assert_refused(&text, 11, "net[1].tap");
    }

    #[test]
    fn vsock_cid_rules() {
        let vsock = |cid: &str| format!("{MINIMAL}[vsock]\ncid = {cid}\nuds_path = \"v.sock\"\n");
        for bad in ["0", "1", "2", "4294967295"] {
            assert_refused(&vsock(bad), 7, "vsock.cid");
        }
        assert_refused(&vsock("4294967296"), 7, "vsock.cid");
        assert_eq!(
            parse(&vsock("3")).expect("valid").vsock.map(|v| v.cid()),
            Some(3)
        );
    }

    #[test]
    fn inline_tables_are_located_too() {
        let text = "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\nboot = { kernel = \"k\" }\n\
                    disk = [\n  { path = \"a\" },\n  { path = \"a\" },\n]\n";
        assert_refused(text, 7, "disk[1].path");
    }

    #[test]
    fn round_trips_through_toml() {
        let spec = parse(FULL).expect("valid spec");
        let text = toml::to_string(&spec).expect("serialises");
        assert_eq!(parse(&text).expect("reparses"), spec);
        let minimal = parse(MINIMAL).expect("valid spec");
        let text = toml::to_string(&minimal).expect("serialises");
        assert_eq!(parse(&text).expect("reparses"), minimal);
    }

    #[test]
    fn spec_from_elsewhere_validates_with_line_zero() {
        let mut spec = parse(MINIMAL).expect("valid spec");
        spec.vcpus = 0;
        let message = spec
            .validate(Path::new("<wire>"), "")
            .expect_err("invalid")
            .to_string();
        assert!(
            message.starts_with("<wire>:0: field `vcpus`: "),
            "{message}"
        );
    }

    #[test]
    fn resolve_keeps_absolute_paths() {
        let spec = parse(MINIMAL).expect("valid spec");
        let base = Path::new("/var/lib/keel");
        assert_eq!(
            spec.resolve(base, Path::new("images/vmlinux")),
            Path::new("/var/lib/keel/images/vmlinux")
        );
        assert_eq!(
            spec.resolve(base, Path::new("/boot/vmlinuz")),
            Path::new("/boot/vmlinuz")
        );
    }

    /// A scratch data partition, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("keel-guest-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for sub in ["images", "disks", "vsock"] {
                std::fs::create_dir_all(dir.join(sub)).expect("create temp dir");
            }
            for file in [
                "images/vmlinux",
                "images/web1.initrd",
                "disks/a.raw",
                "disks/b.raw",
            ] {
                std::fs::write(dir.join(file), b"x").expect("create temp file");
            }
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const FILES: &str = r#"name = "web1"
vcpus = 1
memory_mib = 64
[boot]
kernel = "images/vmlinux"
initrd = "images/web1.initrd"
[[disk]]
path = "disks/a.raw"
[[disk]]
path = "disks/b.raw"
[vsock]
uds_path = "vsock/web1.sock"
"#;

    /// Parses `text` and checks its files against `dir`.
    fn check_files(dir: &TempDir, text: &str) -> Result<GuestSpec, ConfigError> {
        let spec = parse(text)?;
        spec.validate_files(Path::new("web1.toml"), text, &dir.0)?;
        Ok(spec)
    }

    #[track_caller]
    fn assert_files_refused(dir: &TempDir, text: &str, line: usize, field: &str) -> String {
        let message = check_files(dir, text)
            .expect_err("files refused")
            .to_string();
        let prefix = format!("web1.toml:{line}: field `{field}`: ");
        assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
        message
    }

    #[test]
    fn files_present_are_accepted_and_load_reads_the_file() {
        let dir = TempDir::new("present");
        check_files(&dir, FILES).expect("all files present");

        let spec_path = dir.0.join("web1.toml");
        std::fs::write(&spec_path, FILES).expect("write spec");
        let spec = GuestSpec::load(&spec_path, &dir.0).expect("loads");
        assert_eq!(spec.disks.len(), 2);

        // Absolute paths are used as they are.
        let kernel = dir.0.join("images/vmlinux");
        let text = FILES.replace(
            "kernel = \"images/vmlinux\"",
            &format!("kernel = \"{}\"", kernel.display()),
        );
        check_files(&dir, &text).expect("absolute kernel path");
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let dir = TempDir::new("unreadable");
        let message = GuestSpec::load(&dir.0.join("nope.toml"), &dir.0)
            .expect_err("no file")
            .to_string();
        assert!(
            message.contains("nope.toml: cannot read the file"),
            "{message}"
        );
    }

    #[test]
    fn directory_as_kernel_is_refused() {
        let dir = TempDir::new("dirkernel");
        let text = FILES.replace("kernel = \"images/vmlinux\"", "kernel = \"images\"");
        let message = assert_files_refused(&dir, &text, 5, "boot.kernel");
        assert!(
            message.contains("is a directory, not a regular file"),
            "{message}"
        );
    }

    #[test]
    fn missing_files_are_refused() {
        let dir = TempDir::new("missing");
        let text = FILES.replace("disks/b.raw", "disks/c.raw");
        let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains("disks/c.raw"), "{message}");

        let text = FILES.replace("images/web1.initrd", "images/none.initrd");
        assert_files_refused(&dir, &text, 6, "boot.initrd");
    }

    #[test]
    fn character_device_as_disk_is_refused() {
        let dir = TempDir::new("chardev");
        let text = FILES.replace("path = \"disks/b.raw\"", "path = \"/dev/null\"");
        let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
        assert!(message.contains("character device"), "{message}");
    }

    #[test]
    fn one_image_through_two_paths_is_refused() {
        let dir = TempDir::new("samefile");
        let absolute = dir.0.join("disks/a.raw");
        let text = FILES.replace(
            "path = \"disks/b.raw\"",
            &format!("path = \"{}\"", absolute.display()),
        );
        let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
        assert!(message.contains("same file as disk[0]"), "{message}");
    }

    #[test]
    fn parent_escape_is_refused_by_validate_files() {
        let dir = TempDir::new("escape");
        let mut spec = parse(FILES).expect("valid spec");
        // As if the spec had come from somewhere that skipped parse; the
        // check must come before any file system access.
        spec.disks[0].path = PathBuf::from("../keel-guest-outside");
        let message = spec
            .validate_files(Path::new("web1.toml"), FILES, &dir.0)
            .expect_err("escape")
            .to_string();
        assert!(
            message.starts_with("web1.toml:8: field `disk[0].path`: "),
            "{message}"
        );
        assert!(message.contains("`..`"), "{message}");
    }

    #[test]
    fn vsock_path_must_be_free_and_short() {
        let dir = TempDir::new("vsock");
        let text = FILES.replace("vsock/web1.sock", "vsock");
        let message = assert_files_refused(&dir, &text, 12, "vsock.uds_path");
        assert!(message.contains("a directory, not a socket"), "{message}");

        let long = format!("vsock/{}.sock", "s".repeat(MAX_UDS_PATH_LEN));
        let text = FILES.replace("vsock/web1.sock", &long);
        let message = assert_files_refused(&dir, &text, 12, "vsock.uds_path");
        assert!(message.contains("at most 107"), "{message}");
    }

    #[test]
    fn hostfwd_rules_are_checked_where_they_stand() {
        let user =
            |rules: &str| format!("{MINIMAL}[[net]]\nmode = \"user\"\nhostfwd = [{rules}]\n");
        let spec =
            parse(&user("\"tcp:127.0.0.1:8022-:22\", \"udp::5353-:53\"")).expect("valid forwards");
        assert_eq!(spec.nets[0].hostfwd.as_ref().map(Vec::len), Some(2));
        let message = assert_refused(
            &user("\"tcp:127.0.0.1:8022-:22\", \"sctp::1-:2\""),
            8,
            "net[0].hostfwd[1]",
        );
        assert!(message.contains("sctp"), "{message}");
        let message = assert_refused(
            &user("\"tcp::8022-:22\", \"tcp:127.0.0.1:8022-:23\""),
            8,
            "net[0].hostfwd[1]",
        );
        assert!(message.contains("same host port"), "{message}");
        let tap = format!(
            "{MINIMAL}[[net]]\nmode = \"tap\"\ntap = \"tap0\"\nhostfwd = [\"tcp::1-:2\"]\n"
        );
        assert_refused(&tap, 9, "net[0].hostfwd");
    }
}
