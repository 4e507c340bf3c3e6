//! The mission end to end: boot keel.img under OVMF, pair keelctl with the
//! code from the serial console, run the demo guest and talk to it through
//! its console, survive a host reboot with an autostart guest, see a crashed
//! guest restarted, refuse a malformed spec, and power off through the
//! power button with the guests stopped first. Everything goes through the
//! real keelctl binary over QEMU's forwarded port, as an operator would.
//!
//! Guests run on nested KVM inside the TCG appliance (see DESIGN.md), so
//! timeouts are generous; the figures belong to `make bench`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_ovmf_tests::{artefact, repo_root, BootMedia, Qemu, QemuOptions};

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// A guest boot under nested KVM in TCG, with the other guest running.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const GREETING: &str = "Hello from the Keel demo guest!";

fn keelctl_binary() -> PathBuf {
    let path = repo_root().join("target/x86_64-unknown-linux-gnu/release/keelctl");
    assert!(
        path.exists(),
        "{} is missing: run `make image`",
        path.display()
    );
    path
}

fn demo_spec() -> String {
    let path = repo_root().join("rootfs/initramfs/usr/share/keel/demo/demo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A workstation: its own keelctl configuration and the host to talk to.
struct Operator {
    config: PathBuf,
    host: String,
}

impl Operator {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(keelctl_binary());
        cmd.args(["--host", &self.host])
            .args(args)
            .env("XDG_CONFIG_HOME", &self.config)
            .env_remove("KEEL_HOST");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
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

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "keelctl {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `guest show --json` as a JSON value.
    fn show(&self, name: &str) -> serde_json::Value {
        let text = self.ok(&["--json", "guest", "show", name]);
        serde_json::from_str(&text).expect("guest show --json")
    }

    fn state(&self, name: &str) -> String {
        self.show(name)["summary"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    /// Polls until `done` holds for `guest show`, or panics with the last one.
    fn wait_guest(
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
struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl Console {
    fn attach(op: &Operator, name: &str) -> Console {
        let mut child = op
            .command(&["guest", "console", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run keelctl guest console");
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
        }
    }

    fn wait_for(&self, qemu: &Qemu, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.output.lock().map(|s| s.clone()).unwrap_or_default();
            if seen.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not on the guest console within {timeout:?}; it showed:\n{seen}\nappliance console:\n{}",
                qemu.serial()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn type_line(&mut self, line: &str) {
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

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `pairing code: 1234-5678, valid for ...` from the console, after `from`.
fn pairing_code(qemu: &mut Qemu, from: usize) -> String {
    let (line, _) = qemu.wait_for_from(from, "pairing code: ", BOOT_TIMEOUT);
    let rest = &line[line.find("pairing code: ").map_or(0, |i| i + 14)..];
    rest.split(',').next().unwrap_or("").trim().to_string()
}

fn write_spec(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write spec");
    path.to_string_lossy().into_owned()
}

#[test]
fn operator_runs_guests_across_reboot_crash_and_power_button() {
    let port = free_port();
    let mut options = QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick);
    options.memory_mib = 2048;
    options.no_reboot = false;
    options.agent_port = Some(port);
    let mut qemu = Qemu::start("appliance", &options);
    let work = qemu.workdir().join("operator");
    std::fs::create_dir_all(&work).expect("mkdir");
    let op = Operator {
        config: work.join("config"),
        host: format!("127.0.0.1:{port}"),
    };

    // Pair with the code printed on the console.
    let code = pairing_code(&mut qemu, 0);
    qemu.wait_for("keel-init: management address: ", BOOT_TIMEOUT);
    op.ok(&["keygen"]);
    let paired = op.ok(&["pair", &op.host, &code]);
    assert!(paired.contains("as admin"), "{paired}");

    // The demo guest: define, start, read its greeting, talk to it.
    let demo = demo_spec();
    let spec = write_spec(&work, "demo", &demo);
    op.ok(&["guest", "define", &spec]);
    assert_eq!(op.state("demo"), "Stopped");
    op.ok(&["guest", "start", "demo"]);
    let mut console = Console::attach(&op, "demo");
    console.wait_for(&qemu, GREETING, GUEST_TIMEOUT);
    console.wait_for(&qemu, "demo: 1 CPU(s), ", GUEST_TIMEOUT);
    console.type_line("hello keel");
    console.wait_for(&qemu, "demo: you said \"hello keel\"", GUEST_TIMEOUT);
    drop(console);
    let shown = op.show("demo");
    assert_eq!(shown["summary"]["state"], "Running");
    assert!(shown["pid"].as_u64().is_some(), "{shown}");
    let log = op.ok(&["logs", "--guest", "demo"]);
    assert!(
        log.contains(GREETING),
        "the console log keeps the greeting:\n{log}"
    );

    // A clean stop: ctrl-alt-del, the demo's init powers off.
    op.ok(&["guest", "stop", "demo"]);
    let shown = op.show("demo");
    assert_eq!(shown["summary"]["state"], "Stopped");
    assert_eq!(shown["last_exit"], "powered off", "{shown}");

    // A malformed spec is refused with the field named; nothing changes.
    let bad = write_spec(
        &work,
        "bad",
        &demo
            .replace("name = \"demo\"", "name = \"bad\"")
            .replace("vcpus = 1", "vcpus = 0"),
    );
    let out = op.run(&["guest", "define", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vcpus"), "{stderr}");
    let list = op.ok(&["guest", "list"]);
    assert!(!list.contains("bad"), "{list}");
    op.ok(&["guest", "undefine", "demo"]);

    // An autostart guest survives a host reboot without any client action.
    let auto = demo.replace("name = \"demo\"", "name = \"auto\"");
    assert!(auto.contains("autostart = true"));
    op.ok(&["guest", "define", &write_spec(&work, "auto", &auto)]);
    let before_reboot = qemu.serial().len();
    op.ok(&["host", "reboot"]);
    let (_, after) = qemu.wait_for_from(before_reboot, "keel: rebooting now", BOOT_TIMEOUT);
    let (_, after) = qemu.wait_for_from(after, "keel-init: guest auto: running", BOOT_TIMEOUT);
    // Paired before: no new pairing code, the key is on the data partition.
    qemu.wait_for_from(after, "keel-agent", BOOT_TIMEOUT);
    assert!(
        !qemu.serial()[before_reboot..].contains("pairing code:"),
        "the admin key did not survive the reboot"
    );
    let shown = op.wait_guest(&qemu, "auto", GUEST_TIMEOUT, |s| {
        s["summary"]["state"] == "Running"
    });
    assert_eq!(shown["autostart"], true);
    let console = Console::attach(&op, "auto");
    console.wait_for(&qemu, GREETING, GUEST_TIMEOUT);

    // The guest crashes (its init exits: a kernel panic, reported through
    // pvpanic): init restarts it by its on-failure policy.
    let mut console = console;
    console.type_line("panic");
    drop(console);
    let shown = op.wait_guest(&qemu, "auto", GUEST_TIMEOUT, |s| {
        s["restarts"].as_u64() >= Some(1) && s["summary"]["state"] == "Running"
    });
    let last = shown["last_exit"].as_str().unwrap_or("");
    assert!(last.contains("crashed"), "{shown}");
    let console = Console::attach(&op, "auto");
    console.wait_for(&qemu, GREETING, GUEST_TIMEOUT);
    drop(console);

    // The power button: guests stop first, then the host powers off.
    let before_off = qemu.serial().len();
    qemu.monitor("system_powerdown");
    let (_, stopped) =
        qemu.wait_for_from(before_off, "keel-init: guest auto: stopped", GUEST_TIMEOUT);
    qemu.wait_for_from(stopped, "keel: powering off now", GUEST_TIMEOUT);
    let status = qemu
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("QEMU did not exit; console:\n{}", qemu.serial()));
    assert!(status.success(), "QEMU exited with {status}");
    let serial = qemu.serial();
    assert!(
        !serial.contains("Kernel panic - not syncing: Attempted to kill init"),
        "init died:\n{serial}"
    );
}
