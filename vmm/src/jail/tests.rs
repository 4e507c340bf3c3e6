use super::*;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::PathBuf;
use std::process::Command;

/// Set in a re-executed test binary to the scenario it must run.
const CHILD: &str = "KEEL_JAIL_TEST_CHILD";
/// Where the privilege-drop child puts a file only root may read.
const SECRET: &str = "KEEL_JAIL_TEST_SECRET";

/// Runs test `name` of this binary in a fresh process with `CHILD` set
/// to `scenario`; panics with its output unless it exits 0.
fn run_child(name: &str, scenario: &str) {
    run_child_with(name, scenario, None);
}

fn run_child_with(name: &str, scenario: &str, secret: Option<&std::path::Path>) {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .env_remove("RUST_BACKTRACE");
    if let Some(secret) = secret {
        cmd.env(SECRET, secret);
    }
    let out = cmd.output().expect("run the child");
    assert!(
        out.status.success(),
        "child {scenario}: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scenario() -> Option<String> {
    std::env::var(CHILD).ok()
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: a live two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// In the child: opens descriptors, keeps some, closes the rest and
/// checks what is left.
fn close_scenario(use_close_range: bool, with_proc: bool) {
    let (a, b) = pipe();
    let (c, d) = pipe();
    let file = std::fs::File::open("/dev/null")
        .expect("open")
        .into_raw_fd();
    // A descriptor far above the others: the last gap must reach it.
    // SAFETY: duplicating a descriptor we own to a free number.
    let high = unsafe { libc::dup2(a, 900) };
    assert_eq!(high, 900);
    let keep = [b, file, 1, b];
    let before: Vec<RawFd> = fds_from_proc().expect("/proc");
    let expected = before
        .iter()
        .filter(|&&fd| fd > 2 && fd != b && fd != file)
        .count();
    assert!(expected >= 4, "{before:?}");
    let listed = if with_proc { fds_from_proc() } else { None };
    let closed = close_fds(&keep, use_close_range, listed).expect("close");
    assert_eq!(closed, expected);
    for fd in [a, c, d, high] {
        assert!(!is_open(fd), "{fd} still open");
    }
    for fd in [0, 1, 2, b, file] {
        assert!(is_open(fd), "{fd} closed");
    }
    let mut after = fds_from_proc().expect("/proc");
    after.sort_unstable();
    let mut wanted = vec![0, 1, 2, b, file];
    wanted.sort_unstable();
    assert_eq!(after, wanted);
}

#[test]
fn close_inherited_fds_keeps_only_what_it_is_told() {
    match scenario().as_deref() {
        Some("public") => {
            let (a, b) = pipe();
            let closed = close_inherited_fds(&[b]).expect("close");
            assert!(closed >= 1);
            assert!(!is_open(a) && is_open(b));
            let mut after = fds_from_proc().expect("/proc");
            after.sort_unstable();
            assert_eq!(after, vec![0, 1, 2, b]);
            // Nothing left to close.
            assert_eq!(close_inherited_fds(&[b]).expect("again"), 0);
            std::process::exit(0);
        }
        Some("close_range") => {
            close_scenario(true, true);
            std::process::exit(0);
        }
        Some("one_by_one") => {
            close_scenario(false, true);
            std::process::exit(0);
        }
        Some("probing") => {
            close_scenario(false, false);
            std::process::exit(0);
        }
        Some(other) => panic!("unknown scenario {other}"),
        None => {
            let name = "jail::tests::close_inherited_fds_keeps_only_what_it_is_told";
            for s in ["public", "close_range", "one_by_one", "probing"] {
                run_child(name, s);
            }
        }
    }
}

#[test]
fn probing_finds_what_proc_lists() {
    // Other tests open and close descriptors concurrently: compare in
    // a child.
    match scenario().as_deref() {
        Some("probe") => {
            let (_a, _b) = pipe();
            let mut listed = fds_from_proc().expect("/proc");
            listed.sort_unstable();
            assert_eq!(fds_by_probing(), listed);
            std::process::exit(0);
        }
        Some(other) => panic!("unknown scenario {other}"),
        None => run_child("jail::tests::probing_finds_what_proc_lists", "probe"),
    }
}

#[test]
fn drop_privileges_cannot_be_undone() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    match scenario().as_deref() {
        Some("drop") => {
            let secret = PathBuf::from(std::env::var_os(SECRET).expect("secret path"));
            std::fs::write(&secret, b"root only").expect("write");
            std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
            drop_privileges(65534, 65534).expect("drop");

            // SAFETY: no arguments.
            unsafe {
                assert_eq!(libc::getuid(), 65534);
                assert_eq!(libc::geteuid(), 65534);
                assert_eq!(libc::getgid(), 65534);
                assert_eq!(libc::getegid(), 65534);
                assert_eq!(libc::setuid(0), -1);
                assert_eq!(libc::seteuid(0), -1);
                assert_eq!(libc::setresuid(0, 0, 0), -1);
                assert_eq!(libc::setgid(0), -1);
                assert_eq!(libc::setgroups(0, std::ptr::null()), -1);
            }
            assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
            assert_eq!(capabilities().expect("capget"), [0; 4]);
            let err = std::fs::read(&secret).expect_err("root's file is readable");
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            // Other threads were changed too (glibc's setxid broadcast).
            // SAFETY: geteuid has no preconditions.
            let other = std::thread::spawn(|| unsafe { libc::geteuid() })
                .join()
                .expect("thread");
            assert_eq!(other, 65534);
            std::process::exit(0);
        }
        Some(other) => panic!("unknown scenario {other}"),
        None => {
            let secret =
                std::env::temp_dir().join(format!("keel-jail-{}-secret", std::process::id()));
            let result = std::panic::catch_unwind(|| {
                run_child_with(
                    "jail::tests::drop_privileges_cannot_be_undone",
                    "drop",
                    Some(&secret),
                )
            });
            let _ = std::fs::remove_file(&secret);
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

#[test]
fn dropping_to_root_is_refused_without_changing_anything() {
    // SAFETY: no arguments.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let err = drop_privileges(0, 0).expect_err("uid 0 accepted");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // SAFETY: no arguments.
    assert_eq!(unsafe { (libc::getuid(), libc::geteuid()) }, (uid, euid));
}

#[test]
fn no_new_privs_is_set_on_the_calling_thread_and_inherited() {
    // In a thread of its own: the flag stays with that thread.
    std::thread::spawn(|| {
        set_no_new_privs().expect("set");
        assert!(no_new_privs().expect("get"));
        let child = std::thread::spawn(|| no_new_privs().expect("get"))
            .join()
            .expect("thread");
        assert!(child, "not inherited by a new thread");
        // Setting it twice is fine.
        set_no_new_privs().expect("again");
    })
    .join()
    .expect("thread");
}

#[test]
fn is_open_tells_open_from_closed() {
    let file = std::fs::File::open("/dev/null").expect("open");
    assert!(is_open(file.as_raw_fd()));
    assert!(!is_open(-1));
}
