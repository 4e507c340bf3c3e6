//! keel-agent end to end over real TCP on loopback: the agent runs
//! in-process on an ephemeral port with a temporary state directory and
//! is driven with the client library behind keelctl (and, at the end,
//! with the keelctl binary itself).
//!
//! Behind the agent runs init's real control server (keel_init::control)
//! over a Unix socket in a temporary directory. No guest can boot on this
//! host's KVM (see DESIGN.md), so these tests cover definitions, refusals
//! and errors; guests that really run are driven end to end in
//! ovmf-tests/tests/appliance.rs.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use keel_init::shutdown::Action;
use support::{keelctl, temp_dir, Agent};

use keel_mgmt::agent::{serve, AgentSettings};
use keel_mgmt::client::{exit, Client, ClientError, ConnectOptions, Target};
use keel_mgmt::messages::{ErrorCode, GuestState};
use keel_mgmt::{ClientKey, HandshakeError, KnownHosts, Request, Response, Role};

const SPEC: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

fn rejected(r: Result<Client, ClientError>) -> ClientError {
    match r {
        Ok(_) => panic!("expected the handshake to be refused"),
        Err(e) => {
            assert!(
                matches!(e, ClientError::Handshake(HandshakeError::Rejected)),
                "{e:?}"
            );
            assert_eq!(e.exit_code(), exit::NOT_AUTHORIZED);
            e
        }
    }
}

