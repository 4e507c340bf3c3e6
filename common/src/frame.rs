//! Length-prefixed postcard frames, the local control protocols' framing
//! (keel-vmm's API socket and init's control socket).
//!
//! A frame is a u32 big-endian length followed by that many bytes of
//! postcard. The receiver checks the length against [`MAX_FRAME`] before
//! allocating.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the frame is {0} bytes, over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("the frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, message: &T) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(message)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    Ok(())
}

/// Reads one frame, refusing oversized ones before allocating.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}
