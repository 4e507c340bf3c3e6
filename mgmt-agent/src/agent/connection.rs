//! One client connection: the handshake (answered by `authority`), then the session's requests until it ends. Consoles and
//! followed logs turn the session into a stream; upload messages go to
//! the session's upload slot; everything else is dispatched.

use std::net::{SocketAddr, TcpStream};

use super::authority::Authorizer;
use super::console;
use super::deadline::Deadline;
use super::dispatch::dispatch;
use super::server::Shared;
use super::sessions::NotRegistered;
use super::upload::{self, UploadSlot};
use crate::{
    allowed, server_handshake, FrameError, HandshakeError, Peer, Request, ServerMessage, Session,
    SessionError,
};

/// Serves `stream` from `peer` (whose handshake holds place `ticket` in
/// `shared.handshakes`) until the session ends.
pub fn handle(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, ticket: u64) {
    // Frames are written whole; see Client::connect.
    let _ = stream.set_nodelay(true);
    let authority = Authorizer::new(shared, peer);
    let result = server_handshake(
        &mut Deadline::new(&stream, shared.settings.handshake_timeout),
        &shared.host_key,
        &authority,
    );
    let reason = authority.reason();
    // Ends a pairing attempt, which may open a fresh code.
    drop(authority);
    shared.handshakes.leave(ticket);
    let (mut session, who) = match result {
        Ok(ok) => ok,
        Err(e) => {
            shared.limiter.finish(peer.ip(), false);
            let fp = match &e {
                HandshakeError::Unauthorized { fingerprint } => Some(*fingerprint),
                _ => None,
            };
            shared
                .audit
                .handshake(peer, fp, handshake_reason(&e, reason));
            return;
        }
    };
    shared.limiter.finish(peer.ip(), true);
    if !shared.enter_session(who.role) {
        shared
            .audit
            .handshake(peer, Some(who.fingerprint), "too many sessions");
        return;
    }
    shared.audit.login(peer, &who);
    shared.events.record(&format!(
        "session from {peer}: {} as {}{}",
        who.fingerprint,
        who.role,
        if who.paired { " (paired)" } else { "" }
    ));
    // Registered before the key is checked again, so that a revocation
    // racing with this handshake either is seen here or ends the session.
    let max = shared.settings.max_sessions_per_key;
    match shared.sessions.register(who.fingerprint, &stream, max) {
        Ok(registered) => {
            let current = shared.key_role(&who.public_key);
            if current.is_some_and(|role| role >= who.role) {
                serve_session(shared, &mut stream, &mut session, &who);
            }
            drop(registered);
        }
        Err(NotRegistered::TooMany) => {
            shared.audit.handshake(
                peer,
                Some(who.fingerprint),
                "too many sessions for this key",
            );
        }
        Err(NotRegistered::Stream) => {}
    }
    shared.leave_session();
}

/// The requests of an established session, until it ends.
fn serve_session(shared: &Shared, stream: &mut TcpStream, session: &mut Session, who: &Peer) {
    let idle = Some(shared.settings.idle_timeout);
    if stream.set_read_timeout(idle).is_err() || stream.set_write_timeout(idle).is_err() {
        return;
    }
    let mut upload = UploadSlot::Idle;
    // Reused for every frame; upload chunks are served from it in place.
    let mut buf = Vec::new();
    while let Ok(incoming) = upload::recv(session, stream, &mut buf) {
        let answering = shared.answering();
        let msg = match incoming {
            upload::Incoming::Message(msg) => msg,
            upload::Incoming::Chunk { id, offset, data } => {
                let Some(response) = upload.chunk(shared, who, id, offset, &mut buf, data) else {
                    continue;
                };
                if session
                    .send(stream, &ServerMessage { id, response })
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let response = match &msg.request {
            Request::Upload { .. }
            | Request::UploadChunk { .. }
            | Request::UploadFinish
            | Request::UploadStart { .. }
            | Request::UploadEnd { .. } => match upload.step(shared, who, msg.id, msg.request) {
                Some(r) => r,
                None => continue,
            },
            request => {
                upload.abort(shared, who);
                // Consoles and followed logs turn the session into a stream.
                let stream_of = match request {
                    Request::GuestConsole { name } => Some((name, console::Mode::Attach)),
                    Request::Logs {
                        guest: Some(name),
                        tail,
                        follow: true,
                    } => Some((name, console::Mode::Follow { tail: *tail })),
                    _ => None,
                };
                match stream_of {
                    Some((name, mode)) if allowed(who.role, request) => {
                        // A stream has no one reply to wait for.
                        drop(answering);
                        let id = msg.id;
                        match console::run(shared, who, session, stream, id, name, mode) {
                            console::Ended::Detached => continue,
                            console::Ended::SessionClosed => break,
                        }
                    }
                    _ => dispatch(shared, who, request),
                }
            }
        };
        let reply = ServerMessage {
            id: msg.id,
            response,
        };
        if session.send(stream, &reply).is_err() {
            break;
        }
    }
    upload.abort(shared, who);
}

fn handshake_reason(e: &HandshakeError, reason: &'static str) -> &'static str {
    match e {
        HandshakeError::Frame(FrameError::TimedOut)
        | HandshakeError::Session(SessionError::Frame(FrameError::TimedOut)) => {
            "handshake timed out"
        }
        HandshakeError::Frame(FrameError::Closed | FrameError::Truncated { .. })
        | HandshakeError::Session(SessionError::Frame(
            FrameError::Closed | FrameError::Truncated { .. },
        )) => "connection closed during handshake",
        HandshakeError::Unauthorized { .. } | HandshakeError::PairingClosed => reason,
        HandshakeError::WrongPairingCode => "wrong pairing code or abandoned pairing",
        HandshakeError::ClientSignatureInvalid => "bad client signature",
        HandshakeError::NoCommonVersion { .. } => "no common protocol version",
        _ => "protocol error",
    }
}
