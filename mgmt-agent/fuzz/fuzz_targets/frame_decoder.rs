//! The frame reader on arbitrary bytes with a small limit.
//!
//! Input: one control byte (limit and read chunk size), then the wire
//! bytes. Frames are read until the first error, once from a plain slice
//! and once through a reader that returns at most `step` bytes per call;
//! both must see the same frames and the same error. Every frame read
//! must re-encode to exactly the bytes it was read from, and every error
//! must be consistent with the input. `read_frame_into` with one reused
//! buffer must see the same frames and error as `read_frame`.
#![no_main]

use std::io::{self, Read};

use keel_common::frame::{read_frame, read_frame_into, write_frame, FrameError};
use libfuzzer_sys::fuzz_target;

const LIMITS: [usize; 8] = [0, 1, 2, 4, 16, 64, 255, 1024];

/// Returns at most `step` bytes per read, like a slow socket.
struct Chunky<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads frames until an error; returns the frames and the error text.
/// Checks each frame and the final error against the input.
fn read_all<R: Read>(
    r: &mut R,
    remaining: impl Fn(&R) -> usize,
    data: &[u8],
    max: usize,
) -> (Vec<Vec<u8>>, String) {
    let mut frames = Vec::new();
    loop {
        let start = data.len() - remaining(r);
        match read_frame(r, max) {
            Ok(body) => {
                assert!(
                    body.len() <= max,
                    "frame of {} over limit {max}",
                    body.len()
                );
                let end = data.len() - remaining(r);
                assert_eq!(end - start, 4 + body.len(), "consumed bytes != frame size");
                let mut again = Vec::new();
                write_frame(&mut again, &body, max).expect("re-encoding a read frame failed");
                assert_eq!(again, &data[start..end], "frame does not round-trip");
                frames.push(body);
            }
            Err(e) => {
                let left = data.len() - start;
                match &e {
                    FrameError::Closed => assert_eq!(left, 0, "Closed with {left} bytes left"),
                    FrameError::Truncated { expected, got } => {
                        assert!(got < expected);
                        if left < 4 {
                            // Short header (a 4-byte body looks the same).
                            assert!(left > 0 && *expected == 4 && *got == left);
                        } else {
                            assert!(left >= 4 && left - 4 == *got);
                            let len =
                                u32::from_be_bytes(data[start..start + 4].try_into().unwrap());
                            assert_eq!(len as usize, *expected);
                        }
                    }
                    FrameError::TooLarge { len, max: m } => {
                        assert_eq!(*m, max);
                        assert!(*len > max);
                        let hdr = u32::from_be_bytes(data[start..start + 4].try_into().unwrap());
                        assert_eq!(hdr as usize, *len);
                    }
                    other => panic!("impossible error from an in-memory reader: {other:?}"),
                }
                return (frames, e.to_string());
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let max = LIMITS[(ctl & 7) as usize];
    let step = (ctl >> 3) as usize + 1; // 1..=32

    let mut slice = data;
    let plain = read_all(&mut slice, |s: &&[u8]| s.len(), data, max);

    // read_frame_into with one reused buffer sees the same frames and
    // the same error, and never grows the buffer past the limit.
    let mut slice = data;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let reused = loop {
        match read_frame_into(&mut slice, max, &mut buf) {
            Ok(n) => frames.push(buf[..n].to_vec()),
            Err(e) => break e.to_string(),
        }
        assert!(buf.len() <= max);
    };
    assert!(
        buf.len() <= max,
        "buffer grew to {} past the limit {max}",
        buf.len()
    );
    assert_eq!(
        (frames, reused),
        plain,
        "read_frame_into differs from read_frame"
    );
    let mut chunky = Chunky { data, step };
    let slow = read_all(&mut chunky, |c: &Chunky| c.data.len(), data, max);
    assert_eq!(plain, slow, "short reads changed the result");
});
