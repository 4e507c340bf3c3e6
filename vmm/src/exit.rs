//! Why the VM stopped, and how the process exit status tells it.

use std::sync::Mutex;

use keel_common::vmm_exit::VmmExitStatus;
use vmm_sys_util::eventfd::EventFd;

/// The reason a VM ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reboot (i8042 reset). Restarting is the
    /// supervisor's decision, so the VMM exits.
    Reboot,
    /// The guest crashed: a kernel panic (pvpanic), a triple fault, or an
    /// instruction KVM could not emulate.
    Crash(String),
    /// Stopped by the `kill` control request.
    Killed,
    /// The disk boot loader found nothing to boot; its message.
    BootFailed(String),
    /// The VMM itself failed.
    Error(String),
}

impl VmExit {
    /// The process exit status for this reason.
    pub fn status(&self) -> VmmExitStatus {
        match self {
            VmExit::PowerOff => VmmExitStatus::PowerOff,
            VmExit::Error(_) => VmmExitStatus::Error,
            VmExit::Reboot => VmmExitStatus::Reboot,
            VmExit::Crash(_) => VmmExitStatus::Crash,
            VmExit::Killed => VmmExitStatus::Killed,
            VmExit::BootFailed(_) => VmmExitStatus::BootFailed,
        }
    }
}

/// Where devices and vCPU threads report that the VM must end: the first
/// reason wins, and the event loop is woken through the eventfd.
pub struct ExitSignal {
    reason: Mutex<Option<VmExit>>,
    pub eventfd: EventFd,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitSignal {
            reason: Mutex::new(None),
            eventfd: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the loop.
    pub fn request(&self, reason: VmExit) {
        if let Ok(mut slot) = self.reason.lock() {
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        if let Err(err) = self.eventfd.write(1) {
            log::error!("cannot wake the event loop for exit: {err}");
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<VmExit> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_codes_differ() {
        let exit = ExitSignal::new().expect("eventfd");
        assert_eq!(exit.reason(), None);
        exit.request(VmExit::Reboot);
        exit.request(VmExit::PowerOff);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
        assert_eq!(exit.eventfd.read().expect("woken"), 2);
        let codes: Vec<u8> = [
            VmExit::PowerOff,
            VmExit::Error(String::new()),
            VmExit::Reboot,
            VmExit::Crash(String::new()),
            VmExit::Killed,
        ]
        .iter()
        .map(|e| e.status().code())
        .collect();
        assert_eq!(codes, vec![0, 1, 3, 4, 5]);
        assert!(!codes.contains(&VmmExitStatus::Config.code()));
    }
}
