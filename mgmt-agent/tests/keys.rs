//! Key management over real TCP with the real keelctl: listing,
//! revoking and demoting keys ends their sessions, the last admin key
//! stays, and a bad authorized_keys line never keeps the agent down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use keel_mgmt::client::ClientError;
use keel_mgmt::{ClientKey, HandshakeError, Request, Response};
use support::{keelctl, temp_dir, Agent};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A keelctl configuration with a fresh key: (config dir, public key,
/// fingerprint).
fn keygen(tag: &str) -> (PathBuf, String, String) {
    let config = temp_dir(tag);
    let out = keelctl(&config, &["--json", "keygen"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |k: &str| v[k].as_str().unwrap().to_string();
    (config, text("public_key"), text("fingerprint"))
}

/// An agent whose authorized_keys holds `text` before it starts.
fn agent_with_keys(text: String) -> Agent {
    Agent::start_with("127.0.0.1:0", move |s| {
        std::fs::write(s.authorized_keys_path(), text).unwrap();
    })
}

/// Pins the agent's host key for `config`; the `--host` to pass.
fn trust(agent: &Agent, config: &Path) -> String {
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(config, &["trust", &host]).status.success());
    host
}

#[test]
fn revoking_a_key_ends_its_open_session_and_refuses_it_afterwards() {
    let (admin, admin_key, _) = keygen("xdg-admin");
    let reader = ClientKey::generate().unwrap();
    let agent = agent_with_keys(format!(
        "admin {admin_key} alice\nreader {} bob\n",
        reader.public_key()
    ));
    let host = trust(&agent, &admin);
    let mut session = agent.connect(&reader, None).unwrap();
    assert!(matches!(
        session.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));

    let fp = reader.fingerprint().to_string();
    let out = keelctl(&admin, &["--host", &host, "key", "list"]);
    assert!(out.status.success());
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&fp) && l.contains("reader") && l.contains("bob")),
        "{listed}"
    );
    let out = keelctl(&admin, &["--host", &host, "key", "revoke", &fp]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("revoked {fp}\n"));

    // The session that was open is ended, and the key is refused anew.
    match session.call(Request::HostInfo) {
        Err(ClientError::Session(_)) => {}
        other => panic!("the revoked session went on: {other:?}"),
    }
    match agent.connect(&reader, None) {
        Err(ClientError::Handshake(HandshakeError::Rejected)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a revoked key got in"),
    }
    agent.wait_audit(&[&format!("KeyRevoke({fp})"), "ok"]);
    let file = std::fs::read_to_string(agent.state.join("authorized_keys")).unwrap();
    assert_eq!(file, format!("admin {admin_key} alice\n"));
    let out = keelctl(&admin, &["--host", &host, "key", "list"]);
    assert!(!stdout(&out).contains(&fp), "{}", stdout(&out));
}

#[test]
fn a_demoted_operator_is_refused_operator_requests() {
    let (admin, admin_key, _) = keygen("xdg-admin");
    let (operator, operator_key, operator_fp) = keygen("xdg-operator");
    let agent = agent_with_keys(format!(
        "admin {admin_key}\noperator {operator_key} carol\n"
    ));
    let host = trust(&agent, &admin);
    trust(&agent, &operator);
    let start = ["--host", &host, "guest", "start", "web1"];
    // Allowed (there is no such guest).
    assert_eq!(keelctl(&operator, &start).status.code(), Some(1));

    let out = keelctl(
        &admin,
        &["--host", &host, "key", "set-role", &operator_fp, "reader"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{operator_fp} is now reader\n"));
    let out = keelctl(&operator, &start);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(keelctl(&operator, &["--host", &host, "host", "info"])
        .status
        .success());
    let out = keelctl(&admin, &["--json", "--host", &host, "key", "list"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys[1]["fingerprint"], operator_fp.as_str());
    assert_eq!(keys[1]["role"], "Reader");
    assert_eq!(keys[1]["comment"], "carol");
    agent.wait_audit(&[&format!("KeySetRole({operator_fp},reader)"), "ok"]);
}

#[test]
fn the_last_admin_key_cannot_be_revoked_or_demoted() {
    let (admin, admin_key, admin_fp) = keygen("xdg-admin");
    let other = ClientKey::generate().unwrap();
    let agent = agent_with_keys(format!(
        "admin {admin_key}\nreader {}\n",
        other.public_key()
    ));
    let host = trust(&agent, &admin);
    for args in [
        vec!["key", "revoke", &admin_fp],
        vec!["key", "set-role", &admin_fp, "operator"],
    ] {
        let out = keelctl(&admin, &[&["--host", &host][..], &args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("last admin key"), "{}", stderr(&out));
    }
    // Unknown and malformed fingerprints.
    let unknown = ClientKey::generate().unwrap().fingerprint().to_string();
    let out = keelctl(&admin, &["--host", &host, "key", "revoke", &unknown]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No authorised key"),
        "{}",
        stderr(&out)
    );
    let out = keelctl(&admin, &["--host", &host, "key", "revoke", "SHA256:nope"]);
    assert_eq!(out.status.code(), Some(6));

    // With a second admin, the first may revoke itself: its answer
    // arrives, then it is out.
    let other_fp = other.fingerprint().to_string();
    let promote = ["--host", &host, "key", "set-role", &other_fp, "admin"];
    assert!(keelctl(&admin, &promote).status.success());
    let out = keelctl(&admin, &["--host", &host, "key", "revoke", &admin_fp]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keelctl(&admin, &["--host", &host, "host", "info"]);
    assert_eq!(out.status.code(), Some(5));
    let mut c = agent.connect(&other, None).unwrap();
    assert!(matches!(
        c.call(Request::KeyList).unwrap(),
        Response::Keys(k) if k.len() == 1
    ));
}

#[test]
fn a_bad_line_is_skipped_with_a_warning_and_the_agent_starts() {
    let (admin, admin_key, _) = keygen("xdg-admin");
    let reader = ClientKey::generate().unwrap();
    let agent = agent_with_keys(format!(
        "# keys\nadmni {admin_key} typo\nadmin {admin_key} alice\nreader {admin_key} again\n"
    ));
    let host = trust(&agent, &admin);
    assert!(keelctl(&admin, &["--host", &host, "host", "info"])
        .status
        .success());
    let out = keelctl(&admin, &["--host", &host, "logs"]);
    let log = stdout(&out);
    assert!(
        log.lines()
            .any(|l| l.contains("line 2") && l.contains("unknown role") && l.contains("skipped")),
        "{log}"
    );
    assert!(log.contains("line 4"), "{log}");

    // The agent's next write keeps the comment and the bad line (for the
    // operator to fix) and folds the duplicate.
    let add = [
        "--host",
        &host,
        "key",
        "add",
        "reader",
        &reader.public_key().to_string(),
    ];
    assert!(keelctl(&admin, &add).status.success());
    let file = std::fs::read_to_string(agent.state.join("authorized_keys")).unwrap();
    assert_eq!(
        file,
        format!(
            "# keys\nadmni {admin_key} typo\nadmin {admin_key} alice\nreader {}\n",
            reader.public_key()
        )
    );
}
