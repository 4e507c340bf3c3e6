//! End-to-end tests over real TCP on 127.0.0.1: a server thread, a client,
//! and for the active-attacker cases a frame-aware proxy in between.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use keel_common::frame::{self, FrameError};
use keel_mgmt::handshake::{ClientHello, MAX_HANDSHAKE_FRAME};
use keel_mgmt::messages::{ErrorCode, HostInfo};
use keel_mgmt::{
    allowed, client_handshake_with, server_handshake_with, AuthorizedKeys, ClientKey,
    ClientMessage, ClientOptions, HandshakeError, HostCheck, HostKey, KnownHosts, Peer, PeerAuth,
    Request, Response, Role, ServerMessage, ServerOptions, Session, SessionError, MAX_FRAME,
};

const TIMEOUT: Duration = Duration::from_secs(5);
const HOST: &str = "hv01:7444";
const PAIRING_CODE: &str = "314-159";

/// How the server side ended.
#[derive(Debug)]
enum Outcome {
    Handshake(HandshakeError),
    Ended(Peer, SessionError),
}

struct Fixture {
    host: HostKey,
    admin: ClientKey,
    reader: ClientKey,
    stranger: ClientKey,
    authorized: AuthorizedKeys,
}

impl Fixture {
    fn new() -> Self {
        let admin = ClientKey::generate().unwrap();
        let reader = ClientKey::generate().unwrap();
        let text = format!(
            "admin {} alice\nreader {} monitoring\n",
            admin.public_key(),
            reader.public_key()
        );
        Fixture {
            host: HostKey::generate().unwrap(),
            admin,
            reader,
            stranger: ClientKey::generate().unwrap(),
            authorized: AuthorizedKeys::parse(&text).unwrap(),
        }
    }

    fn known_hosts(&self) -> KnownHosts {
        let mut kh = KnownHosts::default();
        kh.add(HOST, self.host.public_key());
        kh
    }

    /// Starts a one-connection server with the given read timeout.
    fn serve(&self, versions: &[u16], read_timeout: Duration) -> (SocketAddr, JoinHandle<Outcome>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let host = HostKey::from_pkcs8(self.host.pkcs8()).unwrap();
        let authorized = self.authorized.clone();
        let options = ServerOptions {
            versions: versions.to_vec(),
        };
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(read_timeout)).unwrap();
            let authorize = |auth: &PeerAuth| match auth {
                PeerAuth::Key { public_key } => authorized.lookup(public_key).map(|(r, _)| r),
                // The agent compares in constant time and expires the code.
                PeerAuth::PairingCode { code, .. } => (code == PAIRING_CODE).then_some(Role::Admin),
            };
            let (mut session, peer) =
                match server_handshake_with(&mut stream, &host, &options, authorize) {
                    Ok(ok) => ok,
                    Err(e) => return Outcome::Handshake(e),
                };
            loop {
                let msg: ClientMessage = match session.recv(&mut stream) {
                    Ok(m) => m,
                    Err(e) => return Outcome::Ended(peer, e),
                };
                let response = respond(peer.role, &msg.request);
                let reply = ServerMessage {
                    id: msg.id,
                    response,
                };
                if let Err(e) = session.send(&mut stream, &reply) {
                    return Outcome::Ended(peer, e);
                }
            }
        });
        (addr, handle)
    }
}

/// A stand-in for the agent's dispatcher.
fn respond(role: Role, request: &Request) -> Response {
    if !allowed(role, request) {
        return Response::Error {
            kind: ErrorCode::Unauthorized,
            message: "Not allowed.".into(),
        };
    }
    match request {
        Request::HostInfo => Response::HostInfo(HostInfo {
            hostname: "hv01".into(),
            version: "0.1.0".into(),
            uptime_secs: 1,
            cpus: 2,
            memory_mib: 2048,
            guests_running: 0,
        }),
        Request::GuestList => Response::Guests(Vec::new()),
        _ => Response::Ok,
    }
}

