//! Uploads end to end over loopback TCP: an in-process keel-agent, the
//! client library, and the keelctl binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_mgmt::client::{exit, sha256_file, Client, ClientError};
use keel_mgmt::messages::{ErrorKind, MAX_CHUNK};
use keel_mgmt::{ClientKey, Request, Response, Role};
use support::{temp_dir, Agent};

/// A fresh key with `role`, authorised by `admin`.
fn with_role(agent: &Agent, admin: &mut Client, role: Role) -> (ClientKey, Client) {
    let key = ClientKey::generate().unwrap();
    let add = Request::AuthorizeKey {
        role,
        public_key: key.public_key().0,
        comment: role.to_string(),
    };
    assert_eq!(admin.call(add).unwrap(), Response::Ok);
    let c = agent.connect(&key, None).unwrap();
    (key, c)
}

fn uploads(agent: &Agent) -> PathBuf {
    agent.state.join("uploads")
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(d: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, d).as_ref());
    out
}

/// Every file under `dir`, recursively, relative names.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

fn host_err(r: Result<(), ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Host { kind, message }) => (kind, message),
        other => panic!("expected a host error, got {other:?}"),
    }
}

#[test]
fn multi_mib_upload_arrives_intact() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    // Not a multiple of the chunk size, and several windows long.
    let body = data(5 * 1024 * 1024 + 12345);
    let mut seen = Vec::new();
    c.upload(
        "images/big.bin",
        body.len() as u64,
        sha(&body),
        &mut body.as_slice(),
        MAX_CHUNK,
        &mut |n| seen.push(n),
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&(body.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let path = uploads(&agent).join("images/big.bin");
    assert!(std::fs::read(&path).unwrap() == body, "content differs");
    // No temporary file left behind.
    assert_eq!(files(&uploads(&agent)), vec![path.display().to_string()]);
    agent.wait_audit(&[&format!(
        "admin Upload(images?big.bin,size={}) ok",
        body.len()
    )]);
    // The session is still usable, and a second upload replaces the file.
    let small = data(10);
    c.upload(
        "images/big.bin",
        10,
        sha(&small),
        &mut small.as_slice(),
        3,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), small);
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    // An empty file works too.
    c.upload(
        "empty",
        0,
        sha(&[]),
        &mut [].as_slice(),
        MAX_CHUNK,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(uploads(&agent).join("empty")).unwrap(), b"");
}

#[test]
fn wrong_checksum_leaves_nothing_at_the_final_path() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let body = data(3 * 1024 * 1024);
    let mut wrong = sha(&body);
    wrong[0] ^= 1;
    let (kind, message) = host_err(c.upload(
        "bad.img",
        body.len() as u64,
        wrong,
        &mut body.as_slice(),
        MAX_CHUNK,
        &mut |_| {},
    ));
    assert_eq!(kind, ErrorKind::Invalid);
    assert!(message.contains("SHA-256"), "{message}");
    assert!(!uploads(&agent).join("bad.img").exists());
    assert_eq!(files(&uploads(&agent)), Vec::<String>::new());
    agent.wait_audit(&["admin Upload(bad.img,size=3145728) error"]);

    // An existing file keeps its old content when a replacement fails.
    let good = data(100);
    c.upload(
        "bad.img",
        100,
        sha(&good),
        &mut good.as_slice(),
        MAX_CHUNK,
        &mut |_| {},
    )
    .unwrap();
    let (kind, _) = host_err(c.upload(
        "bad.img",
        body.len() as u64,
        wrong,
        &mut body.as_slice(),
        MAX_CHUNK,
        &mut |_| {},
    ));
    assert_eq!(kind, ErrorKind::Invalid);
    assert_eq!(
        std::fs::read(uploads(&agent).join("bad.img")).unwrap(),
        good
    );
    assert_eq!(files(&uploads(&agent)).len(), 1);

    // An upload abandoned for another request leaves nothing either; its
    // audit line records the bytes received.
    let before = files(&uploads(&agent));
    let r = c.call(Request::Upload {
        path: "short".into(),
        size: 10,
        sha256: sha(&[0; 10]),
    });
    assert!(matches!(r, Ok(Response::UploadAck { received: 0, .. })));
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    assert_eq!(files(&uploads(&agent)), before);
    agent.wait_audit(&["admin Upload(short,size=0) aborted"]);
}

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    for bad in ["../escape", "a/../../escape", "/tmp/escape", "", "dir/"] {
        let (kind, message) = host_err(c.upload(
            bad,
            3,
            sha(b"abc"),
            &mut b"abc".as_slice(),
            MAX_CHUNK,
            &mut |_| {},
        ));
        assert_eq!(kind, ErrorKind::Invalid, "{bad}: {message}");
    }
    assert!(!agent.state.join("escape").exists());
    assert!(!Path::new("/tmp/escape").exists());
    assert_eq!(files(&uploads(&agent)), Vec::<String>::new());
    agent.wait_audit(&["admin Upload(..?escape,size=3) error"]);
}

