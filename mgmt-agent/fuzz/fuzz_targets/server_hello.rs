//! `ServerHello::decode` on arbitrary bytes: never panics, and whatever
//! decodes re-encodes to exactly the input; the unsigned encoding (what
//! the transcript covers) is the input minus the 64-byte signature.
#![no_main]

use keel_mgmt::handshake::{transcript_hash, ServerHello, MAX_VERSIONS, MSG_SERVER_HELLO};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = ServerHello::decode(data) {
        assert_eq!(data[0], MSG_SERVER_HELLO);
        assert!(!hello.versions.is_empty() && hello.versions.len() <= MAX_VERSIONS);
        let encoded = hello.encode();
        assert_eq!(encoded, data, "ServerHello does not round-trip");
        let unsigned = hello.encode_unsigned();
        assert_eq!(unsigned, &data[..data.len() - 64]);
        assert_eq!(&data[data.len() - 64..], &hello.signature[..]);
        assert_eq!(ServerHello::decode(&encoded).unwrap(), hello);
        let _ = transcript_hash(data, &unsigned);
    }
});
