//! The audit log, `<state-dir>/audit.log`: one line per request (who, as
//! what, which request, the outcome), per login and pairing enrolment and
//! per refused handshake, appended as they happen and served back by
//! `Audit`. Control characters in any field are replaced, so no field can
//! start a line of its own. At a size cap the log moves to `audit.log.1`
//! (replacing the older copy) and starts afresh; `Audit` reads both from
//! the end, a block at a time.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::dispatch::error;
use super::lock;
use super::server::{io_err, AgentError};
use crate::messages::{AuditEntry, ErrorCode, Request, Response};
use crate::util::{parse_rfc3339, rfc3339, unix_now};
use crate::{Fingerprint, Peer};

/// How much of the log `Audit` reads at a time, from the end.
const READ_BLOCK: u64 = 64 * 1024;

struct Writer {
    file: File,
    size: u64,
}

pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    writer: Mutex<Writer>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// `text` with every control character (newlines among them) replaced.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600; it moves
    /// to `<path>.1` when it would grow past `max_bytes`.
    pub fn open(path: PathBuf, max_bytes: u64) -> Result<Self, AgentError> {
        let file = open_append(&path).map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        Ok(AuditLog {
            path,
            max_bytes,
            writer: Mutex::new(Writer { file, size }),
        })
    }

    fn older(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    fn line(&self, line: &str) {
        let text = format!("{} {}\n", rfc3339(unix_now()), clean(line));
        let mut w = lock(&self.writer);
        if w.size > 0 && w.size + text.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate(&mut w) {
                log::error!("cannot rotate the audit log: {e}");
            }
        }
        match w.file.write_all(text.as_bytes()) {
            Ok(()) => w.size += text.len() as u64,
            Err(e) => log::error!("cannot write the audit log: {e}"),
        }
    }

    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        std::fs::rename(&self.path, self.older())?;
        w.file = open_append(&self.path)?;
        w.size = 0;
        Ok(())
    }

    /// The line of one request: who, as what, which, and the outcome.
    pub fn request(&self, peer: &Peer, request: &str, outcome: &str) {
        self.line(&format!(
            "{} {} {request} {outcome}",
            peer.fingerprint, peer.role
        ));
    }

    /// A session established: who, as what, from where.
    pub fn login(&self, from: SocketAddr, peer: &Peer) {
        let how = if peer.paired {
            "Login(paired)"
        } else {
            "Login"
        };
        self.line(&format!(
            "{} {} {how} ok peer={from}",
            peer.fingerprint, peer.role
        ));
    }

    /// A key enrolled as admin with the pairing code.
    pub fn enrolled(&self, from: SocketAddr, fingerprint: Fingerprint) {
        self.line(&format!("{fingerprint} admin PairingEnrol ok peer={from}"));
    }

    pub fn handshake(&self, peer: SocketAddr, fp: Option<Fingerprint>, reason: &str) {
        let fp = fp.map_or_else(|| "-".to_string(), |f| f.to_string());
        self.line(&format!(
            "{fp} - handshake refused peer={peer} reason={reason}"
        ));
    }

    /// The answer to `Audit`: the last `tail` request lines.
    pub fn tail(&self, tail: u32) -> Response {
        let mut entries = Vec::new();
        for path in [self.path.clone(), self.older()] {
            if entries.len() >= tail as usize {
                break;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return cannot_read(&e),
            };
            let mut take = |line: &[u8]| {
                if let Some(entry) = parse(line) {
                    entries.push(entry);
                }
                entries.len() >= tail as usize
            };
            if let Err(e) = lines_from_end(file, &mut take) {
                return cannot_read(&e);
            }
        }
        entries.reverse();
        Response::Audit(entries)
    }
}

fn cannot_read(e: &io::Error) -> Response {
    error(
        ErrorCode::Internal,
        format!("Cannot read the audit log: {e}"),
    )
}

