//! Process confinement that goes with the seccomp filters: no new
//! privileges, dropping root, and closing descriptors the VMM did not open.
//!
//! Intended order in `main`, while the process has a single thread:
//!
//! 1. [`close_inherited_fds`] first of all, keeping only descriptors the
//!    supervisor passes on purpose;
//! 2. [`set_no_new_privs`] (inherited by every thread spawned afterwards);
//! 3. setup that needs privileges (`/dev/kvm`, disks, the control socket);
//! 4. [`drop_privileges`], still before any thread is spawned and before any
//!    seccomp filter is applied: glibc changes the IDs of every thread by
//!    signalling each one to make the system calls itself, which the filters
//!    forbid;
//! 5. spawn the vCPU threads and apply the filters (see `seccomp`).

use std::io;
use std::os::fd::RawFd;

/// Sets `no_new_privs` on the calling thread (threads and processes it
/// creates afterwards inherit it): `execve` can no longer grant privileges
/// through setuid/setgid bits or file capabilities. Cannot be undone.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `no_new_privs` is set on the calling thread.
pub fn no_new_privs() -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc == 1)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

/// The calling thread's effective and permitted capability sets (low and
/// high words each), through capget(2).
fn capabilities() -> io::Result<[u32; 4]> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, both live and
    // of the kernel's layout.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([
        data[0].effective,
        data[1].effective,
        data[0].permitted,
        data[1].permitted,
    ])
}

/// Drops root for good: no supplementary groups, then real, effective and
/// saved group and user IDs set to `gid` and `uid`. glibc applies each
/// change to every thread of the process, but call it while the process has
/// a single thread and before any seccomp filter (see the module doc).
///
/// Verifies the result: the IDs are what was asked, no capability is left,
/// and `setuid(0)` (and `setgid(0)` unless `gid` is 0) fails. `uid` 0 is
/// refused: it would not drop anything. Needs root (CAP_SETUID and
/// CAP_SETGID); without it `setgroups` fails with EPERM and nothing
/// changes. An error after the IDs changed means the process is in an
/// unknown state and must exit.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to \"drop\" privileges to uid 0",
        ));
    }
    // SAFETY: an empty list: no pointer is read.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;

    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three live u32 out-parameters.
    check(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
    if (r, e, s) != (uid, uid, uid) {
        return Err(refused(format!("user IDs are {r}/{e}/{s}, not {uid}")));
    }
    // SAFETY: three live u32 out-parameters.
    check(unsafe { libc::getresgid(&mut r, &mut e, &mut s) })?;
    if (r, e, s) != (gid, gid, gid) {
        return Err(refused(format!("group IDs are {r}/{e}/{s}, not {gid}")));
    }
    // SAFETY: size 0 only counts the groups; the pointer is not used.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if groups != 0 {
        return Err(refused(format!("{groups} supplementary groups remain")));
    }
    let caps = capabilities()?;
    if caps.iter().any(|&c| c != 0) {
        return Err(refused(format!("capabilities remain: {caps:x?}")));
    }
    // SAFETY: integer argument only. Must fail now.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(refused("setuid(0) still succeeds".into()));
    }
    // SAFETY: integer argument only. Must fail now.
    if gid != 0 && unsafe { libc::setgid(0) } == 0 {
        return Err(refused("setgid(0) still succeeds".into()));
    }
    Ok(())
}

/// Whether `fd` is an open descriptor of this process.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Open descriptors listed by /proc/self/fd (the listing's own descriptor
/// excluded), or `None` when /proc is not there.
fn fds_from_proc() -> Option<Vec<RawFd>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let listed: Vec<RawFd> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is closed by now: is_open drops it.
    Some(listed.into_iter().filter(|&fd| is_open(fd)).collect())
}

/// Open descriptors found by asking about each number below the
/// descriptor limit (capped at 2^20).
fn fds_by_probing() -> Vec<RawFd> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit out-parameter.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as RawFd
    } else {
        1024
    };
    (0..max).filter(|&fd| is_open(fd)).collect()
}

/// close_range(2) on `[first, last]`.
fn close_range(first: RawFd, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: closes descriptors only; the callers own every one of them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last,
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from 3 up that is not in `keep`; returns how
/// many were open and closed. Uses close_range(2) (Linux 5.9) over the gaps
/// between kept descriptors, which also catches descriptors above the
/// limit; falls back to closing one by one what /proc/self/fd lists (or
/// what probing finds, without /proc). Call it while the process has a
/// single thread, before it opens anything of its own.
pub fn close_inherited_fds(keep: &[RawFd]) -> io::Result<usize> {
    close_fds(keep, true, fds_from_proc())
}

fn close_fds(
    keep: &[RawFd],
    use_close_range: bool,
    listed: Option<Vec<RawFd>>,
) -> io::Result<usize> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let open = listed.unwrap_or_else(fds_by_probing);
    let doomed: Vec<RawFd> = open
        .into_iter()
        .filter(|&fd| fd > 2 && keep.binary_search(&fd).is_err())
        .collect();

    let ranged = use_close_range && {
        let mut ok = true;
        let mut first: RawFd = 3;
        for &k in &keep {
            if k > first {
                ok &= close_range(first, (k - 1) as libc::c_uint).is_ok();
            }
            first = k + 1;
        }
        ok && close_range(first, libc::c_uint::MAX).is_ok()
    };
    if !ranged {
        // No close_range (old kernel, or refused by a sandbox).
        for &fd in &doomed {
            // SAFETY: `fd` is open, not kept, and owned by nobody who will
            // use it again: this runs before the VMM opens anything.
            if unsafe { libc::close(fd) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EBADF) {
                    return Err(err);
                }
            }
        }
    }
    if let Some(&fd) = doomed.iter().find(|&&fd| is_open(fd)) {
        return Err(io::Error::other(format!("descriptor {fd} is still open")));
    }
    Ok(doomed.len())
}

#[cfg(test)]
mod tests;
