//! postcard decoding of `Request` and `ClientMessage` (what the agent
//! decodes from every authenticated frame), plus `ServerMessage` (what
//! keelctl decodes). Never panics; whatever decodes re-encodes to a value
//! that decodes to the same thing, and the canonical encoding is never
//! longer than the bytes consumed (equal unless the input used overlong
//! varints). The authorisation table must accept anything decoded. The
//! agent's in-place `UploadChunk` decoder must agree with postcard.
#![no_main]

use keel_mgmt::agent::upload::decode_chunk;
use keel_mgmt::roles::{allowed, required_role};
use keel_mgmt::{ClientMessage, Request, Role, ServerMessage};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(data).ok()?;
    let consumed = data.len() - rest.len();
    let encoded = postcard::to_stdvec(&value).expect("re-encoding a decoded value failed");
    assert!(
        encoded.len() <= consumed,
        "canonical encoding ({}) longer than the input consumed ({consumed})",
        encoded.len()
    );
    let again: T = postcard::from_bytes(&encoded).expect("re-encoded value does not decode");
    assert_eq!(again, value, "value does not round-trip");
    // from_bytes ignores trailing bytes and must agree with take_from_bytes.
    assert_eq!(postcard::from_bytes::<T>(data).ok().as_ref(), Some(&value));
    Some(value)
}

fn authorise(request: &Request) {
    let needed = required_role(request);
    for role in [Role::Reader, Role::Operator, Role::Admin] {
        assert_eq!(allowed(role, request), role >= needed);
    }
}

/// The agent's zero-copy `UploadChunk` decoder must agree with postcard:
/// it accepts exactly the chunks postcard decodes, with the same id,
/// offset and data, and nothing else.
fn chunk_fast_path(data: &[u8]) {
    let fast = decode_chunk(data).map(|(id, offset, range)| (id, offset, data[range].to_vec()));
    let slow = match postcard::from_bytes::<ClientMessage>(data) {
        Ok(ClientMessage {
            id,
            request: Request::UploadChunk { offset, data },
        }) => Some((id, offset, data)),
        _ => None,
    };
    assert_eq!(fast, slow, "decode_chunk disagrees with postcard");
}

fuzz_target!(|data: &[u8]| {
    chunk_fast_path(data);
    if let Some(request) = round_trip::<Request>(data) {
        authorise(&request);
    }
    if let Some(message) = round_trip::<ClientMessage>(data) {
        authorise(&message.request);
    }
    let _ = round_trip::<ServerMessage>(data);
});
