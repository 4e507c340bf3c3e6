//! Driving the appliance as an operator does: the real `keelctl` binary
//! against QEMU's forwarded agent port, and attached guest consoles. Shared
//! by the end-to-end test and `make bench`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{repo_root, Qemu};

/// The demo guest's first line.
pub const GREETING: &str = "Hello from the Keel demo guest!";

pub fn keelctl_binary() -> PathBuf {
    let path = repo_root().join("target/x86_64-unknown-linux-gnu/release/keelctl");
    assert!(
        path.exists(),
        "{} is missing: run `make image`",
        path.display()
    );
    path
}

pub fn demo_spec() -> String {
    let path = repo_root().join("rootfs/initramfs/usr/share/keel/demo/demo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A workstation: its own keelctl configuration and the host to talk to.
pub struct Operator {
    pub config: PathBuf,
    pub host: String,
}

impl Operator {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(keelctl_binary());
        cmd.args(["--host", &self.host])
            .args(args)
            .env("XDG_CONFIG_HOME", &self.config)
            .env_remove("KEEL_HOST");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run keelctl");
        eprintln!(
            "$ keelctl {}\n{}{}[exit {:?}]",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status.code()
        );
        out
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "keelctl {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `guest show --json` as a JSON value.
    pub fn show(&self, name: &str) -> serde_json::Value {
        let text = self.ok(&["--json", "guest", "show", name]);
        serde_json::from_str(&text).expect("guest show --json")
    }

    pub fn state(&self, name: &str) -> String {
        self.show(name)["summary"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    /// Polls until `done` holds for `guest show`, or panics with the last one.
    pub fn wait_guest(
        &self,
        qemu: &Qemu,
        name: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.command(&["--json", "guest", "show", name]).output();
            let shown = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
            if let Some(s) = &shown {
                if done(s) {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "guest {name} never got there; last: {shown:?}; console:\n{}",
                qemu.serial()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// An attached `keelctl guest console`: its output collected by a thread.
pub struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    /// `keelctl logs --guest NAME`: on a failed wait, what the VMM's own
    /// console log holds tells a guest that stalled from output lost on
    /// the way to keelctl.
    guest_log: Mutex<Option<Command>>,
}

impl Console {
    /// `keelctl guest console NAME`, typed into and read as it runs.
    pub fn attach(op: &Operator, name: &str) -> Console {
        let mut console = Console::spawn(op, &["guest", "console", name]);
        console.guest_log =
            Mutex::new(Some(op.command(&["logs", "--guest", name, "--tail", "30"])));
        console
    }

    /// Any long-running keelctl command whose output is read as it comes.
    pub fn spawn(op: &Operator, args: &[&str]) -> Console {
        let mut child = op
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run keelctl {args:?}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Console {
            child,
            stdin,
            output,
            guest_log: Mutex::new(None),
        }
    }

    /// Waits for `needle` on the guest console; returns its whole line.
    pub fn wait_for(&self, qemu: &Qemu, needle: &str, timeout: Duration) -> String {
        self.wait_for_after(qemu, "", needle, timeout)
    }

    /// As [`Console::wait_for`], but only after the last `after` seen: the
    /// console replays recent history on attach, so a restarted guest's
    /// greeting must come after the previous boot's last words.
    pub fn wait_for_after(
        &self,
        qemu: &Qemu,
        after: &str,
        needle: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen_after(after);
            if let Some(line) = Self::line_with(&seen, needle) {
                return line;
            }
            if Instant::now() >= deadline {
                let guest_log = self
                    .guest_log
                    .lock()
                    .ok()
                    .and_then(|mut c| c.take())
                    .and_then(|mut c| c.output().ok())
                    .map(|o| format!("{:?}", String::from_utf8_lossy(&o.stdout)))
                    .unwrap_or_else(|| "(not asked)".into());
                panic!(
                    "{needle:?} not on the guest console within {timeout:?}; it showed:\n{seen:?}\nthe guest's console log on the host ends:\n{guest_log}\nappliance console:\n{}",
                    qemu.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The console so far, from after the last `after` on (all of it when
    /// `after` is empty or not there).
    fn seen_after(&self, after: &str) -> String {
        let all = self.output.lock().map(|s| s.clone()).unwrap_or_default();
        match all.rfind(after) {
            Some(at) if !after.is_empty() => all[at + after.len()..].to_owned(),
            _ => all,
        }
    }

    /// The whole (ended) line of `seen` that holds `needle`.
    fn line_with(seen: &str, needle: &str) -> Option<String> {
        match crate::find_line(seen, needle) {
            Some((start, Some(end))) => Some(seen[start..end].trim_end_matches('\r').to_owned()),
            _ => None,
        }
    }

    /// The line with `needle` if the console has shown it yet.
    pub fn find(&self, needle: &str) -> Option<String> {
        Self::line_with(&self.seen_after(""), needle)
    }

    /// Waits for keelctl to exit on its own and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for keelctl") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keelctl still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the console");
        stdin.flush().expect("flush");
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots [`start_and_wait_for`] tries before it fails.
pub const START_ATTEMPTS: u32 = 3;

/// Starts guest `name` and waits for `needle` on its console; returns the
/// attached console and the line.
///
/// Under TCG a nested guest's boot meets a fault of QEMU's emulated SVM
/// at a different place each time (keel-testbed runs such a scenario once
/// more, see its `emulator_fault`); in the appliance a `from = "disk"`
/// guest with a bridged NIC met one in most first boots, early in its
/// kexec'd kernel (not understood yet: see the issue notes). So a guest
/// that crashes before `needle` is started again, up to [`START_ATTEMPTS`]
/// times in all, each time with a loud warning; a crash in the last
/// attempt, or no `needle` in `timeout`, fails.
pub fn start_and_wait_for(
    op: &Operator,
    qemu: &Qemu,
    name: &str,
    needle: &str,
    timeout: Duration,
) -> (Console, String) {
    for attempt in 1..=START_ATTEMPTS {
        op.ok(&["guest", "start", name]);
        let console = Console::attach(op, name);
        let deadline = Instant::now() + timeout;
        let mut next_look = Instant::now();
        loop {
            if let Some(line) = console.find(needle) {
                return (console, line);
            }
            let mut crashed = false;
            if Instant::now() >= next_look {
                next_look = Instant::now() + Duration::from_secs(5);
                let shown = op.show(name);
                crashed = shown["summary"]["state"] == "Crashed";
                if crashed && attempt < START_ATTEMPTS {
                    eprintln!(
                        "WARNING: RETRIED: guest {name} crashed before {needle:?} ({}) in \
                         attempt {attempt}; starting it again. Its console:\n{}",
                        shown["last_exit"],
                        console.seen_after("")
                    );
                    break;
                }
            }
            if crashed || Instant::now() >= deadline {
                // Fails with the console, the VMM's log and the host's.
                console.wait_for(qemu, needle, Duration::ZERO);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    unreachable!("the last attempt returns or fails")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `pairing code: 1234-5678, valid for ...` from the console, after `from`.
pub fn pairing_code(qemu: &mut Qemu, from: usize, timeout: Duration) -> String {
    let (line, _) = qemu.wait_for_from(from, "pairing code: ", timeout);
    let rest = &line[line.find("pairing code: ").map_or(0, |i| i + 14)..];
    rest.split(',').next().unwrap_or("").trim().to_string()
}
