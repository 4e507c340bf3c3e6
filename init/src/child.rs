//! init's children: what each starts with, and how one is ended.
//!
//! init blocks the signals its signalfd reads (SIGTERM, SIGCHLD, ...) in
//! every thread, and a signal mask survives fork and exec: std's `Command`
//! does not reset it. A child started as it is never sees SIGTERM, so the
//! host shutdown's SIGTERM to every process would wait out its grace
//! period and end in SIGKILL.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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

/// Waits up to `timeout` for child `pid` to exit; past it, calls
/// `on_timeout` (to say so) and SIGKILLs it. Its exit status, or `None`
/// when it is no child to wait for (already reaped).
pub fn wait_or_kill(pid: Pid, timeout: Duration, on_timeout: impl FnOnce()) -> Option<WaitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(WaitStatus::StillAlive) => {
                on_timeout();
                let _ = kill(pid, Signal::SIGKILL);
                return loop {
                    match waitpid(pid, None) {
                        Err(Errno::EINTR) => {}
                        result => break result.ok(),
                    }
                };
            }
            Ok(status) => return Some(status),
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
