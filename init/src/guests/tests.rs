//! The manager's life-cycle rules, with real child processes standing in
//! for keel-vmm (a shell script that exits as the real one would): the
//! rules are init's, whatever runs the guest.

use super::*;
use std::os::unix::fs::PermissionsExt;

use nix::sys::wait::waitpid;

struct Fixture {
    dir: tempfile::TempDir,
    manager: GuestManager,
}

const SPEC: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

/// A manager whose "VMM" runs `script` (sh).
fn fixture(script: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).expect("mkdir");
    std::fs::write(data.join("images/vmlinux"), b"kernel").expect("kernel");
    let vmm = dir.path().join("fake-vmm");
    std::fs::write(&vmm, format!("#!/bin/sh\n{script}\n")).expect("script");
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let paths = Paths {
        data,
        sockets: dir.path().join("vm"),
        vmm,
        cgroup: None,
        drop_privileges: false,
        console_to_host: false,
        bridge: None,
        agent_port: 8443,
    };
    Fixture {
        manager: GuestManager::load(paths),
        dir,
    }
}

/// The spec with `restart = policy` placed before the [boot] table.
fn spec_with(policy: &str) -> String {
    SPEC.replace("[boot]", &format!("restart = \"{policy}\"\n[boot]"))
}

fn reap(m: &mut GuestManager, name: &str) -> WaitStatus {
    let pid = m.show(name).expect("show").pid.expect("running") as i32;
    let status = waitpid(Pid::from_raw(pid), None).expect("waitpid");
    assert!(m.reaped(&status), "the VMM's exit is the manager's");
    status
}

#[test]
fn a_bad_spec_is_refused_and_nothing_is_written() {
    let mut f = fixture("exit 0");
    let (kind, message) = f
        .manager
        .define(&SPEC.replace("vcpus = 1", "vcpus = 0"))
        .expect_err("vcpus = 0");
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(
        message.contains("guests/web1.toml:2: field `vcpus`"),
        "{message}"
    );
    assert!(!f.dir.path().join("data/guests/web1.toml").exists());
    assert!(f.manager.list().is_empty());
}

#[test]
fn definitions_are_stored_and_survive_a_reload() {
    let mut f = fixture("exit 0");
    assert_eq!(f.manager.define(SPEC).expect("define"), "web1");
    let file = f.dir.path().join("data/guests/web1.toml");
    assert_eq!(std::fs::read_to_string(&file).expect("stored"), SPEC);
    let again = GuestManager::load(f.manager.paths().clone());
    let status = again.show("web1").expect("reloaded");
    assert_eq!((status.state, status.vcpus), (GuestState::Stopped, 1));
    // A file whose name differs from the guest's is skipped, not fatal.
    std::fs::write(f.dir.path().join("data/guests/other.toml"), SPEC).expect("write");
    let again = GuestManager::load(f.manager.paths().clone());
    assert_eq!(again.list().len(), 1);
    f.manager.undefine("web1").expect("undefine");
    assert!(!file.exists());
}

#[test]
fn a_crash_is_restarted_with_backoff_under_on_failure() {
    let mut f = fixture("exit 4");
    f.manager.define(&spec_with("on-failure")).expect("define");
    f.manager.start("web1").expect("start");
    assert_eq!(
        f.manager.show("web1").expect("show").state,
        GuestState::Running
    );
    reap(&mut f.manager, "web1");
    let s = f.manager.show("web1").expect("show");
    assert_eq!(s.state, GuestState::Restarting);
    assert_eq!(s.restarts, 1);
    assert_eq!(
        s.last_exit.as_deref(),
        Some("crashed (a guest panic or a CPU fault, status 4)")
    );
    let wait = f.manager.tick().expect("a restart is pending");
    assert!(wait <= crate::supervisor::BACKOFF_MIN);
    std::thread::sleep(wait);
    f.manager.tick();
    assert_eq!(
        f.manager.show("web1").expect("show").state,
        GuestState::Running
    );
    reap(&mut f.manager, "web1");
    // The second backoff is longer.
    let wait = f.manager.tick().expect("pending");
    assert!(wait > crate::supervisor::BACKOFF_MIN, "{wait:?}");
    // A stop cancels the pending restart.
    f.manager
        .request_stop("web1", Duration::from_secs(1))
        .expect("stop");
    assert_eq!(
        f.manager.show("web1").expect("show").state,
        GuestState::Stopped
    );
    assert_eq!(f.manager.tick(), None);
}

