//! The agent's own recent events (listening, sessions, pairing, uploads),
//! kept in memory and served with the host log by `Logs`.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::audit::clean;
use super::lock;
use crate::util::{rfc3339, unix_now};

/// Events kept; older ones are dropped.
const MAX_EVENTS: usize = 1000;

#[derive(Default)]
pub struct EventLog {
    lines: Mutex<VecDeque<String>>,
}

impl EventLog {
    /// Logs `line` and keeps it, timestamped; control characters (from
    /// an upload path, say) are replaced so that it stays one line.
    pub fn record(&self, line: &str) {
        let line = clean(line);
        log::info!("{line}");
        let mut lines = lock(&self.lines);
        if lines.len() >= MAX_EVENTS {
            lines.pop_front();
        }
        lines.push_back(format!("{} {line}", rfc3339(unix_now())));
    }

    /// The events kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).iter().cloned().collect()
    }
}
