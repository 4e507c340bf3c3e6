//! End-to-end tests over real TCP on 127.0.0.1: a server thread, a client,
//! and for the active-attacker cases a frame-aware proxy in between.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use keel_common::frame::{self, FrameError};
use keel_mgmt::handshake::{
    signed_message, transcript_hash, ClientHello, ServerHello, MAX_HANDSHAKE_FRAME,
    SERVER_SIG_CONTEXT,
};
use keel_mgmt::messages::{ErrorCode, HostInfo};
use keel_mgmt::{
    allowed, client_handshake_with, server_handshake_with, Authority, AuthorizedKeys, ClientKey,
    ClientMessage, ClientOptions, HandshakeError, HostCheck, HostKey, KnownHosts, Peer, PeerAuth,
    Request, Response, Role, ServerMessage, ServerOptions, Session, SessionError, MAX_FRAME,
    SUPPORTED_VERSIONS,
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
            let authority = TestAuthority { authorized };
            let (mut session, peer) =
                match server_handshake_with(&mut stream, &host, &options, &authority) {
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

/// A stand-in for the agent: pairing always open with [`PAIRING_CODE`].
struct TestAuthority {
    authorized: AuthorizedKeys,
}

impl Authority for TestAuthority {
    fn pairing_code(&self) -> Option<String> {
        Some(PAIRING_CODE.into())
    }

    fn authorize(&self, auth: &PeerAuth) -> Option<Role> {
        match auth {
            PeerAuth::Key { public_key } => self.authorized.lookup(public_key).map(|(r, _)| r),
            PeerAuth::Paired { .. } => Some(Role::Admin),
        }
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
    let (addr, server) = f.serve(&[2], TIMEOUT);
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
    let (addr, server) = f.serve(&[2], TIMEOUT);
    let mut stream = connect(addr);
    let mut session =
        client_handshake(&mut stream, &f.admin, &mut f.known_hosts(), HOST, false).unwrap();
    assert_eq!(session.role(), Some(Role::Admin));
    assert_eq!(session.version(), 2);
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
    let (addr, server) = f.serve(&[2], TIMEOUT);
    let mut stream = connect(addr);
    let e =
        client_handshake(&mut stream, &f.stranger, &mut f.known_hosts(), HOST, false).unwrap_err();
    assert!(matches!(e, HandshakeError::Rejected));
    assert_eq!(e.to_string(), "The server refused the authentication.");
    match handshake_failed(server) {
        HandshakeError::Unauthorized { fingerprint } => {
            assert_eq!(fingerprint, f.stranger.fingerprint())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn pairing_code_enrols_a_new_key_and_pins_the_proven_host() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[2], TIMEOUT);
    let mut stream = connect(addr);
    let options = ClientOptions {
        pairing_code: Some("314 159".into()),
        ..ClientOptions::default()
    };
    // No trust on first use: the code vouches for the host key.
    let mut kh = KnownHosts::default();
    let mut session =
        client_handshake_with(&mut stream, &f.stranger, &mut kh, HOST, &options).unwrap();
    assert_eq!(session.role(), Some(Role::Admin));
    assert!(session.trusted_on_first_use());
    assert_eq!(kh.check(HOST, &f.host.public_key()), HostCheck::Trusted);
    assert_eq!(
        call(&mut session, &mut stream, 1, Request::GuestList),
        Response::Guests(vec![])
    );
    drop(stream);
    let (peer, _) = ended(server);
    assert!(peer.paired);
    assert_eq!(peer.public_key, f.stranger.public_key());
}

/// Pairs through `addr` with `code`, counting the frames the client
/// sends (via a pass-through proxy).
fn pair_counting_frames(
    addr: SocketAddr,
    key: &ClientKey,
    code: &str,
) -> (Result<Session, HandshakeError>, usize) {
    let frames = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&frames);
    let addr = proxy(addr, move |_, body| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(with_header(body))
    });
    let mut stream = connect(addr);
    let options = ClientOptions {
        pairing_code: Some(code.into()),
        ..ClientOptions::default()
    };
    let result =
        client_handshake_with(&mut stream, key, &mut KnownHosts::default(), HOST, &options);
    drop(stream);
    // Let the proxy see the close.
    thread::sleep(Duration::from_millis(50));
    (result, frames.load(Ordering::SeqCst))
}

#[test]
fn a_wrong_code_fails_before_the_client_sends_anything_but_its_hello() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[2], TIMEOUT);
    let (result, frames) = pair_counting_frames(addr, &f.stranger, "271-828");
    assert!(matches!(result, Err(HandshakeError::PairingFailed)));
    assert_eq!(frames, 1, "the client sent more than its hello");
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::WrongPairingCode
    ));
}

