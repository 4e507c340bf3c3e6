//! keel-agent's run-time settings and the layout of its state directory.

use std::path::PathBuf;
use std::time::Duration;

use super::upload;

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
    /// Free space an upload must leave on the upload root's file system;
    /// `None`: `upload::default_reserve` (5% of the file system, within
    /// 16 MiB and 2 GiB).
    pub upload_reserve: Option<u64>,
    /// The whole handshake's deadline, counted from accept.
    pub handshake_timeout: Duration,
    /// How long an established session (or its console or followed log)
    /// may go without a request or output before it is closed.
    pub idle_timeout: Duration,
    /// Most established sessions at once.
    pub max_sessions: usize,
    /// Of `max_sessions`, how many only admin sessions may take.
    pub admin_reserved_sessions: usize,
    /// Most sessions one key may hold at once.
    pub max_sessions_per_key: usize,
    /// Most handshakes in progress at once; a newcomer past this cuts off
    /// the oldest.
    pub max_handshakes: usize,
    /// How long a first-boot pairing code stays valid.
    pub pairing_validity: Duration,
    /// Per source IP: failed or unfinished handshakes allowed in a burst.
    pub rate_burst: f64,
    /// Per source IP: failed handshakes forgiven per second.
    pub rate_per_sec: f64,
    /// Per source IP: handshakes in progress at once.
    pub max_pending_per_ip: usize,
    /// Per source IP: connections (handshaking or established) at once.
    pub max_connections_per_ip: usize,
    /// init's control socket, which owns the guests.
    pub init_socket: PathBuf,
    /// Where the VMMs' API sockets are (`<dir>/<guest>.sock`), for consoles.
    pub vmm_socket_dir: PathBuf,
    /// Size at which the audit log moves to `audit.log.1`.
    pub audit_max_bytes: u64,
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
            upload_reserve: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_sessions: 64,
            admin_reserved_sessions: 4,
            max_sessions_per_key: 16,
            max_handshakes: 32,
            pairing_validity: Duration::from_secs(15 * 60),
            rate_burst: 10.0,
            rate_per_sec: 0.2,
            max_pending_per_ip: 4,
            max_connections_per_ip: 8,
            init_socket: PathBuf::from(keel_common::init_api::INIT_SOCKET),
            vmm_socket_dir: PathBuf::from(keel_common::init_api::VMM_SOCKET_DIR),
            audit_max_bytes: 1024 * 1024,
            pairing_file: None,
        }
    }

    pub fn authorized_keys_path(&self) -> PathBuf {
        self.state_dir.join(AUTHORIZED_KEYS_FILE)
    }

    pub fn audit_log_path(&self) -> PathBuf {
        self.state_dir.join(AUDIT_LOG_FILE)
    }
}
