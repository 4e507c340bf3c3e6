//! Key management: the one way authorized_keys changes (the agent is its
//! only writer while it runs), and the requests that list, authorise,
//! revoke and demote keys. A change is saved before it takes effect,
//! never leaves the host without an admin key once it has one, and ends
//! the live sessions of every key it removes or lowers.

use std::io;

use keel_sys::fsutil::atomic_write;

use super::dispatch::error;
use super::lock;
use super::server::Shared;
use crate::messages::{ErrorCode, KeyInfo, Response};
use crate::{AuthorizedKeys, Fingerprint, Peer, PublicKey, Role};

/// Why a key change is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error("No authorised key has the fingerprint {0}.")]
    NotFound(Fingerprint),
    #[error(
        "{0} is the last admin key: authorise another admin key first, or nobody could manage this host any more."
    )]
    LastAdmin(Fingerprint),
    #[error("Cannot save authorized_keys: {0}.")]
    Save(io::Error),
}

impl Shared {
    /// Applies `change` to a copy of the keys, saves it (atomically, mode
    /// 0600), then makes it the agent's and ends the sessions of keys it
    /// removed or lowered.
    pub fn change_keys<T>(
        &self,
        change: impl FnOnce(&mut AuthorizedKeys) -> Result<T, KeyChangeError>,
    ) -> Result<T, KeyChangeError> {
        let (result, lowered) = {
            let mut keys = lock(&self.authorized);
            let mut updated = keys.clone();
            let result = change(&mut updated)?;
            if keys.admins() > 0 && updated.admins() == 0 {
                let last = keys.entries().find(|e| e.role == Role::Admin);
                let fp = last.map_or(Fingerprint([0; 32]), |e| e.key.fingerprint());
                return Err(KeyChangeError::LastAdmin(fp));
            }
            let path = self.settings.authorized_keys_path();
            atomic_write(&path, updated.to_text().as_bytes(), 0o600)
                .map_err(KeyChangeError::Save)?;
            let lowered: Vec<Fingerprint> = keys
                .entries()
                .filter(|old| {
                    updated
                        .lookup(&old.key)
                        .is_none_or(|(role, _)| role < old.role)
                })
                .map(|old| old.key.fingerprint())
                .collect();
            *keys = updated;
            (result, lowered)
        };
        for fp in lowered {
            let ended = self.sessions.end(&fp);
            if ended > 0 {
                self.events.record(&format!(
                    "ended {ended} session(s) of {fp}: its key changed"
                ));
            }
        }
        Ok(result)
    }

    /// The role `key` has now, if it is authorised.
    pub fn key_role(&self, key: &PublicKey) -> Option<Role> {
        lock(&self.authorized).lookup(key).map(|(role, _)| role)
    }

    /// Authorises `key` with `role` (a key already listed gets the new
    /// role and comment).
    pub fn add_key(&self, role: Role, key: PublicKey, comment: &str) -> io::Result<()> {
        self.change_keys(|keys| {
            keys.add(role, key, comment);
            Ok(())
        })
        .map_err(|e| match e {
            KeyChangeError::Save(e) => e,
            e => io::Error::other(e.to_string()),
        })
    }
}

fn refused(e: &KeyChangeError) -> Response {
    let kind = match e {
        KeyChangeError::NotFound(_) => ErrorCode::NotFound,
        KeyChangeError::LastAdmin(_) => ErrorCode::Conflict,
        KeyChangeError::Save(_) => ErrorCode::Internal,
    };
    error(kind, e.to_string())
}

/// The answer to `KeyList`.
pub fn list(shared: &Shared) -> Response {
    let keys = lock(&shared.authorized);
    Response::Keys(
        keys.entries()
            .map(|e| KeyInfo {
                public_key: e.key.0,
                role: e.role,
                comment: e.comment.clone(),
            })
            .collect(),
    )
}

/// The answer to `AuthorizeKey`.
pub fn authorize(
    shared: &Shared,
    peer: &Peer,
    role: Role,
    key: PublicKey,
    comment: &str,
) -> Response {
    let comment: String = comment
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let result = shared.change_keys(|keys| {
        keys.add(role, key, &comment);
        Ok(())
    });
    answer(
        shared,
        peer,
        result,
        &format!("authorised {} as {role}", key.fingerprint()),
    )
}

/// The answer to `KeyRevoke`.
pub fn revoke(shared: &Shared, peer: &Peer, fp: Fingerprint) -> Response {
    let result = shared.change_keys(|keys| match keys.remove(&fp) {
        Some(_) => Ok(()),
        None => Err(KeyChangeError::NotFound(fp)),
    });
    answer(shared, peer, result, &format!("revoked {fp}"))
}

/// The answer to `KeySetRole`.
pub fn set_role(shared: &Shared, peer: &Peer, fp: Fingerprint, role: Role) -> Response {
    let result = shared.change_keys(|keys| match keys.set_role(&fp, role) {
        Some(_) => Ok(()),
        None => Err(KeyChangeError::NotFound(fp)),
    });
    answer(
        shared,
        peer,
        result,
        &format!("set the role of {fp} to {role}"),
    )
}

fn answer(
    shared: &Shared,
    peer: &Peer,
    result: Result<(), KeyChangeError>,
    done: &str,
) -> Response {
    match result {
        Ok(()) => {
            shared
                .events
                .record(&format!("{} {done}", peer.fingerprint));
            Response::Ok
        }
        Err(e) => refused(&e),
    }
}