/// The client handshake with default options but trust on first use.
fn client_handshake(
    stream: &mut TcpStream,
    key: &ClientKey,
    known_hosts: &mut KnownHosts,
    host: &str,
    trust_on_first_use: bool,
) -> Result<Session, HandshakeError> {
    let options = ClientOptions {
        trust_on_first_use,
        ..ClientOptions::default()
    };
    client_handshake_with(stream, key, known_hosts, host, &options)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn call(session: &mut Session, stream: &mut TcpStream, id: u64, request: Request) -> Response {
    session
        .send(stream, &ClientMessage { id, request })
        .unwrap();
    let reply: ServerMessage = session.recv(stream).unwrap();
    assert_eq!(reply.id, id);
    reply.response
}

fn with_header(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A man in the middle that sees client-to-server frames one by one
/// (index 0 is the client hello, 1 the client authentication, 2.. the
/// requests) and writes whatever `mutate` returns; `None` closes the
/// connection. Server-to-client bytes pass through untouched.
fn proxy<F>(server: SocketAddr, mut mutate: F) -> SocketAddr
where
    F: FnMut(usize, &[u8]) -> Option<Vec<u8>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut upstream = TcpStream::connect(server).unwrap();
        let mut client_w = client.try_clone().unwrap();
        let mut upstream_r = upstream.try_clone().unwrap();
        thread::spawn(move || {
            let _ = std::io::copy(&mut upstream_r, &mut client_w);
            let _ = client_w.shutdown(Shutdown::Both);
        });
        let mut index = 0;
        while let Ok(body) = frame::read_frame(&mut client, MAX_FRAME) {
            match mutate(index, &body) {
                Some(bytes) => {
                    if upstream.write_all(&bytes).is_err() {
                        break;
                    }
                }
                None => break,
            }
            index += 1;
        }
        let _ = upstream.shutdown(Shutdown::Both);
    });
    addr
}

/// Handshakes through `mutate`'s proxy as admin.
fn through_proxy<F>(f: &Fixture, mutate: F) -> (TcpStream, Session, JoinHandle<Outcome>)
where
    F: FnMut(usize, &[u8]) -> Option<Vec<u8>> + Send + 'static,
{
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(proxy(addr, mutate));
    let session =
        client_handshake(&mut stream, &f.admin, &mut f.known_hosts(), HOST, false).unwrap();
    (stream, session, server)
}

fn ended(server: JoinHandle<Outcome>) -> (Peer, SessionError) {
    match server.join().unwrap() {
        Outcome::Ended(peer, e) => (peer, e),
        other => panic!("expected a session error, got {other:?}"),
    }
}

fn handshake_failed(server: JoinHandle<Outcome>) -> HandshakeError {
    match server.join().unwrap() {
        Outcome::Handshake(e) => e,
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[test]
fn happy_path() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let mut session =
        client_handshake(&mut stream, &f.admin, &mut f.known_hosts(), HOST, false).unwrap();
    assert_eq!(session.role(), Some(Role::Admin));
    assert_eq!(session.version(), 1);
    assert_eq!(session.peer_key(), f.host.public_key());
    assert!(!session.trusted_on_first_use());
    assert!(matches!(
        call(&mut session, &mut stream, 1, Request::HostInfo),
        Response::HostInfo(HostInfo { cpus: 2, .. })
    ));
    let define = Request::GuestDefine {
        spec_toml: "name = \"web\"".into(),
    };
    assert_eq!(call(&mut session, &mut stream, 2, define), Response::Ok);
    drop(stream);
    let (peer, e) = ended(server);
    assert_eq!(peer.role, Role::Admin);
    assert_eq!(peer.fingerprint, f.admin.fingerprint());
    assert!(!peer.paired);
    // A clean close between frames is reported as such.
    assert!(matches!(e, SessionError::Frame(FrameError::Closed)));
}

#[test]
fn unknown_client_key_gets_one_generic_error() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let e =
        client_handshake(&mut stream, &f.stranger, &mut f.known_hosts(), HOST, false).unwrap_err();
    assert!(matches!(e, HandshakeError::Rejected));
    let generic = e.to_string();
    assert_eq!(generic, "The server refused the authentication.");
    match handshake_failed(server) {
        HandshakeError::Unauthorized { fingerprint } => {
            assert_eq!(fingerprint, f.stranger.fingerprint())
        }
        other => panic!("unexpected {other:?}"),
    }

    // A wrong pairing code looks exactly the same from the client.
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let options = ClientOptions {
        pairing_code: Some("000-000".into()),
        ..ClientOptions::default()
    };
    let e = client_handshake_with(
        &mut stream,
        &f.stranger,
        &mut f.known_hosts(),
        HOST,
        &options,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), generic);
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Unauthorized { .. }
    ));
}

#[test]
fn pairing_code_enrols_a_new_key() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let options = ClientOptions {
        pairing_code: Some(PAIRING_CODE.into()),
        ..ClientOptions::default()
    };
    let mut session = client_handshake_with(
        &mut stream,
        &f.stranger,
        &mut f.known_hosts(),
        HOST,
        &options,
    )
    .unwrap();
    assert_eq!(session.role(), Some(Role::Admin));
    assert_eq!(
        call(&mut session, &mut stream, 1, Request::GuestList),
        Response::Guests(vec![])
    );
    drop(stream);
    let (peer, _) = ended(server);
    assert!(peer.paired);
    assert_eq!(peer.public_key, f.stranger.public_key());
}