#[test]
fn policies_decide_what_follows_each_exit() {
    for (policy, script, state) in [
        ("never", "exit 4", GuestState::Crashed),
        ("on-failure", "exit 0", GuestState::Stopped),
        ("always", "exit 0", GuestState::Restarting),
        ("never", "exit 3", GuestState::Stopped),
        ("on-failure", "exit 3", GuestState::Restarting),
        ("on-failure", "kill -9 $$", GuestState::Restarting),
    ] {
        let mut f = fixture(script);
        f.manager.define(&spec_with(policy)).expect("define");
        f.manager.start("web1").expect("start");
        reap(&mut f.manager, "web1");
        let s = f.manager.show("web1").expect("show");
        assert_eq!(
            s.state, state,
            "{policy} after `{script}`: {:?}",
            s.last_exit
        );
    }
}

#[test]
fn a_guest_that_ignores_stop_is_killed_after_the_timeout() {
    let mut f = fixture("exec sleep 30");
    f.manager.define(SPEC).expect("define");
    f.manager.start("web1").expect("start");
    let (kind, _) = f.manager.start("web1").expect_err("already running");
    assert_eq!(kind, ErrorCode::Conflict);
    let (kind, _) = f.manager.undefine("web1").expect_err("running");
    assert_eq!(kind, ErrorCode::Conflict);
    // No VMM socket answers: the stop request cannot be delivered, and
    // the kill timer ends the guest.
    f.manager
        .request_stop("web1", Duration::from_millis(100))
        .expect("stop");
    assert_eq!(
        f.manager.show("web1").expect("show").state,
        GuestState::Stopping
    );
    std::thread::sleep(Duration::from_millis(150));
    f.manager.tick();
    let status = reap(&mut f.manager, "web1");
    assert!(matches!(
        status,
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    let s = f.manager.show("web1").expect("show");
    assert_eq!(
        s.state,
        GuestState::Stopped,
        "a requested stop is never restarted"
    );
    assert_eq!(s.pid, None);
}

#[test]
fn a_vmm_that_never_answers_holds_up_neither_the_call_nor_the_lock() {
    let mut f = fixture("exec sleep 30");
    f.manager.define(SPEC).expect("define");
    f.manager.start("web1").expect("start");
    // The VMM's socket accepts (the backlog does) and never answers.
    let socket = f.manager.paths().socket("web1");
    let wedged = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let started = Instant::now();
    let e = vmm_request_within(&socket, &VmmRequest::Info, Duration::from_millis(300))
        .expect_err("no answer");
    assert!(e.contains("Timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A peer trickling its answer a byte at a time does not stretch the
    // exchange.
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        // The first caller's connection, given up on above.
        drop(wedged.accept().expect("accept"));
        let (mut peer, _) = wedged.accept().expect("accept");
        peer.write_all(&[0, 0, 0, 64]).expect("header");
        for _ in 0..30 {
            if peer.write_all(b"\0").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wedged
    });
    let started = Instant::now();
    vmm_request_within(&socket, &VmmRequest::Info, Duration::from_millis(300))
        .expect_err("no whole answer");
    assert!(started.elapsed() < Duration::from_millis(900));
    let _wedged = trickle.join().expect("trickle");

    // A stop's shutdown request waits under the lock for no VMM.
    let shared = Shared::new(f.manager);
    let started = Instant::now();
    shared
        .lock()
        .request_stop("web1", Duration::from_secs(30))
        .expect("stop");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        shared.lock().show("web1").expect("show").state,
        GuestState::Stopping
    );
    shared.lock().kill("web1").expect("kill");
    reap(&mut shared.lock(), "web1");
}

#[test]
fn host_shutdown_stops_newest_first_and_blocks_starts() {
    let mut f = fixture("exec sleep 30");
    for name in ["b", "a", "c"] {
        f.manager
            .define(&SPEC.replace("web1", name))
            .expect("define");
    }
    for name in ["b", "a", "c"] {
        f.manager.start(name).expect("start");
    }
    let order: Vec<String> = f
        .manager
        .begin_host_shutdown()
        .into_iter()
        .map(|(n, pid)| {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            n
        })
        .collect();
    assert_eq!(order, ["c", "a", "b"]);
    let (kind, _) = f.manager.start("a").expect_err("shutting down");
    assert_eq!(kind, ErrorCode::Unavailable);
    for name in ["a", "b", "c"] {
        reap(&mut f.manager, name);
        assert_eq!(
            f.manager.show(name).expect("show").state,
            GuestState::Stopped
        );
    }
}

#[test]
fn console_log_tails_span_the_rotated_copy() {
    let mut f = fixture("exit 0");
    f.manager.define(SPEC).expect("define");
    let dir = f.manager.paths().logs().join("web1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("console.log.1"), b"older\n").expect("write");
    std::fs::write(dir.join("console.log"), b"newer\n").expect("write");
    assert_eq!(
        f.manager.console_log("web1", 1024).expect("log"),
        b"older\nnewer\n"
    );
    assert_eq!(f.manager.console_log("web1", 6).expect("log"), b"newer\n");
    assert_eq!(
        f.manager.console_log("nope", 6).expect_err("unknown").0,
        ErrorCode::NotFound
    );
}

#[test]
fn exits_are_classified_as_keel_vmm_reports_them() {
    let pid = Pid::from_raw(1);
    assert_eq!(classify(&WaitStatus::Exited(pid, 0)).0, VmmEnd::PowerOff);
    assert_eq!(classify(&WaitStatus::Exited(pid, 3)).0, VmmEnd::Reboot);
    for code in [1, 2, 4, 5] {
        assert_eq!(classify(&WaitStatus::Exited(pid, code)).0, VmmEnd::Failure);
    }
    // Nothing to boot on the disks is not retried under any policy: the
    // next try would find the same disks.
    let (end, description) = classify(&WaitStatus::Exited(pid, 6));
    assert_eq!(end, VmmEnd::NothingToBoot);
    assert!(description.contains("nothing bootable"), "{description}");
    for policy in [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ] {
        assert!(!should_restart(policy, end), "{policy}");
    }
    assert_eq!(
        classify(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)).1,
        "VMM killed by SIGKILL"
    );
}

#[test]
fn guest_consoles_reach_the_host_console_only_when_configured() {
    let f = fixture("echo \"$@\" > \"$(dirname \"$0\")/args\"");
    let args_file = f.dir.path().join("args");
    for to_host in [false, true] {
        let mut paths = f.manager.paths().clone();
        paths.console_to_host = to_host;
        let mut m = GuestManager::load(paths);
        if to_host {
            m.start("web1").expect("start");
        } else {
            m.define(SPEC).expect("define");
            m.start("web1").expect("start");
        }
        reap(&mut m, "web1");
        let args = std::fs::read_to_string(&args_file).expect("the VMM's arguments");
        assert!(args.contains("--console-log"), "{args}");
        assert_eq!(args.contains("--console-stdio"), to_host, "{args}");
        // host.toml's agent port, for the VMM to keep the guest off it.
        assert!(args.contains("--agent-port 8443"), "{args}");
    }
}

#[test]
fn host_shutdown_waits_for_each_guest_and_kills_one_that_hangs() {
    // "quick" powers off by itself; "hung" never answers (it serves no API
    // socket) and outlives the timeout.
    let f = fixture("case \"$*\" in *quick*) sleep 0.1; exit 0;; esac\nexec sleep 30");
    let Fixture {
        dir: _dir,
        mut manager,
    } = f;
    for name in ["quick", "hung"] {
        manager.define(&SPEC.replace("web1", name)).expect("define");
        manager.start(name).expect("start");
    }
    let shared = Shared::new(manager);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    stop_all_for_shutdown(&shared, timeout);
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    let m = shared.lock();
    assert_eq!(m.running(), 0, "every VMM is reaped before the sweep");
    let quick = m.show("quick").expect("show");
    assert_eq!(quick.state, GuestState::Stopped);
    assert_eq!(quick.last_exit.as_deref(), Some("powered off"));
    let hung = m.show("hung").expect("show");
    assert_eq!(hung.state, GuestState::Stopped);
    assert_eq!(hung.last_exit.as_deref(), Some("VMM killed by SIGKILL"));
}

#[test]
fn defined_guests_get_distinct_uids_that_survive_a_reload() {
    let mut f = fixture("exit 0");
    for name in ["app1", "app180"] {
        f.manager
            .define(&SPEC.replace("web1", name))
            .expect("define");
    }
    let (a, b) = (f.manager.uids.get("app1"), f.manager.uids.get("app180"));
    assert!(a.is_some() && a != b, "{a:?} {b:?}");
    let again = GuestManager::load(f.manager.paths().clone());
    assert_eq!((again.uids.get("app1"), again.uids.get("app180")), (a, b));
}

/// A "VMM" that appends to the console log it is given.
const APPEND_TO_LOG: &str = "echo pwned >> \"$8\"";

#[test]
fn a_planted_log_link_is_neither_followed_by_the_vmm_nor_read_back() {
    let mut f = fixture(APPEND_TO_LOG);
    f.manager.define(SPEC).expect("define");
    let secret = f.dir.path().join("secret");
    std::fs::write(&secret, "SECRET\n").expect("secret");
    let dir = f.manager.paths().logs().join("web1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for log in logdir::LOG_FILES {
        std::os::unix::fs::symlink(&secret, dir.join(log)).expect("symlink");
    }
    assert!(f.manager.console_log("web1", 1024).expect("log").is_empty());

    f.manager.start("web1").expect("start");
    reap(&mut f.manager, "web1");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "SECRET\n"
    );
    let log = dir.join("console.log");
    assert!(log.symlink_metadata().expect("log").is_file());
    assert_eq!(
        f.manager.console_log("web1", 1024).expect("log"),
        b"pwned\n"
    );
}

#[test]
fn a_log_directory_that_is_a_link_is_refused() {
    let mut f = fixture(APPEND_TO_LOG);
    f.manager.define(SPEC).expect("define");
    let elsewhere = f.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join("console.log"), "SECRET\n").expect("write");
    let logs = f.manager.paths().logs();
    std::fs::create_dir_all(&logs).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, logs.join("web1")).expect("symlink");

    let (_, message) = f.manager.start("web1").expect_err("a linked log directory");
    assert!(message.contains("symbolic links are refused"), "{message}");
    assert!(f.manager.is_down("web1"));
    let target = std::fs::read_to_string(elsewhere.join("console.log")).expect("target");
    assert_eq!(target, "SECRET\n");
    assert!(f.manager.console_log("web1", 1024).expect("log").is_empty());
}

