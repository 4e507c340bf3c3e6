//! keel-vmm's process exit status: the contract between the VMM and the
//! supervisor that reaps it (init), documented in the README.

/// Why a keel-vmm process ended, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VmmExitStatus {
    /// The guest powered off (ACPI S5).
    PowerOff = 0,
    /// The VMM itself failed.
    Error = 1,
    /// The spec or the command line was refused before the VM existed.
    Config = 2,
    /// The guest asked for a reboot (i8042 reset); restarting is the
    /// supervisor's decision.
    Reboot = 3,
    /// The guest crashed: pvpanic, a triple fault, or an instruction KVM
    /// could not emulate.
    Crash = 4,
    /// Killed through the control socket.
    Killed = 5,
    /// A `from = "disk"` guest's boot loader found nothing it could boot
    /// (its message is in the VMM's log and on the guest console).
    BootFailed = 6,
}

impl VmmExitStatus {
    /// Every status, in code order.
    pub const ALL: [VmmExitStatus; 7] = [
        VmmExitStatus::PowerOff,
        VmmExitStatus::Error,
        VmmExitStatus::Config,
        VmmExitStatus::Reboot,
        VmmExitStatus::Crash,
        VmmExitStatus::Killed,
        VmmExitStatus::BootFailed,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status a reaped process's exit code stands for, if it is one of
    /// keel-vmm's.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| i32::from(s.code()) == code)
    }

    /// How `guest show` describes this ending.
    pub fn describe(self) -> &'static str {
        match self {
            VmmExitStatus::PowerOff => "powered off",
            VmmExitStatus::Error => "VMM failed (status 1)",
            VmmExitStatus::Config => "bad configuration (status 2)",
            VmmExitStatus::Reboot => "rebooted",
            VmmExitStatus::Crash => "crashed (a guest panic or a CPU fault, status 4)",
            VmmExitStatus::Killed => "killed on request (status 5)",
            VmmExitStatus::BootFailed => "nothing bootable on its disks (status 6)",
        }
    }
}

impl From<VmmExitStatus> for std::process::ExitCode {
    fn from(status: VmmExitStatus) -> Self {
        std::process::ExitCode::from(status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for (i, status) in VmmExitStatus::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(status.code()), i);
            assert_eq!(VmmExitStatus::from_code(i as i32), Some(status));
        }
        assert_eq!(VmmExitStatus::from_code(7), None);
        assert_eq!(VmmExitStatus::from_code(-1), None);
    }
}
