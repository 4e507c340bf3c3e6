//! Uploads end to end over loopback TCP: an in-process keel-agent, the
//! client library, and the keelctl binary.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_mgmt::client::{exit, Client, ClientError};
use keel_mgmt::messages::{ErrorCode, MAX_CHUNK};
use keel_mgmt::{ClientKey, Request, Response, Role};
use support::{noise, put, sha, temp_dir, Agent};

/// A fresh key with `role`, authorised by `admin`, and its session.
fn with_role(agent: &Agent, admin: &mut Client, role: Role) -> (ClientKey, Client) {
    let key = agent.new_key(admin, role);
    let c = agent.connect(&key, None).unwrap();
    (key, c)
}

/// The upload root of an agent started with the default configuration,
/// as a standalone keel-agent is.
fn uploads(agent: &Agent) -> PathBuf {
    agent.state.join("uploads")
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize) -> Vec<u8> {
    noise(len, 0)
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

fn host_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Host { kind, message }) => (kind, message),
        other => panic!("expected a host error, got {other:?}"),
    }
}

/// Uploads "abc" to `path`, which the agent must refuse.
fn refused_abc(c: &mut Client, path: &str) -> (ErrorCode, String) {
    host_err(put(c, path, b"abc"))
}

#[test]
fn multi_mib_upload_arrives_intact() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    // Not a multiple of the chunk size, and several windows long.
    let body = data(5 * 1024 * 1024 + 12345);
    let mut seen = Vec::new();
    let done = c
        .upload(
            "images/big.bin",
            body.len() as u64,
            &mut body.as_slice(),
            MAX_CHUNK,
            &mut |n| seen.push(n),
        )
        .unwrap();
    assert_eq!(done.sha256, sha(&body));
    assert_eq!(
        (done.size, done.data),
        (body.len() as u64, body.len() as u64)
    );
    // Every byte, plus a few dozen per 255 KiB frame.
    assert!(done.wire > done.data && done.wire < done.data + done.data / 1000);
    // The last chunk reaches the end; the end is reported once more.
    assert_eq!(seen.last(), Some(&(body.len() as u64)));
    assert!(seen[..seen.len() - 1].windows(2).all(|w| w[0] < w[1]));
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
    c.upload("images/big.bin", 10, &mut small.as_slice(), 3, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), small);
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    // An empty file works too.
    put(&mut c, "disks/empty", &[]).unwrap();
    assert_eq!(
        std::fs::read(uploads(&agent).join("disks/empty")).unwrap(),
        b""
    );
}

/// Runs an upload by hand: `UploadStart` for `size` bytes of which
/// `data` are announced, `chunks` (offset, bytes), then `UploadEnd` with
/// `digest`; returns the host's final answer.
fn by_hand(
    c: &mut Client,
    path: &str,
    (size, data): (u64, u64),
    chunks: &[(u64, &[u8])],
    digest: [u8; 32],
) -> Result<(), ClientError> {
    let start = Request::UploadStart {
        path: path.into(),
        size,
        data,
        replace: false,
    };
    assert!(matches!(c.call(start)?, Response::UploadAck { .. }));
    let id = c.last_id();
    for (offset, bytes) in chunks {
        let chunk = Request::UploadChunk {
            offset: *offset,
            data: bytes.to_vec(),
        };
        c.send_on(id, chunk)?;
    }
    c.send_on(id, Request::UploadEnd { sha256: digest })?;
    loop {
        match c.recv(id)? {
            Response::UploadAck { .. } => {}
            Response::Ok => return Ok(()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn wrong_checksum_leaves_nothing_at_the_final_path() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let body = data(3 * 1024 * 1024);
    let chunks: Vec<(u64, &[u8])> = body
        .chunks(MAX_CHUNK)
        .enumerate()
        .map(|(i, d)| ((i * MAX_CHUNK) as u64, d))
        .collect();
    let n = body.len() as u64;
    let mut wrong = sha(&body);
    wrong[0] ^= 1;
    let (kind, message) = host_err(by_hand(&mut c, "disks/bad.img", (n, n), &chunks, wrong));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("SHA-256"), "{message}");
    assert!(!uploads(&agent).join("disks/bad.img").exists());
    assert_eq!(files(&uploads(&agent)), Vec::<String>::new());
    agent.wait_audit(&["admin Upload(disks?bad.img,size=3145728) error"]);
    // The right digest over the same chunks is taken.
    by_hand(&mut c, "disks/ok.img", (n, n), &chunks, sha(&body)).unwrap();
    assert!(std::fs::read(uploads(&agent).join("disks/ok.img")).unwrap() == body);
    std::fs::remove_file(uploads(&agent).join("disks/ok.img")).unwrap();

    // An existing file keeps its old content when a replacement fails.
    let good = data(100);
    put(&mut c, "disks/bad.img", &good).unwrap();
    let (kind, _) = host_err(by_hand(&mut c, "disks/bad.img", (n, n), &chunks, wrong));
    assert_eq!(kind, ErrorCode::Invalid);
    assert_eq!(
        std::fs::read(uploads(&agent).join("disks/bad.img")).unwrap(),
        good
    );
    assert_eq!(files(&uploads(&agent)).len(), 1);

    // A short stream: the digest of what was sent does not make up for
    // the data bytes missing.
    let (kind, message) = host_err(by_hand(
        &mut c,
        "disks/short.img",
        (n, n),
        &chunks[..2],
        sha(&body[..2 * MAX_CHUNK]),
    ));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("data bytes"), "{message}");
    // A chunk that goes back is refused, and the end repeats the error.
    let (kind, message) = host_err(by_hand(
        &mut c,
        "disks/back.img",
        (n, n),
        &[chunks[1], chunks[0]],
        sha(&body),
    ));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("goes back"), "{message}");
    let id = c.last_id();
    assert_eq!(host_err(c.recv(id)).1, message);
    assert_eq!(files(&uploads(&agent)).len(), 1);

    // An upload abandoned for another request leaves nothing either; its
    // audit line records the bytes received.
    let before = files(&uploads(&agent));
    let r = c.call(Request::UploadStart {
        path: "images/short".into(),
        size: 10,
        data: 10,
        replace: false,
    });
    assert!(matches!(r, Ok(Response::UploadAck { received: 0, .. })));
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    assert_eq!(files(&uploads(&agent)), before);
    agent.wait_audit(&["admin Upload(images?short,size=0) aborted"]);
}

