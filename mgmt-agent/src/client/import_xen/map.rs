//! A parsed Xen config to a Keel guest spec, the report of what changed
//! or could not be mapped, and the dom0 files the guest needs.
//!
//! Every key of the config ends up in one of three places: mapped into
//! the spec (silently when the meaning is kept as it is), a `Changed`
//! line, or a `NotMapped` line with the reason. The table of keys Keel
//! has no counterpart for is [`UNMAPPED`]; a key in no table is "unknown
//! to Keel".

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use keel_common::guest::{
    validate_guest_name, validate_instance_id, BootFrom, BootSpec, CloudInitSpec, DiskFormat,
    DiskSpec, GuestEnd, GuestSpec, NetSpec, MAX_APPEND_LEN, MAX_ENTRY_LEN, MAX_MEMORY_MIB,
    MAX_NAME_LEN, MAX_VCPUS, MIN_MEMORY_MIB,
};

use super::cmdline::{self, KEEL_CONSOLE};
use super::disk::{self, Format, XenDisk};
use super::policy::{self, Action, Actions};
use super::report::{Note, Report};
use super::syntax::{Config, Item, Setting, Value};
use super::vdev::Vdev;
use super::vif;
use super::{render, Import};

/// What replaces Xen's bootloaders and firmware.
const FROM_DISK: &str =
    "keel-loader inside the guest boots what its disks' boot configuration names";

/// Memory a guest gets when the config names none (xm's default).
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// What the caller chose on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The guest's name instead of the config's.
    pub name: Option<String>,
    /// Give the guest a `[cloud_init]` seed, with the domain's UUID as
    /// its instance id.
    pub cloud_init: bool,
}

/// A file in dom0 that the guest needs on the Keel host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Where it is in dom0, as the config names it.
    pub source: PathBuf,
    /// Where the spec expects it: under `images/` or `disks/`.
    pub remote: String,
    /// A block device (`phy:`), read whole rather than as a sparse file.
    pub block_device: bool,
}

/// Why there is no guest: at a line of the config, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: Option<usize>,
    pub message: String,
}

fn fail<T>(line: Option<usize>, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        line,
        message: message.into(),
    })
}

/// Maps `config`.
pub fn map(config: &Config, options: &Options) -> Result<Import, Failure> {
    let mut m = Mapper {
        config,
        report: Report::default(),
        used: HashSet::new(),
    };
    for repeat in &config.repeats {
        m.report.changed(
            Some(repeat.line),
            &repeat.key,
            format!(
                "given again: replaces the value on line {}, as Xen does",
                repeat.replaced
            ),
        );
    }
    let (xen_name, name) = m.name(options)?;
    let hvm = m.guest_type();
    let memory_mib = m.memory()?;
    let vcpus = m.vcpus()?;
    let disks = m.disks();
    let nets = m.vifs();
    let boot = m.boot(&name, hvm, &disks)?;
    let restart = m.restart();
    let autostart = m.xend_actions();
    let (uuid, cloud_init) = m.uuid(options);
    m.leftovers();

    let mut files: Vec<GuestFile> = Vec::new();
    let mut disk_specs = Vec::new();
    for disk in &disks {
        let (ext, format) = match disk.format {
            Format::Qcow2 => ("qcow2", DiskFormat::Qcow2),
            _ => ("img", DiskFormat::Raw),
        };
        let vdev = disk.vdev.to_string();
        let remote = format!("disks/{name}-{vdev}.{ext}");
        files.push(GuestFile {
            source: PathBuf::from(&disk.target),
            remote: remote.clone(),
            block_device: disk.block_device,
        });
        disk_specs.push(DiskSpec {
            path: PathBuf::from(remote),
            read_only: (disk.read_only || disk.cdrom).then_some(true),
            // keel-loader finds a kernel line's /dev/xvda1 by this serial.
            serial: Some(vdev),
            format: Some(format),
            backing: None,
        });
    }
    files.extend(boot.files);
    let spec = GuestSpec {
        name,
        vcpus,
        memory_mib,
        autostart,
        restart: Some(restart),
        rng: None,
        transport: None,
        boot: boot.spec,
        disks: disk_specs,
        nets,
        vsock: None,
        cloud_init,
    };
    let spec_toml = render(xen_name.as_deref(), uuid.as_deref(), &spec).map_err(|why| Failure {
        line: None,
        message: format!("the Keel spec made from it is not valid: {why}"),
    })?;
    Ok(Import {
        xen_name,
        uuid,
        spec,
        spec_toml,
        report: m.report,
        files,
    })
}

struct Mapper<'a> {
    config: &'a Config,
    report: Report,
    /// Keys the mapping has dealt with.
    used: HashSet<&'a str>,
}

/// The `[boot]` table and the files it names.
struct Boot {
    spec: BootSpec,
    files: Vec<GuestFile>,
}