/// An audit line as an `AuditEntry`. Only request lines fit it; refused
/// handshakes (no role) are in the file but not in this view.
fn parse(line: &[u8]) -> Option<AuditEntry> {
    let line = std::str::from_utf8(line).ok()?;
    let f: Vec<&str> = line.split(' ').collect();
    let (time, fp, role, request, outcome) = match f[..] {
        [time, fp, role, request, outcome] => (time, fp, role, request, outcome),
        // A login says where from.
        [time, fp, role, request, outcome, from] if from.starts_with("peer=") => {
            (time, fp, role, request, outcome)
        }
        _ => return None,
    };
    Some(AuditEntry {
        unix_time: parse_rfc3339(time)?,
        fingerprint: fp.to_string(),
        role: role.parse().ok()?,
        request: request.to_string(),
        outcome: outcome.to_string(),
    })
}

/// Feeds the lines of `file` to `take`, last first, until it returns true
/// or the file's start is reached, reading a block at a time.
fn lines_from_end(mut file: File, take: &mut dyn FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut end = file.seek(SeekFrom::End(0))?;
    // The start of the line that goes on before the block just read.
    let mut carry: Vec<u8> = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(READ_BLOCK);
        let mut block = vec![0; usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        let mut lines = block.split(|b| *b == b'\n').rev().peekable();
        while let Some(line) = lines.next() {
            // The first piece may be the tail of a line in the next block.
            if lines.peek().is_none() && start > 0 {
                carry = line.to_vec();
                break;
            }
            if !line.is_empty() && take(line) {
                return Ok(());
            }
        }
        end = start;
    }
    Ok(())
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
        Request::UploadStart { path, .. } => format!("Upload({})", clean(path)),
        Request::UploadEnd { .. } => "UploadEnd".into(),
        Request::AuthorizeKey {
            role, public_key, ..
        } => format!(
            "AuthorizeKey({role},{})",
            crate::PublicKey(*public_key).fingerprint()
        ),
        Request::HostReboot => "HostReboot".into(),
        Request::HostPowerOff => "HostPowerOff".into(),
        Request::KeyList => "KeyList".into(),
        Request::KeyRevoke { fingerprint } => format!("KeyRevoke({})", Fingerprint(*fingerprint)),
        Request::KeySetRole { fingerprint, role } => {
            format!("KeySetRole({},{role})", Fingerprint(*fingerprint))
        }
    }
}

/// `Upload(<path>,size=<bytes>)`, one token like every request name.
pub fn upload_name(path: &str, size: u64) -> String {
    let name = request_name(&Request::Upload {
        path: path.to_string(),
        size,
        sha256: [0; 32],
        replace: false,
    });
    format!("{},size={size})", name.trim_end_matches(')'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientKey, Role};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-audit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(r: Response) -> Vec<String> {
        let Response::Audit(entries) = r else {
            panic!("{r:?}");
        };
        entries.into_iter().map(|e| e.request).collect()
    }

    #[test]
    fn tail_reads_across_blocks_and_into_the_older_copy() {
        let dir = scratch("tail");
        let log = AuditLog::open(dir.join("audit.log"), 80 * 1024).unwrap();
        let key = ClientKey::generate().unwrap();
        let peer = Peer {
            role: Role::Admin,
            public_key: key.public_key(),
            fingerprint: key.fingerprint(),
            paired: false,
        };
        // About 100 bytes a line: the log rotates twice, and each copy
        // spans two read blocks.
        for n in 0..2000 {
            log.request(&peer, &format!("Req{n:05}"), "ok");
            if n % 7 == 0 {
                log.handshake("127.0.0.1:1".parse().unwrap(), None, "unknown key");
            }
        }
        assert!(dir.join("audit.log.1").exists());
        let size = std::fs::metadata(dir.join("audit.log")).unwrap().len();
        assert!(size <= 80 * 1024, "{size}");
        assert_eq!(names(log.tail(3)), ["Req01997", "Req01998", "Req01999"]);
        let all = names(log.tail(100_000));
        assert!(all.len() > 500 && all.len() < 2000, "{}", all.len());
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(all.last().unwrap(), "Req01999");
        assert!(names(log.tail(0)).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_field_can_start_a_line() {
        let dir = scratch("clean");
        let log = AuditLog::open(dir.join("audit.log"), 1 << 20).unwrap();
        log.handshake(
            "127.0.0.1:1".parse().unwrap(),
            None,
            "x\n2026-01-01T00:00:00Z SHA256:fake admin HostReboot ok\r\u{1b}[2J",
        );
        let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.trim_end().chars().any(char::is_control), "{text:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