#[test]
fn the_first_form_with_the_digest_announced_is_still_served() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let body = data(300_000);
    let start = Request::Upload {
        path: "images/old.bin".into(),
        size: body.len() as u64,
        sha256: sha(&body),
        replace: false,
    };
    assert!(matches!(c.call(start).unwrap(), Response::UploadAck { .. }));
    let id = c.last_id();
    for (i, d) in body.chunks(100_000).enumerate() {
        let chunk = Request::UploadChunk {
            offset: (i * 100_000) as u64,
            data: d.to_vec(),
        };
        c.send_on(id, chunk).unwrap();
    }
    c.send_on(id, Request::UploadFinish).unwrap();
    loop {
        match c.recv(id).unwrap() {
            Response::UploadAck { .. } => {}
            Response::Ok => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(std::fs::read(uploads(&agent).join("images/old.bin")).unwrap() == body);
    agent.wait_audit(&["admin Upload(images?old.bin,size=300000) ok"]);
    // An UploadStart cannot end without its digest.
    let start = Request::UploadStart {
        path: "images/no-digest".into(),
        size: 0,
        data: 0,
        replace: false,
    };
    assert!(matches!(c.call(start).unwrap(), Response::UploadAck { .. }));
    let id = c.last_id();
    c.send_on(id, Request::UploadFinish).unwrap();
    let (kind, message) = host_err(c.recv(id));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("without its SHA-256"), "{message}");
    assert_eq!(files(&uploads(&agent)).len(), 1);
}

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    for bad in [
        "../escape",
        "images/../../escape",
        "/tmp/escape",
        "",
        "images/dir/",
    ] {
        let (kind, message) = refused_abc(&mut c, bad);
        assert_eq!(kind, ErrorCode::Invalid, "{bad}: {message}");
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
            "images/x.bin",
            3,
            &mut b"abc".as_slice(),
            MAX_CHUNK,
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Host {
            kind: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert_eq!(err.exit_code(), exit::NOT_AUTHORIZED);
    assert!(!uploads(&agent).join("images/x.bin").exists());
    agent.wait_audit(&[
        &reader.fingerprint().to_string(),
        "reader Upload(images?x.bin,size=3) refused",
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
    op.upload("images/x.bin", 3, &mut b"abc".as_slice(), 1, &mut |_| {})
        .unwrap();
    assert_eq!(
        std::fs::read(uploads(&agent).join("images/x.bin")).unwrap(),
        b"abc"
    );
    agent.wait_audit(&["operator Upload(images?x.bin,size=3) ok"]);
}

#[test]
fn keelctl_upload_command() {
    let agent = Agent::start();
    let config = temp_dir("xdg");
    let host = format!("127.0.0.1:{}", agent.handle.local_addr().port());
    let code = agent.handle.pairing_code().unwrap();
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
    assert_eq!(v["sent"], body.len() as u64);
    let hex: String = sha(&body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["sha256"], hex);
    assert!(std::fs::read(uploads(&agent).join("images/disk.img")).unwrap() == body);
    // A sparse file: its holes are not sent.
    let sparse = config.join("sparse.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &body[..1 << 20], 32 << 20).unwrap();
    drop(f);
    let out = run(&[
        "--host",
        &host,
        "--json",
        "upload",
        sparse.to_str().unwrap(),
        "images/sparse.img",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bytes"], 64 << 20);
    assert_eq!(v["sent"], 1 << 20);
    let landed = std::fs::read(uploads(&agent).join("images/sparse.img")).unwrap();
    assert!(landed == std::fs::read(&sparse).unwrap(), "content differs");
    // Not a terminal: no progress bar on stdout.
    let out = run(&[
        "--host",
        &host,
        "upload",
        local.to_str().unwrap(),
        "disks/copy.img",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "progress output leaked into stdout"
    );
    assert!(uploads(&agent).join("disks/copy.img").is_file());
    let out = run(&["--host", &host, "upload", local.to_str().unwrap(), "../x"]);
    assert_eq!(out.status.code(), Some(exit::HOST_ERROR));
    // Outside images/ and disks/: refused, with the reason on stderr.
    let out = run(&[
        "--host",
        &host,
        "upload",
        local.to_str().unwrap(),
        "copy.img",
    ]);
    assert_eq!(out.status.code(), Some(exit::HOST_ERROR));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("images/ or disks/"), "{stderr}");
    assert!(!uploads(&agent).join("copy.img").exists());
    let out = run(&["--host", &host, "upload", "/nonexistent/file", "images/y"]);
    assert_eq!(out.status.code(), Some(exit::LOCAL));
    let _ = std::fs::remove_dir_all(&config);
}

#[test]
fn paths_outside_images_and_disks_are_refused_and_create_nothing() {
    let dir = temp_dir("root");
    let root = dir.join("data");
    let agent = Agent::start_with("127.0.0.1:0", |cfg| cfg.upload_root = root.clone());
    let (_, mut c) = agent.admin();
    let (kind, message) = refused_abc(&mut c, "x.bin");
    assert_eq!(kind, ErrorCode::Invalid);
    assert_eq!(
        message,
        "Bad upload path \"x.bin\": it must start with images/ or disks/."
    );
    agent.wait_audit(&["admin Upload(x.bin,size=3) error"]);
    // The rest of the data partition is out of reach, and the two
    // directories themselves are not files to write.
    for bad in [
        "agent/authorized_keys",
        "guests/web1.toml",
        "host.toml",
        "images",
        "disks",
        "Images/vmlinux",
        "images.old/vmlinux",
    ] {
        let (kind, message) = refused_abc(&mut c, bad);
        assert_eq!(kind, ErrorCode::Invalid, "{bad}: {message}");
        assert!(message.contains("images/ or disks/"), "{bad}: {message}");
    }
    // Nothing was created: not even the upload root.
    assert!(!root.exists());
    assert_eq!(files(&dir), Vec::<String>::new());
    assert_eq!(files(&uploads(&agent)), Vec::<String>::new());
    // The session is still usable.
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn images_land_in_the_upload_root_as_guest_specs_name_them() {
    use std::os::unix::fs::PermissionsExt;
    // As in the appliance: the root is the data partition, where init has
    // already made images/ and disks/.
    let root = temp_dir("data-partition");
    for d in ["images", "disks"] {
        std::fs::create_dir(root.join(d)).unwrap();
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let agent = Agent::start_with("127.0.0.1:0", |cfg| cfg.upload_root = root.clone());
    let (_, mut c) = agent.admin();
    let kernel = data(70_000);
    put(&mut c, "images/vmlinux", &kernel).unwrap();
    assert!(std::fs::read(root.join("images/vmlinux")).unwrap() == kernel);
    let disk = data(4096);
    put(&mut c, "disks/web1/root.raw", &disk).unwrap();
    assert!(std::fs::read(root.join("disks/web1/root.raw")).unwrap() == disk);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Existing directories keep their mode; new ones get 0700.
    assert_eq!(mode(&root.join("images")), 0o755);
    assert_eq!(mode(&root.join("disks/web1")), 0o700);
    let mut got = files(&root);
    got.sort();
    assert_eq!(
        got,
        [
            root.join("disks/web1/root.raw").display().to_string(),
            root.join("images/vmlinux").display().to_string(),
        ]
    );
    // Nothing in the state directory's default root.
    assert!(!uploads(&agent).exists());
    agent.wait_audit(&["admin Upload(images?vmlinux,size=70000) ok"]);
    drop(agent);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_standalone_agent_uploads_below_state_dir_uploads() {
    let agent = Agent::start();
    assert_eq!(
        keel_mgmt::agent::AgentSettings::new(&agent.state).upload_root,
        agent.state.join("uploads")
    );
    let (_, mut c) = agent.admin();
    put(&mut c, "images/vmlinux", b"abc").unwrap();
    assert_eq!(
        std::fs::read(agent.state.join("uploads/images/vmlinux")).unwrap(),
        b"abc"
    );
    assert!(!agent.state.join("images").exists());
}
