//! One request of a session: authorised against the peer's role, served
//! (guest and host operations by init, the rest by the agent), and
//! audited.

use keel_common::init_api::InitRequest;

use super::audit::request_name;
use super::host_info::host_info;
use super::init_client::GuestError;
use super::keys;
use super::log_lines;
use super::server::Shared;
use crate::messages::{ErrorCode, Request, Response};
use crate::{allowed, Fingerprint, Peer};

/// Largest console-log tail `keelctl logs --guest` gets.
const GUEST_LOG_BYTES: u32 = 256 * 1024;

pub fn error(kind: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

/// Authorises, serves and audits one request.
pub fn dispatch(shared: &Shared, peer: &Peer, request: &Request) -> Response {
    let response = if allowed(peer.role, request) {
        serve_request(shared, peer, request)
    } else {
        error(
            ErrorCode::Unauthorized,
            format!(
                "The {} role may not make this request ({}).",
                peer.role,
                request_name(request)
            ),
        )
    };
    let outcome = match &response {
        Response::Error {
            kind: ErrorCode::Unauthorized,
            ..
        } => "refused",
        Response::Error { .. } => "error",
        _ => "ok",
    };
    shared.audit.request(peer, &request_name(request), outcome);
    response
}

fn guest_result(r: Result<(), GuestError>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err((kind, message)) => error(kind, message),
    }
}

fn serve_request(shared: &Shared, peer: &Peer, request: &Request) -> Response {
    let init = &shared.init;
    let simple = |r: InitRequest| guest_result(init.simple(&r));
    match request {
        Request::HostInfo => Response::HostInfo(host_info(init, shared.started.elapsed())),
        Request::GuestList => match init.list() {
            Ok(list) => Response::Guests(list),
            Err((kind, message)) => error(kind, message),
        },
        Request::GuestShow { name } => match init.show(name) {
            Ok(d) => Response::Guest(d),
            Err((kind, message)) => error(kind, message),
        },
        Request::GuestDefine { spec_toml } => {
            let r = init.simple(&InitRequest::GuestDefine {
                spec_toml: spec_toml.clone(),
            });
            if r.is_ok() {
                shared
                    .events
                    .record(&format!("guest spec defined by {}", peer.fingerprint));
            }
            guest_result(r)
        }
        Request::GuestUndefine { name } => {
            simple(InitRequest::GuestUndefine { name: name.clone() })
        }
        Request::GuestStart { name } => simple(InitRequest::GuestStart { name: name.clone() }),
        Request::GuestStop { name } => simple(InitRequest::GuestStop { name: name.clone() }),
        Request::GuestKill { name } => simple(InitRequest::GuestKill { name: name.clone() }),
        Request::GuestRestart { name } => simple(InitRequest::GuestRestart { name: name.clone() }),
        Request::HostReboot => simple(InitRequest::HostReboot),
        Request::HostPowerOff => simple(InitRequest::HostPowerOff),
        // A guest's log is followed as a stream by the session loop; the
        // host log cannot be followed yet, and saying so beats answering
        // as if `follow` had been honoured.
        Request::Logs {
            guest: None,
            follow: true,
            ..
        } => error(
            ErrorCode::Invalid,
            "Only a guest's log can be followed; ask for the host log with follow off.",
        ),
        Request::Logs {
            guest: Some(_),
            follow: true,
            ..
        } => error(
            ErrorCode::Conflict,
            "A log cannot be followed from inside an attached console.",
        ),
        Request::Logs {
            guest: Some(name),
            tail,
            ..
        } => match init.console_log(name, GUEST_LOG_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<String> = text
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_string())
                    .collect();
                Response::LogLines(log_lines::fit(lines, *tail))
            }
            Err((kind, message)) => error(kind, message),
        },
        Request::Logs {
            guest: None, tail, ..
        } => {
            // init's log (guest state changes among it) when init is
            // there, then the agent's own events.
            let mut lines = init.host_log(*tail).unwrap_or_default();
            let events = shared.events.lines();
            lines.extend(events.iter().map(|l| format!("keel-agent: {l}")));
            Response::LogLines(log_lines::fit(lines, *tail))
        }
        Request::Audit { tail } => shared.audit.tail(*tail),
        Request::AuthorizeKey {
            role,
            public_key,
            comment,
        } => keys::authorize(shared, peer, *role, crate::PublicKey(*public_key), comment),
        Request::KeyList => keys::list(shared),
        Request::KeyRevoke { fingerprint } => keys::revoke(shared, peer, Fingerprint(*fingerprint)),
        Request::KeySetRole { fingerprint, role } => {
            keys::set_role(shared, peer, Fingerprint(*fingerprint), *role)
        }
        // The session loop turns the session into a console stream.
        Request::GuestConsole { .. } | Request::ConsoleInput { .. } | Request::ConsoleDetach => {
            error(
                ErrorCode::Invalid,
                "No console is attached in this session.",
            )
        }
        // The session loop routes the upload stream to upload::serve.
        Request::Upload { .. }
        | Request::UploadChunk { .. }
        | Request::UploadFinish
        | Request::UploadStart { .. }
        | Request::UploadEnd { .. } => error(
            ErrorCode::Internal,
            "Upload messages are only served inside a session.",
        ),
    }
}
