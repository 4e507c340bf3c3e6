//! An attached guest console: the session becomes a two-way stream
//! between the client and the guest's VMM socket. Guest output goes out as
//! `ConsoleData`; `ConsoleInput` goes to the guest; `ConsoleDetach`, the
//! guest stopping, or the session ending closes it. Other requests are
//! still served in between.
//!
//! `Logs { guest, follow: true }` is the same stream, read-only: the last
//! `tail` lines, then whatever the guest prints until it stops.
//!
//! Either ends the session after the idle limit without traffic either
//! way, like an ordinary session without requests.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use keel_common::vmm_api::{self, VmmRequest, VmmResponse};
use keel_sys::deadline::{connect_unix, Deadline};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::audit::request_name;
use super::dispatch::{dispatch, error};
use super::server::Shared;
use crate::messages::{ErrorCode, GuestState, MAX_CHUNK};
use crate::{ClientMessage, Peer, Request, Response, ServerMessage, Session};

/// How long an attach waits for a starting VMM's socket.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
/// How long the VMM may take over the attach exchange, over one frame of
/// output once it started one, or to take one frame of input: a VMM that
/// trickles or stalls ends the console, not the session's thread.
const VMM_EXCHANGE: Duration = Duration::from_secs(5);

/// Recent output replayed on attach, so a late attach still sees context.
const HISTORY_BYTES: u32 = 4096;
/// How much log a follow looks through for its first `tail` lines.
const FOLLOW_HISTORY_BYTES: u32 = 256 * 1024;

/// What the stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `GuestConsole`: read-write, the last few KiB replayed first.
    Attach,
    /// `Logs { follow }`: read-only, the last `tail` lines first; a guest
    /// that is not running just has its log sent, then the stream closes.
    Follow { tail: u32 },
}

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
            ErrorCode::Conflict,
            format!(
                "Guest \"{name}\" is {}, not running.",
                status.state.as_str()
            ),
        )));
    }
    let path = shared.settings.vmm_socket_dir.join(format!("{name}.sock"));
    let failed = |e: &dyn std::fmt::Display| {
        Box::new(error(
            ErrorCode::Unavailable,
            format!("Cannot reach the console of \"{name}\": {e}."),
        ))
    };
    // A VMM just started may not have bound its socket yet.
    let deadline = std::time::Instant::now() + CONNECT_PATIENCE;
    let vmm = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match connect_unix(&path, left) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(failed(&e)),
        }
    };
    let mut exchange = Deadline::new(&vmm, VMM_EXCHANGE);
    vmm_api::write_frame(&mut exchange, &VmmRequest::ConsoleAttach).map_err(|e| failed(&e))?;
    match vmm_api::read_frame::<_, VmmResponse>(&mut exchange) {
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

/// `data` as the `ConsoleData` of one frame each (a follow's history may
/// be larger than a frame); at least one, empty for no data.
fn frames(data: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let none = data.is_empty().then(Vec::new);
    none.into_iter()
        .chain(data.chunks(MAX_CHUNK).map(<[u8]>::to_vec))
}

/// The last `n` lines of `bytes` (all of it if it has fewer).
pub fn last_lines(bytes: &[u8], n: u32) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1) as usize)
        .map_or(0, |(i, _)| i + 1);
    &bytes[start..]
}

/// Serves an attached console (or a followed log) for request `id` until
/// it ends.
pub fn run(
    shared: &Shared,
    peer: &Peer,
    session: &mut Session,
    stream: &mut TcpStream,
    id: u64,
    name: &str,
    mode: Mode,
) -> Ended {
    let send = |session: &mut Session, stream: &mut TcpStream, response: Response| {
        session
            .send(stream, &ServerMessage { id, response })
            .is_ok()
    };
    let what = request_name(&match mode {
        Mode::Attach => Request::GuestConsole {
            name: name.to_string(),
        },
        Mode::Follow { tail } => Request::Logs {
            guest: Some(name.to_string()),
            tail,
            follow: true,
        },
    });
    let history = |shared: &Shared| match mode {
        Mode::Attach => shared
            .init
            .console_log(name, HISTORY_BYTES)
            .unwrap_or_default(),
        Mode::Follow { tail } => shared
            .init
            .console_log(name, FOLLOW_HISTORY_BYTES)
            .map(|log| last_lines(&log, tail).to_vec())
            .unwrap_or_default(),
    };
    let vmm = match open(shared, name) {
        Ok(vmm) => vmm,
        Err(response) => {
            // A stopped guest's log can still be followed to its end.
            if matches!(mode, Mode::Follow { .. })
                && matches!(
                    &*response,
                    Response::Error {
                        kind: ErrorCode::Conflict,
                        ..
                    }
                )
            {
                shared.audit.request(peer, &what, "ok");
                let history = history(shared);
                if !frames(&history).all(|d| send(session, stream, Response::ConsoleData(d))) {
                    return Ended::SessionClosed;
                }
                return finish(session, stream, id, Response::ConsoleClosed);
            }
            shared.audit.request(peer, &what, "error");
            return finish(session, stream, id, *response);
        }
    };
    shared.audit.request(peer, &what, "ok");
    let history = history(shared);
    if !frames(&history).all(|d| send(session, stream, Response::ConsoleData(d))) {
        return Ended::SessionClosed;
    }
    let idle = PollTimeout::try_from(shared.settings.idle_timeout).unwrap_or(PollTimeout::MAX);
    loop {
        let (client_ready, vmm_ready) = {
            let mut fds = [
                PollFd::new(stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(vmm.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, idle) {
                // Neither side said anything for the idle limit.
                Ok(0) => return Ended::SessionClosed,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Ended::SessionClosed,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if vmm_ready {
            match vmm_api::read_frame::<_, VmmResponse>(&mut Deadline::new(&vmm, VMM_EXCHANGE)) {
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
                Request::ConsoleInput { .. } if msg.id == id && mode != Mode::Attach => {
                    let refusal = error(
                        ErrorCode::Invalid,
                        "A followed log is read-only; use `guest console` to type.",
                    );
                    if !send(session, stream, refusal) {
                        return Ended::SessionClosed;
                    }
                }
                Request::ConsoleInput { data } if msg.id == id => {
                    let input = VmmRequest::ConsoleInput(data);
                    let mut to_vmm = Deadline::new(&vmm, VMM_EXCHANGE);
                    if vmm_api::write_frame(&mut to_vmm, &input).is_err() {
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

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end() {
        let log = b"one\r\ntwo\r\nthree\r\n";
        assert_eq!(last_lines(log, 2), b"two\r\nthree\r\n");
        assert_eq!(last_lines(log, 3), log);
        assert_eq!(last_lines(log, 10), log);
        assert_eq!(last_lines(log, 0), b"");
        // A last line still being written counts as a line.
        assert_eq!(last_lines(b"a\nb\npart", 1), b"part");
        assert_eq!(last_lines(b"", 5), b"");
    }
}
