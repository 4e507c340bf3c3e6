//! The audit log is complete, bounded and clean: logins, pairing
//! enrolment, key changes (with the key's fingerprint) and refusals are
//! in it; a newline in an upload path cannot start a line of its own
//! there or in the host log; and the log rotates at its size cap while
//! `Audit` still serves its tail. Over real TCP against an in-process
//! keel-agent.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use keel_mgmt::messages::AuditEntry;
use keel_mgmt::{ClientKey, Request, Response, Role};
use support::Agent;

fn audit(c: &mut keel_mgmt::client::Client, tail: u32) -> Vec<AuditEntry> {
    match c.call(Request::Audit { tail }).unwrap() {
        Response::Audit(entries) => entries,
        other => panic!("{other:?}"),
    }
}

#[test]
fn logins_enrolment_key_changes_and_refusals_are_audited() {
    let agent = Agent::start();
    let (admin_key, mut admin) = agent.admin();
    let admin_fp = admin_key.fingerprint().to_string();
    agent.wait_audit(&[&admin_fp, "admin PairingEnrol ok peer=127.0.0.1:"]);
    agent.wait_audit(&[&admin_fp, "admin Login(paired) ok peer=127.0.0.1:"]);

    let reader = ClientKey::generate().unwrap();
    let reader_fp = reader.fingerprint().to_string();
    let add = Request::AuthorizeKey {
        role: Role::Reader,
        public_key: reader.public_key().0,
        comment: "reader".into(),
    };
    assert_eq!(admin.call(add).unwrap(), Response::Ok);
    agent.wait_audit(&[&admin_fp, &format!("AuthorizeKey(reader,{reader_fp}) ok")]);

    let mut r = agent.connect(&reader, None).unwrap();
    agent.wait_audit(&[&reader_fp, "reader Login ok peer=127.0.0.1:"]);
    assert!(r.call(Request::HostReboot).is_err());
    agent.wait_audit(&[&reader_fp, "reader HostReboot refused"]);

    let stranger = ClientKey::generate().unwrap();
    assert!(agent.connect(&stranger, None).is_err());
    agent.wait_audit(&[&stranger.fingerprint().to_string(), "reason=unknown key"]);

    // `Audit` shows the logins too.
    let entries = audit(&mut admin, 100);
    assert!(entries
        .iter()
        .any(|e| e.fingerprint == reader_fp && e.request == "Login"));
}

#[test]
fn a_newline_in_an_upload_path_injects_no_line() {
    let agent = Agent::start();
    let (_, mut admin) = agent.admin();
    let fake = "2026-01-01T00:00:00Z SHA256:fake admin HostReboot ok";
    let path = format!("images/a\n{fake}\n");
    let data = b"payload";
    admin
        .upload(&path, 7, &mut &data[..], 4096, &mut |_| {})
        .unwrap();
    agent.wait_audit(&["Upload(images", "size=7) ok"]);
    for line in agent.audit().lines() {
        assert!(!line.starts_with("2026-01-01"), "injected: {line}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
    for e in audit(&mut admin, 1000) {
        assert!(!e.request.chars().any(char::is_control), "{e:?}");
    }
    // Nor into the host log that `keelctl logs` prints.
    let Response::LogLines(lines) = admin
        .call(Request::Logs {
            guest: None,
            tail: 1000,
            follow: false,
        })
        .unwrap()
    else {
        panic!("no log lines");
    };
    assert!(lines.iter().any(|l| l.contains("upload images/a")));
    for line in lines {
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
}

#[test]
fn the_log_rotates_at_its_cap_and_audit_still_reads_it() {
    let agent = Agent::start_with("127.0.0.1:0", |c| c.audit_max_bytes = 4096);
    let (_, mut admin) = agent.admin();
    for _ in 0..100 {
        assert!(matches!(
            admin.call(Request::GuestList).unwrap(),
            Response::Guests(_)
        ));
    }
    agent.wait_audit(&["GuestList"]);
    let current = std::fs::metadata(agent.state.join("audit.log"))
        .unwrap()
        .len();
    let older = std::fs::metadata(agent.state.join("audit.log.1"))
        .unwrap()
        .len();
    assert!(current <= 4096 && older <= 4096, "{current} {older}");
    let entries = audit(&mut admin, 1000);
    let in_current = agent.audit().lines().count();
    assert!(entries.len() > in_current, "{} {in_current}", entries.len());
    assert!(entries.len() < 100);
    assert!(entries.windows(2).all(|w| w[0].unix_time <= w[1].unix_time));
    assert_eq!(audit(&mut admin, 2).len(), 2);
}