#[test]
fn two_guests_cannot_be_defined_on_one_writable_disk() {
    let f = fixture("exit 0");
    let disks = f.dir.path().join("data/disks");
    std::fs::create_dir_all(&disks).expect("mkdir");
    for img in ["a.img", "ro.img"] {
        std::fs::write(disks.join(img), b"disk").expect("image");
    }
    std::fs::hard_link(disks.join("a.img"), disks.join("a-link.img")).expect("link");
    let control = crate::control::Control {
        shared: std::sync::Arc::new(Shared::new(f.manager)),
        host_action: std::sync::Arc::new(|_| {}),
        stop_timeout: Duration::from_secs(1),
    };
    let define = |name: &str, disk: &str, read_only: bool| {
        let spec = format!(
            "{}[[disk]]\npath = \"disks/{disk}\"\nread_only = {read_only}\n",
            SPEC.replace("web1", name)
        );
        crate::control::answer(
            &control,
            keel_common::init_api::InitRequest::GuestDefine { spec_toml: spec },
        )
    };
    let refused = |response: keel_common::init_api::InitResponse| match response {
        keel_common::init_api::InitResponse::Error { kind, message } => {
            assert_eq!(kind, ErrorCode::Conflict, "{message}");
            message
        }
        other => panic!("defined: {other:?}"),
    };

    assert!(matches!(
        define("web1", "a.img", false),
        keel_common::init_api::InitResponse::Ok
    ));
    // The same inode under another name, written or only read.
    let message = refused(define("web2", "a-link.img", false));
    assert!(
        message.contains("guests/web2.toml:7: field `disk[0].path`"),
        "{message}"
    );
    assert!(message.contains("guest \"web1\""), "{message}");
    refused(define("web3", "a.img", true));
    assert!(!f.dir.path().join("data/guests/web2.toml").exists());
    // Read-only sharing stays allowed; writing a shared read-only disk does not.
    assert!(matches!(
        define("ro1", "ro.img", true),
        keel_common::init_api::InitResponse::Ok
    ));
    assert!(matches!(
        define("ro2", "ro.img", true),
        keel_common::init_api::InitResponse::Ok
    ));
    refused(define("rw3", "ro.img", false));
    // A guest may be redefined on its own disk.
    assert!(matches!(
        define("web1", "a-link.img", false),
        keel_common::init_api::InitResponse::Ok
    ));
}

