//! Nobody can lock management out: a handshake has one deadline however
//! slowly its bytes come, a crowd of slow connections from many addresses
//! cannot keep a real keelctl out, one address holds only a few
//! connections, and sessions of lesser keys leave room for admins. All
//! over real TCP on loopback against an in-process keel-agent.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use keel_mgmt::client::Client;
use keel_mgmt::{ClientKey, Request, Response, Role};
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use support::{keelctl, temp_dir, Agent};

/// A TCP connection to `to` from the loopback address `from` (all of
/// 127/8 is this host's), so that one test can be many source addresses.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only");
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Whether the agent has hung up on `s` (EOF or reset), waiting up to
/// `patience`.
fn hung_up(s: &mut TcpStream, patience: Duration) -> bool {
    s.set_read_timeout(Some(patience)).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn host_info(c: &mut Client) {
    assert!(matches!(
        c.call(Request::HostInfo).unwrap(),
        Response::HostInfo(_)
    ));
}

#[test]
fn a_trickled_handshake_is_dropped_at_the_deadline() {
    let agent = Agent::start_with("127.0.0.1:0", |c| {
        c.handshake_timeout = Duration::from_secs(2);
    });
    let mut s = TcpStream::connect(agent.addr()).unwrap();
    // A hello of 200 bytes announced, then one byte every 500 ms: each
    // read comes well within a per-read timeout of 2 s.
    s.write_all(&[0, 0, 0, 200]).unwrap();
    let started = Instant::now();
    let dropped = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a handshake trickling bytes is still open"
        );
        if s.write_all(&[1]).is_err() || hung_up(&mut s, Duration::from_millis(500)) {
            break started.elapsed();
        }
    };
    assert!(dropped >= Duration::from_millis(1500), "{dropped:?}");
    agent.wait_audit(&[
        "handshake refused peer=127.0.0.1:",
        "reason=handshake timed out",
    ]);
}

#[test]
fn a_hundred_slow_connections_from_many_addresses_do_not_keep_a_client_out() {
    // Deadlines far beyond the test: no slow connection ends on its own.
    let agent = Agent::start_with("127.0.0.1:0", |c| {
        c.handshake_timeout = Duration::from_secs(60);
    });
    // An operator's keelctl, paired before the crowd arrives.
    let config = temp_dir("xdg");
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(&config, &["keygen"]).status.success());
    assert!(keelctl(&config, &["pair", &host, &agent.code()])
        .status
        .success());
    // The excess from one address is refused at once.
    let mut from_one: Vec<_> = (0..10)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 30), agent.addr()).unwrap())
        .collect();
    let mut refused = 0;
    for s in from_one.iter_mut().skip(4) {
        if hung_up(s, Duration::from_secs(2)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 6, "{}", agent.audit());

    // 25 addresses with 5 connections each, every one of them part-way
    // through a hello and then silent.
    let mut slow = Vec::new();
    for a in 2..27u8 {
        for _ in 0..5 {
            if let Ok(mut s) = connect_from(Ipv4Addr::new(127, 0, 0, a), agent.addr()) {
                let _ = s.write_all(&[0, 0, 0, 70, 1]);
                slow.push(s);
            }
        }
    }
    assert!(slow.len() >= 100, "{}", slow.len());
    for _ in 0..3 {
        let started = Instant::now();
        let out = keelctl(&config, &["--host", &host, "host", "info"]);
        assert!(out.status.success());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    drop((slow, from_one));
}

#[test]
fn one_address_holds_only_so_many_connections() {
    let agent = Agent::start_with("127.0.0.1:0", |c| c.max_connections_per_ip = 3);
    let (admin_key, admin) = agent.admin();
    let second = agent.connect(&admin_key, None).unwrap();
    let third = agent.connect(&admin_key, None).unwrap();
    assert!(agent.connect(&admin_key, None).is_err());
    agent.wait_audit(&["handshake refused peer=127.0.0.1:0 reason=rate limited"]);
    drop(second);
    // The place comes back once the agent sees the session end.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        if let Ok(c) = agent.connect(&admin_key, None) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the closed session's place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    host_info(&mut c);
    drop((admin, third));
}

/// `key`'s next session is refused, for `reason` in the audit log.
fn refused(agent: &Agent, key: &ClientKey, reason: &str) {
    let refused = agent
        .connect(key, None)
        .and_then(|mut c| c.call(Request::HostInfo));
    assert!(refused.is_err(), "{refused:?}");
    agent.wait_audit(&[&key.fingerprint().to_string(), &format!("reason={reason}")]);
}

#[test]
fn sessions_of_lesser_keys_leave_room_for_admins() {
    let agent = Agent::start_with("127.0.0.1:0", |c| {
        c.max_sessions = 4;
        c.admin_reserved_sessions = 2;
    });
    let (admin_key, mut admin) = agent.admin();
    let reader = agent.new_key(&mut admin, Role::Reader);
    // With the admin's session, one more reader fits below the reserve.
    let mut r1 = agent.connect(&reader, None).unwrap();
    host_info(&mut r1);
    refused(&agent, &reader, "too many sessions");
    // An admin still gets one of the reserved places.
    let mut admin2 = agent.connect(&admin_key, None).unwrap();
    host_info(&mut admin2);
}

#[test]
fn one_key_holds_only_so_many_sessions() {
    let agent = Agent::start_with("127.0.0.1:0", |c| c.max_sessions_per_key = 2);
    let (_, mut admin) = agent.admin();
    let reader = agent.new_key(&mut admin, Role::Reader);
    let mut r1 = agent.connect(&reader, None).unwrap();
    let mut r2 = agent.connect(&reader, None).unwrap();
    host_info(&mut r1);
    host_info(&mut r2);
    refused(&agent, &reader, "too many sessions for this key");
    // Other keys are not held up, and the key gets its place back.
    host_info(&mut admin);
    drop(r1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = agent
            .connect(&reader, None)
            .and_then(|mut c| c.call(Request::HostInfo));
        if again.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "{again:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    host_info(&mut r2);
}
