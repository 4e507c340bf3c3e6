//! `InMemoryGuests`: a stand-in until init's control socket backs the
//! agent. It validates specs with the real parser and tracks power state
//! in memory only; nothing is started and nothing survives a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use keel_common::guest::GuestSpec;

use crate::messages::{ErrorKind, GuestDetail, GuestState, GuestSummary};

struct Guest {
    spec: GuestSpec,
    spec_toml: String,
    state: GuestState,
    started: Option<Instant>,
}

/// Guest definitions and states held in memory (stand-in until init's
/// control socket backs the agent).
#[derive(Default)]
pub struct InMemoryGuests {
    guests: BTreeMap<String, Guest>,
}

/// A failed guest operation: the error kind and a message for the user.
pub type GuestError = (ErrorKind, String);

fn not_found(name: &str) -> GuestError {
    (
        ErrorKind::NotFound,
        format!("No guest is named \"{name}\"."),
    )
}

impl Guest {
    fn summary(&self) -> GuestSummary {
        GuestSummary {
            name: self.spec.name.clone(),
            state: self.state,
            vcpus: self.spec.vcpus,
            memory_mib: self.spec.memory_mib,
        }
    }
}

impl InMemoryGuests {
    pub fn define(&mut self, spec_toml: &str) -> Result<String, GuestError> {
        // The file name is only used in messages; the spec's own `name`
        // is authoritative.
        let spec = GuestSpec::parse(Path::new("<name>.toml"), spec_toml)
            .map_err(|e| (ErrorKind::Invalid, e.to_string()))?;
        let name = spec.name.clone();
        if let Some(g) = self.guests.get(&name) {
            if g.state != GuestState::Stopped {
                return Err((
                    ErrorKind::Conflict,
                    format!("Guest \"{name}\" is running; stop it before redefining it."),
                ));
            }
        }
        self.guests.insert(
            name.clone(),
            Guest {
                spec,
                spec_toml: spec_toml.to_string(),
                state: GuestState::Stopped,
                started: None,
            },
        );
        Ok(name)
    }

    pub fn undefine(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.guests.get(name).ok_or_else(|| not_found(name))?;
        if g.state != GuestState::Stopped {
            return Err((
                ErrorKind::Conflict,
                format!("Guest \"{name}\" is running; stop it first."),
            ));
        }
        self.guests.remove(name);
        Ok(())
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Guest, GuestError> {
        self.guests.get_mut(name).ok_or_else(|| not_found(name))
    }

    pub fn start(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.get_mut(name)?;
        if g.state == GuestState::Running {
            return Err((
                ErrorKind::Conflict,
                format!("Guest \"{name}\" is already running."),
            ));
        }
        g.state = GuestState::Running;
        g.started = Some(Instant::now());
        Ok(())
    }

    /// Stop (graceful) and kill (immediate) are the same in the stand-in.
    pub fn stop(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.get_mut(name)?;
        if g.state == GuestState::Stopped {
            return Err((
                ErrorKind::Conflict,
                format!("Guest \"{name}\" is not running."),
            ));
        }
        g.state = GuestState::Stopped;
        g.started = None;
        Ok(())
    }

    pub fn restart(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.get_mut(name)?;
        g.state = GuestState::Running;
        g.started = Some(Instant::now());
        Ok(())
    }

    pub fn show(&self, name: &str) -> Result<GuestDetail, GuestError> {
        let g = self.guests.get(name).ok_or_else(|| not_found(name))?;
        Ok(GuestDetail {
            summary: g.summary(),
            spec_toml: g.spec_toml.clone(),
            pid: None,
            uptime_secs: g.started.map(|t| t.elapsed().as_secs()),
        })
    }

    pub fn list(&self) -> Vec<GuestSummary> {
        self.guests.values().map(Guest::summary).collect()
    }

    pub fn running(&self) -> u32 {
        self.guests
            .values()
            .filter(|g| g.state == GuestState::Running)
            .count() as u32
    }
}