#[test]
fn reader_cannot_upload_but_operator_can() {
    let agent = Agent::start();
    let (_, mut admin) = agent.admin();
    let (reader, mut r) = with_role(&agent, &mut admin, Role::Reader);
    let err = r
        .upload(
            "x.bin",
            3,
            sha(b"abc"),
            &mut b"abc".as_slice(),
            MAX_CHUNK,
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Host {
            kind: ErrorKind::Unauthorized,
            ..
        }
    ));
    assert_eq!(err.exit_code(), exit::NOT_AUTHORIZED);
    assert!(!uploads(&agent).join("x.bin").exists());
    agent.wait_audit(&[
        &reader.fingerprint().to_string(),
        "reader Upload(x.bin,size=3) refused",
    ]);
    // Chunks without an authorised Upload are refused too.
    let err = r
        .call(Request::UploadChunk {
            offset: 0,
            data: b"abc".to_vec(),
        })
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::NOT_AUTHORIZED);

    let (_, mut op) = with_role(&agent, &mut admin, Role::Operator);
    op.upload(
        "x.bin",
        3,
        sha(b"abc"),
        &mut b"abc".as_slice(),
        1,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        std::fs::read(uploads(&agent).join("x.bin")).unwrap(),
        b"abc"
    );
    agent.wait_audit(&["operator Upload(x.bin,size=3) ok"]);
}

#[test]
fn keelctl_upload_command() {
    let agent = Agent::start();
    let config = temp_dir("xdg");
    let host = format!("127.0.0.1:{}", agent.handle.local_addr().port());
    let code = agent.handle.pairing_code().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keelctl"))
            .args(args)
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("KEEL_HOST")
            .output()
            .unwrap();
        eprintln!(
            "$ keelctl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    assert!(run(&["keygen"]).status.success());
    assert!(run(&["pair", &host, &code]).status.success());
    let local = config.join("disk.img");
    let body = data(2 * 1024 * 1024 + 7);
    std::fs::write(&local, &body).unwrap();
    assert_eq!(
        sha256_file(&local).unwrap(),
        (body.len() as u64, sha(&body))
    );
    let out = run(&[
        "--host",
        &host,
        "--json",
        "upload",
        local.to_str().unwrap(),
        "images/disk.img",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bytes"], body.len() as u64);
    assert!(std::fs::read(uploads(&agent).join("images/disk.img")).unwrap() == body);
    // Not a terminal: no progress bar on stdout.
    let out = run(&[
        "--host",
        &host,
        "upload",
        local.to_str().unwrap(),
        "copy.img",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "progress output leaked into stdout"
    );
    let out = run(&["--host", &host, "upload", local.to_str().unwrap(), "../x"]);
    assert_eq!(out.status.code(), Some(exit::HOST_ERROR));
    let out = run(&["--host", &host, "upload", "/nonexistent/file", "y"]);
    assert_eq!(out.status.code(), Some(exit::LOCAL));
    let _ = std::fs::remove_dir_all(&config);
}