/// A host that answers pairing with its own key and a guessed code, as a
/// guest spoofing ARP or DHCP would: the client refuses it and gives it
/// nothing but the hello, whose SPAKE2 message is a uniformly random
/// group element whatever the code.
#[test]
fn an_impostor_host_cannot_take_the_pairing() {
    let f = Fixture::new();
    let impostor = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        struct Guess;
        impl Authority for Guess {
            fn pairing_code(&self) -> Option<String> {
                Some("123-456".into())
            }
            fn authorize(&self, _: &PeerAuth) -> Option<Role> {
                Some(Role::Admin)
            }
        }
        server_handshake_with(
            &mut stream,
            &impostor.host,
            &ServerOptions::default(),
            &Guess,
        )
        .map(|_| ())
    });
    let (result, frames) = pair_counting_frames(addr, &f.stranger, PAIRING_CODE);
    assert!(matches!(result, Err(HandshakeError::PairingFailed)));
    assert_eq!(frames, 1);
    assert!(matches!(
        fake.join().unwrap(),
        Err(HandshakeError::WrongPairingCode)
    ));
}

/// A man in the middle relays the pairing between the real client and
/// the real host, substituting its own ephemeral key and host key (and
/// signing for them) to read the session. The SPAKE2 messages pass
/// unchanged, yet without the code's key neither side's proof opens for
/// the other: the client refuses, and no key is enrolled.
#[test]
fn a_relaying_man_in_the_middle_cannot_pair_or_read() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[2], TIMEOUT);
    let mitm_host = HostKey::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mitm_addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut upstream = TcpStream::connect(addr).unwrap();
        let client_hello = frame::read_frame(&mut client, MAX_HANDSHAKE_FRAME).unwrap();
        let mut hello = ClientHello::decode(&client_hello).unwrap();
        hello.ephemeral = [0x55; 32];
        frame::write_frame(&mut upstream, &hello.encode(), MAX_HANDSHAKE_FRAME).unwrap();
        let reply = frame::read_frame(&mut upstream, MAX_HANDSHAKE_FRAME).unwrap();
        let mut server_hello = ServerHello::decode(&reply).unwrap();
        server_hello.ephemeral = [0x66; 32];
        server_hello.host_key = mitm_host.public_key().0;
        let th = transcript_hash(&client_hello, &server_hello.encode_unsigned());
        server_hello.signature = mitm_host.sign(&signed_message(SERVER_SIG_CONTEXT, &th));
        frame::write_frame(&mut client, &server_hello.encode(), MAX_HANDSHAKE_FRAME).unwrap();
        // From here on, relay what it cannot decrypt.
        let mut client_w = client.try_clone().unwrap();
        let mut upstream_r = upstream.try_clone().unwrap();
        thread::spawn(move || {
            let _ = std::io::copy(&mut upstream_r, &mut client_w);
            let _ = client_w.shutdown(Shutdown::Both);
        });
        let _ = std::io::copy(&mut client, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Both);
    });
    let (result, frames) = pair_counting_frames(mitm_addr, &f.stranger, PAIRING_CODE);
    assert!(
        matches!(result, Err(HandshakeError::PairingFailed)),
        "{result:?}"
    );
    // The hello went to the relay; nothing else did.
    assert_eq!(frames, 1);
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::WrongPairingCode
    ));
}

/// What a passive relay records of a successful pairing does not let it
/// test codes offline: even given the right code and the X25519 shared
/// secret, it cannot make the key the host's confirmation is sealed
/// with, because each side's SPAKE2 secret never left it.
#[test]
fn a_recorded_pairing_cannot_be_tested_offline() {
    use keel_mgmt::pake::Pake;
    use keel_mgmt::session::{derive_keys, open};
    let (client, client_msg) = Pake::client(PAIRING_CODE);
    let (server, server_msg) = Pake::server(PAIRING_CODE);
    let real = server.finish(&client_msg).unwrap();
    assert_eq!(client.finish(&server_msg).unwrap(), real);
    let shared = [0x42; 32];
    let th = [0x24; 32];
    let keys = derive_keys(&shared, &real, &th).unwrap();
    let confirm = keel_mgmt::session::seal(&keys.server_to_client, 0, &[0x07]).unwrap();
    // The relay's best: run its own SPAKE2 halves with the right code
    // against each recorded message.
    for guess in [
        Pake::client(PAIRING_CODE).0.finish(&server_msg).unwrap(),
        Pake::server(PAIRING_CODE).0.finish(&client_msg).unwrap(),
    ] {
        assert_ne!(guess, real);
        let keys = derive_keys(&shared, &guess, &th).unwrap();
        assert!(open(&keys.server_to_client, 0, &confirm[4..]).is_err());
    }
}

