//! The keel-agent binary stopping as init stops it: a host reboot is
//! answered before init signals the agent, so the agent must let that
//! reply out before it exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{keelctl, start_init_acting, temp_dir, Guests};

/// Reads keel-agent's start-up lines: its address and pairing code.
fn address_and_code(agent: &mut Child) -> (String, String) {
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let mut addr = None;
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if let Some(rest) = line.split(" listening on ").nth(1) {
            addr = rest.split(',').next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("pairing code: ") {
            let code = rest.split(',').next().unwrap().to_string();
            // The agent goes on printing: keep its stdout open.
            std::thread::spawn(move || lines.for_each(drop));
            return (addr.expect("address before code"), code);
        }
    }
    panic!("keel-agent printed no pairing code");
}

fn wait_exit(agent: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = agent.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("keel-agent did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_host_reboot_is_answered_although_init_stops_the_agent_at_once() {
    let data = temp_dir("data");
    let state = temp_dir("state");
    let config = temp_dir("operator");
    let agent_pid: Arc<OnceLock<Pid>> = Arc::new(OnceLock::new());
    let pid = Arc::clone(&agent_pid);
    // As PID 1: answer, then stop the agent straight away.
    let socket = start_init_acting(
        &data,
        Arc::new(move |_| {
            kill(*pid.get().unwrap(), Signal::SIGTERM).unwrap();
        }),
        Guests::default(),
    );
    let mut agent = Command::new(env!("CARGO_BIN_EXE_keel-agent"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--init-socket")
        .arg(&socket)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    agent_pid
        .set(Pid::from_raw(i32::try_from(agent.id()).unwrap()))
        .unwrap();
    let (addr, code) = address_and_code(&mut agent);

    let config = config.to_str().unwrap();
    assert!(keelctl(config.as_ref(), &["keygen"]).status.success());
    assert!(keelctl(config.as_ref(), &["pair", &addr, &code])
        .status
        .success());
    let reboot = keelctl(config.as_ref(), &["--host", &addr, "host", "reboot"]);
    assert!(
        reboot.status.success(),
        "the reboot's answer was lost: {}",
        String::from_utf8_lossy(&reboot.stderr)
    );
    let status = wait_exit(&mut agent, Duration::from_secs(10));
    assert!(status.success(), "keel-agent ended with {status}");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&state);
}
