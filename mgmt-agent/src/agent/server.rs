//! The running agent: its state shared by the session threads, start-up
//! (host key, authorized_keys, audit log, pairing), the accept loop with
//! its admission checks, and the handle that stops it.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use keel_sys::fsutil::atomic_write;

use super::audit::AuditLog;
use super::connection;
use super::events::EventLog;
use super::handshakes::Handshakes;
use super::init_client::InitClient;
use super::pairing::{self, Pairing};
use super::rate_limit::{Admission, RateLimiter};
use super::sessions::Sessions;
use super::settings::{AgentSettings, HOST_KEY_FILE};
use crate::{AuthorizedKeys, Fingerprint, HostKey, Role};

/// The agent's state, shared by the accept loop and the session threads.
pub struct Shared {
    pub settings: AgentSettings,
    pub host_key: HostKey,
    pub authorized: Mutex<AuthorizedKeys>,
    pub pairing: Pairing,
    pub audit: AuditLog,
    pub events: EventLog,
    pub init: InitClient,
    pub limiter: RateLimiter,
    pub handshakes: Handshakes,
    /// Established sessions by key, to end them when the key goes.
    pub sessions: Sessions,
    /// Established sessions.
    established: AtomicUsize,
    /// Requests being answered; a draining agent waits for them.
    in_flight: AtomicUsize,
    stop: AtomicBool,
    pub started: Instant,
}

impl Shared {
    /// Takes an established session's place, if one is free for `role`:
    /// the last few are kept for admins, so that sessions of lesser keys
    /// cannot lock them out. Given back with [`Shared::leave_session`].
    pub fn enter_session(&self, role: Role) -> bool {
        let max = self.settings.max_sessions;
        let limit = if role == Role::Admin {
            max
        } else {
            max - self.settings.admin_reserved_sessions.min(max / 2)
        };
        if self.established.fetch_add(1, Ordering::SeqCst) >= limit {
            self.established.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn leave_session(&self) {
        self.established.fetch_sub(1, Ordering::SeqCst);
    }

    /// Marks a request as being answered until the guard drops, so that
    /// [`AgentHandle::drain`] lets its reply out.
    pub fn answering(&self) -> Answering<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Answering(&self.in_flight)
    }
}

/// A request being answered; see [`Shared::answering`].
pub struct Answering<'a>(&'a AtomicUsize);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running agent. Dropping it stops accepting connections.
pub struct AgentHandle {
    addr: SocketAddr,
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

    /// The open pairing code: while no admin key exists, until the
    /// window closes. A failed attempt replaces it.
    pub fn pairing_code(&self) -> Option<String> {
        self.shared.pairing.code()
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

    /// Stops accepting, then waits up to `timeout` for the replies being
    /// written. A host reboot is answered before init stops the agent,
    /// and that answer must still reach the operator.
    pub fn drain(&mut self, timeout: Duration) {
        self.shutdown();
        let deadline = Instant::now() + timeout;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
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

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AgentError + '_ {
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

/// Loads authorized_keys; a missing file is an empty one, and a bad line
/// is skipped with a warning naming it (one typo must not lock every key
/// out), given back to go in the agent's log.
fn load_authorized_keys(
    settings: &AgentSettings,
) -> Result<(AuthorizedKeys, Vec<String>), AgentError> {
    let path = settings.authorized_keys_path();
    match AuthorizedKeys::load(&path) {
        Ok((keys, skipped)) => {
            let warnings = skipped
                .iter()
                .map(|e| format!("{}: {e} The line is skipped.", path.display()))
                .collect();
            Ok((keys, warnings))
        }
        Err(crate::AuthorizedKeysError::Read { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            Ok((AuthorizedKeys::default(), Vec::new()))
        }
        Err(e) => Err(AgentError::Config(e.to_string())),
    }
}

/// Starts serving on `listener` in background threads.
pub fn serve(listener: TcpListener, settings: AgentSettings) -> Result<AgentHandle, AgentError> {
    let host_key = load_or_create_host_key(&settings.state_dir)?;
    let (authorized, key_warnings) = load_authorized_keys(&settings)?;
    let audit = AuditLog::open(settings.audit_log_path(), settings.audit_max_bytes)?;
    let has_admin = authorized.admins() > 0;
    let pairing_code =
        if has_admin {
            None
        } else {
            Some(pairing::new_code().ok_or_else(|| {
                AgentError::Config("The system random source failed.".to_string())
            })?)
        };
    let addr = listener
        .local_addr()
        .map_err(io_err(Path::new("listener")))?;
    let shared = Arc::new(Shared {
        init: InitClient::new(&settings.init_socket),
        pairing: Pairing::new(
            pairing_code.clone(),
            settings.pairing_validity,
            settings.pairing_file.clone(),
        ),
        limiter: RateLimiter::new(&settings),
        handshakes: Handshakes::new(settings.max_handshakes),
        sessions: Sessions::default(),
        settings,
        host_key,
        authorized: Mutex::new(authorized),
        audit,
        events: EventLog::default(),
        established: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    shared.events.record(&format!(
        "keel-agent {} listening on {addr}, host key {}",
        keel_common::VERSION,
        shared.host_key.fingerprint()
    ));
    for temp in super::upload::sweep(&shared.settings.upload_root) {
        shared
            .events
            .record(&format!("removed {temp}, left by an interrupted upload"));
    }
    for warning in key_warnings {
        log::warn!("{warning}");
        shared.events.record(&warning);
    }
    shared.pairing.publish();
    if pairing_code.is_some() {
        shared
            .events
            .record("no admin key: first-boot pairing is open");
    }
    let s = shared.clone();
    let thread = thread::Builder::new()
        .name("keel-agent-accept".into())
        .spawn(move || accept_loop(listener, s))
        .map_err(io_err(Path::new("thread")))?;
    Ok(AgentHandle {
        addr,
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
        match shared.limiter.admit(peer.ip()) {
            Admission::Admitted => {}
            Admission::Refused { first } => {
                if first {
                    shared.audit.handshake(
                        SocketAddr::new(peer.ip(), 0),
                        None,
                        "rate limited (further refusals from this address are not logged)",
                    );
                }
                continue;
            }
        }
        let Ok(ticket) = shared.handshakes.enter(&stream) else {
            shared.limiter.finish(peer.ip(), false);
            shared.limiter.closed(peer.ip());
            continue;
        };
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("keel-session-{peer}"))
            .spawn(move || {
                connection::handle(&s, stream, peer, ticket);
                s.limiter.closed(peer.ip());
            });
        if spawned.is_err() {
            shared.handshakes.leave(ticket);
            shared.limiter.finish(peer.ip(), false);
            shared.limiter.closed(peer.ip());
        }
    }
}

/// How an operator names this host to reach `listen`: its IPv4 addresses
/// (all of them, for a wildcard listener), with the port only when it is
/// not the default. Empty while the host has no address yet.
pub fn connect_hosts(listen: SocketAddr) -> Vec<String> {
    let with_port = |ip| keel_common::host::agent_host(ip, listen.port());
    if !listen.ip().is_unspecified() {
        return vec![with_port(listen.ip())];
    }
    keel_sys::host_addrs::reachable_ipv4_addresses()
        .into_iter()
        .map(|ip| with_port(IpAddr::V4(ip)))
        .collect()
}