/// The client comes to pair but the host is closed for pairing.
#[test]
fn pairing_with_a_closed_host_says_so() {
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let host = HostKey::from_pkcs8(f.host.pkcs8()).unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        struct Closed;
        impl Authority for Closed {
            fn pairing_code(&self) -> Option<String> {
                None
            }
            fn authorize(&self, _: &PeerAuth) -> Option<Role> {
                None
            }
        }
        server_handshake_with(&mut stream, &host, &ServerOptions::default(), &Closed).map(|_| ())
    });
    let (result, frames) = pair_counting_frames(addr, &f.stranger, PAIRING_CODE);
    assert!(matches!(result, Err(HandshakeError::PairingClosed)));
    assert_eq!(frames, 1);
    assert!(matches!(
        server.join().unwrap(),
        Err(HandshakeError::PairingClosed)
    ));
}

#[test]
fn changed_host_key_is_refused_loudly() {
    let f = Fixture::new();
    let (addr, _server) = f.serve(&[2], TIMEOUT);
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
    let (addr, _server) = f.serve(&[2], TIMEOUT);
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

    let (addr, _server) = f.serve(&[2], TIMEOUT);
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
    let (addr, server) = f.serve(&[2], TIMEOUT);
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
    let (addr, server) = f.serve(&[2], TIMEOUT);
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
    let (addr, server) = f.serve(&[2], Duration::from_millis(200));
    let _stream = connect(addr);
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::Frame(FrameError::TimedOut)
    ));

    // Also after the hello: a client that stops before authenticating.
    let (addr, server) = f.serve(&[2], Duration::from_millis(200));
    let mut stream = connect(addr);
    let hello = ClientHello {
        versions: vec![2],
        ephemeral: [9; 32],
        nonce: [0; 32],
        pairing: None,
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
    let (addr, server) = f.serve(SUPPORTED_VERSIONS, TIMEOUT);
    let mut stream = connect(addr);
    let options = ClientOptions {
        versions: vec![1],
        ..ClientOptions::default()
    };
    let e = client_handshake_with(&mut stream, &f.admin, &mut f.known_hosts(), HOST, &options)
        .unwrap_err();
    assert!(matches!(
        e,
        HandshakeError::NoCommonVersion { ref ours, ref theirs } if ours == &[1] && theirs == &[2]
    ));
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::NoCommonVersion { .. }
    ));
}

/// A version-1 keelctl's hello, byte for byte (no mode byte: version 1
/// sent the pairing code later, to whichever host answered), gets the
/// version alert, not a parse error.
#[test]
fn a_version_1_hello_gets_a_clear_version_refusal() {
    let f = Fixture::new();
    let (addr, server) = f.serve(SUPPORTED_VERSIONS, TIMEOUT);
    let mut stream = connect(addr);
    let mut v1 = vec![0x01, 1, 0, 1];
    v1.extend_from_slice(&[9; 32]);
    v1.extend_from_slice(&[7; 32]);
    frame::write_frame(&mut stream, &v1, MAX_HANDSHAKE_FRAME).unwrap();
    let alert = frame::read_frame(&mut stream, MAX_HANDSHAKE_FRAME).unwrap();
    assert_eq!(alert, [0x7f, 1, 0, 2]);
    assert!(matches!(
        handshake_failed(server),
        HandshakeError::NoCommonVersion { ref theirs, .. } if theirs == &[1]
    ));
}

#[test]
fn mitm_stripping_the_newest_version_breaks_the_signature() {
    let f = Fixture::new();
    // Both sides speak 2 and a (hypothetical) 3; the attacker removes 3
    // from the client's offer to force 2.
    let (addr, server) = f.serve(&[2, 3], TIMEOUT);
    let addr = proxy(addr, |i, body| {
        if i == 0 {
            let mut hello = ClientHello::decode(body).unwrap();
            hello.versions.retain(|&v| v != 3);
            Some(with_header(&hello.encode()))
        } else {
            Some(with_header(body))
        }
    });
    let mut stream = connect(addr);
    let options = ClientOptions {
        versions: vec![2, 3],
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

    // Without the attacker the same pair settles on 3.
    let (addr, _server) = f.serve(&[2, 3], TIMEOUT);
    let mut stream = connect(addr);
    let session =
        client_handshake_with(&mut stream, &f.admin, &mut f.known_hosts(), HOST, &options).unwrap();
    assert_eq!(session.version(), 3);
}

#[test]
fn reader_cannot_make_admin_requests() {
    let f = Fixture::new();
    let (addr, server) = f.serve(&[2], TIMEOUT);
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
