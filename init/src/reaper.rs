//! Reaping: as PID 1, init inherits every orphan and must collect it.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// What one reaping pass found.
#[derive(Debug, Default)]
pub struct Reaped {
    pub exited: Vec<WaitStatus>,
    /// True when init has no children left at all.
    pub no_children: bool,
}

/// Collects every child that has exited, without blocking.
pub fn reap_all() -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(status) => reaped.exited.push(status),
            Err(nix::errno::Errno::ECHILD) => {
                reaped.no_children = true;
                break;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                log::error!("waitpid failed: {err}");
                break;
            }
        }
    }
    reaped
}
