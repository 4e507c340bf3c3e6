//! Ordered shutdown: stop every process, sync, unmount, then reboot(2).

use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{logger, mounts, reaper};

/// What the machine does once everything is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::PowerOff => "powering off",
            Action::Reboot => "rebooting",
        }
    }
}

/// How long processes get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// Shuts the machine down. Never returns: if reboot(2) itself fails there is
/// nothing left to do but wait, since init must not exit.
pub fn shutdown(action: Action, reason: &str) -> ! {
    log::info!("shutdown requested by {reason}: {}", action.verb());
    stop_all_processes();
    nix::unistd::sync();
    mounts::unmount_all();
    nix::unistd::sync();
    logger::announce(&format!("keel: {} now", action.verb()));
    let mode = match action {
        Action::PowerOff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
    };
    loop {
        let Err(err) = reboot(mode);
        log::error!("reboot(2) failed: {err}; retrying in 5 s");
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// SIGTERM to every process, a grace period, then SIGKILL to the rest.
fn stop_all_processes() {
    // pid -1: every process init may signal, which is all but init itself.
    if kill(Pid::from_raw(-1), Signal::SIGTERM).is_err() {
        return; // ESRCH: nothing else is running.
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if reaper::reap_all().no_children {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log::warn!(
        "processes still running after {} s; killing them",
        GRACE.as_secs()
    );
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !reaper::reap_all().no_children {
        std::thread::sleep(Duration::from_millis(20));
    }
}
