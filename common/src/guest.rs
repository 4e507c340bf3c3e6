//! `guests/NAME.toml`: one guest's specification.
//!
//! [`GuestSpec::parse`] checks everything that needs no file system;
//! keel-sys's `spec_files` then checks the kernel, initrd and disks
//! against the data partition and opens them.
//!
//! A spec reaches no host file: the kernel, initrd and disks are relative
//! paths beneath the data partition's `images/` or `disks/` ([`GUEST_FILE_DIRS`]),
//! the vsock socket a name in its `vsock/`, and the only absolute paths
//! allowed are disks that `host.toml` allow-lists as host block devices
//! (`[storage] guest_devices`). Every error names the file, line and field,
//! with array elements counted from zero as serde does (`disk[0].path`);
//! [`crate::config::Source`] finds the line of a field validation refuses,
//! so the types here hold plain, typed values (a MAC is a [`MacAddr`], a
//! port forward a [`HostFwd`]).
//!
//! Fields with a default are `Option`s read through accessors
//! ([`GuestSpec::restart`], [`GuestSpec::rng_enabled`], ...) so that a spec
//! written back out says only what its author said (the TOML serialiser
//! leaves `None` fields out).
//!
//! virtio-rng is a boolean, `rng = false` to disable it, rather than an
//! `[rng]` table: it has no settings today.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_toml, ConfigError, Source};
use crate::host::DEFAULT_AGENT_PORT;
use crate::hostfwd::HostFwd;
pub use crate::mac::MacAddr;

mod boot;
mod cloud_init;
pub use boot::{
    BootFrom, BootSpec, KernelBoot, LOADER_CMDLINE, LOADER_INITRD, LOADER_KERNEL, MAX_APPEND_LEN,
    MAX_ENTRY_LEN,
};
pub use cloud_init::{
    check_seed_file_path, check_ssh_key, cloud_init_image, validate_hostname, validate_instance_id,
    CloudInitSpec, SeedFile, CLOUD_INIT_DIR, MAX_HOSTNAME_LEN, MAX_INSTANCE_ID_LEN,
    MAX_NETWORK_CONFIG_BYTES, MAX_SSH_KEYS, MAX_SSH_KEY_LEN, MAX_USER_DATA_BYTES,
};

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
/// The data partition's directories that a spec's kernel, initrd and disks
/// live beneath. Nothing else there (the agent's keys, the specs, the
/// logs) can be a guest file.
pub const GUEST_FILE_DIRS: [&str; 2] = ["images", "disks"];
/// The data partition's directory of the guests' vsock sockets.
pub const VSOCK_DIR: &str = "vsock";

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
    /// How the guest finds its virtio devices; see [`GuestSpec::transport`].
    pub transport: Option<Transport>,
    pub boot: BootSpec,
    // Left out when empty, like the `None`s, so that a spec written
    // back out says only what its author said.
    #[serde(rename = "disk", default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    #[serde(rename = "net", default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetSpec>,
    pub vsock: Option<VsockSpec>,
    /// A NoCloud seed, attached as one more disk after `disks`.
    pub cloud_init: Option<CloudInitSpec>,
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

/// How a guest's run ended, as far as its restart policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestEnd {
    /// The guest powered itself off.
    PowerOff,
    /// The guest asked for a reboot.
    Reboot,
    /// The guest crashed or its VMM failed.
    Failure,
}

impl GuestEnd {
    /// Every ending.
    pub const ALL: [GuestEnd; 3] = [GuestEnd::PowerOff, GuestEnd::Reboot, GuestEnd::Failure];
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

