//! An attached guest console: the session becomes a two-way stream
//! between the client and the guest's VMM socket. Guest output goes out as
//! `ConsoleData`; `ConsoleInput` goes to the guest; `ConsoleDetach`, the
//! guest stopping, or the session ending closes it. Other requests are
//! still served in between.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use keel_common::vmm_api::{self, VmmRequest, VmmResponse};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{dispatch, error, request_name, Shared};
use crate::messages::{ErrorKind, GuestState};
use crate::{ClientMessage, Peer, Request, Response, ServerMessage, Session};

/// How long an attach waits for a starting VMM's socket.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Recent output replayed on attach, so a late attach still sees context.
const HISTORY_BYTES: u32 = 4096;

/// How the console ended for the session.
pub enum Ended {
    /// The session goes on with ordinary requests.
    Detached,
    /// The session is unusable (the client went away or broke the channel).
    SessionClosed,
}

/// Connects to the guest's console or says why not.
fn open(shared: &Shared, name: &str) -> Result<UnixStream, Box<Response>> {
    let status = shared
        .init
        .status(name)
        .map_err(|(kind, message)| Box::new(error(kind, message)))?;
    if status.state != GuestState::Running {
        return Err(Box::new(error(
            ErrorKind::Conflict,
            format!(
                "Guest \"{name}\" is {}, not running.",
                status.state.as_str()
            ),
        )));
    }
    let path = shared.cfg.vmm_socket_dir.join(format!("{name}.sock"));
    let failed = |e: &dyn std::fmt::Display| {
        Box::new(error(
            ErrorKind::Unavailable,
            format!("Cannot reach the console of \"{name}\": {e}."),
        ))
    };
    // A VMM just started may not have bound its socket yet.
    let deadline = std::time::Instant::now() + CONNECT_PATIENCE;
    let mut vmm = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(failed(&e)),
        }
    };
    vmm_api::write_frame(&mut vmm, &VmmRequest::ConsoleAttach).map_err(|e| failed(&e))?;
    match vmm_api::read_frame::<_, VmmResponse>(&mut vmm) {
        Ok(VmmResponse::Ok) => Ok(vmm),
        Ok(other) => Err(failed(&format!("{other:?}"))),
        Err(e) => Err(failed(&e)),
    }
}

/// Sends the console's last answer; the session goes on if it went out.
fn finish(session: &mut Session, stream: &mut TcpStream, id: u64, response: Response) -> Ended {
    match session.send(stream, &ServerMessage { id, response }) {
        Ok(()) => Ended::Detached,
        Err(_) => Ended::SessionClosed,
    }
}

/// Serves an attached console for request `id` until it ends.
pub fn run(
    shared: &Shared,
    peer: &Peer,
    session: &mut Session,
    stream: &mut TcpStream,
    id: u64,
    name: &str,
) -> Ended {
    let send = |session: &mut Session, stream: &mut TcpStream, response: Response| {
        session
            .send(stream, &ServerMessage { id, response })
            .is_ok()
    };
    let what = request_name(&Request::GuestConsole {
        name: name.to_string(),
    });
    let mut vmm = match open(shared, name) {
        Ok(vmm) => vmm,
        Err(response) => {
            shared.audit_request(peer, &what, "error");
            return finish(session, stream, id, *response);
        }
    };
    shared.audit_request(peer, &what, "ok");
    let history = shared
        .init
        .console_log(name, HISTORY_BYTES)
        .unwrap_or_default();
    if !send(session, stream, Response::ConsoleData(history)) {
        return Ended::SessionClosed;
    }
    loop {
        let (client_ready, vmm_ready) = {
            let mut fds = [
                PollFd::new(stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(vmm.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Ended::SessionClosed,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if vmm_ready {
            match vmm_api::read_frame::<_, VmmResponse>(&mut vmm) {
                Ok(VmmResponse::Console(bytes)) => {
                    if !send(session, stream, Response::ConsoleData(bytes)) {
                        return Ended::SessionClosed;
                    }
                }
                // Answers to input (a partial take) and the like.
                Ok(VmmResponse::Error(message)) => log::debug!("console {name}: {message}"),
                Ok(_) => {}
                Err(_) => {
                    // The VMM is gone: the guest stopped.
                    return finish(session, stream, id, Response::ConsoleClosed);
                }
            }
        }
        if client_ready {
            let Ok(msg) = session.recv::<_, ClientMessage>(stream) else {
                return Ended::SessionClosed;
            };
            match msg.request {
                Request::ConsoleInput { data } if msg.id == id => {
                    if vmm_api::write_frame(&mut vmm, &VmmRequest::ConsoleInput(data)).is_err() {
                        return finish(session, stream, id, Response::ConsoleClosed);
                    }
                }
                Request::ConsoleDetach => {
                    return finish(session, stream, id, Response::ConsoleClosed);
                }
                request => {
                    let response = dispatch(shared, peer, &request);
                    let reply = ServerMessage {
                        id: msg.id,
                        response,
                    };
                    if session.send(stream, &reply).is_err() {
                        return Ended::SessionClosed;
                    }
                }
            }
        }
    }
}
