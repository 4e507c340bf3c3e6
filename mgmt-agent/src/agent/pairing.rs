//! First-boot pairing: while no admin key exists, a one-time code lets
//! the first client enrol its key as admin. The code is spent by the
//! first attempt, right or wrong, and expires.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::lock;
use keel_sys::fsutil::atomic_write;

/// An open pairing code.
struct Code {
    code: String,
    expires: Instant,
}

/// Why a pairing attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Pairing is closed: an admin key exists or the code was spent.
    Unavailable,
    Expired,
    WrongCode,
}

impl Refused {
    /// The reason as the audit log gives it.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Unavailable => "pairing not available",
            Refused::Expired => "pairing code expired",
            Refused::WrongCode => "wrong pairing code",
        }
    }
}

pub struct Pairing {
    code: Mutex<Option<Code>>,
    /// Where the open code is published for init to show.
    file: Option<PathBuf>,
}

impl Pairing {
    /// Pairing with `code` open for `validity`, or closed if `None`.
    pub fn new(code: Option<String>, validity: Duration, file: Option<PathBuf>) -> Self {
        let code = code.map(|code| Code {
            code,
            expires: Instant::now() + validity,
        });
        Pairing {
            code: Mutex::new(code),
            file,
        }
    }

    /// Publishes the open code (mode 0600) in the pairing file, or
    /// removes a stale file when pairing is closed.
    pub fn publish(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let code = lock(&self.code).as_ref().map(|c| c.code.clone());
        match code {
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

    /// Checks `code`. One attempt only: pairing closes whatever the
    /// outcome.
    pub fn redeem(&self, code: &str) -> Result<(), Refused> {
        let Some(open) = lock(&self.code).take() else {
            return Err(Refused::Unavailable);
        };
        self.close_file();
        if Instant::now() > open.expires {
            return Err(Refused::Expired);
        }
        if !constant_time_eq(&normalize_code(code), &normalize_code(&open.code)) {
            return Err(Refused::WrongCode);
        }
        Ok(())
    }
}

/// A fresh code, `NNNN-NNNN`; `None` if the system random source failed.
pub fn new_code() -> Option<String> {
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
        let c = new_code().unwrap();
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
    }
}
