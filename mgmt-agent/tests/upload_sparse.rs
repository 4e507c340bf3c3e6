//! Uploads of files from disk over loopback TCP: a sparse image sends
//! its data only and lands sparse with the same content; the SHA-256 is
//! computed while sending; a broken stream or a file that changes while
//! it is sent leaves nothing on the host.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use keel_mgmt::client::{data_extents, ClientError, UploadFile};
use keel_mgmt::messages::{MAX_CHUNK, UPLOAD_BLOCK};
use keel_mgmt::{Request, Response};
use ring::digest::{Context, SHA256};
use support::{allocated, noise, sparse_file, temp_dir, Agent, MIB};

fn uploads(agent: &Agent) -> PathBuf {
    agent.state.join("uploads")
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Waits until `dir` holds no file (the agent drops an abandoned upload
/// when it sees the connection end).
fn wait_empty(dir: &Path) {
    let until = Instant::now() + Duration::from_secs(20);
    while !files(dir).is_empty() {
        assert!(Instant::now() < until, "left behind: {:?}", files(dir));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The SHA-256 of a file read to its end.
fn sha_of(path: &Path) -> [u8; 32] {
    let mut f = File::open(path).unwrap();
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    ctx.finish().as_ref().try_into().unwrap()
}

#[test]
fn a_sparse_image_sends_its_data_and_lands_sparse() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let dir = temp_dir("sparse");
    let local = dir.join("disk.raw");
    let size = 2048 * MIB;
    // Aligned and not, and data close to the end with a hole after it.
    let pieces = [
        (0, noise(MIB as usize, 1)),
        (700 * MIB + 12345, noise(3 * MIB as usize, 2)),
        (1500 * MIB, noise(MIB as usize / 2, 3)),
        (size - 5000 - 100_000, noise(100_000, 4)),
    ];
    let written: u64 = pieces.iter().map(|p| p.1.len() as u64).sum();
    let want = sparse_file(&local, size, &pieces);
    assert!(
        allocated(&local) < 16 * MIB,
        "the test directory {} does not keep files sparse",
        dir.display()
    );
    let extents = data_extents(&File::open(&local).unwrap(), size).unwrap();
    assert_eq!(extents.len(), pieces.len(), "{extents:?}");
    for e in &extents {
        assert!(e.start % UPLOAD_BLOCK == 0 && (e.end % UPLOAD_BLOCK == 0 || e.end == size));
    }

    let target = UploadFile {
        remote: "disks/web1/root.raw",
        replace: false,
    };
    let mut last = 0;
    let done = c
        .upload_file(
            &target,
            &File::open(&local).unwrap(),
            MAX_CHUNK,
            &mut |at| {
                assert!(at >= last);
                last = at;
            },
        )
        .unwrap();
    assert_eq!(last, size);
    assert_eq!(done.size, size);
    assert_eq!(done.sha256, want);
    // The data, widened to 4 KiB blocks at each end of each piece.
    assert!(
        done.data >= written && done.data <= written + 2 * UPLOAD_BLOCK * pieces.len() as u64,
        "sent {} data bytes for {written}",
        done.data
    );
    assert!(
        done.wire > done.data && done.wire < 2 * done.data,
        "{} bytes on the wire for {} of data",
        done.wire,
        done.data
    );

    let landed = uploads(&agent).join("disks/web1/root.raw");
    assert_eq!(std::fs::metadata(&landed).unwrap().len(), size);
    assert_eq!(sha_of(&landed), want, "content differs");
    let on_disk = allocated(&landed);
    assert!(
        on_disk >= written && on_disk < 4 * done.data,
        "{on_disk} bytes allocated for {written} of data in {size}"
    );
    assert_eq!(files(&uploads(&agent)), [landed.display().to_string()]);
    agent.wait_audit(&[&format!("admin Upload(disks?web1?root.raw,size={size}) ok")]);

    // A file that is one hole sends nothing and still lands whole.
    let hole = dir.join("hole.raw");
    let want = sparse_file(&hole, 10 * MIB + 1, &[]);
    let target = UploadFile {
        remote: "disks/hole.raw",
        replace: false,
    };
    let done = c
        .upload_file(&target, &File::open(&hole).unwrap(), MAX_CHUNK, &mut |_| {})
        .unwrap();
    assert_eq!((done.data, done.wire, done.sha256), (0, 0, want));
    let landed = uploads(&agent).join("disks/hole.raw");
    assert_eq!(std::fs::metadata(&landed).unwrap().len(), 10 * MIB + 1);
    assert_eq!(allocated(&landed), 0);
    assert_eq!(sha_of(&landed), want);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_disconnect_mid_upload_leaves_no_file() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let start = Request::UploadStart {
        path: "images/cut.bin".into(),
        size: 64 * MIB,
        data: 8 * MIB,
        replace: false,
    };
    assert!(matches!(c.call(start).unwrap(), Response::UploadAck { .. }));
    let id = c.last_id();
    for i in 0..3u64 {
        let chunk = Request::UploadChunk {
            offset: i * 4 * MIB,
            data: noise(MAX_CHUNK, i),
        };
        c.send_on(id, chunk).unwrap();
    }
    // The temporary file exists while the upload is open ...
    let until = Instant::now() + Duration::from_secs(20);
    while files(&uploads(&agent)).is_empty() {
        assert!(Instant::now() < until, "no temporary file");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(files(&uploads(&agent))[0].ends_with(".tmp"));
    // ... and goes with the connection.
    drop(c);
    wait_empty(&uploads(&agent));
    agent.wait_audit(&[&format!(
        "admin Upload(images?cut.bin,size={}) aborted",
        3 * MAX_CHUNK
    )]);
}

/// Uploads `local` while `meddle` changes it (called at the first
/// progress report); returns the client's error.
fn meddled(local: &Path, meddle: impl Fn(&Path)) -> String {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let target = UploadFile {
        remote: "images/moving.bin",
        replace: false,
    };
    let mut first = true;
    let r = c.upload_file(&target, &File::open(local).unwrap(), MAX_CHUNK, &mut |_| {
        if std::mem::take(&mut first) {
            meddle(local);
        }
    });
    let message = match r {
        Err(ClientError::Local(m)) => m,
        other => panic!("expected a local error, got {other:?}"),
    };
    // Nothing lands, and the temporary file goes.
    wait_empty(&uploads(&agent));
    agent.wait_audit(&["admin Upload(images?moving.bin,size=", "aborted"]);
    message
}

#[test]
fn a_file_that_changes_during_its_upload_is_refused() {
    let dir = temp_dir("moving");
    let local = dir.join("moving.bin");
    let body = noise(8 * MIB as usize, 9);
    // Grows: seen when the data is all sent, before the digest is.
    std::fs::write(&local, &body).unwrap();
    let m = meddled(&local, |p| {
        let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all_at(&[1; 4096], 8 * MIB).unwrap();
    });
    assert!(m.contains("changed while it was being uploaded"), "{m}");
    assert!(
        m.contains(&format!(
            "{} bytes before, {} after",
            8 * MIB,
            8 * MIB + 4096
        )),
        "{m}"
    );
    assert!(m.contains("nothing was saved"), "{m}");
    // Shrinks: the reads run short (or, if they were done, as above).
    std::fs::write(&local, &body).unwrap();
    let m = meddled(&local, |p| {
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(0)
            .unwrap();
    });
    assert!(
        m.contains("shrank while it was being uploaded")
            || m.contains("changed while it was being uploaded"),
        "{m}"
    );
    // Changed in place, same size: the modification time moves.
    std::fs::write(&local, &body).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&local)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let m = meddled(&local, |p| {
        let f = File::options().write(true).open(p).unwrap();
        f.write_all_at(b"x", 5 * MIB).unwrap();
    });
    assert!(
        m.contains(&format!("{0} bytes before, {0} after", 8 * MIB)),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