impl<'a> Mapper<'a> {
    /// Takes `key`: the mapping deals with it, whatever it holds.
    fn take(&mut self, key: &str) -> Option<&'a Setting> {
        let setting = self.config.get(key)?;
        self.used.insert(&setting.key);
        Some(setting)
    }

    /// Takes a string-valued `key`; another kind of value is reported.
    fn take_str(&mut self, key: &str) -> Option<(&'a str, usize)> {
        let setting = self.take(key)?;
        match setting.value.as_str() {
            Some(s) => Some((s, setting.line)),
            None => {
                self.report.not_mapped(
                    Some(setting.line),
                    key,
                    format!("{} is not a string", setting.value),
                );
                None
            }
        }
    }

    /// Takes a number-valued `key`, which must be one.
    fn take_number(&mut self, key: &str, what: &str) -> Result<Option<(i64, usize)>, Failure> {
        let Some(setting) = self.take(key) else {
            return Ok(None);
        };
        match setting.value.as_int() {
            Some(n) => Ok(Some((n, setting.line))),
            None => fail(
                Some(setting.line),
                format!("{key}: {} is not {what}", setting.value),
            ),
        }
    }

    fn name(&mut self, options: &Options) -> Result<(Option<String>, String), Failure> {
        let setting = self.take("name");
        let line = setting.map(|s| s.line);
        let xen_name = match setting.map(|s| &s.value) {
            Some(Value::Str(s)) => Some(s.clone()),
            Some(other) => return fail(line, format!("name: {other} is not a string")),
            None => None,
        };
        match (&options.name, &xen_name) {
            (Some(name), _) => {
                if let Err(why) = validate_guest_name(name) {
                    return fail(None, format!("--name {name}: {why}"));
                }
                if let Some(xen) = xen_name.as_deref().filter(|x| x != name) {
                    self.report.changed(
                        line,
                        "name",
                        format!("the guest is named {name} (--name), not {xen:?}"),
                    );
                }
                Ok((xen_name, name.clone()))
            }
            (None, Some(xen)) => match validate_guest_name(xen) {
                Ok(()) => Ok((xen_name.clone(), xen.clone())),
                Err(why) => fail(
                    line,
                    format!(
                        "name: {xen:?} is not a Keel guest name: {why}; choose one with --name \
                         (e.g. --name {})",
                        suggest_name(xen)
                    ),
                ),
            },
            (None, None) => fail(None, "the config has no `name`; name the guest with --name"),
        }
    }

    /// Reads `type`, `builder` and `pvh`; for an HVM guest, the key that
    /// says so and its line.
    fn guest_type(&mut self) -> Option<(&'static str, usize)> {
        let ty = self.take_str("type");
        let builder = self.take_str("builder");
        self.take("pvh");
        if let Some((ty, line)) = ty {
            if !matches!(ty, "pv" | "pvh" | "hvm") {
                self.report.not_mapped(
                    Some(line),
                    "type",
                    format!("{ty:?} is not a Xen guest type (pv, pvh or hvm); read as pv"),
                );
            }
            return (ty == "hvm").then_some(("type", line));
        }
        match builder {
            Some(("hvm", line)) => Some(("builder", line)),
            Some(("generic" | "linux", _)) | None => None,
            Some((other, line)) => {
                self.report.not_mapped(
                    Some(line),
                    "builder",
                    format!("{other:?} is not a Xen builder (generic or hvm); read as generic"),
                );
                None
            }
        }
    }

    fn memory(&mut self) -> Result<u64, Failure> {
        let memory = self.take_number("memory", "a number of MiB")?;
        let maxmem = self.take_number("maxmem", "a number of MiB")?;
        let (mib, line) = match (memory, maxmem) {
            (Some((mib, line)), _) => (mib, Some(line)),
            (None, Some((mib, line))) => {
                self.report.changed(
                    Some(line),
                    "maxmem",
                    format!("memory is not set: the guest has maxmem, {mib} MiB"),
                );
                (mib, Some(line))
            }
            (None, None) => {
                self.report.changed(
                    None,
                    "memory",
                    format!("not set: the guest has {DEFAULT_MEMORY_MIB} MiB"),
                );
                (DEFAULT_MEMORY_MIB as i64, None)
            }
        };
        let range = MIN_MEMORY_MIB..=MAX_MEMORY_MIB;
        let Some(mib) = u64::try_from(mib).ok().filter(|m| range.contains(m)) else {
            return fail(
                line,
                format!(
                    "memory: {mib} MiB is not what a Keel guest can have \
                     ({MIN_MEMORY_MIB} MiB to 1 TiB)"
                ),
            );
        };
        if let (Some(_), Some((max, max_line))) = (memory, maxmem) {
            if max > mib as i64 {
                self.report.not_mapped(
                    Some(max_line),
                    "maxmem",
                    format!(
                        "{max} MiB: Keel has no memory ballooning; the guest has memory, {mib} MiB"
                    ),
                );
            }
        }
        Ok(mib)
    }

    fn vcpus(&mut self) -> Result<u32, Failure> {
        let vcpus = self.take_number("vcpus", "a number of vCPUs")?;
        let max = self.take_number("maxvcpus", "a number of vCPUs")?;
        // xl brings every vCPU up when `vcpus` says nothing.
        let (n, line) = match (vcpus, max) {
            (Some((n, line)), _) | (None, Some((n, line))) => (n, Some(line)),
            (None, None) => (1, None),
        };
        let Some(n) = u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_VCPUS).contains(n))
        else {
            return fail(
                line,
                format!("vcpus: {n} is not what a Keel guest can have (1 to {MAX_VCPUS})"),
            );
        };
        if let (Some(_), Some((max, max_line))) = (vcpus, max) {
            if max > i64::from(n) {
                self.report.not_mapped(
                    Some(max_line),
                    "maxvcpus",
                    format!("{max}: Keel has no vCPU hotplug; the guest has vcpus, {n}"),
                );
            }
        }
        Ok(n)
    }

    /// The disks the guest gets, in vdev order.
    fn disks(&mut self) -> Vec<XenDisk> {
        let Some(setting) = self.take("disk") else {
            return Vec::new();
        };
        let mut kept: Vec<(XenDisk, usize)> = Vec::new();
        for (i, Item { value, line }) in setting.value.elements(setting.line).iter().enumerate() {
            let key = format!("disk[{i}]");
            let line = Some(*line);
            let Some(text) = value.as_str() else {
                self.report
                    .not_mapped(line, &key, format!("{value} is not a disk string"));
                continue;
            };
            let disk = match disk::parse(text) {
                Ok(disk) => disk,
                Err(why) => {
                    self.report
                        .not_mapped(line, &key, format!("{text:?}: {why}"));
                    continue;
                }
            };
            for note in &disk.notes {
                self.report.add(line, &key, note.clone());
            }
            let vdev = disk.vdev;
            if disk.target.is_empty() {
                self.report.not_mapped(
                    line,
                    &key,
                    format!("{vdev}: an empty CD-ROM drive; Keel has no removable media"),
                );
                continue;
            }
            if !matches!(disk.format, Format::Raw | Format::Qcow2) {
                self.report.not_mapped(
                    line,
                    &key,
                    format!(
                        "{vdev}: Keel reads raw and qcow2 images, not {}; convert it \
                         (qemu-img convert -O qcow2) and import again",
                        disk.format.as_str()
                    ),
                );
                continue;
            }
            // hda and xvda are one disk of an HVM guest.
            if let Some((_, first)) = kept.iter().find(|(k, _)| k.vdev.cmp(&vdev).is_eq()) {
                self.report.not_mapped(
                    line,
                    &key,
                    format!("{vdev}: the same Xen disk as disk[{first}]; left out"),
                );
                continue;
            }
            if disk.block_device {
                self.report.changed(
                    line,
                    &key,
                    format!(
                        "{vdev}: the block device {} becomes an image file on the Keel host",
                        disk.target
                    ),
                );
            }
            kept.push((disk, i));
        }
        kept.sort_by_key(|(k, _)| k.vdev);
        kept.into_iter().map(|(k, _)| k).collect()
    }

    fn vifs(&mut self) -> Vec<NetSpec> {
        let Some(setting) = self.take("vif") else {
            return Vec::new();
        };
        let mut nets: Vec<NetSpec> = Vec::new();
        for (i, Item { value, line }) in setting.value.elements(setting.line).iter().enumerate() {
            let key = format!("vif[{i}]");
            let line = Some(*line);
            let Some(text) = value.as_str() else {
                self.report
                    .not_mapped(line, &key, format!("{value} is not a vif string"));
                continue;
            };
            let mut vif = vif::parse(text);
            for note in &vif.notes {
                self.report.add(line, &key, note.clone());
            }
            if let Some(mac) = vif.net.mac {
                if let Some(first) = nets.iter().position(|n| n.mac == Some(mac)) {
                    self.report.not_mapped(
                        line,
                        &key,
                        format!("mac={mac}: already the MAC of vif[{first}]; Keel picks one"),
                    );
                    vif.net.mac = None;
                }
            }
            nets.push(vif.net);
        }
        nets
    }

    fn boot(
        &mut self,
        name: &str,
        hvm: Option<(&'static str, usize)>,
        disks: &[XenDisk],
    ) -> Result<Boot, Failure> {
        let vdevs: Vec<Vdev> = disks.iter().map(|d| d.vdev).collect();
        let kernel = self.take_str("kernel");
        let ramdisk = self.take_str("ramdisk");
        let bootloader = self.take_str("bootloader");
        let firmware = self.config.get("firmware").and_then(|s| {
            let name = s.value.as_str()?;
            matches!(name, "pvgrub32" | "pvgrub64").then_some((name, s.line))
        });
        if firmware.is_some() {
            self.take("firmware");
        }
        let pvgrub = kernel
            .filter(|(k, _)| is_pvgrub(k))
            .map(|(k, line)| (k, line, "kernel"))
            .or(firmware.map(|(f, line)| (f, line, "firmware")));
        let hvmloader = kernel.filter(|(k, _)| base_name(k) == "hvmloader");
        if let Some(kernel) = kernel {
            if bootloader.is_none() && pvgrub.is_none() && hvmloader.is_none() {
                return Ok(self.kernel_boot(name, kernel, ramdisk, &vdevs));
            }
        }
        // From here the guest boots from its disks.
        if disks.is_empty() {
            return fail(
                None,
                "the config gives the guest no disk it can boot from and no kernel: there is nothing to boot",
            );
        }
        let mut spec = BootSpec {
            from: Some(BootFrom::Disk),
            kernel: None,
            initrd: None,
            cmdline: None,
            entry: None,
            cmdline_append: None,
        };
        let mut append: Vec<String> = Vec::new();
        match (bootloader, pvgrub) {
            (Some(bootloader), _) => {
                self.bootloader(
                    bootloader,
                    [kernel, ramdisk],
                    &vdevs,
                    &mut spec,
                    &mut append,
                );
                // xl hands these to the bootloader, which adds them to the
                // entry's command line.
                self.command_line(&vdevs, &mut append);
            }
            (None, Some(pvgrub)) => self.pvgrub(pvgrub, kernel, ramdisk),
            (None, None) => {
                if let Some((loader, line)) = hvmloader {
                    self.report.changed(
                        Some(line),
                        "kernel",
                        format!("{loader}: Xen's HVM firmware; {FROM_DISK} (from = \"disk\")"),
                    );
                }
                if let Some((path, line)) = ramdisk {
                    self.report.not_mapped(
                        Some(line),
                        "ramdisk",
                        format!("{path}: Keel boots from the guest's disks"),
                    );
                }
                match hvm {
                    Some((key, line)) => self.hvm(key, line),
                    None => {
                        self.report.changed(
                            None,
                            "kernel",
                            format!(
                                "neither kernel nor bootloader is set: {FROM_DISK} (from = \"disk\")"
                            ),
                        );
                        self.command_line(&vdevs, &mut append);
                    }
                }
            }
        }
        if !append.is_empty() {
            let joined = append.join(" ");
            if joined.len() <= MAX_APPEND_LEN {
                spec.cmdline_append = Some(joined);
            } else {
                self.report.not_mapped(
                    None,
                    "cmdline_append",
                    format!(
                        "the arguments for the guest's kernel are longer than Keel's \
                         {MAX_APPEND_LEN} bytes"
                    ),
                );
            }
        }
        Ok(Boot {
            spec,
            files: Vec::new(),
        })
    }

    /// A bootloader in dom0 (pygrub) becomes keel-loader in the guest;
    /// `files` are the kernel and ramdisk it was told to take from the
    /// disk.
    fn bootloader(
        &mut self,
        (bootloader, line): (&str, usize),
        files: [Option<(&str, usize)>; 2],
        vdevs: &[Vdev],
        spec: &mut BootSpec,
        append: &mut Vec<String>,
    ) {
        if base_name(bootloader).ends_with("pygrub") {
            self.report.changed(
                Some(line),
                "bootloader",
                format!(
                    "{bootloader}: replaced by from = \"disk\": {FROM_DISK}, and the host never \
                     reads the disks"
                ),
            );
        } else {
            self.report.not_mapped(
                Some(line),
                "bootloader",
                format!(
                    "{bootloader}: Keel runs no bootloader in the host; {FROM_DISK} (from = \"disk\")"
                ),
            );
        }
        self.bootloader_args(vdevs, spec, append);
        for (key, found) in ["kernel", "ramdisk"].into_iter().zip(files) {
            if let Some((path, line)) = found {
                self.report.not_mapped(
                    Some(line),
                    key,
                    format!(
                        "{path}: a file pygrub took from the guest's disk; keel-loader boots a \
                         boot entry's files (choose the entry with bootloader_args --entry)"
                    ),
                );
            }
        }
    }

    /// pvgrub, named by `key` (`kernel` or `firmware`), becomes
    /// keel-loader in the guest.
    fn pvgrub(
        &mut self,
        (pvgrub, line, key): (&str, usize, &'static str),
        kernel: Option<(&str, usize)>,
        ramdisk: Option<(&str, usize)>,
    ) {
        self.report.changed(
            Some(line),
            key,
            format!("{pvgrub} is pvgrub: replaced by from = \"disk\": {FROM_DISK}"),
        );
        if let (Some((kernel, line)), "firmware") = (kernel, key) {
            self.report.not_mapped(
                Some(line),
                "kernel",
                format!("{kernel}: firmware = pvgrub boots the disks instead"),
            );
        }
        if let Some((path, line)) = ramdisk {
            self.report.not_mapped(
                Some(line),
                "ramdisk",
                format!("{path}: pvgrub's; keel-loader boots the boot entry's initrd"),
            );
        }
        for key in ["root", "extra", "cmdline"] {
            if let Some(s) = self.take(key) {
                self.report.not_mapped(
                    Some(s.line),
                    key,
                    "pvgrub's own arguments (such as the menu.lst to read); keel-loader finds \
                     the boot configuration itself",
                );
            }
        }
    }

    /// An HVM guest, said so by `key` on `line`, boots from its disks.
    fn hvm(&mut self, key: &str, line: usize) {
        self.report.changed(
            Some(line),
            key,
            "hvm: the guest boots from its disks (from = \"disk\"): keel-loader boots the \
             Linux kernel their boot configuration names, so only a Linux guest moves this way",
        );
        for key in ["root", "extra", "cmdline"] {
            if let Some(s) = self.take(key) {
                self.report.changed(
                    Some(s.line),
                    key,
                    "ignored, as xl ignores it for an HVM guest that boots from its disks",
                );
            }
        }
    }

    /// `[boot]` for a kernel in dom0: kernel and ramdisk become images on
    /// the Keel host, and the command line names Keel's devices.
    fn kernel_boot(
        &mut self,
        name: &str,
        (kernel, kernel_line): (&str, usize),
        ramdisk: Option<(&str, usize)>,
        vdevs: &[Vdev],
    ) -> Boot {
        let kernel_remote = format!("images/{name}-vmlinuz");
        let mut files = vec![GuestFile {
            source: PathBuf::from(kernel),
            remote: kernel_remote.clone(),
            block_device: false,
        }];
        let initrd = ramdisk.map(|(path, _)| {
            let remote = format!("images/{name}-initrd");
            files.push(GuestFile {
                source: PathBuf::from(path),
                remote: remote.clone(),
                block_device: false,
            });
            PathBuf::from(remote)
        });
        let mut words = Vec::new();
        self.command_line(vdevs, &mut words);
        let mut line = words.join(" ");
        if !cmdline::has_console(&line) {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(KEEL_CONSOLE);
            self.report.changed(
                Some(kernel_line),
                "kernel",
                format!(
                    "{KEEL_CONSOLE} added to the command line: Keel's console is the serial port"
                ),
            );
        }
        Boot {
            spec: BootSpec {
                from: None,
                kernel: Some(PathBuf::from(kernel_remote)),
                initrd,
                cmdline: Some(line),
                entry: None,
                cmdline_append: None,
            },
            files,
        }
    }

    /// The guest's kernel arguments from `cmdline`, or `root` and `extra`
    /// (as xl builds them: `root=ROOT EXTRA`), rewritten for Keel.
    fn command_line(&mut self, vdevs: &[Vdev], out: &mut Vec<String>) {
        let cmdline = self.take_str("cmdline");
        let root = self.take_str("root");
        let extra = self.take_str("extra");
        let parts = match cmdline {
            Some(cmdline) => {
                for (key, found) in [("root", root), ("extra", extra)] {
                    if let Some((_, line)) = found {
                        self.report
                            .changed(Some(line), key, "ignored, as xl does: cmdline is set");
                    }
                }
                vec![("cmdline", cmdline.0.to_string(), cmdline.1)]
            }
            None => {
                let root = root.map(|(r, line)| ("root", format!("root={r}"), line));
                let extra = extra.map(|(e, line)| ("extra", e.to_string(), line));
                root.into_iter().chain(extra).collect()
            }
        };
        for (key, text, line) in parts {
            let (text, notes) = cmdline::rewrite(&text, vdevs);
            for note in notes {
                self.report.add(Some(line), key, note);
            }
            if !text.is_empty() {
                out.push(text);
            }
        }
    }

    /// pygrub's arguments: `--entry` picks the boot entry, `--args` adds
    /// kernel arguments.
    fn bootloader_args(&mut self, vdevs: &[Vdev], spec: &mut BootSpec, append: &mut Vec<String>) {
        let Some(setting) = self.take("bootloader_args") else {
            return;
        };
        let line = Some(setting.line);
        let mut args: Vec<String> = Vec::new();
        for item in setting.value.elements(setting.line) {
            match &item.value {
                // xl splits a string at spaces, as xm did.
                Value::Str(s) if matches!(setting.value, Value::Str(_)) => {
                    args.extend(s.split_whitespace().map(str::to_string))
                }
                Value::Str(s) => args.push(s.clone()),
                other => args.push(other.to_string()),
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, value) = match arg.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let takes_value = matches!(
                flag.as_str(),
                "--entry" | "--args" | "--kernel" | "--ramdisk"
            );
            let value = if takes_value && value.is_none() {
                args.next()
            } else {
                value
            };
            match (flag.as_str(), value) {
                ("--entry", Some(entry)) => {
                    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN || entry.contains('\0') {
                        let why = format!(
                            "--entry={entry}: not an entry keel-loader can be told \
                             (1 to {MAX_ENTRY_LEN} bytes)"
                        );
                        self.report.not_mapped(line, "bootloader_args", why);
                    } else {
                        spec.entry = Some(entry);
                    }
                }
                ("--args", Some(words)) => {
                    let (words, notes) = cmdline::rewrite(&words, vdevs);
                    for note in notes {
                        self.report.add(line, "bootloader_args", note);
                    }
                    self.report.changed(
                        line,
                        "bootloader_args",
                        format!(
                            "--args: {words:?} added to the entry's command line (cmdline_append)"
                        ),
                    );
                    append.push(words);
                }
                ("-q" | "--quiet" | "-n" | "--not-interactive" | "-i" | "--interactive", _) => {
                    self.report.changed(
                        line,
                        "bootloader_args",
                        format!("{arg}: not needed: keel-loader asks nothing"),
                    );
                }
                ("--kernel" | "--ramdisk", Some(path)) => {
                    let why = format!(
                        "{flag}={path}: keel-loader boots a boot entry's files; choose the \
                         entry with --entry"
                    );
                    self.report.not_mapped(line, "bootloader_args", why);
                }
                (_, value) => {
                    let shown = value.map_or(arg.clone(), |v| format!("{flag}={v}"));
                    self.report.not_mapped(
                        line,
                        "bootloader_args",
                        format!("{shown}: unknown to Keel"),
                    );
                }
            }
        }
    }

    /// `on_poweroff`, `on_reboot`, `on_crash` (and the two endings Keel
    /// has no counterpart for).
    fn restart(&mut self) -> keel_common::guest::RestartPolicy {
        let mut actions = Actions::default();
        let mut given: Vec<(GuestEnd, &str, usize)> = Vec::new();
        for end in GuestEnd::ALL {
            let key = policy::key(end);
            let Some((name, line)) = self.take_str(key) else {
                continue;
            };
            let Some(action) = Action::parse(name) else {
                self.report.not_mapped(
                    Some(line),
                    key,
                    format!("{name:?} is not a Xen action; read as xl's default"),
                );
                continue;
            };
            match end {
                GuestEnd::PowerOff => actions.poweroff = Some(action),
                GuestEnd::Reboot => actions.reboot = Some(action),
                GuestEnd::Failure => actions.crash = Some(action),
            }
            given.push((end, name, line));
        }
        let (chosen, lost) = policy::choose(&actions);
        for (end, why) in lost {
            if let Some((_, name, line)) = given.iter().find(|(e, _, _)| *e == end) {
                self.report
                    .not_mapped(Some(*line), policy::key(end), format!("{name}: {why}"));
            }
        }
        chosen
    }

    /// xend's `on_xend_start` and `on_xend_stop`; returns `autostart`.
    fn xend_actions(&mut self) -> Option<bool> {
        if let Some((stop, line)) = self.take_str("on_xend_stop") {
            if stop != "shutdown" && stop != "ignore" {
                self.report.not_mapped(
                    Some(line),
                    "on_xend_stop",
                    format!("{stop}: Keel shuts its guests down when the host stops"),
                );
            }
        }
        let (start, line) = self.take_str("on_xend_start")?;
        match start {
            "start" => {
                self.report.changed(
                    Some(line),
                    "on_xend_start",
                    "start: autostart = true, Keel starts the guest when the host boots",
                );
                Some(true)
            }
            "ignore" => None,
            other => {
                self.report.not_mapped(
                    Some(line),
                    "on_xend_start",
                    format!("{other:?}: not start or ignore"),
                );
                None
            }
        }
    }

    /// The UUID, kept for the spec's header, and the `[cloud_init]` table.
    fn uuid(&mut self, options: &Options) -> (Option<String>, Option<CloudInitSpec>) {
        let uuid = self.take_str("uuid");
        if !options.cloud_init {
            if let Some((_, line)) = uuid {
                self.report.changed(
                    Some(line),
                    "uuid",
                    "kept in a comment at the top of the spec; the guest does not see it",
                );
            }
            return (uuid.map(|(u, _)| u.to_string()), None);
        }
        let mut seed = CloudInitSpec::default();
        if let Some((id, line)) = uuid {
            match validate_instance_id(id) {
                Ok(()) => {
                    self.report.changed(
                        Some(line),
                        "uuid",
                        "the cloud-init instance id, and a comment at the top of the spec",
                    );
                    seed.instance_id = Some(id.to_string());
                }
                Err(why) => self.report.not_mapped(
                    Some(line),
                    "uuid",
                    format!("not a cloud-init instance id ({why}); Keel derives one"),
                ),
            }
        }
        (uuid.map(|(u, _)| u.to_string()), Some(seed))
    }

    /// Reports every key the mapping did not deal with.
    fn leftovers(&mut self) {
        for setting in &self.config.settings {
            if self.used.contains(setting.key.as_str()) || setting.value == Value::None {
                continue;
            }
            let note = match UNMAPPED
                .iter()
                .find(|u| u.keys.contains(&setting.key.as_str()))
            {
                Some(u) if u.fine.accepts(&setting.value) => continue,
                Some(u) => Note::not_mapped(u.reason),
                None => Note::not_mapped("unknown to Keel"),
            };
            self.report.add(Some(setting.line), &setting.key, note);
        }
    }
}

/// A file name's last component.
fn base_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// Whether `kernel` is a PV GRUB image (legacy pv-grub or GRUB 2's Xen
/// build), which boots the guest's own boot configuration.
fn is_pvgrub(kernel: &str) -> bool {
    let name = base_name(kernel);
    ["pvgrub", "pv-grub", "grub-x86_64-xen", "grub-i386-xen"]
        .iter()
        .any(|p| name.contains(p))
}

/// A Keel guest name close to `name`: lowercase, other characters as
/// hyphens, none doubled or at the ends.
pub fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_NAME_LEN);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "guest".to_string()
    } else {
        out.to_string()
    }
}

