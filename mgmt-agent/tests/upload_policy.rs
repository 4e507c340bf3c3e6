//! What an upload may not do, over real TCP: replace a file a defined
//! guest uses (unless an admin asks, with the guest stopped), eat the
//! host's reserve of free space, or leave its temporary file behind an
//! interrupted agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use keel_mgmt::client::{Client, ClientError};
use keel_mgmt::messages::{ErrorCode, MAX_CHUNK};
use keel_mgmt::{Request, Response, Role};
use support::{keelctl, put, temp_dir, Agent, Guests};

const SPEC: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n\
                    [[disk]]\npath = \"disks/web1.img\"\n";

fn host_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Host { kind, message }) => (kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn with_role(agent: &Agent, admin: &mut Client, role: Role) -> Client {
    let key = agent.new_key(admin, role);
    agent.connect(&key, None).unwrap()
}

/// Every file below `dir`, hidden ones included, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_file_a_guest_uses_is_replaced_only_by_an_admin_asking_while_it_is_stopped() {
    let agent = Agent::start_with_guests(Guests {
        vmm_script: Some("exec sleep 600".into()),
        ..Guests::default()
    });
    let uploads = agent.state.join("uploads");
    let (_, mut admin) = agent.admin();
    // Nobody uses it yet: uploaded freely, twice.
    put(&mut admin, "disks/web1.img", b"v0").unwrap();
    put(&mut admin, "disks/web1.img", b"v1").unwrap();
    std::fs::create_dir_all(agent.data.join("disks")).unwrap();
    std::fs::write(agent.data.join("disks/web1.img"), b"disk").unwrap();
    let define = Request::GuestDefine {
        spec_toml: SPEC.into(),
    };
    assert_eq!(admin.call(define).unwrap(), Response::Ok);

    // Now it is web1's: refused without --replace, to anyone.
    let mut operator = with_role(&agent, &mut admin, Role::Operator);
    for c in [&mut admin, &mut operator] {
        let (kind, message) = host_err(put(c, "disks/web1.img", b"evil"));
        assert_eq!(kind, ErrorCode::Conflict, "{message}");
        assert!(
            message.contains("web1") && message.contains("--replace"),
            "{message}"
        );
    }
    let other = put(&mut operator, "disks/other.img", b"ok");
    assert!(other.is_ok(), "{other:?}");
    assert_eq!(
        std::fs::read(uploads.join("disks/web1.img")).unwrap(),
        b"v1"
    );
    assert_eq!(files(&uploads), ["disks/other.img", "disks/web1.img"]);

    // An admin's keelctl with --replace, while web1 is stopped.
    let config = temp_dir("xdg-admin");
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(&config, &["keygen"]).status.success());
    let key = keel_mgmt::PublicKey::parse(
        String::from_utf8(keelctl(&config, &["key", "show"]).stdout)
            .unwrap()
            .trim(),
    )
    .unwrap();
    let add = Request::AuthorizeKey {
        role: Role::Admin,
        public_key: key.0,
        comment: "keelctl".into(),
    };
    assert_eq!(admin.call(add).unwrap(), Response::Ok);
    assert!(keelctl(&config, &["trust", &host]).status.success());
    let local = config.join("v2.img");
    std::fs::write(&local, b"v2").unwrap();
    let local = local.to_str().unwrap();
    let replace = [
        "--host",
        &host,
        "upload",
        "--replace",
        local,
        "disks/web1.img",
    ];
    let out = keelctl(&config, &replace);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(uploads.join("disks/web1.img")).unwrap(),
        b"v2"
    );

    // An operator may not, even asking.
    let target = keel_mgmt::client::UploadFile {
        remote: "disks/web1.img",
        replace: true,
    };
    let evil = config.join("evil.img");
    std::fs::write(&evil, b"evil").unwrap();
    let evil = std::fs::File::open(&evil).unwrap();
    let r = operator.upload_file(&target, &evil, MAX_CHUNK, &mut |_| {});
    assert_eq!(host_err(r).0, ErrorCode::Unauthorized);

    // Never while web1 runs.
    let start = Request::GuestStart {
        name: "web1".into(),
    };
    assert_eq!(admin.call(start).unwrap(), Response::Ok);
    let out = keelctl(&config, &replace);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(uploads.join("disks/web1.img")).unwrap(),
        b"v2"
    );
    assert_eq!(files(&uploads), ["disks/other.img", "disks/web1.img"]);
    let kill = Request::GuestKill {
        name: "web1".into(),
    };
    assert_eq!(admin.call(kill).unwrap(), Response::Ok);
    std::fs::remove_dir_all(&config).unwrap();
}

