//! Per-source admission: a token bucket per IP address that failed
//! handshakes drain, a cap on handshakes in progress and on connections
//! held per address, so that one address cannot starve everyone else.
//! The table is bounded: idle sources are forgotten, oldest first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::{lock, AgentSettings};

/// Sources kept at most; past this, idle ones are forgotten.
const MAX_SOURCES: usize = 4096;

/// What is known of one source address.
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Handshakes in progress.
    pending: usize,
    /// Connections open (handshaking or established).
    connections: usize,
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
    max_connections: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(settings: &AgentSettings) -> Self {
        RateLimiter {
            burst: settings.rate_burst,
            per_sec: settings.rate_per_sec,
            max_pending: settings.max_pending_per_ip,
            max_connections: settings.max_connections_per_ip,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new connection from `ip` may handshake; an admitted one
    /// must be ended with [`RateLimiter::finish`] when its handshake ends
    /// and with [`RateLimiter::closed`] when it closes.
    pub fn admit(&self, ip: IpAddr) -> Admission {
        let mut buckets = lock(&self.buckets);
        let now = Instant::now();
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&ip) {
            forget_idle(&mut buckets);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            pending: 0,
            connections: 0,
            refusal_logged: false,
        });
        let dt = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.per_sec).min(self.burst);
        b.last = now;
        if b.tokens < 1.0 || b.pending >= self.max_pending || b.connections >= self.max_connections
        {
            let first = !b.refusal_logged;
            b.refusal_logged = true;
            return Admission::Refused { first };
        }
        b.refusal_logged = false;
        b.pending += 1;
        b.connections += 1;
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

    /// A connection from `ip` has closed.
    pub fn closed(&self, ip: IpAddr) {
        if let Some(b) = lock(&self.buckets).get_mut(&ip) {
            b.connections = b.connections.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        lock(&self.buckets).len()
    }
}

/// Forgets the least recently seen half of the sources without an open
/// connection. Those with connections are few: the agent's own caps bound
/// them far below the table's size.
fn forget_idle(buckets: &mut HashMap<IpAddr, Bucket>) {
    let mut idle: Vec<(Instant, IpAddr)> = buckets
        .iter()
        .filter(|(_, b)| b.connections == 0)
        .map(|(ip, b)| (b.last, *ip))
        .collect();
    idle.sort_unstable();
    for (_, ip) in idle.iter().take(MAX_SOURCES / 2) {
        buckets.remove(ip);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::{Admission, RateLimiter, MAX_SOURCES};
    use crate::agent::AgentSettings;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        ))
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_oldest() {
        let limiter = RateLimiter::new(&AgentSettings::new("/nonexistent"));
        // A source still connected is never forgotten.
        assert_eq!(limiter.admit(ip(0)), Admission::Admitted);
        for n in 1..3 * MAX_SOURCES as u32 {
            assert_eq!(limiter.admit(ip(n)), Admission::Admitted);
            limiter.finish(ip(n), false);
            limiter.closed(ip(n));
            assert!(limiter.sources() <= MAX_SOURCES);
        }
        let buckets = super::lock(&limiter.buckets);
        assert!(buckets.contains_key(&ip(0)));
        assert!(buckets.contains_key(&ip(3 * MAX_SOURCES as u32 - 1)));
        assert!(!buckets.contains_key(&ip(1)));
    }

    #[test]
    fn connections_per_source_are_capped() {
        let mut settings = AgentSettings::new("/nonexistent");
        settings.max_connections_per_ip = 3;
        let limiter = RateLimiter::new(&settings);
        for _ in 0..3 {
            assert_eq!(limiter.admit(ip(1)), Admission::Admitted);
            limiter.finish(ip(1), true);
        }
        assert_eq!(limiter.admit(ip(1)), Admission::Refused { first: true });
        assert_eq!(limiter.admit(ip(2)), Admission::Admitted);
        limiter.closed(ip(1));
        assert_eq!(limiter.admit(ip(1)), Admission::Admitted);
    }
}
