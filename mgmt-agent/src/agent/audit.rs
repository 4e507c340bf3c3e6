//! The audit log, `<state-dir>/audit.log`: one line per request (who, as
//! what, which request, the outcome) and per refused handshake, appended
//! as they happen and served back by `Audit`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use super::dispatch::error;
use super::lock;
use super::server::{io_err, AgentError};
use crate::messages::{AuditEntry, ErrorCode, Request, Response};
use crate::util::{parse_rfc3339, rfc3339, unix_now};
use crate::{Fingerprint, Peer};

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600.
    pub fn open(path: PathBuf) -> Result<Self, AgentError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    fn line(&self, line: &str) {
        let mut f = lock(&self.file);
        if let Err(e) = writeln!(f, "{} {line}", rfc3339(unix_now())) {
            log::error!("cannot write the audit log: {e}");
        }
    }

    /// The line of one request: who, as what, which, and the outcome.
    pub fn request(&self, peer: &Peer, request: &str, outcome: &str) {
        self.line(&format!(
            "{} {} {request} {outcome}",
            peer.fingerprint, peer.role
        ));
    }

    pub fn handshake(&self, peer: SocketAddr, fp: Option<Fingerprint>, reason: &str) {
        let fp = fp.map_or_else(|| "-".to_string(), |f| f.to_string());
        self.line(&format!(
            "{fp} - handshake refused peer={peer} reason={reason}"
        ));
    }

    /// The answer to `Audit`: the last `tail` request lines.
    pub fn tail(&self, tail: u32) -> Response {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                return error(
                    ErrorCode::Internal,
                    format!("Cannot read the audit log: {e}"),
                )
            }
        };
        // Only request lines fit AuditEntry; refused handshakes (no role) are
        // in the file but not in this view.
        let mut entries: Vec<AuditEntry> = text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                let [time, fp, role, request, outcome] = f[..] else {
                    return None;
                };
                Some(AuditEntry {
                    unix_time: parse_rfc3339(time)?,
                    fingerprint: fp.to_string(),
                    role: role.parse().ok()?,
                    request: request.to_string(),
                    outcome: outcome.to_string(),
                })
            })
            .collect();
        let skip = entries.len().saturating_sub(tail as usize);
        entries.drain(..skip);
        Response::Audit(entries)
    }
}

/// A short single-token name of a request for the audit log.
pub fn request_name(request: &Request) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    };
    match request {
        Request::HostInfo => "HostInfo".into(),
        Request::GuestList => "GuestList".into(),
        Request::GuestShow { name } => format!("GuestShow({})", clean(name)),
        Request::GuestDefine { .. } => "GuestDefine".into(),
        Request::GuestUndefine { name } => format!("GuestUndefine({})", clean(name)),
        Request::GuestStart { name } => format!("GuestStart({})", clean(name)),
        Request::GuestStop { name } => format!("GuestStop({})", clean(name)),
        Request::GuestKill { name } => format!("GuestKill({})", clean(name)),
        Request::GuestRestart { name } => format!("GuestRestart({})", clean(name)),
        Request::GuestConsole { name } => format!("GuestConsole({})", clean(name)),
        Request::ConsoleInput { .. } => "ConsoleInput".into(),
        Request::ConsoleDetach => "ConsoleDetach".into(),
        Request::Logs { .. } => "Logs".into(),
        Request::Audit { .. } => "Audit".into(),
        Request::Upload { path, .. } => format!("Upload({})", clean(path)),
        Request::UploadChunk { .. } => "UploadChunk".into(),
        Request::UploadFinish => "UploadFinish".into(),
        Request::AuthorizeKey { role, .. } => format!("AuthorizeKey({role})"),
        Request::HostReboot => "HostReboot".into(),
        Request::HostPowerOff => "HostPowerOff".into(),
    }
}

/// `Upload(<path>,size=<bytes>)`, one token like every request name.
pub fn upload_name(path: &str, size: u64) -> String {
    let name = request_name(&Request::Upload {
        path: path.to_string(),
        size,
        sha256: [0; 32],
    });
    format!("{},size={size})", name.trim_end_matches(')'))
}
