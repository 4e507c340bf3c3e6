//! Starting one confined `keel-vmm` process for a guest.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keel_common::guest::NetMode;
use keel_common::GuestSpec;

use super::{cgroup, tap, Paths};

/// Starts the VMM for `spec` (stored at `spec_file`), under `uid` when
/// privileges are dropped, telling it which of the allow-listed `devices`
/// the spec uses. Returns its pid.
pub fn spawn(
    paths: &Paths,
    spec: &GuestSpec,
    spec_file: &Path,
    uid: u32,
    devices: &[PathBuf],
) -> Result<i32, String> {
    let name = &spec.name;
    let socket = paths.socket(name);
    std::fs::create_dir_all(&paths.sockets)
        .map_err(|e| format!("cannot create {}: {e}", paths.sockets.display()))?;
    // A socket left by a VMM that was killed would make the bind fail.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the old {}: {e}", socket.display())),
    }
    super::logdir::prepare(&paths.logs(), name, paths.drop_privileges.then_some(uid))?;

    let mut cmd = Command::new(&paths.vmm);
    crate::child::unblock_signals(&mut cmd)
        .arg("--config")
        .arg(spec_file)
        .arg("--base-dir")
        .arg(&paths.data)
        .arg("--api-socket")
        .arg(&socket)
        .arg("--console-log")
        .arg(paths.console_log(name))
        .arg("--agent-port")
        .arg(paths.agent_port.to_string())
        .stdin(Stdio::null());
    // The VMM opens every other file beneath images/ or disks/.
    for device in devices
        .iter()
        .filter(|d| spec.disks.iter().any(|k| k.path == **d))
    {
        cmd.arg("--guest-device").arg(device);
    }
    if paths.console_to_host {
        // stdout is init's, the host console; stdin stays /dev/null, so
        // typing there reaches no guest.
        cmd.arg("--console-stdio");
    }

    // Bridge-mode NICs get a tap made here and handed over by number: the
    // VMM never needs the rights to create one.
    let mut taps: Vec<OwnedFd> = Vec::new();
    for (i, nic) in spec.nets.iter().enumerate() {
        if nic.mode != NetMode::Bridge {
            continue;
        }
        let bridge = paths.bridge.as_deref().ok_or_else(|| {
            format!("net[{i}] is in bridge mode but the host has no bridge (see host.toml [[network]] bridge)")
        })?;
        let fd = tap::create_on_bridge(bridge).map_err(|e| format!("net[{i}]: {e}"))?;
        cmd.arg("--tap-fd").arg(fd.as_raw_fd().to_string());
        taps.push(fd);
    }

    if paths.drop_privileges {
        cmd.arg("--uid")
            .arg(uid.to_string())
            .arg("--gid")
            .arg(uid.to_string());
    }

    let procs: Option<File> = cgroup::prepare(paths.cgroup.as_deref(), spec);
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    let tap_fds: Vec<i32> = taps.iter().map(|t| t.as_raw_fd()).collect();
    // SAFETY: the closure runs in the child between fork and exec. It only
    // makes async-signal-safe system calls (write, fcntl) on descriptors the
    // parent opened and keeps open until spawn returns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd {
                // "0" moves the writing process: the VMM starts inside its
                // cgroup, before it allocates guest memory.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for &fd in &tap_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", paths.vmm.display()))?;
    // The child holds the taps now; ours close with `taps`.
    drop(taps);
    i32::try_from(child.id()).map_err(|_| "the VMM's pid is out of range".to_string())
}