#[test]
fn changed_host_key_is_refused_loudly() {
    let f = Fixture::new();
    let (addr, _server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let mut kh = KnownHosts::default();
    let old = HostKey::generate().unwrap();
    kh.add(HOST, old.public_key());
    let e = client_handshake(&mut stream, &f.admin, &mut kh, HOST, true).unwrap_err();
    match &e {
        HandshakeError::HostKeyChanged {
            host,
            expected,
            presented,
            line,
        } => {
            assert_eq!(host, HOST);
            assert_eq!(*expected, old.fingerprint());
            assert_eq!(*presented, f.host.fingerprint());
            assert_eq!(*line, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(e.to_string().contains("HAS CHANGED"));
    // Trust on first use never overrides a pinned key.
    assert_eq!(kh.check(HOST, &old.public_key()), HostCheck::Trusted);
}

#[test]
fn unknown_host_needs_trust_on_first_use() {
    let f = Fixture::new();
    let (addr, _server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let mut kh = KnownHosts::default();
    let e = client_handshake(&mut stream, &f.admin, &mut kh, HOST, false).unwrap_err();
    match &e {
        HandshakeError::UnknownHost { host, fingerprint } => {
            assert_eq!(host, HOST);
            assert_eq!(*fingerprint, f.host.fingerprint());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(e.to_string().contains(&f.host.fingerprint().to_string()));
    assert_eq!(kh, KnownHosts::default());

    let (addr, _server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let session = client_handshake(&mut stream, &f.admin, &mut kh, HOST, true).unwrap();
    assert!(session.trusted_on_first_use());
    assert_eq!(kh.check(HOST, &f.host.public_key()), HostCheck::Trusted);
}

#[test]
fn tampered_ciphertext_ends_the_session() {
    let f = Fixture::new();
    let (mut stream, mut session, server) = through_proxy(&f, |i, body| {
        let mut body = body.to_vec();
        if i == 2 {
            body[0] ^= 0x80;
        }
        Some(with_header(&body))
    });
    session
        .send(
            &mut stream,
            &ClientMessage {
                id: 1,
                request: Request::HostInfo,
            },
        )
        .unwrap();
    assert!(matches!(ended(server).1, SessionError::Decrypt));
    // The server hung up; the client sees the end, not a response.
    assert!(matches!(
        session.recv::<_, ServerMessage>(&mut stream),
        Err(SessionError::Frame(FrameError::Closed))
    ));
}

#[test]
fn replayed_frame_ends_the_session() {
    let f = Fixture::new();
    let (mut stream, mut session, server) = through_proxy(&f, |i, body| {
        let frame = with_header(body);
        Some(if i == 2 {
            [frame.clone(), frame].concat()
        } else {
            frame
        })
    });
    // The original is answered; the replay kills the session.
    assert!(matches!(
        call(&mut session, &mut stream, 1, Request::HostInfo),
        Response::HostInfo(_)
    ));
    assert!(matches!(ended(server).1, SessionError::Decrypt));
}

#[test]
fn reordered_frames_end_the_session() {
    let f = Fixture::new();
    let mut held = None;
    let (mut stream, mut session, server) = through_proxy(&f, move |i, body| match i {
        2 => {
            held = Some(with_header(body));
            Some(Vec::new())
        }
        3 => Some([with_header(body), held.take().unwrap_or_default()].concat()),
        _ => Some(with_header(body)),
    });
    for id in [1, 2] {
        session
            .send(
                &mut stream,
                &ClientMessage {
                    id,
                    request: Request::GuestList,
                },
            )
            .unwrap();
    }
    assert!(matches!(ended(server).1, SessionError::Decrypt));
}

#[test]
fn truncated_stream_is_detected() {
    let f = Fixture::new();
    let (mut stream, mut session, server) = through_proxy(&f, |i, body| {
        let frame = with_header(body);
        match i {
            2 => Some(frame[..frame.len() / 2].to_vec()),
            3 => None,
            _ => Some(frame),
        }
    });
    for id in [1, 2] {
        session
            .send(
                &mut stream,
                &ClientMessage {
                    id,
                    request: Request::GuestList,
                },
            )
            .unwrap();
    }
    assert!(matches!(
        ended(server).1,
        SessionError::Frame(FrameError::Truncated { .. })
    ));
}

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let f = Fixture::new();
    // In the handshake.
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    stream.write_all(&[0xff; 4]).unwrap();
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Frame(FrameError::TooLarge {
            len: 0xffff_ffff,
            max: MAX_HANDSHAKE_FRAME
        })
    ));

    // After it.
    let (mut stream, mut session, server) = through_proxy(&f, |i, body| {
        Some(if i == 2 {
            vec![0x7f, 0xff, 0xff, 0xff]
        } else {
            with_header(body)
        })
    });
    session
        .send(
            &mut stream,
            &ClientMessage {
                id: 1,
                request: Request::HostInfo,
            },
        )
        .unwrap();
    assert!(matches!(
        ended(server).1,
        SessionError::Frame(FrameError::TooLarge {
            len: 0x7fff_ffff,
            max: MAX_FRAME
        })
    ));
}

#[test]
fn garbage_handshake_is_malformed() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    stream
        .write_all(&with_header(b"SSH-2.0-OpenSSH_9.6"))
        .unwrap();
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Malformed(_)
    ));
}

#[test]
fn silent_client_times_out() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], Duration::from_millis(200));
    let _stream = connect(addr);
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Frame(FrameError::TimedOut)
    ));

    // Also after the hello: a client that stops before authenticating.
    let (addr, server) = f.serve(&[1], Duration::from_millis(200));
    let mut stream = connect(addr);
    let hello = ClientHello {
        versions: vec![1],
        ephemeral: [9; 32],
        nonce: [0; 32],
    };
    frame::write_frame(&mut stream, &hello.encode(), MAX_HANDSHAKE_FRAME).unwrap();
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).unwrap();
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Session(SessionError::Frame(FrameError::TimedOut))
    ));
}