/// A pairing attempt that fails on the client's side with `expected`.
fn pairing_fails(r: Result<Client, ClientError>, expected: fn(&HandshakeError) -> bool) {
    match r {
        Ok(_) => panic!("expected pairing to fail"),
        Err(ClientError::Handshake(e)) if expected(&e) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
}

fn closed(e: &HandshakeError) -> bool {
    matches!(e, HandshakeError::PairingClosed)
}

fn failed(e: &HandshakeError) -> bool {
    matches!(e, HandshakeError::PairingFailed)
}

#[test]
fn pairing_code_works_once() {
    let agent = Agent::start();
    let code = agent.code();
    assert_eq!(code.len(), 9);
    let key = ClientKey::generate().unwrap();
    let c = agent.connect(&key, Some(&code)).unwrap();
    assert_eq!(c.session().role(), Some(Role::Admin));
    drop(c);

    // Enrolled and saved atomically with mode 0600.
    let ak = std::fs::read_to_string(agent.state.join("authorized_keys")).unwrap();
    assert!(
        ak.starts_with(&format!("admin {}", key.public_key())),
        "{ak}"
    );
    use std::os::unix::fs::PermissionsExt;
    for f in ["authorized_keys", "host_key"] {
        let mode = std::fs::metadata(agent.state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The enrolled key now works without a code.
    agent.connect(&key, None).unwrap();

    // The code cannot be reused, by anyone: pairing is closed.
    let other = ClientKey::generate().unwrap();
    pairing_fails(agent.connect(&other, Some(&code)), closed);
    agent.wait_audit(&["handshake refused", "reason=pairing not available"]);
    pairing_fails(agent.connect(&key, Some(&code)), closed);
    assert_eq!(agent.handle.pairing_code(), None);
}

#[test]
fn the_pairing_file_holds_the_code_until_pairing_closes() {
    let dir = temp_dir("pairing-file");
    let file = dir.join("pairing-code");
    let path = file.clone();
    let agent = Agent::start_with("127.0.0.1:0", move |c| c.pairing_file = Some(path));
    let code = agent.code();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{code}\n"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = ClientKey::generate().unwrap();
    agent.connect(&key, Some(&code)).unwrap();
    assert!(!file.exists(), "the code is gone once used");
}

/// A failed attempt from the network spends the code but does not lock
/// the operator out: a fresh code is published (init shows it on the
/// console) and works, and the spent one does not.
#[test]
fn a_wrong_pairing_code_gets_a_fresh_code_on_the_console() {
    let dir = temp_dir("pairing-fresh");
    let file = dir.join("pairing-code");
    let path = file.clone();
    let agent = Agent::start_with("127.0.0.1:0", move |c| c.pairing_file = Some(path));
    let spent = agent.code();
    let key = ClientKey::generate().unwrap();
    pairing_fails(agent.connect(&key, Some("0000-0000")), failed);
    agent.wait_audit(&["reason=wrong pairing code or abandoned pairing"]);
    let fresh = agent.code();
    assert_ne!(fresh, spent);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{fresh}\n")
    );
    // Attempts are paced.
    std::thread::sleep(keel_mgmt::agent::PAIRING_ATTEMPT_INTERVAL);
    pairing_fails(agent.connect(&key, Some(&spent)), failed);
    // The server replaces the code as the attempt ends, just after the
    // client has given up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.code() == fresh {
        assert!(Instant::now() < deadline, "the code was not replaced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fresh = agent.code();
    std::thread::sleep(keel_mgmt::agent::PAIRING_ATTEMPT_INTERVAL);
    let c = agent.connect(&key, Some(&fresh)).unwrap();
    assert_eq!(c.session().role(), Some(Role::Admin));
    assert!(!file.exists());
}

/// One pairing attempt at a time: a second one is told pairing is busy
/// while a stalled one holds it, until the handshake deadline ends it.
#[test]
fn a_stalled_pairing_attempt_holds_pairing_only_until_its_deadline() {
    use keel_mgmt::handshake::{ClientHello, MAX_HANDSHAKE_FRAME};
    use keel_mgmt::pake::Pake;
    let agent = Agent::start();
    let code = agent.code();
    let mut staller = TcpStream::connect(agent.addr()).unwrap();
    let hello = ClientHello {
        versions: keel_mgmt::SUPPORTED_VERSIONS.to_vec(),
        ephemeral: [9; 32],
        nonce: [1; 32],
        pairing: Some(Pake::client(&code).1),
    };
    keel_common::frame::write_frame(&mut staller, &hello.encode(), MAX_HANDSHAKE_FRAME).unwrap();
    // The server hello shows the attempt has begun.
    keel_common::frame::read_frame(&mut staller, MAX_HANDSHAKE_FRAME).unwrap();
    let key = ClientKey::generate().unwrap();
    pairing_fails(agent.connect(&key, Some(&code)), closed);
    agent.wait_audit(&["reason=pairing busy"]);
    // The fixture's handshake deadline is 2 s.
    agent.wait_audit(&["reason=handshake timed out"]);
    let fresh = agent.code();
    assert_ne!(fresh, code, "the stalled attempt spent the code");
    std::thread::sleep(keel_mgmt::agent::PAIRING_ATTEMPT_INTERVAL);
    agent.connect(&key, Some(&fresh)).unwrap();
}

#[test]
fn pairing_code_expires() {
    let agent = Agent::start_with("127.0.0.1:0", |c| {
        c.pairing_validity = Duration::from_millis(200)
    });
    let code = agent.code();
    std::thread::sleep(Duration::from_millis(400));
    pairing_fails(
        agent.connect(&ClientKey::generate().unwrap(), Some(&code)),
        closed,
    );
    agent.wait_audit(&["reason=pairing window closed"]);
}

#[test]
fn no_pairing_code_when_an_admin_exists() {
    let state = temp_dir("pre");
    let key = ClientKey::generate().unwrap();
    std::fs::write(
        state.join("authorized_keys"),
        format!("admin {} alice\n", key.public_key()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut h = serve(listener, AgentSettings::new(&state)).unwrap();
    assert!(h.pairing_code().is_none());
    // The host key persists across restarts.
    let fp = h.host_fingerprint();
    h.shutdown();
    let h2 = serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        AgentSettings::new(&state),
    )
    .unwrap();
    assert_eq!(h2.host_fingerprint(), fp);
    drop(h2);
    std::fs::remove_dir_all(&state).unwrap();
}

fn host_err(r: Result<Response, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Host { kind, message }) => (kind, message),
        other => panic!("expected an error from the host, got {other:?}"),
    }
}

#[test]
fn happy_path_for_every_request() {
    let agent = Agent::start();
    let (_, mut c) = agent.admin();
    let name = || "web1".to_string();

    match c.call(Request::HostInfo).unwrap() {
        Response::HostInfo(info) => {
            assert_eq!(info.version, keel_common::VERSION);
            assert!(!info.hostname.is_empty());
            assert_eq!(info.guests_running, 0);
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::GuestList).unwrap(),
        Response::Guests(vec![])
    );

    // A bad spec is refused with the parser's message.
    let (kind, message) = host_err(c.call(Request::GuestDefine {
        spec_toml: SPEC.replace("vcpus = 1", "vcpus = 0"),
    }));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("vcpus"), "{message}");

    let define = Request::GuestDefine {
        spec_toml: SPEC.into(),
    };
    assert_eq!(c.call(define).unwrap(), Response::Ok);
    let state = |c: &mut Client| match c.call(Request::GuestShow { name: name() }).unwrap() {
        Response::Guest(d) => {
            assert_eq!(d.spec_toml, SPEC);
            d.summary.state
        }
        r => panic!("{r:?}"),
    };
    assert_eq!(state(&mut c), GuestState::Stopped);
    // init stored the spec on the data partition, byte for byte.
    assert_eq!(
        std::fs::read_to_string(agent.data.join("guests/web1.toml")).unwrap(),
        SPEC
    );
    // Its kernel is not there: start says which file and field, and
    // nothing runs.
    let (kind, message) = host_err(c.call(Request::GuestStart { name: name() }));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("guests/web1.toml"), "{message}");
    assert!(message.contains("boot.kernel"), "{message}");
    assert_eq!(state(&mut c), GuestState::Stopped);
    let (kind, _) = host_err(c.call(Request::GuestRestart { name: name() }));
    assert_eq!(kind, ErrorCode::Invalid);
    for stop in [
        Request::GuestStop { name: name() },
        Request::GuestKill { name: name() },
    ] {
        let (kind, message) = host_err(c.call(stop));
        assert_eq!(kind, ErrorCode::Conflict);
        assert!(message.contains("not running"), "{message}");
    }
    match c.call(Request::HostInfo).unwrap() {
        Response::HostInfo(info) => assert_eq!(info.guests_running, 0),
        r => panic!("{r:?}"),
    }
    let (kind, _) = host_err(c.call(Request::Logs {
        guest: Some("nope".into()),
        tail: 10,
        follow: false,
    }));
    assert_eq!(kind, ErrorCode::NotFound);
    // A stopped guest's log is followed to its end: the last `tail` lines,
    // then the stream closes, and the session goes on.
    let log_dir = agent.data.join("logs/web1");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("console.log"), "boot\r\nready\r\nbye\r\n").unwrap();
    let first = c
        .call(Request::Logs {
            guest: Some(name()),
            tail: 2,
            follow: true,
        })
        .unwrap();
    assert_eq!(first, Response::ConsoleData(b"ready\r\nbye\r\n".to_vec()));
    let id = c.last_id();
    assert_eq!(c.recv(id).unwrap(), Response::ConsoleClosed);
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
    match c.call(Request::GuestList).unwrap() {
        Response::Guests(g) => {
            assert_eq!(g.len(), 1);
            assert_eq!(
                (g[0].name.as_str(), g[0].vcpus, g[0].memory_mib),
                ("web1", 1, 64)
            );
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::GuestUndefine { name: name() }).unwrap(),
        Response::Ok
    );
    let (kind, _) = host_err(c.call(Request::GuestShow { name: name() }));
    assert_eq!(kind, ErrorCode::NotFound);

    let logs = Request::Logs {
        guest: None,
        tail: 50,
        follow: false,
    };
    match c.call(logs).unwrap() {
        Response::LogLines(l) => assert!(l.iter().any(|l| l.contains("guest spec defined by"))),
        r => panic!("{r:?}"),
    }
    // Following is reserved in the protocol and refused, not ignored.
    let (kind, message) = host_err(c.call(Request::Logs {
        guest: None,
        tail: 5,
        follow: true,
    }));
    assert_eq!(kind, ErrorCode::Invalid);
    assert!(message.contains("follow"), "{message}");
    let (kind, _) = host_err(c.call(Request::GuestConsole { name: name() }));
    assert_eq!(kind, ErrorCode::NotFound);
    match c.call(Request::Audit { tail: 3 }).unwrap() {
        Response::Audit(entries) => {
            assert_eq!(entries.len(), 3);
            assert_eq!(entries[2].request, "GuestConsole(web1)");
            assert_eq!(entries[2].outcome, "error");
            assert_eq!(entries[2].role, Role::Admin);
        }
        r => panic!("{r:?}"),
    }
    let reader = ClientKey::generate().unwrap();
    let add = Request::AuthorizeKey {
        role: Role::Reader,
        public_key: reader.public_key().0,
        comment: "monitoring".into(),
    };
    assert_eq!(c.call(add).unwrap(), Response::Ok);
    let rc = agent.connect(&reader, None).unwrap();
    assert_eq!(rc.session().role(), Some(Role::Reader));
    agent.wait_audit(&["admin GuestStart(web1) error"]);

    // Host power requests reach init (which, in the appliance, stops the
    // guests and shuts down after answering).
    assert_eq!(c.call(Request::HostReboot).unwrap(), Response::Ok);
    assert_eq!(c.call(Request::HostPowerOff).unwrap(), Response::Ok);
    assert_eq!(
        *agent.host_actions.lock().unwrap(),
        vec![Action::Reboot, Action::PowerOff]
    );
    agent.wait_audit(&["admin HostPowerOff ok"]);
}

