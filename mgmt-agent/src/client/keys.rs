//! Key management calls: the keys a host authorises, revoking one and
//! changing its role (admin only; the host refuses to lose its last
//! admin key).

use super::{Client, ClientError};
use crate::messages::KeyInfo;
use crate::{Fingerprint, Request, Response, Role};

/// Reads a fingerprint as keelctl prints it, `SHA256:<base64>`.
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, ClientError> {
    Fingerprint::parse(text).ok_or_else(|| {
        ClientError::Local(format!(
            "{text} is not a key fingerprint (SHA256:... as `keelctl key list` prints it)."
        ))
    })
}

impl Client {
    /// The host's authorised keys, in its file's order.
    pub fn key_list(&mut self) -> Result<Vec<KeyInfo>, ClientError> {
        match self.call(Request::KeyList)? {
            Response::Keys(keys) => Ok(keys),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Removes a key; its sessions end.
    pub fn key_revoke(&mut self, fingerprint: Fingerprint) -> Result<(), ClientError> {
        let request = Request::KeyRevoke {
            fingerprint: fingerprint.0,
        };
        expect_ok(self.call(request)?)
    }

    /// Changes a key's role; its sessions end if the role is lowered.
    pub fn key_set_role(
        &mut self,
        fingerprint: Fingerprint,
        role: Role,
    ) -> Result<(), ClientError> {
        let request = Request::KeySetRole {
            fingerprint: fingerprint.0,
            role,
        };
        expect_ok(self.call(request)?)
    }
}

fn expect_ok(response: Response) -> Result<(), ClientError> {
    match response {
        Response::Ok => Ok(()),
        _ => Err(ClientError::Unexpected),
    }
}
