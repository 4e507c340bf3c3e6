//! The handshakes in progress, at most a fixed number at once. When all
//! places are taken the oldest handshake is cut off for the newcomer: a
//! real client finishes within a round trip, so a crowd of slow or silent
//! connections cannot keep it out, however many addresses they come from.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;

use super::lock;

pub struct Handshakes {
    max: usize,
    /// Oldest first: an id and a handle to cut the connection off.
    pending: Mutex<(u64, VecDeque<(u64, TcpStream)>)>,
}

impl Handshakes {
    pub fn new(max: usize) -> Self {
        Handshakes {
            max: max.max(1),
            pending: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Registers the handshake of `stream`, cutting off the oldest one if
    /// all places are taken. The returned id is for [`Handshakes::leave`].
    pub fn enter(&self, stream: &TcpStream) -> io::Result<u64> {
        let handle = stream.try_clone()?;
        let mut guard = lock(&self.pending);
        let (next, pending) = &mut *guard;
        while pending.len() >= self.max {
            if let Some((_, oldest)) = pending.pop_front() {
                // Its session thread sees the connection end and cleans up.
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        let id = *next;
        *next += 1;
        pending.push_back((id, handle));
        Ok(id)
    }

    /// The handshake `id` is over (or was already cut off).
    pub fn leave(&self, id: u64) {
        lock(&self.pending).1.retain(|(i, _)| *i != id);
    }
}
