//! The live sessions by key, so that revoking or demoting a key ends the
//! sessions it already has: each is shut down under its thread's feet,
//! whose next read then fails.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::thread::{self, ThreadId};

use super::lock;
use crate::Fingerprint;

struct Live {
    fingerprint: Fingerprint,
    stream: TcpStream,
    thread: ThreadId,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<u64, Live>>,
    next: Mutex<u64>,
}

/// Why a session could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRegistered {
    /// The key has as many sessions as it may.
    TooMany,
    /// The stream could not be shared with the registry.
    Stream,
}

/// A session's place in the registry, left when dropped.
pub struct Registered<'a> {
    sessions: &'a Sessions,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.sessions.live).remove(&self.id);
    }
}

impl Sessions {
    /// Records the session of `fingerprint` served on `stream` by the
    /// calling thread, unless that key already has `max_per_key`
    /// sessions (so one leaked or hostile key cannot take every place).
    pub fn register(
        &self,
        fingerprint: Fingerprint,
        stream: &TcpStream,
        max_per_key: usize,
    ) -> Result<Registered<'_>, NotRegistered> {
        let stream = stream.try_clone().map_err(|_| NotRegistered::Stream)?;
        let id = {
            let mut next = lock(&self.next);
            *next += 1;
            *next
        };
        let live = Live {
            fingerprint,
            stream,
            thread: thread::current().id(),
        };
        let mut all = lock(&self.live);
        let of_key = all
            .values()
            .filter(|l| l.fingerprint == fingerprint)
            .count();
        if of_key >= max_per_key {
            return Err(NotRegistered::TooMany);
        }
        all.insert(id, live);
        Ok(Registered { sessions: self, id })
    }

    /// Ends every session of `fingerprint`; how many there were. The
    /// calling session (one revoking its own key) only stops reading, so
    /// that its answer still goes out before it ends.
    pub fn end(&self, fingerprint: &Fingerprint) -> usize {
        let me = thread::current().id();
        let live = lock(&self.live);
        let mut ended = 0;
        for l in live.values().filter(|l| &l.fingerprint == fingerprint) {
            let how = if l.thread == me {
                Shutdown::Read
            } else {
                Shutdown::Both
            };
            let _ = l.stream.shutdown(how);
            ended += 1;
        }
        ended
    }
}
