//! First-boot pairing: while no admin key exists, a code shown on the
//! host's console lets an operator enrol a key as admin. The code is the
//! password of the handshake's SPAKE2 exchange, so it never crosses the
//! network. One attempt runs at a time, attempts start at most every
//! [`MIN_ATTEMPT_INTERVAL`], and a failed attempt (a wrong code or one
//! abandoned after the host's proof) replaces the code with a fresh one:
//! each code can be guessed once, and a failure from the network does
//! not lock the operator out. The window closes after its validity.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::lock;
use keel_sys::fsutil::atomic_write;

/// Least time between the starts of two pairing attempts.
pub const MIN_ATTEMPT_INTERVAL: Duration = Duration::from_secs(2);
/// An attempt not ended by then is taken as abandoned (the handshake
/// deadline ends real ones far sooner).
const STALE_ATTEMPT: Duration = Duration::from_secs(60);

/// Why a pairing attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Pairing is closed: an admin key exists.
    Unavailable,
    Expired,
    /// Another attempt is under way or one started moments ago.
    Busy,
}

impl Refused {
    /// The reason as the audit log gives it.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Unavailable => "pairing not available",
            Refused::Expired => "pairing window closed",
            Refused::Busy => "pairing busy",
        }
    }
}

struct State {
    /// The open code; `None` once pairing is closed.
    code: Option<String>,
    closes: Instant,
    /// When the attempt in progress started.
    attempt: Option<Instant>,
    last_start: Option<Instant>,
}

pub struct Pairing {
    state: Mutex<State>,
    /// Where the open code is published for init to show on the console.
    file: Option<PathBuf>,
}

impl Pairing {
    /// Pairing with `code` open for `validity`, or closed if `None`.
    pub fn new(code: Option<String>, validity: Duration, file: Option<PathBuf>) -> Self {
        Pairing {
            state: Mutex::new(State {
                code,
                closes: Instant::now() + validity,
                attempt: None,
                last_start: None,
            }),
            file,
        }
    }

    /// The open code, if any.
    pub fn code(&self) -> Option<String> {
        let state = lock(&self.state);
        if Instant::now() > state.closes {
            return None;
        }
        state.code.clone()
    }

    /// Publishes the open code (mode 0600) in the pairing file, or
    /// removes a stale file when pairing is closed.
    pub fn publish(&self) {
        let Some(path) = &self.file else {
            return;
        };
        match self.code() {
            Some(code) => {
                if let Err(e) = atomic_write(path, format!("{code}\n").as_bytes(), 0o600) {
                    log::warn!("cannot publish the pairing code in {}: {e}", path.display());
                }
            }
            None => self.close_file(),
        }
    }

    fn close_file(&self) {
        if let Some(path) = &self.file {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    /// Starts an attempt: the code to run the exchange with. Every
    /// successful `begin` is followed by one [`Pairing::end`].
    pub fn begin(&self) -> Result<String, Refused> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let Some(code) = state.code.clone() else {
            return Err(Refused::Unavailable);
        };
        if now > state.closes {
            state.code = None;
            drop(state);
            self.close_file();
            return Err(Refused::Expired);
        }
        let running = state
            .attempt
            .is_some_and(|t| now.duration_since(t) < STALE_ATTEMPT);
        let too_soon = state
            .last_start
            .is_some_and(|t| now.duration_since(t) < MIN_ATTEMPT_INTERVAL);
        if running || too_soon {
            return Err(Refused::Busy);
        }
        state.attempt = Some(now);
        state.last_start = Some(now);
        Ok(code)
    }

    /// Ends the attempt in progress. Enrolment closes pairing; anything
    /// else spends the code and opens a fresh one, which init shows on
    /// the console. Returns whether a fresh code was made.
    pub fn end(&self, enrolled: bool) -> bool {
        let mut state = lock(&self.state);
        state.attempt = None;
        if enrolled {
            state.code = None;
            drop(state);
            self.close_file();
            return false;
        }
        if state.code.is_none() {
            return false;
        }
        state.code = new_code();
        drop(state);
        self.publish();
        true
    }
}

/// A fresh code, `NNNN-NNNN`; `None` if the system random source failed.
pub fn new_code() -> Option<String> {
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).ok()?;
    let n = u64::from_le_bytes(b) % 100_000_000;
    Some(format!("{:04}-{:04}", n / 10_000, n % 10_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_right() {
        let c = new_code().unwrap();
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
    }

    #[test]
    fn a_failed_attempt_replaces_the_code_and_enrolment_closes() {
        let p = Pairing::new(Some("1111-2222".into()), Duration::from_secs(60), None);
        assert_eq!(p.begin().unwrap(), "1111-2222");
        // One at a time.
        assert_eq!(p.begin(), Err(Refused::Busy));
        assert!(p.end(false));
        let fresh = p.code().unwrap();
        assert_ne!(fresh, "1111-2222");
        // Paced.
        assert_eq!(p.begin(), Err(Refused::Busy));
        lock(&p.state).last_start = None;
        assert_eq!(p.begin().unwrap(), fresh);
        assert!(!p.end(true));
        assert_eq!(p.code(), None);
        assert_eq!(p.begin(), Err(Refused::Unavailable));
    }

    #[test]
    fn the_window_closes() {
        let p = Pairing::new(Some("1111-2222".into()), Duration::ZERO, None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.begin(), Err(Refused::Expired));
        assert_eq!(p.code(), None);
    }
}
