//! keel-loader: PID 1 of the initramfs keel-vmm boots a `from = "disk"`
//! guest with. Inside the guest (the disks are hostile input, so never on
//! the host) it finds the guest's own boot entry on its disks, mounted
//! read-only, and kexecs that kernel; any failure is printed, sent to
//! keel-vmm on its report port, and the machine powers off.

mod console;
mod devices;
mod initrd;
mod kexec;
mod mounts;
mod port;
mod quiesce;
mod report;
mod settings;

use std::path::{Path, PathBuf};

use keel_guest_loader::probe::{probe, FsKind, Identified};
use keel_guest_loader::xen_names::{self, GuestDisk};
use keel_guest_loader::{choose, BootFile, BootPlan, ChooseError, DirFs, Filesystem};

use crate::devices::{Disk, MAX_DEVICES, SYS_BLOCK, WAIT};
use crate::initrd::InitrdError;
use crate::kexec::KexecError;
use crate::settings::{Settings, SettingsError};

/// Where several initrds are joined into one (the initramfs's tmpfs).
const COMBINED_INITRD: &str = "/tmp/keel-initrd.img";

#[derive(Debug, thiserror::Error)]
enum LoaderError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("no virtio block device appeared within {0} s")]
    NoDisks(u64),
    #[error("no filesystem the loader can read was found: {0}")]
    NoFilesystems(String),
    #[error("{source}{notes}")]
    Choose { source: ChooseError, notes: String },
    #[error("the {what} {path} has no place in the loader's mounts")]
    NotMounted { what: &'static str, path: String },
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    #[error(transparent)]
    Kexec(#[from] KexecError),
}

/// One mounted guest filesystem.
struct Mounted {
    id: Identified,
    dir: PathBuf,
}

/// What one device holds, for the console and for error messages.
fn identify(device: &str) -> std::io::Result<Option<Identified>> {
    let file = std::fs::File::open(Path::new("/dev").join(device))?;
    probe(&file)
}

fn describe(id: &Identified) -> String {
    let mut s = id.kind.name().to_string();
    if !id.uuid.is_empty() {
        s.push_str(&format!(" UUID={}", id.uuid));
    }
    if let Some(label) = &id.label {
        s.push_str(&format!(" LABEL={label:?}"));
    }
    s
}

/// Probes and mounts every candidate device; returns the mounts and the
/// problems worth naming if no entry is found.
fn mount_guest_filesystems(disks: &[Disk]) -> (Vec<Mounted>, Vec<String>) {
    let mut mounted = Vec::new();
    let mut problems = Vec::new();
    for device in disks.iter().flat_map(Disk::candidates).take(MAX_DEVICES) {
        let id = match identify(&device) {
            Ok(Some(id)) => id,
            Ok(None) => {
                console::say(format_args!("{device}: no filesystem recognised"));
                problems.push(format!("{device}: no filesystem recognised"));
                continue;
            }
            Err(e) => {
                console::say(format_args!("{device}: cannot read it: {e}"));
                problems.push(format!("{device}: cannot read it: {e}"));
                continue;
            }
        };
        if id.kind == FsKind::LvmPv {
            let note = format!("{device} is an LVM2 physical volume (LVM, not supported yet)");
            console::say(format_args!("{note}"));
            problems.push(note);
            continue;
        }
        match mounts::mount_read_only(&device, &id) {
            Ok(dir) => {
                console::say(format_args!(
                    "{device}: {}, mounted read-only at {}",
                    describe(&id),
                    dir.display()
                ));
                mounted.push(Mounted { id, dir });
            }
            Err(e) => {
                console::say(format_args!("{device}: {}: {e}", describe(&id)));
                problems.push(e.to_string());
            }
        }
    }
    (mounted, problems)
}

fn host_path(file: &BootFile, what: &'static str) -> Result<PathBuf, LoaderError> {
    file.host_path
        .clone()
        .ok_or_else(|| LoaderError::NotMounted {
            what,
            path: file.path.clone(),
        })
}

fn file_name(file: &BootFile) -> String {
    if file.fs_uuid.is_empty() {
        file.path.clone()
    } else {
        format!("{} on UUID={}", file.path, file.fs_uuid)
    }
}

/// Loads the plan's kernel and boots it; returns only on failure.
fn boot(plan: &BootPlan, mounted: &[Mounted]) -> Result<(), LoaderError> {
    let kernel = host_path(&plan.kernel, "kernel")?;
    let initrd = match plan.initrds.as_slice() {
        [] => None,
        [one] => Some(host_path(one, "initrd")?),
        many => {
            let parts = many
                .iter()
                .map(|f| host_path(f, "initrd"))
                .collect::<Result<Vec<_>, _>>()?;
            let out = PathBuf::from(COMBINED_INITRD);
            initrd::concatenate(&parts, &out, initrd::MAX_TOTAL_BYTES)?;
            Some(out)
        }
    };
    kexec::load(
        &file_name(&plan.kernel),
        &kernel,
        initrd.as_deref(),
        &plan.cmdline,
        plan.uki,
    )?;
    // The chooser said which entry; this is what the kernel gets.
    console::say(format_args!("kernel command line: {}", plan.cmdline));
    let dirs: Vec<PathBuf> = mounted.iter().map(|m| m.dir.clone()).collect();
    mounts::unmount_all(&dirs);
    let (stopped, failures) = quiesce::unbind_all(Path::new(quiesce::VIRTIO_DRIVERS));
    for failure in failures {
        console::say(format_args!("cannot stop virtio device {failure}"));
    }
    log::debug!("{stopped} virtio device(s) stopped for the kexec");
    Err(kexec::execute().into())
}

fn run() -> Result<(), LoaderError> {
    let settings = Settings::from_cmdline(&keel_guest_rt::kernel_cmdline())?;
    let disks = devices::wait_for_disks(Path::new(SYS_BLOCK), WAIT);
    if disks.is_empty() {
        return Err(LoaderError::NoDisks(WAIT.as_secs()));
    }
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    console::say(format_args!(
        "looking for a boot entry on {}",
        names.join(", ")
    ));
    let (mounted, problems) = mount_guest_filesystems(&disks);
    if mounted.is_empty() {
        return Err(LoaderError::NoFilesystems(problems.join("; ")));
    }
    let trees: Vec<DirFs> = mounted.iter().map(|m| DirFs::new(&m.dir)).collect();
    let filesystems: Vec<Filesystem<'_>> = mounted
        .iter()
        .zip(&trees)
        .map(|(m, tree)| Filesystem {
            uuid: m.id.uuid.clone(),
            label: m.id.label.clone(),
            fs: tree,
        })
        .collect();
    let notes = if problems.is_empty() {
        String::new()
    } else {
        format!("; also: {}", problems.join("; "))
    };
    let mut plan =
        choose(&filesystems, settings.entry.as_deref(), &settings.append).map_err(|source| {
            LoaderError::Choose {
                source,
                notes: notes.clone(),
            }
        })?;
    // A guest moved from Xen: its entry names Xen's disks and console.
    let guest_disks: Vec<GuestDisk<'_>> = disks
        .iter()
        .map(|d| GuestDisk {
            name: &d.name,
            serial: d.serial.as_deref(),
        })
        .collect();
    let changes = xen_names::apply(&mut plan, &guest_disks)
        .map_err(|source| LoaderError::Choose { source, notes })?;
    for change in changes {
        if change.to.is_empty() {
            console::say(format_args!("dropped {} ({})", change.from, change.why));
        } else {
            console::say(format_args!(
                "{} is {} ({})",
                change.from, change.to, change.why
            ));
        }
    }
    boot(&plan, &mounted)
}

fn main() {
    console::init();
    keel_guest_rt::mount_basics();
    // PID 1 must not exit: a panic is reported like any other failure.
    let message = match std::panic::catch_unwind(run) {
        Ok(Ok(())) => "the kexec returned without booting".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("the loader panicked: {what}")
        }
    };
    report::fail(&message)
}
