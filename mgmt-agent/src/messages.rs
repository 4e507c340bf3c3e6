//! Application messages carried inside the encrypted session, encoded
//! with postcard. Every request carries an id that its response echoes,
//! so a client can match replies and streams to the request that started
//! them.

use serde::{Deserialize, Serialize};

use crate::roles::Role;

/// Shared with init's control socket, so both speak of guests alike.
pub use keel_common::init_api::{ErrorCode, GuestState};

/// Identifies a request; chosen by the client, echoed by the server.
pub type RequestId = u64;

/// Largest data chunk in one `UploadChunk` or `ConsoleData`, so that an
/// encoded message always fits in one frame: 255 KiB leaves room for the
/// postcard prefix (at most 24 bytes) and the tag within `MAX_FRAME`.
pub const MAX_CHUNK: usize = 255 * 1024;

/// Bytes an upload may have in flight before the client waits for an
/// `UploadAck` (the initial credit, also the default window).
pub const UPLOAD_WINDOW: u64 = 4 * 1024 * 1024;

/// The agent charges an upload's chunks in blocks of this size (each
/// block a chunk touches, once), and may allocate no more of them than
/// the announced data bytes rounded up to it; so the client aligns its
/// data extents to it (see PROTOCOL.md).
pub const UPLOAD_BLOCK: u64 = 4096;

/// Feeds `n` zero bytes to an upload's SHA-256: a hole, hashed without
/// reading it, as both ends must.
pub fn hash_zeros(ctx: &mut ring::digest::Context, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        ctx.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Request variant index of `UploadChunk` in postcard (see PROTOCOL.md).
pub const UPLOAD_CHUNK_INDEX: u8 = 15;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the postcard encoding of
/// `ClientMessage { id, request: UploadChunk { offset, data } }` up to,
/// but not including, the `len` data bytes, so that a sender can read the
/// data straight into the same buffer. Byte-identical to postcard.
pub fn encode_upload_chunk_prefix(out: &mut Vec<u8>, id: RequestId, offset: u64, len: usize) {
    put_varint(out, id);
    out.push(UPLOAD_CHUNK_INDEX);
    put_varint(out, offset);
    put_varint(out, len as u64);
}

/// A client-to-server message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub id: RequestId,
    pub request: Request,
}

/// A server-to-client message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub id: RequestId,
    pub response: Response,
}

