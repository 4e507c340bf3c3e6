//! Roles and the request authorisation table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::messages::Request;

/// What a client key may do. Ordered: each role can do everything the
/// previous one can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Read-only: host info, guest list and details, logs.
    Reader,
    /// Reader plus guest power control, the console and uploads.
    Operator,
    /// Everything: define, undefine, audit log, key management.
    Admin,
}

impl Role {
    /// The wire byte used in the handshake's authentication result.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Reader => 1,
            Role::Operator => 2,
            Role::Admin => 3,
        }
    }

    /// Inverse of [`Role::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Role::Reader),
            2 => Some(Role::Operator),
            3 => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// The least role that may make `request`.
pub fn required_role(request: &Request) -> Role {
    use Request::*;
    // Spelled out per variant, with no wildcard, so that adding a request
    // forces a decision here.
    match request {
        HostInfo | GuestList | GuestShow { .. } | Logs { .. } => Role::Reader,
        GuestStart { .. }
        | GuestStop { .. }
        | GuestKill { .. }
        | GuestRestart { .. }
        | GuestConsole { .. }
        | ConsoleInput { .. }
        | ConsoleDetach
        | Upload { .. }
        | UploadChunk { .. }
        | UploadFinish => Role::Operator,
        GuestDefine { .. }
        | GuestUndefine { .. }
        | Audit { .. }
        | AuthorizeKey { .. }
        | HostReboot
        | HostPowerOff => Role::Admin,
    }
}

/// Whether `role` may make `request`.
pub fn allowed(role: Role, request: &Request) -> bool {
    role >= required_role(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> String {
        "web".to_string()
    }

    #[test]
    fn table() {
        let read = Request::GuestList;
        let start = Request::GuestStart { name: name() };
        let define = Request::GuestDefine {
            spec_toml: String::new(),
        };
        assert!(allowed(Role::Reader, &read));
        assert!(!allowed(Role::Reader, &start));
        assert!(!allowed(Role::Reader, &define));
        assert!(allowed(Role::Operator, &start));
        assert!(allowed(
            Role::Operator,
            &Request::GuestConsole { name: name() }
        ));
        assert!(!allowed(Role::Operator, &define));
        assert!(!allowed(Role::Operator, &Request::Audit { tail: 10 }));
        let upload = Request::Upload {
            path: "images/a.img".into(),
            size: 1,
            sha256: [0; 32],
        };
        for r in [upload, Request::UploadFinish] {
            assert!(!allowed(Role::Reader, &r));
            assert!(allowed(Role::Operator, &r));
            assert!(allowed(Role::Admin, &r));
        }
        assert!(allowed(Role::Admin, &define));
        assert!(allowed(Role::Admin, &read));
        for r in [Request::HostReboot, Request::HostPowerOff] {
            assert!(!allowed(Role::Operator, &r));
            assert!(allowed(Role::Admin, &r));
        }
    }

    #[test]
    fn role_bytes_round_trip() {
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::from_byte(r.to_byte()), Some(r));
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert_eq!(Role::from_byte(0), None);
    }
}
