//! keel-agent: accepts management sessions over TCP, authenticates them
//! with the handshake, authorises and audits every request, and serves
//! them. Guest and host operations are forwarded to init's control socket
//! ([`init_client::InitClient`]); an attached console talks to the guest's
//! VMM socket directly.

mod console;
pub mod init_client;
pub mod upload;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::messages::{AuditEntry, ErrorCode, HostInfo};
use crate::util::{parse_rfc3339, rfc3339, unix_now};
use crate::{
    allowed, server_handshake, AuthorizedKeys, Fingerprint, FrameError, HandshakeError, HostKey,
    Peer, PeerAuth, Request, Response, Role, ServerMessage,
};
use init_client::InitClient;
use keel_common::fsutil::{atomic_write, read_trimmed};
use keel_common::init_api::InitRequest;
use upload::Upload;

/// Default listen address of keel-agent.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7444";
/// File names inside the state directory.
pub const HOST_KEY_FILE: &str = "host_key";
pub const AUTHORIZED_KEYS_FILE: &str = "authorized_keys";
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// keel-agent's run-time settings (from its command line; host.toml's
/// `[agent]` table is `keel_common::host::AgentConfig`, read by init).
/// [`AgentSettings::new`] gives production defaults.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    /// Where uploads go: `keelctl upload F images/x` writes
    /// `<upload_root>/images/x`. In the appliance the data partition, so
    /// that guest specs name uploads as they are (`images/vmlinux`); by
    /// default `<state_dir>/uploads`, for a standalone agent.
    pub upload_root: PathBuf,
    /// Read timeout while the handshake is in progress.
    pub handshake_timeout: Duration,
    /// Read timeout between requests of an established session.
    pub idle_timeout: Duration,
    /// Most connections (handshaking or established) at once.
    pub max_sessions: usize,
    /// How long a first-boot pairing code stays valid.
    pub pairing_validity: Duration,
    /// Per source IP: failed or unfinished handshakes allowed in a burst.
    pub rate_burst: f64,
    /// Per source IP: failed handshakes forgiven per second.
    pub rate_per_sec: f64,
    /// Per source IP: handshakes in progress at once.
    pub max_pending_per_ip: usize,
    /// init's control socket, which owns the guests.
    pub init_socket: PathBuf,
    /// Where the VMMs' API sockets are (`<dir>/<guest>.sock`), for consoles.
    pub vmm_socket_dir: PathBuf,
    /// Where to publish an open pairing code (mode 0600) for init to show
    /// next to the management address; removed once pairing closes.
    pub pairing_file: Option<PathBuf>,
}

impl AgentSettings {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        AgentSettings {
            upload_root: state_dir.join(upload::UPLOADS_DIR),
            state_dir,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_sessions: 64,
            pairing_validity: Duration::from_secs(15 * 60),
            rate_burst: 10.0,
            rate_per_sec: 0.2,
            max_pending_per_ip: 4,
            init_socket: PathBuf::from(keel_common::init_api::INIT_SOCKET),
            vmm_socket_dir: PathBuf::from(keel_common::init_api::VMM_SOCKET_DIR),
            pairing_file: None,
        }
    }
}

/// A one-time first-boot pairing code.
struct Pairing {
    code: String,
    expires: Instant,
}

/// Token bucket of one source address.
struct Bucket {
    tokens: f64,
    last: Instant,
    pending: usize,
    refusal_logged: bool,
}

struct Shared {
    settings: AgentSettings,
    host_key: HostKey,
    authorized: Mutex<AuthorizedKeys>,
    pairing: Mutex<Option<Pairing>>,
    audit: Mutex<File>,
    init: InitClient,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    active: AtomicUsize,
    stop: AtomicBool,
    started: Instant,
    log: Mutex<VecDeque<String>>,
}

/// Locks a mutex, recovering from poisoning: a panicked session thread
/// must not take the agent down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running agent. Dropping it stops accepting connections.
pub struct AgentHandle {
    addr: SocketAddr,
    pairing_code: Option<String>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl AgentHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host_fingerprint(&self) -> Fingerprint {
        self.shared.host_key.fingerprint()
    }

    /// The first-boot pairing code, if no admin key existed at start.
    pub fn pairing_code(&self) -> Option<&str> {
        self.pairing_code.as_deref()
    }

