//! Roles and the request authorisation table.

use crate::messages::Request;

/// The roles are part of the `authorized_keys` format, shared with init.
pub use keel_common::authorized_keys::Role;

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
        | UploadFinish
        | UploadStart { .. }
        | UploadEnd { .. } => Role::Operator,
        GuestDefine { .. }
        | GuestUndefine { .. }
        | Audit { .. }
        | AuthorizeKey { .. }
        | HostReboot
        | HostPowerOff
        | KeyList
        | KeyRevoke { .. }
        | KeySetRole { .. } => Role::Admin,
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
            replace: false,
        };
        let start = Request::UploadStart {
            path: "images/a.img".into(),
            size: 1,
            data: 0,
            replace: false,
        };
        let end = Request::UploadEnd { sha256: [0; 32] };
        for r in [upload, Request::UploadFinish, start, end] {
            assert!(!allowed(Role::Reader, &r));
            assert!(allowed(Role::Operator, &r));
            assert!(allowed(Role::Admin, &r));
        }
        assert!(allowed(Role::Admin, &define));
        assert!(allowed(Role::Admin, &read));
        let fingerprint = [0; 32];
        for r in [
            Request::HostReboot,
            Request::HostPowerOff,
            Request::KeyList,
            Request::KeyRevoke { fingerprint },
            Request::KeySetRole {
                fingerprint,
                role: Role::Reader,
            },
        ] {
            assert!(!allowed(Role::Operator, &r));
            assert!(allowed(Role::Admin, &r));
        }
    }
}
