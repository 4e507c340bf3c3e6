//! Per-source rate limiting of handshakes: a token bucket per IP address
//! that failed handshakes drain, and a cap on handshakes in progress, so
//! that a flood from one address cannot starve everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::{lock, AgentSettings};

/// Buckets kept before full ones (idle sources) are forgotten.
const MAX_SOURCES: usize = 10_000;

/// Token bucket of one source address.
struct Bucket {
    tokens: f64,
    last: Instant,
    pending: usize,
    refusal_logged: bool,
}

/// Whether a new connection may handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused; `first` for the first refusal of an episode, which alone
    /// is audited, so a flood cannot fill the disk.
    Refused {
        first: bool,
    },
}

pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    max_pending: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(settings: &AgentSettings) -> Self {
        RateLimiter {
            burst: settings.rate_burst,
            per_sec: settings.rate_per_sec,
            max_pending: settings.max_pending_per_ip,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new connection from `ip` may handshake; an admitted one
    /// must be ended with [`RateLimiter::finish`].
    pub fn admit(&self, ip: IpAddr) -> Admission {
        let mut buckets = lock(&self.buckets);
        let now = Instant::now();
        if buckets.len() > MAX_SOURCES {
            let burst = self.burst;
            buckets.retain(|_, b| b.pending > 0 || b.tokens < burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            pending: 0,
            refusal_logged: false,
        });
        let dt = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.per_sec).min(self.burst);
        b.last = now;
        if b.tokens < 1.0 || b.pending >= self.max_pending {
            let first = !b.refusal_logged;
            b.refusal_logged = true;
            return Admission::Refused { first };
        }
        b.refusal_logged = false;
        b.pending += 1;
        Admission::Admitted
    }

    /// Ends a handshake from `ip`; a failed one costs a token.
    pub fn finish(&self, ip: IpAddr, ok: bool) {
        if let Some(b) = lock(&self.buckets).get_mut(&ip) {
            b.pending = b.pending.saturating_sub(1);
            if !ok {
                b.tokens -= 1.0;
            }
        }
    }
}