/// Requests. Stream continuations (`ConsoleInput`, `UploadChunk`, ...)
/// reuse the id of the request that opened the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    HostInfo,
    GuestList,
    GuestShow {
        name: String,
    },
    GuestDefine {
        spec_toml: String,
    },
    GuestUndefine {
        name: String,
    },
    GuestStart {
        name: String,
    },
    GuestStop {
        name: String,
    },
    GuestKill {
        name: String,
    },
    GuestRestart {
        name: String,
    },
    /// Attach to the serial console; the server then sends `ConsoleData`
    /// until `ConsoleClosed`.
    GuestConsole {
        name: String,
    },
    /// Keystrokes for an attached console.
    ConsoleInput {
        data: Vec<u8>,
    },
    /// Detach from the console; the guest keeps running.
    ConsoleDetach,
    /// The host log, or a guest's log if `guest` is set.
    Logs {
        guest: Option<String>,
        tail: u32,
        follow: bool,
    },
    /// The last `tail` entries of the audit log.
    Audit {
        tail: u32,
    },
    /// The first form of [`Request::UploadStart`], still served: the
    /// SHA-256 is announced before the data, so a client must read the
    /// file twice, and every byte is sent (`data` is `size`). It ends
    /// with `UploadFinish`. keelctl sends `UploadStart`.
    Upload {
        path: String,
        size: u64,
        sha256: [u8; 32],
        replace: bool,
    },
    /// A chunk of an upload's data at `offset`. Chunks come in increasing
    /// order and never overlap; the bytes between two chunks (the holes
    /// of a sparse file) are zeros, left unwritten.
    UploadChunk {
        offset: u64,
        data: Vec<u8>,
    },
    /// Ends an `Upload` (announced SHA-256); the server checks size and
    /// SHA-256 and answers `Ok` or an `Invalid` error.
    UploadFinish,
    /// Add another key to authorized_keys. First-boot enrolment does not
    /// use this: it happens in the handshake with a pairing code.
    AuthorizeKey {
        role: Role,
        public_key: [u8; 32],
        comment: String,
    },
    /// Stop every guest cleanly (newest first), then reboot the host.
    /// Answered `Ok` before the shutdown begins.
    HostReboot,
    /// As `HostReboot`, then power off.
    HostPowerOff,
    /// Every authorised key; answered `Keys`.
    KeyList,
    /// Removes the key whose fingerprint (SHA-256 of the public key) this
    /// is, and ends its live sessions. The last admin key cannot go.
    KeyRevoke {
        fingerprint: [u8; 32],
    },
    /// Changes a key's role, and ends its live sessions when the role is
    /// lowered (they reconnect with the new one). The last admin key
    /// cannot be demoted.
    KeySetRole {
        fingerprint: [u8; 32],
        role: Role,
    },
    /// Start an upload to `path`, relative to the agent's upload root (the
    /// data partition in the appliance, `<state-dir>/uploads` for a
    /// standalone agent); it must start with `images/` or `disks/`
    /// (absolute paths and `..` are refused). The file is `size` bytes
    /// long, of which the client sends `data` bytes in `UploadChunk`s (the
    /// rest are holes) and then the SHA-256 of all `size` bytes in
    /// `UploadEnd`. The server answers `UploadAck { received: 0, window }`
    /// and the client may then have at most `window` unacknowledged data
    /// bytes in flight.
    ///
    /// A file that a defined guest's spec names is not replaced unless
    /// `replace` is set, the client is an admin and those guests are
    /// stopped; and the host must keep a reserve of free space beyond
    /// `data` (rounded up to 4 KiB). Both are checked before the first
    /// chunk.
    UploadStart {
        path: String,
        size: u64,
        data: u64,
        replace: bool,
    },
    /// All chunks of an `UploadStart` sent; `sha256` is the digest of the
    /// whole file, holes hashing as zeros. The server checks it and the
    /// data bytes, and answers `Ok` or an `Invalid` error.
    UploadEnd {
        sha256: [u8; 32],
    },
}

/// Responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    HostInfo(HostInfo),
    Guests(Vec<GuestSummary>),
    Guest(GuestDetail),
    Error {
        kind: ErrorCode,
        message: String,
    },
    ConsoleData(Vec<u8>),
    ConsoleClosed,
    LogLines(Vec<String>),
    Audit(Vec<AuditEntry>),
    /// Flow control for uploads: the server has accepted `received`
    /// data bytes (checked and queued for hashing and writing, not yet
    /// necessarily on disk; holes skipped between chunks do not count)
    /// and the client may send up to `received + window`.
    UploadAck {
        received: u64,
        window: u64,
    },
    /// The answer to `KeyList`, in file order.
    Keys(Vec<KeyInfo>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub version: String,
    pub uptime_secs: u64,
    pub cpus: u32,
    pub memory_mib: u64,
    pub guests_running: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSummary {
    pub name: String,
    pub state: GuestState,
    pub vcpus: u32,
    pub memory_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDetail {
    pub summary: GuestSummary,
    pub spec_toml: String,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub autostart: bool,
    /// The restart policy: `always`, `on-failure` or `never`.
    pub restart: String,
    /// Restarts by policy since the guest was last started by hand.
    pub restarts: u32,
    /// How the VMM last ended, e.g. `crashed (status 4)`.
    pub last_exit: Option<String>,
}

/// One authorised key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub public_key: [u8; 32],
    pub role: Role,
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub unix_time: u64,
    pub fingerprint: String,
    pub role: Role,
    pub request: String,
    pub outcome: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_round_trip_and_known_bytes() {
        let m = ClientMessage {
            id: 7,
            request: Request::GuestStart { name: "web".into() },
        };
        let bytes = postcard::to_stdvec(&m).unwrap();
        // id varint 7, variant index 5 (GuestStart), string len 3, "web".
        assert_eq!(bytes, [7, 5, 3, b'w', b'e', b'b']);
        assert_eq!(postcard::from_bytes::<ClientMessage>(&bytes).unwrap(), m);

        let r = ServerMessage {
            id: 300,
            response: Response::Error {
                kind: ErrorCode::NotFound,
                message: "no".into(),
            },
        };
        let bytes = postcard::to_stdvec(&r).unwrap();
        assert_eq!(bytes, [0xac, 0x02, 4, 1, 2, b'n', b'o']);
        assert_eq!(postcard::from_bytes::<ServerMessage>(&bytes).unwrap(), r);
    }

    #[test]
    fn variant_indices_match_protocol_md() {
        let idx =
            |r: Request| postcard::to_stdvec(&ClientMessage { id: 0, request: r }).unwrap()[1];
        assert_eq!(idx(Request::HostInfo), 0);
        assert_eq!(idx(Request::ConsoleDetach), 11);
        assert_eq!(idx(Request::UploadFinish), 16);
        let key = Request::AuthorizeKey {
            role: Role::Admin,
            public_key: [0; 32],
            comment: String::new(),
        };
        assert_eq!(idx(key), 17);
        assert_eq!(idx(Request::HostReboot), 18);
        assert_eq!(idx(Request::HostPowerOff), 19);
        assert_eq!(idx(Request::KeyList), 20);
        let fingerprint = [0; 32];
        assert_eq!(idx(Request::KeyRevoke { fingerprint }), 21);
        let role = Role::Reader;
        assert_eq!(idx(Request::KeySetRole { fingerprint, role }), 22);
        let start = Request::UploadStart {
            path: String::new(),
            size: 0,
            data: 0,
            replace: false,
        };
        assert_eq!(idx(start), 23);
        assert_eq!(idx(Request::UploadEnd { sha256: [0; 32] }), 24);
        let keys = ServerMessage {
            id: 0,
            response: Response::Keys(Vec::new()),
        };
        assert_eq!(postcard::to_stdvec(&keys).unwrap(), [0, 10, 0]);
        let ack = ServerMessage {
            id: 0,
            response: Response::UploadAck {
                received: 1,
                window: 2,
            },
        };
        assert_eq!(postcard::to_stdvec(&ack).unwrap(), [0, 9, 1, 2]);
    }

    #[test]
    fn a_full_chunk_fits_in_a_frame() {
        let mut v = Vec::new();
        encode_upload_chunk_prefix(&mut v, u64::MAX, u64::MAX, MAX_CHUNK);
        assert!(v.len() + MAX_CHUNK <= crate::session::MAX_PLAINTEXT);
    }

    #[test]
    fn upload_chunk_prefix_matches_postcard() {
        for (id, offset, len) in [(1u64, 0u64, 0usize), (300, 1 << 40, 65536), (7, 127, 128)] {
            let data = vec![0xabu8; len];
            let m = ClientMessage {
                id,
                request: Request::UploadChunk {
                    offset,
                    data: data.clone(),
                },
            };
            let mut mine = Vec::new();
            encode_upload_chunk_prefix(&mut mine, id, offset, len);
            mine.extend_from_slice(&data);
            assert_eq!(mine, postcard::to_stdvec(&m).unwrap());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(postcard::from_bytes::<ClientMessage>(&[0, 200]).is_err());
        assert!(postcard::from_bytes::<ClientMessage>(&[]).is_err());
    }
}
