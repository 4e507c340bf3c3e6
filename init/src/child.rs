//! What every child of init starts with.
//!
//! init blocks the signals its signalfd reads (SIGTERM, SIGCHLD, ...) in
//! every thread, and a signal mask survives fork and exec: std's `Command`
//! does not reset it. A child started as it is never sees SIGTERM, so the
//! host shutdown's SIGTERM to every process would wait out its grace
//! period and end in SIGKILL.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

/// Makes the child of `cmd` start with no signal blocked.
pub fn unblock_signals(cmd: &mut Command) -> &mut Command {
    let none = SigSet::empty();
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // one async-signal-safe call (sigprocmask) with a set built before the
    // fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&none), None).map_err(io::Error::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    /// The blocked-signal mask of the process that runs `cmd`, from its
    /// /proc status.
    fn blocked_in(cmd: &mut Command) -> String {
        let out = cmd
            .args(["-E", "^SigBlk:", "/proc/self/status"])
            .output()
            .expect("run grep");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_child_of_a_thread_that_blocks_sigterm_does_not_inherit_the_mask() {
        std::thread::spawn(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGCHLD);
            set.thread_block().expect("block");
            // Without the reset the child inherits the mask: SIGTERM (15)
            // and SIGCHLD (17) are bits 14 and 16.
            assert_eq!(
                blocked_in(&mut Command::new("grep")),
                "SigBlk:\t0000000000014000"
            );
            assert_eq!(
                blocked_in(unblock_signals(&mut Command::new("grep"))),
                "SigBlk:\t0000000000000000"
            );
        })
        .join()
        .expect("the test thread");
    }
}