/// Bytes available to unprivileged users below `dir`.
fn available(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn an_upload_past_the_free_space_reserve_is_refused_before_any_byte() {
    let probe: PathBuf = std::env::temp_dir();
    // Leave the upload 1 MiB of room beyond the reserve: 4 MiB do not fit.
    let reserve = available(&probe).saturating_sub(1 << 20);
    let agent = Agent::start_with("127.0.0.1:0", |s| s.upload_reserve = Some(reserve));
    let (_, mut c) = agent.admin();
    let body = vec![7u8; 4 << 20];
    let (kind, message) = host_err(put(&mut c, "images/big.img", &body));
    assert_eq!(kind, ErrorCode::Conflict, "{message}");
    assert!(
        message.contains("free space") && message.contains(&format!("{}", body.len())),
        "{message}"
    );
    assert_eq!(files(&agent.state.join("uploads")), Vec::<String>::new());
    agent.wait_audit(&["Upload(images?big.img,size=4194304) error"]);
    // A small one still fits.
    put(&mut c, "images/small.img", b"small").unwrap();
}

#[test]
fn a_sparse_upload_needs_room_for_its_data_not_its_length() {
    let dir = temp_dir("sparse-room");
    let probe: PathBuf = std::env::temp_dir();
    // Room for 8 MiB beyond the reserve.
    let reserve = available(&probe).saturating_sub(8 << 20);
    let agent = Agent::start_with("127.0.0.1:0", |s| s.upload_reserve = Some(reserve));
    let (_, mut c) = agent.admin();
    // 256 MiB long, 2 MiB of data: fits.
    let sparse = dir.join("sparse.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(256 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 1 << 20], 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[8u8; 1 << 20], 200 << 20).unwrap();
    f.sync_all().unwrap();
    let target = keel_mgmt::client::UploadFile {
        remote: "images/sparse.img",
        replace: false,
    };
    let f = std::fs::File::open(&sparse).unwrap();
    let done = c.upload_file(&target, &f, MAX_CHUNK, &mut |_| {}).unwrap();
    assert_eq!((done.size, done.data), (256 << 20, 2 << 20));
    // 16 MiB of data, however long, does not.
    let dense = dir.join("dense.img");
    std::fs::write(&dense, vec![9u8; 16 << 20]).unwrap();
    let target = keel_mgmt::client::UploadFile {
        remote: "images/dense.img",
        replace: false,
    };
    let f = std::fs::File::open(&dense).unwrap();
    let (kind, message) = host_err(c.upload_file(&target, &f, MAX_CHUNK, &mut |_| {}));
    assert_eq!(kind, ErrorCode::Conflict, "{message}");
    assert!(message.contains("16777216 bytes of data"), "{message}");
    assert_eq!(files(&agent.state.join("uploads")), ["images/sparse.img"]);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn temporary_files_of_interrupted_uploads_are_swept_at_start() {
    let left = [
        "images/.vmlinux.upload-0123456789abcdef.tmp",
        "disks/web/.root.img.upload-fedcba9876543210.tmp",
    ];
    let kept = ["images/vmlinux", "images/notes.tmp", "disks/web/root.img"];
    let agent = Agent::start_with("127.0.0.1:0", |s| {
        for f in left.iter().chain(&kept) {
            let path = s.upload_root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
    });
    let mut want: Vec<String> = kept.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(files(&agent.state.join("uploads")), want);
    let (_, mut c) = agent.admin();
    let log = c
        .call(Request::Logs {
            guest: None,
            tail: 100,
            follow: false,
        })
        .unwrap();
    let Response::LogLines(lines) = log else {
        panic!("{log:?}");
    };
    assert!(
        lines
            .iter()
            .any(|l| l.contains(".vmlinux.upload-0123456789abcdef.tmp")),
        "{lines:?}"
    );
}