    pub fn pairing_validity(&self) -> Duration {
        self.shared.settings.pairing_validity
    }

    /// Stops accepting; sessions already running finish on their own.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the accept loop ends (never, unless shut down).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads the host key from the state directory, generating and saving it
/// (atomically, mode 0600) on first start.
pub fn load_or_create_host_key(state_dir: &Path) -> Result<HostKey, AgentError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io_err(state_dir))?;
    let path = state_dir.join(HOST_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => HostKey::from_pkcs8(&bytes)
            .map_err(|e| AgentError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = HostKey::generate().map_err(|e| AgentError::Config(e.to_string()))?;
            atomic_write(&path, key.pkcs8(), 0o600).map_err(io_err(&path))?;
            Ok(key)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn new_pairing_code() -> Option<String> {
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).ok()?;
    let n = u64::from_le_bytes(b) % 100_000_000;
    Some(format!("{:04}-{:04}", n / 10_000, n % 10_000))
}

fn normalize_code(code: &str) -> Vec<u8> {
    code.bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'-')
        .collect()
}

/// Compares without an early exit, so timing does not reveal how many
/// leading characters matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Starts serving on `listener` in background threads.
pub fn serve(listener: TcpListener, settings: AgentSettings) -> Result<AgentHandle, AgentError> {
    let host_key = load_or_create_host_key(&settings.state_dir)?;
    let ak_path = settings.state_dir.join(AUTHORIZED_KEYS_FILE);
    let authorized = match AuthorizedKeys::load(&ak_path) {
        Ok(k) => k,
        Err(crate::AuthorizedKeysError::Read { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            AuthorizedKeys::default()
        }
        Err(e) => return Err(AgentError::Config(e.to_string())),
    };
    let audit_path = settings.state_dir.join(AUDIT_LOG_FILE);
    let audit = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&audit_path)
        .map_err(io_err(&audit_path))?;
    let has_admin = authorized.entries().iter().any(|e| e.role == Role::Admin);
    let pairing_code =
        if has_admin {
            None
        } else {
            Some(new_pairing_code().ok_or_else(|| {
                AgentError::Config("The system random source failed.".to_string())
            })?)
        };
    let addr = listener
        .local_addr()
        .map_err(io_err(Path::new("listener")))?;
    let init = InitClient::new(&settings.init_socket);
    let shared = Arc::new(Shared {
        init,
        pairing: Mutex::new(pairing_code.clone().map(|code| Pairing {
            code,
            expires: Instant::now() + settings.pairing_validity,
        })),
        settings,
        host_key,
        authorized: Mutex::new(authorized),
        audit: Mutex::new(audit),
        buckets: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        log: Mutex::new(VecDeque::new()),
    });
    shared.event(&format!(
        "keel-agent {} listening on {addr}, host key {}",
        keel_common::VERSION,
        shared.host_key.fingerprint()
    ));
    if let Some(path) = &shared.settings.pairing_file {
        match &pairing_code {
            Some(code) => {
                if let Err(e) = atomic_write(path, format!("{code}\n").as_bytes(), 0o600) {
                    log::warn!("cannot publish the pairing code in {}: {e}", path.display());
                }
            }
            None => shared.close_pairing_file(),
        }
    }
    if pairing_code.is_some() {
        shared.event("no admin key: first-boot pairing is open");
    }
    let s = shared.clone();
    let thread = thread::Builder::new()
        .name("keel-agent-accept".into())
        .spawn(move || accept_loop(listener, s))
        .map_err(io_err(Path::new("thread")))?;
    Ok(AgentHandle {
        addr,
        pairing_code,
        shared,
        thread: Some(thread),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(mut peer) = stream.peer_addr() else {
            continue;
        };
        // An IPv4 client of a dual-stack listener is one source, however
        // it is spelled.
        peer.set_ip(peer.ip().to_canonical());
        if !shared.admit(peer.ip()) {
            continue;
        }
        if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.settings.max_sessions {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.finish(peer.ip(), false);
            shared.audit_handshake(peer, None, "too many sessions");
            continue;
        }
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("keel-session-{peer}"))
            .spawn(move || {
                handle_connection(&s, stream, peer);
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.finish(peer.ip(), false);
        }
    }
}

impl Shared {
    fn close_pairing_file(&self) {
        if let Some(path) = &self.settings.pairing_file {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    /// Appends to the in-memory agent log served by `Logs`.
    fn event(&self, line: &str) {
        log::info!("{line}");
        let mut log = lock(&self.log);
        if log.len() >= 1000 {
            log.pop_front();
        }
        log.push_back(format!("{} {line}", rfc3339(unix_now())));
    }

    fn audit_line(&self, line: &str) {
        let mut f = lock(&self.audit);
        if let Err(e) = writeln!(f, "{} {line}", rfc3339(unix_now())) {
            log::error!("cannot write the audit log: {e}");
        }
    }

    /// The audit line of one request: who, as what, which, and the outcome.
    fn audit_request(&self, peer: &Peer, request: &str, outcome: &str) {
        self.audit_line(&format!(
            "{} {} {request} {outcome}",
            peer.fingerprint, peer.role
        ));
    }

    fn audit_handshake(&self, peer: SocketAddr, fp: Option<Fingerprint>, reason: &str) {
        let fp = fp.map_or_else(|| "-".to_string(), |f| f.to_string());
        self.audit_line(&format!(
            "{fp} - handshake refused peer={peer} reason={reason}"
        ));
    }

    /// Rate limiting: whether a new connection from `ip` may handshake.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut buckets = lock(&self.buckets);
        let now = Instant::now();
        if buckets.len() > 10_000 {
            let burst = self.settings.rate_burst;
            buckets.retain(|_, b| b.pending > 0 || b.tokens < burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.settings.rate_burst,
            last: now,
            pending: 0,
            refusal_logged: false,
        });
        let dt = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.settings.rate_per_sec).min(self.settings.rate_burst);
        b.last = now;
        if b.tokens < 1.0 || b.pending >= self.settings.max_pending_per_ip {
            // One audit line per episode, so a flood cannot fill the disk.
            let log_it = !b.refusal_logged;
            b.refusal_logged = true;
            drop(buckets);
            if log_it {
                self.audit_handshake(
                    SocketAddr::new(ip, 0),
                    None,
                    "rate limited (further refusals from this address are not logged)",
                );
            }
            return false;
        }
        b.refusal_logged = false;
        b.pending += 1;
        true
    }

    /// Ends a handshake from `ip`; a failed one costs a token.
    fn finish(&self, ip: IpAddr, ok: bool) {
        if let Some(b) = lock(&self.buckets).get_mut(&ip) {
            b.pending = b.pending.saturating_sub(1);
            if !ok {
                b.tokens -= 1.0;
            }
        }
    }

    fn authorize(&self, auth: &PeerAuth, reason: &Cell<&'static str>) -> Option<Role> {
        match auth {
            PeerAuth::Key { public_key } => {
                let role = lock(&self.authorized).lookup(public_key).map(|(r, _)| r);
                if role.is_none() {
                    reason.set("unknown key");
                }
                role
            }
            PeerAuth::PairingCode { code, public_key } => {
                // One attempt only: the code is gone whatever happens next.
                let Some(pairing) = lock(&self.pairing).take() else {
                    reason.set("pairing not available");
                    return None;
                };
                self.close_pairing_file();
                if Instant::now() > pairing.expires {
                    reason.set("pairing code expired");
                    return None;
                }
                if !constant_time_eq(&normalize_code(code), &normalize_code(&pairing.code)) {
                    reason.set("wrong pairing code");
                    self.event("a pairing attempt used a wrong code; pairing is now closed");
                    return None;
                }
                let mut keys = lock(&self.authorized);
                let mut updated = keys.clone();
                updated.add(Role::Admin, *public_key, "enrolled-by-pairing");
                let path = self.settings.state_dir.join(AUTHORIZED_KEYS_FILE);
                if let Err(e) = atomic_write(&path, updated.to_text().as_bytes(), 0o600) {
                    log::error!("cannot save {}: {e}", path.display());
                    reason.set("internal error saving authorized_keys");
                    return None;
                }
                *keys = updated;
                self.event(&format!(
                    "enrolled admin key {} by pairing",
                    public_key.fingerprint()
                ));
                Some(Role::Admin)
            }
        }
    }
}

/// How an operator names this host to reach `listen`: its IPv4 addresses
/// (all of them, for a wildcard listener), with the port only when it is
/// not the default. Empty while the host has no address yet.
pub fn connect_hosts(listen: std::net::SocketAddr) -> Vec<String> {
    let with_port = |ip| keel_common::host::agent_host(ip, listen.port());
    if !listen.ip().is_unspecified() {
        return vec![with_port(listen.ip())];
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut hosts: Vec<String> = addrs
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .filter(|ip| !ip.is_loopback())
        .map(|ip| with_port(std::net::IpAddr::V4(ip)))
        .collect();
    hosts.dedup();
    hosts
}

fn handshake_reason(e: &HandshakeError, reason: &Cell<&'static str>) -> &'static str {
    match e {
        HandshakeError::Frame(FrameError::TimedOut) => "handshake timed out",
        HandshakeError::Frame(FrameError::Io(io))
            if matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            "handshake timed out"
        }
        HandshakeError::Frame(FrameError::Closed | FrameError::Truncated { .. }) => {
            "connection closed during handshake"
        }
        HandshakeError::Unauthorized { .. } => reason.get(),
        HandshakeError::ClientSignatureInvalid => "bad client signature",
        HandshakeError::NoCommonVersion { .. } => "no common protocol version",
        _ => "protocol error",
    }
}

fn handle_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let timeout = Some(shared.settings.handshake_timeout);
    // Frames are written whole; see Client::connect.
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        shared.finish(peer.ip(), false);
        return;
    }
    let reason = Cell::new("refused");
    let result = server_handshake(&mut stream, &shared.host_key, |auth| {
        shared.authorize(auth, &reason)
    });
    let (mut session, who) = match result {
        Ok(ok) => ok,
        Err(e) => {
            shared.finish(peer.ip(), false);
            let fp = match &e {
                HandshakeError::Unauthorized { fingerprint } => Some(*fingerprint),
                _ => None,
            };
            shared.audit_handshake(peer, fp, handshake_reason(&e, &reason));
            return;
        }
    };
    shared.finish(peer.ip(), true);
    shared.event(&format!(
        "session from {peer}: {} as {}{}",
        who.fingerprint,
        who.role,
        if who.paired { " (paired)" } else { "" }
    ));
    let idle = Some(shared.settings.idle_timeout);
    let _ = stream.set_read_timeout(idle);
    let _ = stream.set_write_timeout(idle);
    let mut upload = UploadSlot::Idle;
    // Reused for every frame; upload chunks are served from it in place.
    let mut buf = Vec::new();
    while let Ok(incoming) = upload::recv(&mut session, &mut stream, &mut buf) {
        let msg = match incoming {
            upload::Incoming::Message(msg) => msg,
            upload::Incoming::Chunk { id, offset, data } => {
                let Some(response) =
                    upload_chunk(shared, &who, &mut upload, id, offset, &mut buf, data)
                else {
                    continue;
                };
                if session
                    .send(&mut stream, &ServerMessage { id, response })
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let response = match &msg.request {
            Request::Upload { .. } | Request::UploadChunk { .. } | Request::UploadFinish => {
                match upload_step(shared, &who, &mut upload, msg.id, msg.request) {
                    Some(r) => r,
                    None => continue,
                }
            }
            request => {
                if let UploadSlot::Active { upload: u, .. } =
                    std::mem::replace(&mut upload, UploadSlot::Idle)
                {
                    audit_upload(shared, &who, &u.path, u.received, "aborted");
                }
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
                        let id = msg.id;
                        match console::run(shared, &who, &mut session, &mut stream, id, name, mode)
                        {
                            console::Ended::Detached => continue,
                            console::Ended::SessionClosed => break,
                        }
                    }
                    _ => dispatch(shared, &who, request),
                }
            }
        };
        let reply = ServerMessage {
            id: msg.id,
            response,
        };
        if session.send(&mut stream, &reply).is_err() {
            break;
        }
    }
    if let UploadSlot::Active { upload: u, .. } = upload {
        audit_upload(shared, &who, &u.path, u.received, "aborted");
    }
}

