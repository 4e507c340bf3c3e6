//! cgroup v2 limits sized to each guest: `<root>/<name>` under
//! `/sys/fs/cgroup/keel`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use keel_common::GuestSpec;

/// Memory a VMM may use beyond guest RAM: its own heap, device buffers and
/// the page cache of its disks (reclaimable, so the cap only bounds it).
pub const VMM_OVERHEAD_MIB: u64 = 128;
/// Threads beyond the vCPUs: event loop, user-mode network, spares.
const EXTRA_PIDS: u32 = 32;

/// Creates `root` and enables the memory, pids and cpu controllers for
/// its children. Returns false (logged) when cgroup2 is not usable.
pub fn setup_root(root: &Path) -> bool {
    let Some(parent) = root.parent() else {
        return false;
    };
    if !parent.join("cgroup.controllers").exists() {
        log::warn!(
            "no cgroup2 hierarchy at {}: guests run without resource limits",
            parent.display()
        );
        return false;
    }
    if let Err(e) = std::fs::create_dir_all(root) {
        log::warn!(
            "cannot create {}: {e}: guests run without resource limits",
            root.display()
        );
        return false;
    }
    for dir in [parent, root] {
        for controller in ["+memory", "+pids", "+cpu"] {
            if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), controller) {
                log::warn!("cannot enable {controller} in {}: {e}", dir.display());
            }
        }
    }
    true
}

/// Makes the guest's cgroup with its limits and returns its
/// `cgroup.procs`, open for the child to move itself in.
pub fn prepare(root: Option<&Path>, spec: &GuestSpec) -> Option<File> {
    let dir = root?.join(&spec.name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log::warn!("guest {}: no cgroup ({}: {e})", spec.name, dir.display());
        return None;
    }
    let memory = (spec.memory_mib + VMM_OVERHEAD_MIB) << 20;
    let limits = [
        ("memory.max", memory.to_string()),
        ("pids.max", (spec.vcpus + EXTRA_PIDS).to_string()),
        // Weight by vCPUs: a 4-vCPU guest gets 4 shares of a busy host.
        ("cpu.weight", (100 * spec.vcpus).min(10_000).to_string()),
    ];
    for (file, value) in limits {
        if let Err(e) = std::fs::write(dir.join(file), &value) {
            log::warn!("guest {}: cannot set {file} = {value}: {e}", spec.name);
        }
    }
    match OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
    {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("guest {}: cannot open its cgroup.procs: {e}", spec.name);
            None
        }
    }
}

/// Removes an empty guest cgroup after its VMM is gone.
pub fn remove(root: Option<&Path>, name: &str) {
    if let Some(root) = root {
        // Fails harmlessly with EBUSY if a process is somehow left.
        let _ = std::fs::remove_dir(root.join(name));
    }
}