#[test]
fn a_guest_does_not_start_on_a_disk_a_running_guest_writes() {
    let mut f = fixture("exec sleep 10");
    let disks = f.dir.path().join("data/disks");
    std::fs::create_dir_all(&disks).expect("mkdir");
    std::fs::write(disks.join("a.img"), b"disk").expect("image");
    std::fs::write(disks.join("b.img"), b"disk").expect("image");
    let with_disk = |name: &str, disk: &str| {
        format!(
            "{}[[disk]]\npath = \"disks/{disk}\"\n",
            SPEC.replace("web1", name)
        )
    };
    f.manager.define(&with_disk("web1", "a.img")).expect("web1");
    f.manager.define(&with_disk("web2", "b.img")).expect("web2");
    f.manager.start("web1").expect("start web1");
    // b.img becomes a.img after both were defined.
    std::fs::remove_file(disks.join("b.img")).expect("rm");
    std::fs::hard_link(disks.join("a.img"), disks.join("b.img")).expect("link");
    let (kind, message) = f.manager.start("web2").expect_err("a shared disk");
    assert_eq!(kind, ErrorCode::Conflict, "{message}");
    assert!(f.manager.is_down("web2"));
    f.manager.kill("web1").expect("kill");
    reap(&mut f.manager, "web1");
}