/// The upload state of one session.
enum UploadSlot {
    Idle,
    Active {
        id: u64,
        upload: Box<Upload>,
    },
    /// The upload with this id failed with this error: its remaining
    /// in-flight chunks are dropped silently and `UploadFinish` repeats
    /// the error.
    Failed {
        id: u64,
        error: upload::UploadError,
    },
}

fn audit_upload(shared: &Shared, peer: &Peer, path: &str, size: u64, outcome: &str) {
    shared.audit_request(peer, &upload_name(path, size), outcome);
}

/// `Upload(<path>,size=<bytes>)`, one token like every request name.
fn upload_name(path: &str, size: u64) -> String {
    let name = request_name(&Request::Upload {
        path: path.to_string(),
        size,
        sha256: [0; 32],
    });
    format!("{},size={size})", name.trim_end_matches(')'))
}

/// Serves one message of an upload stream. Returns `None` when there is
/// nothing to answer (a chunk that does not complete an ack period).
/// One audit line per upload, written when it ends.
fn upload_step(
    shared: &Shared,
    peer: &Peer,
    slot: &mut UploadSlot,
    id: u64,
    request: Request,
) -> Option<Response> {
    let window = crate::messages::UPLOAD_WINDOW;
    if !allowed(peer.role, &request) {
        if let Request::Upload { path, size, .. } = &request {
            audit_upload(shared, peer, path, *size, "refused");
            return Some(error(
                ErrorCode::Unauthorized,
                format!("The {} role may not upload.", peer.role),
            ));
        }
        // Refuses and audits like any other request.
        return Some(dispatch(shared, peer, &request));
    }
    match request {
        Request::Upload { path, size, sha256 } => {
            if let UploadSlot::Active { upload: u, .. } = std::mem::replace(slot, UploadSlot::Idle)
            {
                audit_upload(shared, peer, &u.path, u.received, "aborted");
            }
            match Upload::start(&shared.settings.upload_root, &path, size, sha256) {
                Ok(upload) => {
                    *slot = UploadSlot::Active {
                        id,
                        upload: Box::new(upload),
                    };
                    Some(Response::UploadAck {
                        received: 0,
                        window,
                    })
                }
                Err((kind, message)) => {
                    audit_upload(shared, peer, &path, size, "error");
                    Some(error(kind, message))
                }
            }
        }
        Request::UploadChunk { offset, mut data } => {
            let len = data.len();
            upload_chunk(shared, peer, slot, id, offset, &mut data, 0..len)
        }
        Request::UploadFinish => match std::mem::replace(slot, UploadSlot::Idle) {
            UploadSlot::Active { id: open, upload } if open == id => {
                let (path, size) = (upload.path.clone(), upload.size);
                match upload.finish() {
                    Ok(n) => {
                        audit_upload(shared, peer, &path, n, "ok");
                        shared.event(&format!(
                            "upload {path} ({n} bytes) by {}",
                            peer.fingerprint
                        ));
                        Some(Response::Ok)
                    }
                    Err((kind, message)) => {
                        audit_upload(shared, peer, &path, size, "error");
                        shared.event(&format!("upload {path} failed: {message}"));
                        Some(error(kind, message))
                    }
                }
            }
            UploadSlot::Failed {
                id: failed,
                error: e,
            } if failed == id => Some(error(e.0, e.1)),
            other => {
                *slot = other;
                Some(error(
                    ErrorCode::Invalid,
                    "No upload is in progress with this id.",
                ))
            }
        },
        _ => None,
    }
}

