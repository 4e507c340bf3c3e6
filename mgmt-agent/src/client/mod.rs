//! The client library behind keelctl: connecting with the handshake and
//! request/response calls; its configuration files and host addresses are
//! in `config`, uploads in `upload`, the Xen config import in
//! `import_xen`.

mod config;
pub mod import_xen;
mod keys;
mod upload;

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

use crate::messages::ErrorCode;
use crate::{
    client_handshake_with, ClientKey, ClientMessage, ClientOptions, HandshakeError, KnownHosts,
    Request, Response, ServerMessage, Session,
};
pub use config::{split_host_port, ConfigDir, HostEntry, HostsFile, Target, DEFAULT_PORT};
use keel_common::init_api::GUEST_STOP_ANSWER_TIMEOUT;
pub use keys::parse_fingerprint;
pub use upload::{data_extents, upload_size, UploadFile, Uploaded};

/// How long a request that stops a guest (`GuestStop`, `GuestRestart`)
/// waits for its answer: init's longest stop, then room for the agent and
/// the network.
pub const GUEST_STOP_WAIT: Duration =
    GUEST_STOP_ANSWER_TIMEOUT.saturating_add(Duration::from_secs(15));

/// keelctl exit codes, stable for scripts.
pub mod exit {
    pub const OK: i32 = 0;
    /// The host answered with an error (not found, invalid, conflict...).
    pub const HOST_ERROR: i32 = 1;
    /// Bad command line (clap also uses 2).
    pub const USAGE: i32 = 2;
    /// Could not connect, or the handshake failed (includes an unknown
    /// host key: run `keelctl trust HOST`).
    pub const CONNECTION: i32 = 3;
    /// The host key differs from the pinned one.
    pub const HOST_KEY_MISMATCH: i32 = 4;
    /// The key is not authorised, or its role may not make the request,
    /// or pairing failed or is closed.
    pub const NOT_AUTHORIZED: i32 = 5;
    /// A local problem: missing or unreadable key or config file (or a
    /// file to upload).
    pub const LOCAL: i32 = 6;
    /// `import`: the spec was produced (and defined, if asked), but some
    /// settings of the source config could not be mapped; the report
    /// lists them.
    pub const IMPORT_PARTIAL: i32 = 7;
    /// `import`: no spec: the config is unreadable, malformed or gives no
    /// usable guest.
    pub const IMPORT_FAILED: i32 = 8;
}

/// Errors a client call can end in, each with an exit code.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{0}")]
    Local(String),
    #[error("Cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    #[error("{0}")]
    Handshake(HandshakeError),
    #[error("Connection to the host failed: {0}")]
    Session(#[from] crate::SessionError),
    #[error("{message}")]
    Host { kind: ErrorCode, message: String },
    #[error("The host sent an unexpected reply.")]
    Unexpected,
    /// The request goes on on the host, but its answer did not come in time.
    #[error("{0}")]
    StillInProgress(String),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Local(_) => exit::LOCAL,
            ClientError::Connect { .. } | ClientError::Session(_) | ClientError::Unexpected => {
                exit::CONNECTION
            }
            ClientError::Handshake(HandshakeError::HostKeyChanged { .. }) => {
                exit::HOST_KEY_MISMATCH
            }
            ClientError::Handshake(
                HandshakeError::Rejected
                | HandshakeError::PairingClosed
                | HandshakeError::PairingFailed,
            ) => exit::NOT_AUTHORIZED,
            ClientError::Handshake(_) => exit::CONNECTION,
            ClientError::Host {
                kind: ErrorCode::Unauthorized,
                ..
            } => exit::NOT_AUTHORIZED,
            ClientError::Host { .. } | ClientError::StillInProgress(_) => exit::HOST_ERROR,
        }
    }
}

/// How to authenticate when connecting.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub trust_on_first_use: bool,
    pub pairing_code: Option<String>,
    pub timeout: Option<Duration>,
}

/// An established session.
pub struct Client {
    stream: TcpStream,
    session: Session,
    next_id: u64,
}

impl Client {
    /// Connects and handshakes; pins the host key in `known_hosts` if it
    /// was trusted on first use.
    pub fn connect(
        target: &Target,
        key: &ClientKey,
        known_hosts: &mut KnownHosts,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let timeout = options.timeout.unwrap_or(Duration::from_secs(15));
        let connect_err = |message: String| ClientError::Connect {
            host: target.known_hosts_name.clone(),
            message,
        };
        let addrs: Vec<_> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| connect_err(e.to_string()))?
            .collect();
        let mut last = String::from("no address found");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let mut stream = stream.ok_or_else(|| connect_err(last))?;
        // Frames are written whole; Nagle would only delay the tail of
        // each one (and small requests) waiting for the peer's ACK.
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| connect_err(e.to_string()))?;
        let opts = ClientOptions {
            trust_on_first_use: options.trust_on_first_use,
            pairing_code: options.pairing_code.clone(),
            ..ClientOptions::default()
        };
        let session = client_handshake_with(
            &mut stream,
            key,
            known_hosts,
            &target.known_hosts_name,
            &opts,
        )
        .map_err(ClientError::Handshake)?;
        Ok(Client {
            stream,
            session,
            next_id: 1,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Sends a request and waits for its response. Error responses
    /// become [`ClientError::Host`].
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.session
            .send(&mut self.stream, &ClientMessage { id, request })?;
        self.recv(id)
    }

    /// As [`Client::call`], for a request whose answer may take up to
    /// `wait` (a guest stop): the read timeout is raised to `wait` for
    /// this call only.
    pub fn call_waiting(
        &mut self,
        request: Request,
        wait: Duration,
    ) -> Result<Response, ClientError> {
        let saved = self.stream.read_timeout().ok().flatten();
        let _ = self
            .stream
            .set_read_timeout(Some(saved.map_or(wait, |t| t.max(wait))));
        let response = self.call(request);
        let _ = self.stream.set_read_timeout(saved);
        response
    }

    /// The id of the last request sent.
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Receives the next response for `id` (for streams such as the console).
    pub fn recv(&mut self, id: u64) -> Result<Response, ClientError> {
        let reply: ServerMessage = self.session.recv(&mut self.stream)?;
        if reply.id != id {
            return Err(ClientError::Unexpected);
        }
        match reply.response {
            Response::Error { kind, message } => Err(ClientError::Host { kind, message }),
            other => Ok(other),
        }
    }

    /// Sends a message that continues request `id` (console input, detach)
    /// without waiting for an answer.
    pub fn send_on(&mut self, id: u64, request: Request) -> Result<(), ClientError> {
        self.session
            .send(&mut self.stream, &ClientMessage { id, request })?;
        Ok(())
    }

    /// The connection, to poll it alongside other input.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }

    /// Changes the read timeout (e.g. none for an attached console).
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = self.stream.set_read_timeout(t);
    }
}
