//! The AEAD frame opener with a fixed key and arbitrary frames.
//!
//! Input: 8 bytes of frame counter (big-endian), then bytes used three
//! ways. (1) As a frame body given straight to `open`. (2) As wire bytes:
//! frames are read with `read_frame` at `MAX_FRAME` and opened with
//! consecutive counters, as `Session::recv_bytes` does. Neither may ever
//! succeed (that would be a forgery) or panic. (3) As a plaintext: sealed
//! and opened again it must round-trip, and a flipped bit, a truncation,
//! a different counter or a different key must all fail.
#![no_main]

use keel_common::frame::read_frame;
use keel_mgmt::session::{open, seal, SessionError, MAX_FRAME, MAX_PLAINTEXT, TAG_LEN};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x4b; 32];
const OTHER_KEY: [u8; 32] = [0x4c; 32];

fn must_fail(result: Result<Vec<u8>, SessionError>, what: &str) {
    if let Ok(plain) = result {
        panic!("{what}: a forged frame opened to {plain:?}");
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 8 {
        return;
    }
    let counter = u64::from_be_bytes(input[..8].try_into().unwrap());
    let data = &input[8..];

    // (1) An arbitrary body.
    must_fail(open(&KEY, counter, data), "raw body");

    // (2) Arbitrary wire bytes, consecutive counters.
    let mut wire = data;
    let mut n = counter;
    while let Ok(body) = read_frame(&mut wire, MAX_FRAME) {
        must_fail(open(&KEY, n, &body), "wire frame");
        n = n.wrapping_add(1);
    }

    // (3) Seal then open.
    if data.len() <= MAX_PLAINTEXT {
        let frame = seal(&KEY, counter, data).expect("sealing a small plaintext failed");
        assert_eq!(frame.len(), 4 + data.len() + TAG_LEN);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, data.len() + TAG_LEN);
        let body = &frame[4..];
        assert_eq!(open(&KEY, counter, body).expect("own frame does not open"), data);
        // The reader path gives back the same body.
        let mut r = frame.as_slice();
        assert_eq!(read_frame(&mut r, MAX_FRAME).unwrap(), body);
        assert!(r.is_empty());

        let mut flipped = body.to_vec();
        let bit = counter as usize % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        must_fail(open(&KEY, counter, &flipped), "flipped bit");
        must_fail(open(&KEY, counter, &body[..body.len() - 1]), "truncated");
        must_fail(open(&KEY, counter ^ 1, body), "other counter");
        must_fail(open(&OTHER_KEY, counter, body), "other key");
    }
});