/// Serves one `UploadChunk` whose data is `buf[data]`, however it was
/// decoded (in place by `upload::recv`, or by postcard in `upload_step`).
/// An accepted chunk's buffer goes to the upload's writer thread and
/// `buf` gets a spare one.
fn upload_chunk(
    shared: &Shared,
    peer: &Peer,
    slot: &mut UploadSlot,
    id: u64,
    offset: u64,
    buf: &mut Vec<u8>,
    data: std::ops::Range<usize>,
) -> Option<Response> {
    let window = crate::messages::UPLOAD_WINDOW;
    let request = Request::UploadChunk {
        offset,
        data: Vec::new(),
    };
    if !allowed(peer.role, &request) {
        // Refuses and audits like any other request.
        return Some(dispatch(shared, peer, &request));
    }
    match slot {
        UploadSlot::Active { id: open, upload } if *open == id => {
            match upload.write(offset, buf, data, window) {
                Ok(()) if upload.ack_due() => Some(Response::UploadAck {
                    received: upload.received,
                    window,
                }),
                Ok(()) => None,
                Err(e) => {
                    audit_upload(shared, peer, &upload.path, upload.size, "error");
                    *slot = UploadSlot::Failed {
                        id,
                        error: e.clone(),
                    };
                    Some(error(e.0, e.1))
                }
            }
        }
        UploadSlot::Failed { id: failed, .. } if *failed == id => None,
        _ => Some(error(
            ErrorCode::Invalid,
            "No upload is in progress with this id.",
        )),
    }
}