#[test]
fn client_offering_only_an_old_version_is_refused() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let options = ClientOptions {
        versions: vec![0],
        ..ClientOptions::default()
    };
    let e = client_handshake_with(&mut stream, &f.admin, &mut f.known_hosts(), HOST, &options)
        .unwrap_err();
    assert!(matches!(
        e,
        HandshakeError::NoCommonVersion { ref ours, ref theirs } if ours == &[0] && theirs == &[1]
    ));
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::NoCommonVersion { .. }
    ));
}

#[test]
fn mitm_stripping_the_newest_version_breaks_the_signature() {
    let f = Fixture::new();
    // Both sides speak 1 and a (hypothetical) 2; the attacker removes 2
    // from the client's offer to force 1.
    let (addr, server) = f.serve(&[1, 2], TIMEOUT);
    let addr = proxy(addr, |i, body| {
        if i == 0 {
            let mut hello = ClientHello::decode(body).unwrap();
            hello.versions.retain(|&v| v != 2);
            Some(with_header(&hello.encode()))
        } else {
            Some(with_header(body))
        }
    });
    let mut stream = connect(addr);
    let options = ClientOptions {
        versions: vec![1, 2],
        ..ClientOptions::default()
    };
    let e = client_handshake_with(&mut stream, &f.admin, &mut f.known_hosts(), HOST, &options)
        .unwrap_err();
    assert!(matches!(e, HandshakeError::HostSignatureInvalid));
    drop(stream);
    // The server never sees an authentication.
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Session(_)
    ));

    // Without the attacker the same pair settles on 2.
    let (addr, _server) = f.serve(&[1, 2], TIMEOUT);
    let mut stream = connect(addr);
    let session =
        client_handshake_with(&mut stream, &f.admin, &mut f.known_hosts(), HOST, &options).unwrap();
    assert_eq!(session.version(), 2);
}

#[test]
fn reader_cannot_make_admin_requests() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[1], TIMEOUT);
    let mut stream = connect(addr);
    let mut session =
        client_handshake(&mut stream, &f.reader, &mut f.known_hosts(), HOST, false).unwrap();
    assert_eq!(session.role(), Some(Role::Reader));
    assert_eq!(
        call(&mut session, &mut stream, 1, Request::GuestList),
        Response::Guests(vec![])
    );
    for (id, request) in [
        (
            2,
            Request::GuestDefine {
                spec_toml: String::new(),
            },
        ),
        (3, Request::GuestStart { name: "web".into() }),
        (4, Request::Audit { tail: 5 }),
    ] {
        assert!(matches!(
            call(&mut session, &mut stream, id, request),
            Response::Error {
                kind: ErrorCode::Unauthorized,
                ..
            }
        ));
    }
    drop(stream);
    assert_eq!(ended(server).0.role, Role::Reader);
}