/// When a key Keel has no counterpart for asks for nothing Keel does not
/// do anyway, so needs no report line.
#[derive(Debug, Clone, Copy)]
enum Fine {
    Never,
    /// The feature is switched off (0, `False`, `"0"`).
    Off,
    /// The feature is on, as it always is in Keel.
    On,
    /// A string (or a list of strings) that is one of these.
    Is(&'static [&'static str]),
    /// A string that starts with this.
    StartsWith(&'static str),
}

impl Fine {
    fn accepts(self, value: &Value) -> bool {
        let strings = || -> Option<Vec<String>> {
            value
                .elements(0)
                .iter()
                .map(|i| i.value.as_str().map(str::to_string))
                .collect()
        };
        match self {
            Fine::Never => false,
            Fine::Off => value.as_bool() == Some(false),
            Fine::On => value.as_bool() == Some(true),
            Fine::Is(names) => strings()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|s| names.contains(&s.as_str()))),
            Fine::StartsWith(prefix) => value.as_str().is_some_and(|s| s.starts_with(prefix)),
        }
    }
}

/// Keys Keel has no counterpart for, and why.
struct Unmapped {
    keys: &'static [&'static str],
    fine: Fine,
    reason: &'static str,
}

const DISPLAY: &str =
    "Keel guests have no display, keyboard or mouse; use the serial console (keelctl guest console)";