#[test]
fn reader_cannot_make_admin_requests() {
    let agent = Agent::start();
    let (_, mut admin) = agent.admin();
    let reader = ClientKey::generate().unwrap();
    let add = Request::AuthorizeKey {
        role: Role::Reader,
        public_key: reader.public_key().0,
        comment: "ro".into(),
    };
    admin.call(add).unwrap();
    let mut c = agent.connect(&reader, None).unwrap();
    assert!(matches!(
        c.call(Request::GuestList).unwrap(),
        Response::Guests(_)
    ));
    let err = c
        .call(Request::GuestDefine {
            spec_toml: SPEC.into(),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Host {
            kind: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert_eq!(err.exit_code(), exit::NOT_AUTHORIZED);
    let err = c
        .call(Request::GuestStart {
            name: "web1".into(),
        })
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::NOT_AUTHORIZED);
    let fp = reader.fingerprint().to_string();
    let line = agent.wait_audit(&[&fp, "reader GuestDefine refused"]);
    // RFC 3339 UTC time first.
    assert_eq!(&line[10..11], "T");
    assert_eq!(&line[19..20], "Z");
    agent.wait_audit(&[&fp, "reader GuestList ok"]);
    agent.wait_audit(&[&fp, "reader GuestStart(web1) refused"]);
    // Nothing was defined.
    assert_eq!(
        admin.call(Request::GuestList).unwrap(),
        Response::Guests(vec![])
    );
}

#[test]
fn unknown_key_is_refused_and_audited() {
    let agent = Agent::start();
    let _admin = agent.admin();
    let stranger = ClientKey::generate().unwrap();
    rejected(agent.connect(&stranger, None));
    agent.wait_audit(&[
        &stranger.fingerprint().to_string(),
        "handshake refused peer=127.0.0.1:",
        "reason=unknown key",
    ]);
}

#[test]
fn handshake_that_never_completes_times_out() {
    let agent = Agent::start_with("127.0.0.1:0", |c| {
        c.handshake_timeout = Duration::from_millis(300)
    });
    let mut s = TcpStream::connect(agent.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // The agent hangs up on us: EOF or reset.
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    agent.wait_audit(&[
        "- - handshake refused peer=127.0.0.1:",
        "reason=handshake timed out",
    ]);
    // Half a hello then silence also times out.
    let mut s = TcpStream::connect(agent.addr()).unwrap();
    s.write_all(&[0, 0, 0, 70, 1, 1]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
}

/// The flood comes from ::1 and the good client from 127.0.0.1: two
/// source addresses on loopback, which needs a dual-stack listener on
/// [::] for the duration of this test.
#[test]
fn flood_of_bad_handshakes_does_not_starve_a_good_client() {
    let agent = Agent::start_with("[::]:0", |c| {
        c.handshake_timeout = Duration::from_millis(500);
        c.rate_burst = 5.0;
        c.rate_per_sec = 0.01;
        c.max_pending_per_ip = 3;
        c.max_sessions = 16;
    });
    let (admin_key, _) = agent.admin();
    let flood = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, agent.port()));
    // Garbage hellos: each fails at once and costs a token.
    for _ in 0..40 {
        if let Ok(mut s) = TcpStream::connect(flood) {
            let _ = s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut [0u8; 8]);
        }
    }
    // Silent connections: would hold session slots until the timeout.
    let silent: Vec<TcpStream> = (0..30)
        .filter_map(|_| TcpStream::connect(flood).ok())
        .collect();
    agent.wait_audit(&["peer=[::1]:0 reason=rate limited"]);

    // The good client from 127.0.0.1 gets through, repeatedly.
    for _ in 0..3 {
        let mut c = agent.connect(&admin_key, None).unwrap();
        assert!(matches!(
            c.call(Request::HostInfo).unwrap(),
            Response::HostInfo(_)
        ));
    }
    // The flooder is now cut off straight away, even with a valid key.
    let mut kh = KnownHosts::default();
    let t = Target {
        known_hosts_name: "x".into(),
        host: "::1".into(),
        port: agent.port(),
    };
    let r = Client::connect(&t, &admin_key, &mut kh, &ConnectOptions::default());
    assert!(r.is_err());
    // Far fewer refusals logged than connections made.
    let refused = agent
        .audit()
        .lines()
        .filter(|l| l.contains("[::1]"))
        .count();
    assert!(refused <= 10, "{refused} lines:\n{}", agent.audit());
    drop(silent);
}

// ---- the keelctl binary, exactly as the README shows it ----

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keelctl_binary_end_to_end() {
    let agent = Agent::start();
    let config = temp_dir("xdg");
    let host = format!("127.0.0.1:{}", agent.port());
    let code = agent.code();

    // No key yet: a local error.
    assert_eq!(
        keelctl(&config, &["--host", &host, "host", "info"])
            .status
            .code(),
        Some(6)
    );

    let out = keelctl(&config, &["keygen"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("fingerprint: SHA256:"));
    assert_eq!(keelctl(&config, &["keygen"]).status.code(), Some(6));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(config.join("keel/key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = keelctl(&config, &["pair", &host, &code]);
    assert!(out.status.success());
    let fp = agent.handle.host_fingerprint().to_string();
    assert!(stdout(&out).contains(&fp));
    assert!(std::fs::read_to_string(config.join("keel/known_hosts"))
        .unwrap()
        .contains(&host));
    // The code is spent.
    assert_eq!(
        keelctl(&config, &["pair", &host, &code]).status.code(),
        Some(5)
    );

    let out = keelctl(&config, &["--host", &host, "host", "info", "--json"]);
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], keel_common::VERSION);

    let spec = config.join("web1.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = keelctl(
        &config,
        &["--host", &host, "guest", "define", spec.to_str().unwrap()],
    );
    assert!(out.status.success());
    let out = keelctl(&config, &["--host", &host, "guest", "list"]);
    assert!(out.status.success());
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("web1"), "{table}");
    assert!(table.contains("stopped"));
    let out = keelctl(&config, &["--json", "--host", &host, "guest", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "web1");
    assert_eq!(list[0]["state"], "Stopped");
    // Its kernel is missing: refused by init with the field named.
    let out = keelctl(&config, &["--host", &host, "guest", "start", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("boot.kernel"));
    assert_eq!(
        keelctl(&config, &["--host", &host, "guest", "show", "nope"])
            .status
            .code(),
        Some(1)
    );
    let out = keelctl(&config, &["--host", &host, "audit"]);
    assert!(stdout(&out).contains("GuestStart(web1)"));
    // Following a stopped guest's log prints its last lines and ends.
    let logs = agent.data.join("logs/web1");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("console.log"), "one\ntwo\nthree\n").unwrap();
    let follow = [
        "--host", &host, "logs", "--guest", "web1", "--follow", "--tail", "2",
    ];
    let out = keelctl(&config, &follow);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "two\nthree\n");
    assert_eq!(
        keelctl(&config, &["--host", &host, "logs", "--follow"])
            .status
            .code(),
        Some(2),
        "--follow needs --guest"
    );

    // Usage error.
    assert_eq!(
        keelctl(&config, &["guest", "frobnicate"]).status.code(),
        Some(2)
    );
    // Unknown host key: no trust yet under another name for the same host.
    let other = format!("localhost:{}", agent.port());
    assert_eq!(
        keelctl(&config, &["--host", &other, "host", "info"])
            .status
            .code(),
        Some(3)
    );
    let out = keelctl(&config, &["trust", &other]);
    assert!(out.status.success());
    assert!(stdout(&out).contains(&fp));
    assert!(keelctl(&config, &["--host", &other, "host", "info"])
        .status
        .success());
    // A different key pinned for the host: mismatch.
    let kh = config.join("keel/known_hosts");
    let text = std::fs::read_to_string(&kh).unwrap();
    let bogus = ClientKey::generate().unwrap().public_key();
    let first = text
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&kh, format!("{first} {bogus}\n")).unwrap();
    assert_eq!(
        keelctl(&config, &["--host", &first, "host", "info"])
            .status
            .code(),
        Some(4)
    );
    // Connection refused.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    assert_eq!(
        keelctl(&config, &["--host", &dead_addr, "host", "info"])
            .status
            .code(),
        Some(3)
    );
    std::fs::remove_dir_all(&config).unwrap();
}

