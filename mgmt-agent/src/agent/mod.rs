//! keel-agent: accepts management sessions over TCP, authenticates them
//! with the handshake, authorises and audits every request, and serves
//! them. Guest and host operations are forwarded to init's control socket
//! ([`init_client::InitClient`]); an attached console talks to the guest's
//! VMM socket directly.
//!
//! `server` starts the agent and accepts connections (admitted by
//! `rate_limit` and `handshakes`); `connection` runs one connection's
//! handshake (within a `deadline`, `pairing` on first boot) and session; `dispatch` serves a request,
//! `console` a console or followed log, `upload` an upload; every
//! request is written to the `audit` log and the agent's own `events`
//! are kept for `keelctl logs`.

mod audit;
mod authority;
mod connection;
mod console;
mod deadline;
mod dispatch;
mod events;
mod handshakes;
mod host_info;
pub mod init_client;
mod keys;
mod log_lines;
mod pairing;
mod rate_limit;
mod server;
mod sessions;
mod settings;
pub mod upload;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use pairing::MIN_ATTEMPT_INTERVAL as PAIRING_ATTEMPT_INTERVAL;
pub use server::{connect_hosts, load_or_create_host_key, serve, AgentError, AgentHandle};
pub use settings::{
    AgentSettings, AUDIT_LOG_FILE, AUTHORIZED_KEYS_FILE, DEFAULT_LISTEN, HOST_KEY_FILE,
};

/// Locks a mutex, recovering from poisoning: a panicked session thread
/// must not take the agent down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
