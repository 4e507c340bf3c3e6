//! The client library behind keelctl: configuration files, host address
//! resolution, connecting with the handshake, and request/response calls.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel};
use std::time::Duration;

use thiserror::Error;

use crate::messages::{encode_upload_chunk_prefix, ErrorCode, MAX_CHUNK};
use crate::{
    client_handshake_with, ClientKey, ClientMessage, ClientOptions, HandshakeError, KnownHosts,
    Request, Response, ServerMessage, Session,
};
use keel_common::fsutil::atomic_write;
use keel_common::init_api::GUEST_STOP_ANSWER_TIMEOUT;

/// The agent's default TCP port.
pub const DEFAULT_PORT: u16 = 7444;

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
    /// The key is not authorised, or its role may not make the request.
    pub const NOT_AUTHORIZED: i32 = 5;
    /// A local problem: missing or unreadable key or config file.
    pub const LOCAL: i32 = 6;
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
            ClientError::Handshake(HandshakeError::Rejected) => exit::NOT_AUTHORIZED,
            ClientError::Handshake(_) => exit::CONNECTION,
            ClientError::Host {
                kind: ErrorCode::Unauthorized,
                ..
            } => exit::NOT_AUTHORIZED,
            ClientError::Host { .. } | ClientError::StillInProgress(_) => exit::HOST_ERROR,
        }
    }
}

/// The keelctl configuration directory: `$XDG_CONFIG_HOME/keel`, else
/// `~/.config/keel`.
#[derive(Clone, Debug)]
pub struct ConfigDir {
    pub path: PathBuf,
}

impl ConfigDir {
    pub fn from_env() -> Result<Self, ClientError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => PathBuf::from(h).join(".config"),
                None => {
                    return Err(ClientError::Local(
                        "Neither XDG_CONFIG_HOME nor HOME is set.".into(),
                    ))
                }
            },
        };
        Ok(ConfigDir {
            path: base.join("keel"),
        })
    }

    pub fn key_path(&self) -> PathBuf {
        self.path.join("key")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.path.join("known_hosts")
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.path.join("hosts.toml")
    }

    fn ensure(&self) -> Result<(), ClientError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| ClientError::Local(format!("{}: {e}", self.path.display())))
    }

    /// Generates and saves a client key (PKCS#8, mode 0600). Refuses to
    /// overwrite an existing key unless `force`.
    pub fn keygen(&self, force: bool) -> Result<ClientKey, ClientError> {
        self.ensure()?;
        let path = self.key_path();
        if path.exists() && !force {
            return Err(ClientError::Local(format!(
                "{} already exists; pass --force to replace it (the old key will lose access).",
                path.display()
            )));
        }
        let key = ClientKey::generate().map_err(|e| ClientError::Local(e.to_string()))?;
        atomic_write(&path, key.pkcs8(), 0o600)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
        Ok(key)
    }

    pub fn load_key(&self) -> Result<ClientKey, ClientError> {
        let path = self.key_path();
        let bytes = std::fs::read(&path).map_err(|e| {
            ClientError::Local(format!(
                "Cannot read the client key {}: {e}. Run `keelctl keygen` first.",
                path.display()
            ))
        })?;
        ClientKey::from_pkcs8(&bytes)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))
    }

    pub fn load_known_hosts(&self) -> Result<KnownHosts, ClientError> {
        KnownHosts::load(&self.known_hosts_path()).map_err(|e| ClientError::Local(e.to_string()))
    }

    pub fn save_known_hosts(&self, kh: &KnownHosts) -> Result<(), ClientError> {
        self.ensure()?;
        let path = self.known_hosts_path();
        atomic_write(&path, kh.to_text().as_bytes(), 0o600)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))
    }

    /// Resolves a host as typed: a name from hosts.toml, else
    /// `HOST[:PORT]`. `None` means the default host from hosts.toml.
    pub fn resolve(&self, typed: Option<&str>) -> Result<Target, ClientError> {
        let hosts = HostsFile::load(&self.hosts_path())?;
        let typed = match typed {
            Some(t) => t.to_string(),
            None => hosts.default.clone().ok_or_else(|| {
                ClientError::Local(
                    "No host given: pass --host HOST[:PORT], set KEEL_HOST, or set `default` in hosts.toml.".into(),
                )
            })?,
        };
        if let Some(entry) = hosts.hosts.get(&typed) {
            let (host, port) = split_host_port(&entry.address)?;
            return Ok(Target {
                known_hosts_name: typed,
                host,
                port,
            });
        }
        let (host, port) = split_host_port(&typed)?;
        let known_hosts_name = if port == DEFAULT_PORT {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            known_hosts_name,
            host,
            port,
        })
    }
}

/// `hosts.toml`: optional named hosts.
///
/// ```toml
/// default = "hv01"
/// [hosts.hv01]
/// address = "192.0.2.10:7444"
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    pub default: Option<String>,
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, HostEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub address: String,
}

impl HostsFile {
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ClientError::Local(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostsFile::default()),
            Err(e) => Err(ClientError::Local(format!("{}: {e}", path.display()))),
        }
    }
}

/// Splits `HOST[:PORT]`, with `[v6]:port` or a bare IPv6 address.
pub fn split_host_port(text: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Local(format!("\"{text}\" is not HOST[:PORT]."));
    if text.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match text.matches(':').count() {
        0 => Ok((text.to_string(), DEFAULT_PORT)),
        1 => {
            let (h, p) = text.split_once(':').ok_or_else(bad)?;
            if h.is_empty() {
                return Err(bad());
            }
            Ok((h.to_string(), p.parse().map_err(|_| bad())?))
        }
        _ => Ok((text.to_string(), DEFAULT_PORT)),
    }
}