    /// Whether init starts the guest again after a run that ended so.
    pub fn restarts_after(self, end: GuestEnd) -> bool {
        match end {
            // A guest reboot is the guest asking to run again.
            GuestEnd::Reboot => self != RestartPolicy::Never,
            GuestEnd::PowerOff => self == RestartPolicy::Always,
            GuestEnd::Failure => self != RestartPolicy::Never,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How virtio devices are attached to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// virtio-pci (modern, MSI-X) on a PCI Express host bridge: what every
    /// distro kernel and initrd drives.
    #[default]
    Pci,
    /// virtio-mmio, described in the ACPI DSDT (`LNRO0005`): smaller and
    /// a little quicker to boot, for kernels built with `VIRTIO_MMIO`.
    Mmio,
}

impl Transport {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pci => "pci",
            Transport::Mmio => "mmio",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[disk]]`: a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// A regular file (raw or qcow2 image) or a block device beneath
    /// `images/` or `disks/`, or a host block device that host.toml
    /// allow-lists.
    pub path: PathBuf,
    pub read_only: Option<bool>,
    /// Printable ASCII, at most [`MAX_SERIAL_LEN`] bytes.
    pub serial: Option<String>,
    /// How the image is laid out; see [`DiskFormat`] for what happens when
    /// it is left out.
    pub format: Option<DiskFormat>,
    /// The one backing file a qcow2 image may use: beneath `images/`, and
    /// only with `format = "qcow2"`. The image's header must name this
    /// file; without `backing`, an image that names one is refused.
    pub backing: Option<PathBuf>,
}

impl DiskSpec {
    /// Whether the guest gets the disk read-only (default: no).
    pub fn read_only(&self) -> bool {
        self.read_only.unwrap_or(false)
    }
}

/// A disk image's format (`format` in a `[[disk]]`).
///
/// The rule keel-vmm applies (virtio-blk's `format` module), so that what
/// a guest writes into its disk is never read as image metadata: a qcow2
/// image is served as qcow2 only when the spec says `format = "qcow2"`;
/// `format = "raw"` serves the bytes as they are, whatever they start
/// with; and with no `format`, a disk is raw unless it starts with the
/// qcow2 magic, which is refused (the spec must say which it is), since
/// that disk may be a raw disk its guest wrote a qcow2 header into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// The guest's sectors, byte for byte.
    Raw,
    /// QEMU's copy-on-write format: sparse, optionally over a backing file.
    Qcow2,
}

impl DiskFormat {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Inbound port forwards for user-mode NAT, written in QEMU's syntax:
    /// `"tcp:127.0.0.1:8022-:22"` (host 127.0.0.1:8022 to guest port 22).
    pub hostfwd: Option<Vec<HostFwd>>,
    /// Host ports a user-mode guest reaches at the gateway, 10.0.2.2; the
    /// host is closed to it otherwise. Never the agent's port.
    pub host_ports: Option<Vec<u16>>,
}

/// The `[vsock]` table: virtio-vsock in Firecracker's hybrid model, where
/// the host side is a Unix socket rather than a host CID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    pub cid: Option<u32>,
    /// The host Unix socket: `vsock/NAME` on the data partition.
    pub uds_path: PathBuf,
}

impl VsockSpec {
    /// The guest CID, [`DEFAULT_GUEST_CID`] when unset.
    pub fn cid(&self) -> u32 {
        self.cid.unwrap_or(DEFAULT_GUEST_CID)
    }
}

impl GuestSpec {
    /// Parses and validates `text` as if read from `path`, without touching
    /// the file system.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_devices(path, text, &[])
    }

    /// [`GuestSpec::parse`] on a host whose host.toml allow-lists the
    /// block devices `devices` as guest disks.
    pub fn parse_with_devices(
        path: &Path,
        text: &str,
        devices: &[PathBuf],
    ) -> Result<Self, ConfigError> {
        let spec: GuestSpec = parse_toml(path, text)?;
        spec.validate_with_devices(path, text, devices)?;
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

    /// The virtio transport (default: pci).
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// `rel` as a host path: unchanged when absolute (an allow-listed
    /// device), else under `base_dir`. Only for names and comparisons:
    /// keel-sys's `spec_files` opens the files, beneath their directory.
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
        self.validate_with_devices(path, text, &[])
    }

    /// [`GuestSpec::validate`] where `devices` are the host block devices
    /// host.toml allow-lists as guest disks.
    pub fn validate_with_devices(
        &self,
        path: &Path,
        text: &str,
        devices: &[PathBuf],
    ) -> Result<(), ConfigError> {
        let at = Source::new(path, text);

        validate_guest_name(&self.name).map_err(|m| at.error("name", m))?;
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(at.error(
                "vcpus",
                format!("must be 1 to {MAX_VCPUS}, not {}", self.vcpus),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(at.error(
                "memory_mib",
                format!(
                    "must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} (1 TiB), not {}",
                    self.memory_mib
                ),
            ));
        }

        self.boot.validate(&at, self.disks.len())?;
        self.validate_disks(&at, devices)?;
        self.validate_nets(&at)?;

        if let Some(vsock) = &self.vsock {
            let cid = vsock.cid();
            if cid < MIN_GUEST_CID {
                return Err(at.error(
                    "vsock.cid",
                    format!("must be at least {MIN_GUEST_CID} (0 to 2 are reserved), not {cid}"),
                ));
            }
            if cid == u32::MAX {
                return Err(at.error("vsock.cid", "4294967295 is reserved (VMADDR_CID_ANY)"));
            }
            check_socket_path(&vsock.uds_path).map_err(|m| at.error("vsock.uds_path", m))?;
        }
        if let Some(cloud_init) = &self.cloud_init {
            cloud_init.validate(&at)?;
        }
        Ok(())
    }

    fn validate_disks(&self, at: &Source, devices: &[PathBuf]) -> Result<(), ConfigError> {
        let mut paths: HashMap<PathBuf, usize> = HashMap::new();
        let mut serials: HashMap<&str, usize> = HashMap::new();
        let mut backings: Vec<(usize, PathBuf)> = Vec::new();
        for (i, disk) in self.disks.iter().enumerate() {
            if let Some(backing) = &disk.backing {
                let field = format!("disk[{i}].backing");
                check_backing_path(backing).map_err(|m| at.error(&field, m))?;
                if disk.format != Some(DiskFormat::Qcow2) {
                    return Err(at.error(
                        &field,
                        "only allowed with format = \"qcow2\" (a raw disk has no backing file)",
                    ));
                }
                backings.push((i, normalize(backing)));
            }
            let field = format!("disk[{i}].path");
            check_disk_path(&disk.path, devices).map_err(|m| at.error(&field, m))?;
            // Two devices on one image would corrupt it; compare the paths
            // as written here, keel-sys's file checks compare the files themselves.
            if let Some(first) = paths.insert(normalize(&disk.path), i) {
                return Err(at.error(
                    &field,
                    format!("`{}` is already used by disk[{first}]", disk.path.display()),
                ));
            }
            if let Some(serial) = &disk.serial {
                let field = format!("disk[{i}].serial");
                validate_disk_serial(serial).map_err(|m| at.error(&field, m))?;
                // The guest names /dev/disk/by-id links after the serial.
                if let Some(first) = serials.insert(serial, i) {
                    return Err(at.error(
                        &field,
                        format!("`{serial}` is already used by disk[{first}]"),
                    ));
                }
            }
        }
        // A backing file is read beneath a disk the guest writes: the guest
        // must not also write it as a disk of its own.
        for (i, backing) in backings {
            if let Some(disk) = paths.get(&backing) {
                return Err(at.error(
                    &format!("disk[{i}].backing"),
                    format!(
                        "`{}` is disk[{disk}] of this guest; a backing file must not be a disk too",
                        backing.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_nets(&self, at: &Source) -> Result<(), ConfigError> {
        let mut macs: HashMap<MacAddr, usize> = HashMap::new();
        let mut taps: HashMap<&str, usize> = HashMap::new();
        let mut forwards: Vec<(String, HostFwd)> = Vec::new();
        for (i, net) in self.nets.iter().enumerate() {
            let field = format!("net[{i}].tap");
            match (net.mode, &net.tap) {
                (NetMode::Tap, None) => {
                    // Nothing to point at but the mode that asks for it.
                    return Err(at.error_at(
                        &format!("net[{i}].mode"),
                        &field,
                        "required when mode is \"tap\"",
                    ));
                }
                (NetMode::Tap, Some(tap)) => {
                    validate_ifname(tap).map_err(|m| at.error(&field, m))?;
                    if let Some(first) = taps.insert(tap, i) {
                        return Err(
                            at.error(&field, format!("`{tap}` is already used by net[{first}]"))
                        );
                    }
                }
                (mode, Some(_)) => {
                    return Err(at.error(
                        &field,
                        format!("only allowed when mode is \"tap\", not \"{mode}\""),
                    ));
                }
                (_, None) => {}
            }
            if let Some(rules) = &net.hostfwd {
                if net.mode != NetMode::User {
                    let message =
                        format!("only allowed when mode is \"user\", not \"{}\"", net.mode);
                    return Err(at.error(&format!("net[{i}].hostfwd"), message));
                }
                for (j, fwd) in rules.iter().enumerate() {
                    let field = format!("net[{i}].hostfwd[{j}]");
                    if let Some((other, _)) = forwards.iter().find(|(_, f)| f.overlaps(fwd)) {
                        let message = format!("`{fwd}` listens on the same host port as {other}");
                        return Err(at.error(&field, message));
                    }
                    forwards.push((field, *fwd));
                }
            }
            if let Some(ports) = &net.host_ports {
                if net.mode != NetMode::User {
                    let message =
                        format!("only allowed when mode is \"user\", not \"{}\"", net.mode);
                    return Err(at.error(&format!("net[{i}].host_ports"), message));
                }
                for (j, &port) in ports.iter().enumerate() {
                    validate_host_port(port, &ports[..j])
                        .map_err(|m| at.error(&format!("net[{i}].host_ports[{j}]"), m))?;
                }
            }
            if let Some(mac) = net.mac {
                let field = format!("net[{i}].mac");
                if mac.is_zero() {
                    return Err(at.error(&field, "must not be all zeros"));
                }
                if !mac.is_unicast() {
                    return Err(at.error(
                        &field,
                        format!(
                            "`{mac}` is a multicast address; a NIC needs a unicast one \
                             (low bit of the first octet clear)"
                        ),
                    ));
                }
                if let Some(first) = macs.insert(mac, i) {
                    return Err(
                        at.error(&field, format!("`{mac}` is already used by net[{first}]"))
                    );
                }
            }
        }
        Ok(())
    }
}

/// Checks one of `host_ports` against those before it: a real port,
/// listed once, and never the agent's default port (keel-vmm also refuses
/// the one host.toml configures, which a spec cannot know).
fn validate_host_port(port: u16, before: &[u16]) -> Result<(), String> {
    if port == 0 {
        return Err("must not be 0".to_string());
    }
    if port == DEFAULT_AGENT_PORT {
        return Err(format!(
            "{port} is the management agent's port: a guest must never reach it"
        ));
    }
    if before.contains(&port) {
        return Err(format!("{port} is listed twice"));
    }
    Ok(())
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

/// Checks a kernel, initrd or disk image path from a spec; see
/// [`guest_file_parts`].
pub fn check_spec_path(path: &Path) -> Result<(), String> {
    guest_file_parts(path).map(|_| ())
}

/// Splits a guest file's path into its directory of the data partition
/// (one of [`GUEST_FILE_DIRS`]) and the path beneath it. The path must be
/// relative, without `..`, and name something inside that directory:
/// `images/vmlinuz`, `disks/web/root.img`.
pub fn guest_file_parts(path: &Path) -> Result<(&'static str, PathBuf), String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err("must not be empty".to_string());
    }
    if path.is_absolute() {
        return Err(format!(
            "`{shown}` is a host path; guest files are beneath the data partition's \
             images/ or disks/ (e.g. \"images/vmlinuz\")"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`{shown}` must not contain `..` (guest files stay beneath images/ or disks/)"
        ));
    }
    let mut parts = path.components().filter(|c| *c != Component::CurDir);
    let top = parts.next().and_then(|c| {
        GUEST_FILE_DIRS
            .into_iter()
            .find(|dir| c.as_os_str() == *dir)
    });
    let rest: PathBuf = parts.collect();
    match top {
        Some(top) if !rest.as_os_str().is_empty() => Ok((top, rest)),
        _ => Err(format!(
            "`{shown}` is not beneath images/ or disks/ of the data partition \
             (e.g. \"images/vmlinuz\", \"disks/web.img\")"
        )),
    }
}

/// Checks a disk path: a guest file ([`check_spec_path`]) or, given
/// exactly as listed, one of the host block devices `devices` that
/// host.toml allow-lists.
pub fn check_disk_path(path: &Path, devices: &[PathBuf]) -> Result<(), String> {
    if path.is_absolute() && devices.iter().any(|d| d == path) {
        return Ok(());
    }
    if path.is_absolute() {
        return Err(format!(
            "`{}` is a host path; a disk is an image beneath the data partition's disks/ \
             or images/, or a host block device that host.toml lists in \
             [storage] guest_devices",
            path.display()
        ));
    }
    check_spec_path(path)
}

/// Checks a qcow2 backing file's path: a guest file ([`check_spec_path`])
/// beneath `images/`, the operator's read-only images, never `disks/`,
/// where guests' own writable disks live.
pub fn check_backing_path(path: &Path) -> Result<(), String> {
    match guest_file_parts(path)? {
        ("images", _) => Ok(()),
        _ => Err(format!(
            "`{}` is not beneath images/; a backing file is one of the data partition's \
             images (e.g. \"images/debian-12.qcow2\")",
            path.display()
        )),
    }
}

/// Checks a vsock socket path: `vsock/NAME`, one name in the data
/// partition's [`VSOCK_DIR`] (init removes a stale socket there, so it
/// must be nowhere else).
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let mut parts = path.components();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(dir)), Some(Component::Normal(_)), None) if dir == VSOCK_DIR => {
            Ok(())
        }
        _ => Err(format!(
            "`{}` must be a name in the data partition's {VSOCK_DIR}/ (e.g. \"{VSOCK_DIR}/web1.sock\")",
            path.display()
        )),
    }
}

/// `path` without `.` components, so `./a` and `a` compare equal.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

#[cfg(test)]
mod tests;
