//! The agent's answers to the handshake: the pairing code for a client
//! that comes to pair, and the role of a client that proved its key. A
//! pairing attempt that began here is ended when the handshake is over,
//! whatever the outcome (see `pairing`).

use std::cell::Cell;
use std::net::SocketAddr;

use super::lock;
use super::server::Shared;
use crate::handshake::Authority;
use crate::{PeerAuth, Role};

/// One connection's view of the agent during its handshake.
pub struct Authorizer<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    /// Why the client was refused, for the audit log.
    reason: Cell<&'static str>,
    pairing: Cell<Attempt>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    None,
    Running,
    Enrolled,
}

impl<'a> Authorizer<'a> {
    pub fn new(shared: &'a Shared, peer: SocketAddr) -> Self {
        Authorizer {
            shared,
            peer,
            reason: Cell::new("refused"),
            pairing: Cell::new(Attempt::None),
        }
    }

    /// The reason for a refusal the handshake reports as unauthorised.
    pub fn reason(&self) -> &'static str {
        self.reason.get()
    }
}

impl Authority for Authorizer<'_> {
    fn pairing_code(&self) -> Option<String> {
        match self.shared.pairing.begin() {
            Ok(code) => {
                self.pairing.set(Attempt::Running);
                Some(code)
            }
            Err(refused) => {
                self.reason.set(refused.reason());
                None
            }
        }
    }

    fn authorize(&self, auth: &PeerAuth) -> Option<Role> {
        match auth {
            PeerAuth::Key { public_key } => {
                let role = lock(&self.shared.authorized)
                    .lookup(public_key)
                    .map(|(r, _)| r);
                if role.is_none() {
                    self.reason.set("unknown key");
                }
                role
            }
            PeerAuth::Paired { public_key } => {
                if self.pairing.get() != Attempt::Running {
                    self.reason.set("pairing not available");
                    return None;
                }
                let saved = self
                    .shared
                    .add_key(Role::Admin, *public_key, "enrolled-by-pairing");
                if let Err(e) = saved {
                    log::error!(
                        "cannot save {}: {e}",
                        self.shared.settings.authorized_keys_path().display()
                    );
                    self.reason.set("internal error saving authorized_keys");
                    return None;
                }
                self.pairing.set(Attempt::Enrolled);
                self.shared
                    .audit
                    .enrolled(self.peer, public_key.fingerprint());
                self.shared.events.record(&format!(
                    "enrolled admin key {} by pairing",
                    public_key.fingerprint()
                ));
                Some(Role::Admin)
            }
        }
    }
}

impl Drop for Authorizer<'_> {
    fn drop(&mut self) {
        let attempt = self.pairing.get();
        if attempt == Attempt::None {
            return;
        }
        let fresh = self.shared.pairing.end(attempt == Attempt::Enrolled);
        if fresh {
            self.shared
                .events
                .record("a pairing attempt failed; a fresh code is on the host's console");
        }
    }
}