#[test]
fn a_vsock_guest_restarts_after_its_vmm_was_killed() {
    // Like keel-vmm, whose bind fails on a leftover socket; $4 is the
    // data directory (--base-dir).
    let mut f = fixture("[ -e \"$4/vsock/web1.sock\" ] && exit 1\nexec sleep 10");
    std::fs::create_dir_all(f.manager.paths().data.join("vsock")).expect("mkdir");
    let spec = spec_with("on-failure")
        .replace("[boot]", "[vsock]\nuds_path = \"vsock/web1.sock\"\n[boot]");
    let sock = f.manager.paths().data.join("vsock/web1.sock");
    f.manager.define(&spec).expect("define");
    f.manager.start("web1").expect("start");
    // The running VMM's socket, left behind when it is killed.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let pid = f.manager.show("web1").expect("show").pid.expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    reap(&mut f.manager, "web1");
    assert_eq!(
        f.manager.show("web1").expect("show").state,
        GuestState::Restarting
    );

    std::thread::sleep(crate::supervisor::BACKOFF_MIN);
    f.manager.tick();
    assert!(!sock.exists(), "the stale socket is gone");
    std::thread::sleep(Duration::from_millis(300));
    let status = f.manager.show("web1").expect("show");
    assert_eq!(status.state, GuestState::Running, "{status:?}");
    let pid = status.pid.expect("pid") as i32;
    assert!(
        waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG)
        )
        .is_ok_and(|s| s == WaitStatus::StillAlive),
        "the second VMM did not bind-fail"
    );
    f.manager.kill("web1").expect("kill");
    reap(&mut f.manager, "web1");
}

