//! The signed management channel shared by `keel-agent` and `keelctl`:
//! the handshake, the encrypted session, the messages, and the key files,
//! over `keel_common::frame`'s frames. `PROTOCOL.md` in this crate is the
//! specification.

pub mod agent;
pub mod authorized_keys;
pub mod client;
pub mod handshake;
pub mod keys;
pub mod known_hosts;
pub mod messages;
pub mod pake;
pub mod roles;
pub mod session;
pub mod util;

pub use authorized_keys::{AuthorizedKey, AuthorizedKeys, AuthorizedKeysError};
pub use handshake::{
    client_handshake_with, server_handshake, server_handshake_with, Authority, ClientOptions,
    HandshakeError, Peer, PeerAuth, ServerOptions, SUPPORTED_VERSIONS,
};
pub use keel_common::frame::FrameError;
pub use keys::{ClientKey, Fingerprint, HostKey, KeyError, PublicKey};
pub use known_hosts::{HostCheck, KnownHosts, KnownHostsError};
pub use messages::{ClientMessage, ErrorCode, Request, Response, ServerMessage};
pub use roles::{allowed, Role};
pub use session::{Session, SessionError, MAX_FRAME};
