//! `ClientHello::decode` on arbitrary bytes: never panics, and whatever
//! decodes re-encodes to exactly the input (the format is canonical:
//! fixed-size fields, a bounded count and no trailing bytes).
#![no_main]

use keel_mgmt::handshake::{ClientHello, MAX_VERSIONS, MSG_CLIENT_HELLO};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = ClientHello::decode(data) {
        assert_eq!(data[0], MSG_CLIENT_HELLO);
        assert!(!hello.versions.is_empty() && hello.versions.len() <= MAX_VERSIONS);
        let encoded = hello.encode();
        assert_eq!(encoded, data, "ClientHello does not round-trip");
        assert_eq!(ClientHello::decode(&encoded).unwrap(), hello);
    }
});