#[test]
fn a_cloud_init_guest_gets_its_seed_before_its_vmm_starts() {
    // The "VMM" keeps a copy of the seed as it finds it at its start.
    let f = fixture(
        "while [ \"$1\" != --base-dir ]; do shift; done\n\
         cp \"$2/cloud-init/web1.img\" \"$(dirname \"$0\")/seen.img\"",
    );
    let mut m = GuestManager::load(f.manager.paths().clone());
    let seen = f.dir.path().join("seen.img");
    let image = f.dir.path().join("data/cloud-init/web1.img");
    let spec = format!("{SPEC}[cloud_init]\nhostname = \"first\"\n");
    m.define(&spec).expect("define");
    m.start("web1").expect("start");
    reap(&mut m, "web1");
    let first = std::fs::read(&seen).expect("the VMM found the seed");
    assert_eq!(first.len(), keel_sys::cloud_init::IMAGE_BYTES);
    assert!(first.windows(11).any(|w| w == keel_sys::cloud_init::LABEL));
    assert!(first
        .windows(24)
        .any(|w| w == b"local-hostname: \"first\"\n"));
    assert_eq!(std::fs::read(&image).expect("stored"), first);

    // A redefinition applies at the next start.
    m.define(&spec.replace("first", "second"))
        .expect("redefine");
    m.start("web1").expect("start");
    reap(&mut m, "web1");
    let second = std::fs::read(&seen).expect("seed");
    assert!(second
        .windows(25)
        .any(|w| w == b"local-hostname: \"second\"\n"));

    // An upload over a seed file is an upload over a file the guest uses.
    let with_file = format!("{spec}network_config = \"images/net.yaml\"\n");
    std::fs::write(f.dir.path().join("data/images/net.yaml"), b"version: 2\n").expect("net");
    m.define(&with_file).expect("define");
    let users: Vec<String> = m
        .file_users(Path::new("./images/net.yaml"))
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(users, ["web1"]);
    assert!(m.file_users(Path::new("images/other.yaml")).is_empty());

    // A user_data file that is missing: refused at its line, no VMM.
    std::fs::remove_file(&seen).expect("rm");
    let broken = format!("{spec}user_data = \"images/web1.user-data\"\n");
    m.define(&broken).expect("define");
    let (kind, message) = m.start("web1").expect_err("no user data");
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(
        message.contains("web1.toml:8: field `cloud_init.user_data`"),
        "{message}"
    );
    assert!(!seen.exists());

    // Without [cloud_init] the old seed goes, and with the guest too.
    m.define(&spec).expect("define");
    m.start("web1").expect("start");
    reap(&mut m, "web1");
    assert!(image.exists());
    m.undefine("web1").expect("undefine");
    assert!(!image.exists(), "undefine removes the seed");
    let mut m = GuestManager::load(f.manager.paths().clone());
    m.define(&spec).expect("define");
    m.start("web1").expect("start");
    reap(&mut m, "web1");
    assert!(image.exists());
    m.define(SPEC).expect("define without [cloud_init]");
    std::fs::remove_file(&seen).expect("rm");
    m.start("web1").expect("start");
    reap(&mut m, "web1");
    assert!(!image.exists(), "a spec without [cloud_init] has no seed");
    assert!(!seen.exists());
}