#[test]
fn keelctl_key_add_gives_a_second_operator_a_role() {
    let agent = Agent::start();
    let host = format!("127.0.0.1:{}", agent.port());
    let admin = temp_dir("xdg-admin");
    let reader = temp_dir("xdg-reader");
    assert!(keelctl(&admin, &["keygen"]).status.success());
    assert!(keelctl(&admin, &["pair", &host, &agent.code()])
        .status
        .success());

    // The reader hands its public key to the admin.
    assert!(keelctl(&reader, &["keygen"]).status.success());
    let out = keelctl(&reader, &["key", "show"]);
    assert!(out.status.success());
    let public_key = stdout(&out).trim().to_string();
    assert!(public_key.starts_with("ed25519:"), "{public_key}");
    assert!(keelctl(&reader, &["trust", &host]).status.success());
    // Not authorised yet.
    assert_eq!(
        keelctl(&reader, &["--host", &host, "host", "info"])
            .status
            .code(),
        Some(5)
    );

    // A malformed key and a bad role are refused locally; the admin then authorises it.
    assert_eq!(
        keelctl(
            &admin,
            &["--host", &host, "key", "add", "reader", "ed25519:nope"]
        )
        .status
        .code(),
        Some(6)
    );
    assert_eq!(
        keelctl(
            &admin,
            &["--host", &host, "key", "add", "root", &public_key]
        )
        .status
        .code(),
        Some(2)
    );
    let out = keelctl(
        &admin,
        &["--host", &host, "key", "add", "reader", &public_key, "bob"],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("as reader"), "{}", stdout(&out));

    // The reader may read but not change anything.
    assert!(keelctl(&reader, &["--host", &host, "host", "info"])
        .status
        .success());
    let spec = reader.join("web1.toml");
    std::fs::write(&spec, SPEC).expect("write spec");
    let out = keelctl(
        &reader,
        &[
            "--host",
            &host,
            "guest",
            "define",
            spec.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    // Only the admin may add keys.
    assert_eq!(
        keelctl(
            &reader,
            &["--host", &host, "key", "add", "admin", &public_key]
        )
        .status
        .code(),
        Some(5)
    );
}

#[test]
fn keelctl_waits_for_a_guest_that_is_slow_to_stop() {
    // The guest ignores ctrl-alt-del (its "VMM" has no API socket), so init
    // kills it only when the stop timeout passes: longer than the 15 s
    // keelctl waits for an ordinary answer.
    let stop_timeout = Duration::from_secs(17);
    let agent = Agent::start_with_guests(support::Guests {
        vmm_script: Some("exec sleep 600".into()),
        stop_timeout,
    });
    let config = temp_dir("xdg-stop");
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(&config, &["keygen"]).status.success());
    assert!(keelctl(&config, &["pair", &host, &agent.code()])
        .status
        .success());
    let spec = config.join("web1.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let define = ["--host", &host, "guest", "define", spec.to_str().unwrap()];
    assert!(keelctl(&config, &define).status.success());
    let out = keelctl(&config, &["--host", &host, "guest", "start", "web1"]);
    assert!(out.status.success(), "{out:?}");

    let started = Instant::now();
    let out = keelctl(&config, &["--host", &host, "guest", "stop", "web1"]);
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "stopped\n");
    assert!(!stderr.contains("Connection"), "{stderr}");
    assert!(waited >= stop_timeout, "the stop took only {waited:?}");
    let out = keelctl(&config, &["--json", "--host", &host, "guest", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["state"], "Stopped");
    std::fs::remove_dir_all(&config).unwrap();
}
