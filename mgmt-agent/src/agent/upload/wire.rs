//! Receiving upload chunks without copying them: the fast path that
//! decodes an `UploadChunk` in place in the session's receive buffer.

use std::io::Read;
use std::ops::Range;

use crate::messages::{ClientMessage, RequestId, UPLOAD_CHUNK_INDEX};
use crate::session::{Session, SessionError};

/// Reads a postcard varint of at most `max_bytes` bytes whose last byte
/// may carry at most `last_max`, exactly as postcard 1 decodes `u32`
/// (5, 0x0f) and `u64`/`usize` (10, 0x01): overlong encodings are
/// accepted, overflowing ones are not.
fn take_varint(bytes: &[u8], pos: &mut usize, max_bytes: usize, last_max: u8) -> Option<u64> {
    let mut out = 0u64;
    for i in 0..max_bytes {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (i != max_bytes - 1 || b <= last_max).then_some(out);
        }
    }
    None
}

/// Decodes the plaintext of an `UploadChunk` message,
/// `ClientMessage { id, request: UploadChunk { offset, data } }`, without
/// copying its data: returns `(id, offset, range of data in plain)`.
/// Returns `None` for anything else, including a malformed chunk; the
/// caller then decodes the message with postcard, so this is only a fast
/// path and must never accept what postcard would decode differently
/// (the `request_decoder` fuzz target checks that it agrees). As with
/// `postcard::from_bytes`, bytes after the data are ignored.
pub fn decode_chunk(plain: &[u8]) -> Option<(RequestId, u64, Range<usize>)> {
    let mut pos = 0;
    let id = take_varint(plain, &mut pos, 10, 0x01)?;
    let variant = take_varint(plain, &mut pos, 5, 0x0f)?;
    if variant != u64::from(UPLOAD_CHUNK_INDEX) {
        return None;
    }
    let offset = take_varint(plain, &mut pos, 10, 0x01)?;
    let len = usize::try_from(take_varint(plain, &mut pos, 10, 0x01)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= plain.len())?;
    Some((id, offset, pos..end))
}

/// One message received by the agent.
#[derive(Debug)]
pub enum Incoming {
    /// An `UploadChunk`, decoded in place: its data is `buf[data]` of the
    /// buffer given to [`recv`].
    Chunk {
        id: RequestId,
        offset: u64,
        data: Range<usize>,
    },
    /// Any other message (or a chunk in a form the fast path does not
    /// take), decoded with postcard.
    Message(ClientMessage),
}

/// Receives one client message into `buf`, a buffer the caller reuses for
/// the whole session. Upload chunks are decrypted in place and handed
/// back as a range of `buf`, so their data is neither allocated nor
/// copied before it is hashed and written; everything else is decoded
/// with postcard. Any error closes the session, as [`Session::recv`].
pub fn recv<R: Read + ?Sized>(
    session: &mut Session,
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Incoming, SessionError> {
    let n = session.recv_into(r, buf)?;
    let plain = &buf[..n];
    if let Some((id, offset, data)) = decode_chunk(plain) {
        return Ok(Incoming::Chunk { id, offset, data });
    }
    match postcard::from_bytes(plain) {
        Ok(m) => Ok(Incoming::Message(m)),
        Err(e) => {
            session.close();
            Err(SessionError::Decode(e))
        }
    }
}