/// A short single-token name of a request for the audit log.
fn request_name(request: &Request) -> String {
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

fn error(kind: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

/// Authorises, serves and audits one request.
fn dispatch(shared: &Shared, peer: &Peer, request: &Request) -> Response {
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
    shared.audit_request(peer, &request_name(request), outcome);
    response
}

fn guest_result(r: Result<(), init_client::GuestError>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err((kind, message)) => error(kind, message),
    }
}

fn host_info(shared: &Shared) -> HostInfo {
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| "unknown".into());
    let uptime_secs = read_trimmed("/proc/uptime")
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or_else(|| shared.started.elapsed().as_secs());
    let memory_mib = read_trimmed("/proc/meminfo")
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024);
    HostInfo {
        hostname,
        version: keel_common::VERSION.to_string(),
        uptime_secs,
        cpus: thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mib,
        guests_running: shared.init.running(),
    }
}

fn read_audit(shared: &Shared, tail: u32) -> Response {
    let path = shared.settings.state_dir.join(AUDIT_LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
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

/// Largest console-log tail `keelctl logs --guest` gets.
const GUEST_LOG_BYTES: u32 = 256 * 1024;

fn serve_request(shared: &Shared, peer: &Peer, request: &Request) -> Response {
    let init = &shared.init;
    let simple = |r: InitRequest| guest_result(init.simple(&r));
    match request {
        Request::HostInfo => Response::HostInfo(host_info(shared)),
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
                shared.event(&format!("guest spec defined by {}", peer.fingerprint));
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
                let skip = lines.len().saturating_sub(*tail as usize);
                Response::LogLines(lines.into_iter().skip(skip).collect())
            }
            Err((kind, message)) => error(kind, message),
        },
        Request::Logs {
            guest: None, tail, ..
        } => {
            // init's log (guest state changes among it) when init is
            // there, then the agent's own events.
            let mut lines = init.host_log(*tail).unwrap_or_default();
            let log = lock(&shared.log);
            lines.extend(log.iter().map(|l| format!("keel-agent: {l}")));
            let skip = lines.len().saturating_sub(*tail as usize);
            Response::LogLines(lines.into_iter().skip(skip).collect())
        }
        Request::Audit { tail } => read_audit(shared, *tail),
        Request::AuthorizeKey {
            role,
            public_key,
            comment,
        } => {
            let comment: String = comment
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            let mut keys = lock(&shared.authorized);
            let mut updated = keys.clone();
            updated.add(*role, crate::PublicKey(*public_key), &comment);
            let path = shared.settings.state_dir.join(AUTHORIZED_KEYS_FILE);
            match atomic_write(&path, updated.to_text().as_bytes(), 0o600) {
                Ok(()) => {
                    *keys = updated;
                    Response::Ok
                }
                Err(e) => error(ErrorCode::Internal, format!("Cannot save keys: {e}")),
            }
        }
        // handle_connection turns the session into a console stream.
        Request::GuestConsole { .. } | Request::ConsoleInput { .. } | Request::ConsoleDetach => {
            error(
                ErrorCode::Invalid,
                "No console is attached in this session.",
            )
        }
        // handle_connection routes the upload stream to upload_step.
        Request::Upload { .. } | Request::UploadChunk { .. } | Request::UploadFinish => error(
            ErrorCode::Internal,
            "Upload messages are only served inside a session.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_compare() {
        assert!(constant_time_eq(b"12345678", b"12345678"));
        assert!(!constant_time_eq(b"12345678", b"12345679"));
        assert!(!constant_time_eq(b"1234567", b"12345678"));
        assert!(!constant_time_eq(b"", b"1"));
        assert_eq!(normalize_code("1234-5678"), b"12345678");
        let c = new_pairing_code().unwrap();
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
    }
}
