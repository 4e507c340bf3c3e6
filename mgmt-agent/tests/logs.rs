//! `keelctl logs` of a guest that printed very long lines: the answers
//! stay under the session's frame limit (a 1 MiB line used to end the
//! session instead).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use keel_mgmt::{Request, Response};
use support::{keelctl, temp_dir, Agent, Guests};

const SPEC: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

#[test]
fn a_one_mebibyte_line_does_not_break_logs() {
    let agent = Agent::start_with_guests(Guests {
        vmm_script: Some("exec sleep 600".into()),
        ..Guests::default()
    });
    let (_, mut admin) = agent.admin();
    let define = Request::GuestDefine {
        spec_toml: SPEC.into(),
    };
    assert_eq!(admin.call(define).unwrap(), Response::Ok);
    let log = agent.data.join("logs/web1/console.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut text = b"booting\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 1 << 20));
    text.extend(b"\nlogin: \n");
    std::fs::write(&log, &text).unwrap();

    // The client library: one LogLines, the long line cut.
    let logs = Request::Logs {
        guest: Some("web1".into()),
        tail: 10,
        follow: false,
    };
    let Response::LogLines(lines) = admin.call(logs).unwrap() else {
        panic!("expected log lines");
    };
    assert_eq!(lines.last().unwrap(), "login: ");
    assert!(
        lines.iter().any(|l| l.ends_with("more bytes cut]")),
        "{:?}",
        lines.len()
    );
    // The session is still there.
    assert!(matches!(
        admin.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));

    // keelctl, plain and following (the guest is stopped: its log, then
    // the end).
    let config = temp_dir("xdg-logs");
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(&config, &["keygen"]).status.success());
    let key = String::from_utf8(keelctl(&config, &["key", "show"]).stdout).unwrap();
    let key = keel_mgmt::PublicKey::parse(key.trim()).unwrap();
    let add = Request::AuthorizeKey {
        role: keel_mgmt::Role::Reader,
        public_key: key.0,
        comment: String::new(),
    };
    assert_eq!(admin.call(add).unwrap(), Response::Ok);
    assert!(keelctl(&config, &["trust", &host]).status.success());
    for args in [
        &["logs", "--guest", "web1"][..],
        &["logs", "--guest", "web1", "-f"],
    ] {
        let out = keelctl(&config, &[&["--host", &host][..], args].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.ends_with("login: \n"), "{args:?}");
    }
    std::fs::remove_dir_all(&config).unwrap();
}