const DEVICE_MODEL: &str =
    "Keel has no device model (QEMU): keel-vmm's own devices serve the guest";
const XEN_ONLY: &str = "a Xen hypervisor setting; Keel (KVM) has no counterpart";
const XM_IP: &str =
    "xm turned it into the kernel's ip= argument; write ip= into extra (or configure the guest's network itself)";

const UNMAPPED: &[Unmapped] = &[
    Unmapped { keys: &["vnc", "sdl", "opengl", "stdvga", "gfx_passthru", "spice"], fine: Fine::Off, reason: DISPLAY },
    Unmapped { keys: &["nographic"], fine: Fine::On, reason: DISPLAY },
    Unmapped {
        keys: &[
            "vfb", "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "vncconsole", "display",
            "xauthority", "keymap", "vga", "videoram", "spicehost", "spiceport", "spicetls_port",
            "spicedisable_ticketing", "spicepasswd", "spiceagent_mouse", "spicevdagent",
            "spice_clipboard_sharing", "spiceusbredirection", "spice_image_compression",
            "spice_streaming_video", "vkb", "vdispl",
        ],
        fine: Fine::Never,
        reason: DISPLAY,
    },
    Unmapped { keys: &["usb"], fine: Fine::Off, reason: "Keel gives guests no USB" },
    Unmapped { keys: &["usbdevice", "usbversion", "usbctrl", "usbdev"], fine: Fine::Never, reason: "Keel gives guests no USB" },
    Unmapped {
        keys: &[
            "pci", "pci_permissive", "pci_msitranslate", "pci_seize", "pci_power_mgmt", "rdm",
            "rdm_mem_boundary", "dtdev", "iomem", "ioports", "irqs",
        ],
        fine: Fine::Never,
        reason: "Keel does not pass host devices through to guests",
    },
    Unmapped { keys: &["passthrough"], fine: Fine::Is(&["disabled"]), reason: "Keel does not pass host devices through to guests" },
    Unmapped { keys: &["cpus", "cpus_soft", "cpu"], fine: Fine::Is(&["all"]), reason: "Keel does not pin vCPUs to host CPUs" },
    Unmapped { keys: &["pool", "vnuma"], fine: Fine::Never, reason: "Keel has no CPU pools or virtual NUMA" },
    Unmapped { keys: &["cpu_weight"], fine: Fine::Never, reason: "Keel has no per-guest CPU weight" },
    Unmapped { keys: &["cap"], fine: Fine::Off, reason: "Keel has no per-guest CPU cap" },
    Unmapped { keys: &["vcpu_avail"], fine: Fine::Never, reason: "Keel starts every vCPU online" },
    Unmapped { keys: &["cpuid", "cpuid_policy"], fine: Fine::Never, reason: "keel-vmm sets the guest's CPUID itself" },
    Unmapped { keys: &["localtime"], fine: Fine::Off, reason: "a Keel guest's clock is UTC" },
    Unmapped { keys: &["rtc_timeoffset"], fine: Fine::Off, reason: "a Keel guest's clock starts at the host's time" },
    Unmapped { keys: &["timer_mode", "tsc_mode", "vpt_align"], fine: Fine::Never, reason: "Keel guests use kvm-clock; Xen's timer modes do not apply" },
    Unmapped { keys: &["hpet"], fine: Fine::Off, reason: "Keel gives guests no HPET (Linux uses kvm-clock)" },
    Unmapped {
        keys: &[
            "device_model", "device_model_version", "device_model_override",
            "device_model_stubdomain_override", "device_model_stubdomain_seclabel",
            "device_model_args", "device_model_args_pv", "device_model_args_hvm",
            "device_model_user", "stubdomain_kernel", "stubdomain_ramdisk", "stubdomain_memory",
            "stubdomain_cmdline", "dm_restrict",
        ],
        fine: Fine::Never,
        reason: DEVICE_MODEL,
    },
    Unmapped { keys: &["vtpm"], fine: Fine::Never, reason: "Keel gives guests no TPM" },
    Unmapped { keys: &["channel"], fine: Fine::Never, reason: "Keel has no Xen channels; virtio-vsock ([vsock]) is the nearest" },
    Unmapped { keys: &["p9", "9pfs"], fine: Fine::Never, reason: "Keel has no 9p file sharing" },
    Unmapped { keys: &["pvcalls"], fine: Fine::Never, reason: "Keel has no PV calls" },
    Unmapped { keys: &["vsnd", "soundhw"], fine: Fine::Never, reason: "Keel gives guests no sound" },
    Unmapped { keys: &["vscsi"], fine: Fine::Never, reason: "Keel does not pass SCSI devices through" },
    Unmapped { keys: &["serial"], fine: Fine::Is(&["pty"]), reason: "a Keel guest's one serial port is its console (keelctl guest console); other serial backends are not reproduced" },
    Unmapped { keys: &["boot"], fine: Fine::StartsWith("c"), reason: "Keel boots the guest from its disks (keel-loader), never from a CD-ROM or the network first" },
    Unmapped { keys: &["acpi"], fine: Fine::On, reason: "Keel guests always have ACPI" },
    Unmapped { keys: &["apic"], fine: Fine::On, reason: "Keel guests always have an APIC" },
    Unmapped { keys: &["pae"], fine: Fine::On, reason: "Keel guests always have PAE" },
    Unmapped { keys: &["acpi_s3", "acpi_s4"], fine: Fine::Off, reason: "Keel guests have no ACPI sleep states" },
    Unmapped { keys: &["acpi_laptop_slate"], fine: Fine::Off, reason: "Keel guests have no laptop/slate switch" },
    Unmapped { keys: &["viridian"], fine: Fine::Off, reason: "Keel has no Hyper-V enlightenments (viridian)" },
    Unmapped { keys: &["hap"], fine: Fine::On, reason: "Keel always uses hardware-assisted paging" },
    Unmapped { keys: &["nestedhvm"], fine: Fine::Off, reason: "Keel gives guests no nested virtualization" },
    Unmapped { keys: &["altp2m"], fine: Fine::Is(&["disabled"]), reason: "Keel has no alternate p2m" },
    Unmapped { keys: &["shadow_memory", "oos"], fine: Fine::Never, reason: "Keel uses no shadow paging" },
    Unmapped { keys: &["mmio_hole", "e820_host"], fine: Fine::Off, reason: "keel-vmm lays out the guest's memory itself" },
    Unmapped { keys: &["xen_platform_pci"], fine: Fine::Off, reason: "Keel is not Xen: the guest has no Xen platform device and needs virtio drivers" },
    Unmapped { keys: &["firmware"], fine: Fine::Is(&["bios", "seabios", "rombios"]), reason: "Keel boots the guest without BIOS or UEFI firmware: keel-loader boots the kernel its disks' boot configuration names" },
    Unmapped { keys: &["bios", "bios_path_override", "smbios_firmware", "acpi_firmware"], fine: Fine::Never, reason: "Keel boots the guest without BIOS or UEFI firmware" },
    Unmapped { keys: &["ms_vm_genid"], fine: Fine::Never, reason: "Keel gives guests no VM generation ID" },
    Unmapped { keys: &["pvshim"], fine: Fine::Off, reason: XEN_ONLY },
    Unmapped {
        keys: &[
            "max_grant_frames", "max_maptrack_frames", "max_grant_version", "max_event_channels",
            "seclabel", "init_seclabel", "device_tree", "driver_domain", "nomigrate", "tee",
            "gic_version", "vuart", "pvshim_path", "pvshim_cmdline", "pvshim_extra",
            "suppress_spurious_page_faults", "claim_mode",
        ],
        fine: Fine::Never,
        reason: XEN_ONLY,
    },
    Unmapped { keys: &["ip", "netmask", "gateway", "hostname", "dhcp", "interface", "nfs_server", "nfs_root"], fine: Fine::Never, reason: XM_IP },
    Unmapped { keys: &["on_watchdog"], fine: Fine::Never, reason: "Keel gives guests no Xen watchdog" },
    Unmapped { keys: &["on_soft_reset"], fine: Fine::Is(&["soft-reset"]), reason: "Keel has no soft reset; a guest's kexec needs no host action" },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_names_are_guest_names() {
        for (xen, keel) in [
            ("Web_1", "web-1"),
            ("web01.example.com", "web01-example-com"),
            ("--x--", "x"),
            ("___", "guest"),
            ("ÄÖ", "guest"),
        ] {
            assert_eq!(suggest_name(xen), keel);
            assert!(validate_guest_name(&suggest_name(xen)).is_ok());
        }
        let long = suggest_name(&"a-".repeat(40));
        assert!(validate_guest_name(&long).is_ok(), "{long}");
    }

    #[test]
    fn pvgrub_images_are_known_by_name() {
        for kernel in [
            "/usr/lib/xen/boot/pv-grub-x86_64.gz",
            "/usr/lib/xen-4.11/boot/pvgrub64.bin",
            "/usr/lib/grub-xen/grub-x86_64-xen.bin",
            "/usr/lib/grub-xen/grub-i386-xen.bin",
        ] {
            assert!(is_pvgrub(kernel), "{kernel}");
        }
        assert!(!is_pvgrub("/boot/vmlinuz-6.1.0-18-amd64"));
        // The directory does not make a kernel pvgrub.
        assert!(!is_pvgrub("/srv/pvgrub/vmlinuz"));
    }

    #[test]
    fn every_unmapped_key_is_listed_once_and_not_also_mapped() {
        let mut seen = HashSet::new();
        for u in UNMAPPED {
            for key in u.keys {
                assert!(seen.insert(*key), "{key} is listed twice");
            }
        }
        for mapped in [
            "name",
            "uuid",
            "type",
            "builder",
            "pvh",
            "memory",
            "maxmem",
            "vcpus",
            "maxvcpus",
            "disk",
            "vif",
            "kernel",
            "ramdisk",
            "root",
            "extra",
            "cmdline",
            "bootloader",
            "bootloader_args",
            "on_poweroff",
            "on_reboot",
            "on_crash",
            "on_xend_start",
            "on_xend_stop",
        ] {
            assert!(!seen.contains(mapped), "{mapped} is mapped");
        }
    }

    #[test]
    fn fine_values_are_those_keel_does_anyway() {
        let s = |t: &str| Value::Str(t.to_string());
        assert!(Fine::Off.accepts(&Value::Int(0)));
        assert!(Fine::Off.accepts(&Value::Bool(false)));
        assert!(Fine::Off.accepts(&s("0")));
        assert!(!Fine::Off.accepts(&Value::Int(1)));
        assert!(!Fine::Off.accepts(&s("yes")));
        assert!(Fine::On.accepts(&Value::Int(1)));
        assert!(!Fine::On.accepts(&Value::Int(0)));
        let pty = Fine::Is(&["pty"]);
        assert!(pty.accepts(&s("pty")));
        let list = Value::List(vec![Item {
            value: s("pty"),
            line: 1,
        }]);
        assert!(pty.accepts(&list));
        assert!(!pty.accepts(&s("file:/tmp/x")));
        assert!(!pty.accepts(&Value::List(vec![])));
        assert!(Fine::StartsWith("c").accepts(&s("cd")));
        assert!(!Fine::StartsWith("c").accepts(&s("dc")));
        assert!(!Fine::Never.accepts(&Value::Int(0)));
    }
}