/// Where to connect and under what name the host key is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub known_hosts_name: String,
    pub host: String,
    pub port: u16,
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

    /// Uploads `size` bytes read from `data` to `remote` (under `images/`
    /// or `disks/` of the host's upload root), announcing `sha256`, in chunks of at
    /// most `chunk` bytes (clamped to [`MAX_CHUNK`]), never with more
    /// than the granted window unacknowledged. `progress` is called with
    /// the bytes sent so far. Each chunk is built and sealed in one
    /// buffer, with the data read straight into it, by a second thread
    /// while this one writes the previous chunk (see `stream_chunks`).
    pub fn upload<R: Read + Send + ?Sized>(
        &mut self,
        remote: &str,
        size: u64,
        sha256: [u8; 32],
        data: &mut R,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let chunk = chunk.clamp(1, MAX_CHUNK) as u64;
        let opened = self.call(Request::Upload {
            path: remote.to_string(),
            size,
            sha256,
        })?;
        let id = self.last_id();
        let limit = match opened {
            Response::UploadAck { received, window } => received.saturating_add(window),
            _ => return Err(ClientError::Unexpected),
        };
        let streamed = self.stream_chunks(id, size, limit, chunk, data, progress);
        if streamed.is_err() {
            // Frames may have been sealed and never sent: the counters
            // no longer match the server's.
            self.session.close();
        }
        streamed?;
        self.session.send(
            &mut self.stream,
            &ClientMessage {
                id,
                request: Request::UploadFinish,
            },
        )?;
        loop {
            match self.recv(id)? {
                Response::UploadAck { .. } => {}
                Response::Ok => return Ok(()),
                _ => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Streams the `size` bytes of upload `id` with two threads: a
    /// sealer reads the data straight into a frame buffer and seals it in
    /// place while this thread writes the previous frame and reads the
    /// server's `UploadAck`s, never letting more than the granted window
    /// be unacknowledged. Buffers go back to the sealer for reuse.
    fn stream_chunks<R: Read + Send + ?Sized>(
        &mut self,
        id: u64,
        size: u64,
        mut limit: u64,
        chunk: u64,
        data: &mut R,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        // With at most half the window per chunk, a client that has to
        // wait for credit has more than a quarter of the window
        // unacknowledged, which the server always acknowledges.
        let chunk = chunk.min((limit / 2).max(1));
        let Client {
            stream, session, ..
        } = self;
        let (mut sealer, mut opener) = session.split()?;
        let (full, sealed) = sync_channel::<Result<(Vec<u8>, u64), ClientError>>(2);
        let (give_back, empty) = channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut sent = 0u64;
                while sent < size {
                    let n = chunk.min(size - sent);
                    let mut buf = empty.try_recv().unwrap_or_default();
                    let mut local_err = None;
                    let r = sealer.seal_with(&mut buf, |v| {
                        encode_upload_chunk_prefix(v, id, sent, n as usize);
                        let start = v.len();
                        v.resize(start + n as usize, 0);
                        data.read_exact(&mut v[start..]).map_err(|e| {
                            local_err = Some(e);
                            crate::SessionError::Closed
                        })
                    });
                    let item = match (local_err, r) {
                        (Some(e), _) => Err(ClientError::Local(format!(
                            "Cannot read the upload data: {e}"
                        ))),
                        (None, Err(e)) => Err(e.into()),
                        (None, Ok(())) => Ok((buf, n)),
                    };
                    let failed = item.is_err();
                    // The writer stopped: nothing more to do.
                    if full.send(item).is_err() || failed {
                        return;
                    }
                    sent += n;
                }
            });
            let mut sent = 0u64;
            // Returning early drops `sealed`, which stops the sealer.
            for item in sealed {
                let (frame, n) = item?;
                while sent + n > limit {
                    let reply: ServerMessage = opener.recv(stream)?;
                    match reply.response {
                        _ if reply.id != id => return Err(ClientError::Unexpected),
                        Response::UploadAck { received, window } => {
                            limit = received.saturating_add(window)
                        }
                        Response::Error { kind, message } => {
                            return Err(ClientError::Host { kind, message })
                        }
                        _ => return Err(ClientError::Unexpected),
                    }
                }
                stream
                    .write_all(&frame)
                    .map_err(|e| crate::SessionError::Frame(e.into()))?;
                sent += n;
                progress(sent);
                let _ = give_back.send(frame);
            }
            if sent == size {
                Ok(())
            } else {
                Err(ClientError::Unexpected)
            }
        })
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

/// The size and SHA-256 of a local file.
pub fn sha256_file(path: &Path) -> Result<(u64, [u8; 32]), ClientError> {
    let local =
        |e: std::io::Error| ClientError::Local(format!("Cannot read {}: {e}", path.display()));
    let mut f = File::open(path).map_err(local)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(local(e)),
        };
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((size, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("hv01").unwrap(), ("hv01".into(), 7444));
        assert_eq!(split_host_port("hv01:80").unwrap(), ("hv01".into(), 80));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 7444));
        assert!(split_host_port("hv01:x").is_err());
        assert!(split_host_port(":1").is_err());
    }
}
