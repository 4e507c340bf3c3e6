//! `ClientAuth::decode` on arbitrary bytes: never panics, and whatever
//! decodes re-encodes to exactly the input.
#![no_main]

use keel_mgmt::handshake::{ClientAuth, MSG_AUTH_KEY, MSG_AUTH_PAIRING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(auth) = ClientAuth::decode(data) {
        match &auth {
            ClientAuth::Key { .. } => {
                assert_eq!(data[0], MSG_AUTH_KEY);
                assert_eq!(data.len(), 1 + 32 + 64);
            }
            ClientAuth::Pairing { .. } => {
                assert_eq!(data[0], MSG_AUTH_PAIRING);
                assert_eq!(data.len(), 1 + 32 + 64);
            }
        }
        let encoded = auth.encode();
        assert_eq!(encoded, data, "ClientAuth does not round-trip");
        assert_eq!(ClientAuth::decode(&encoded).unwrap(), auth);
    }
});
