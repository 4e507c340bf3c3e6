//! The test bed's watchdog: waits for a keel-vmm run with a deadline and,
//! when the run overstays, prints what every thread of the VMM is doing
//! (state, wait channel, system call) and the vCPUs' exit counts from the
//! control socket, then kills it. A hang becomes a report, not a stuck
//! test bed.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How a watched run ended.
pub enum Outcome {
    Exited(ExitStatus),
    /// Overstayed its deadline: dumped and killed.
    Hung,
}

/// Field 3 (state) of `/proc/PID/task/TID/stat`, after the parenthesised
/// command name, which may itself hold spaces and parentheses.
fn task_state(stat: &str) -> &str {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?")
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable:{e}"))
}

/// One `TESTBED-HANG` line per thread of `pid`.
pub fn dump_threads(scenario: &str, pid: u32) {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(&tasks) else {
        println!("TESTBED-HANG scenario={scenario} pid={pid} tasks=unreadable");
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let stat = read_trimmed(&dir.join("stat"));
        let syscall = read_trimmed(&dir.join("syscall"));
        let syscall_nr = syscall.split_whitespace().next().unwrap_or("?");
        println!(
            "TESTBED-HANG scenario={scenario} tid={} comm={} state={} wchan={} syscall={syscall_nr}",
            entry.file_name().to_string_lossy(),
            read_trimmed(&dir.join("comm")),
            task_state(&stat),
            read_trimmed(&dir.join("wchan")),
        );
    }
}

/// Waits for `child` until `deadline` passes. On overstay, dumps its
/// threads, runs `describe` (e.g. the control socket's statistics), then
/// kills it.
pub fn wait(
    scenario: &str,
    child: &mut Child,
    deadline: Duration,
    describe: impl FnOnce(),
) -> Outcome {
    let until = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Outcome::Exited(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    println!(
        "TESTBED-HANG scenario={scenario} overstayed={}s",
        deadline.as_secs()
    );
    dump_threads(scenario, child.id());
    describe();
    let _ = child.kill();
    let _ = child.wait();
    Outcome::Hung
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_command_name_whatever_it_holds() {
        assert_eq!(task_state("42 (vcpu0) S 1 42 42 0"), "S");
        assert_eq!(task_state("42 (a) b) (c) D 1"), "D");
        assert_eq!(task_state("garbage"), "?");
    }

    #[test]
    fn a_run_that_overstays_is_dumped_and_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let mut described = false;
        let outcome = wait("unit", &mut child, Duration::from_millis(200), || {
            described = true
        });
        assert!(matches!(outcome, Outcome::Hung));
        assert!(described);
        let mut quick = std::process::Command::new("true").spawn().expect("spawn");
        assert!(matches!(
            wait("unit", &mut quick, Duration::from_secs(10), || {}),
            Outcome::Exited(s) if s.success()
        ));
    }
}
