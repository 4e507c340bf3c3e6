//! Length-prefixed frames: a u32 big-endian length, then that many bytes.
//!
//! The length is checked against the caller's limit before any allocation,
//! so a hostile peer cannot make us reserve 4 GiB with four bytes.

use std::io::{self, ErrorKind, Read, Write};

use thiserror::Error;

/// Largest frame accepted once the session is up (ciphertext plus tag).
pub const MAX_FRAME: usize = 256 * 1024;

/// Largest handshake frame: the hellos and the client proof are all tiny.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// Errors from reading or writing frames.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("The peer closed the connection.")]
    Closed,
    #[error("The connection ended in the middle of a frame ({got} of {expected} bytes).")]
    Truncated { expected: usize, got: usize },
    #[error("The peer announced a frame of {len} bytes, more than the limit of {max}.")]
    TooLarge { len: usize, max: usize },
    #[error("Timed out waiting for the peer.")]
    TimedOut,
    #[error("I/O error on the connection: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            // A socket read timeout shows up as WouldBlock on Unix.
            ErrorKind::WouldBlock | ErrorKind::TimedOut => FrameError::TimedOut,
            ErrorKind::UnexpectedEof => FrameError::Closed,
            _ => FrameError::Io(e),
        }
    }
}

/// Reads until `buf` is full. Returns how many bytes arrived before EOF.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Reads one frame of at most `max` bytes.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::new();
    let len = read_frame_into(r, max, &mut body)?;
    body.truncate(len);
    Ok(body)
}

/// Reads one frame of at most `max` bytes into `buf`, reusing its
/// allocation: on success `buf[..n]` is the frame body and `n` is
/// returned. `len` is checked against `max` before `buf` grows, and `buf`
/// is never shrunk, so a receive loop that reuses one buffer neither
/// allocates nor zeroes memory per frame once the buffer has reached the
/// largest frame size seen. Bytes of `buf` beyond `n` are unspecified.
pub fn read_frame_into<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let mut header = [0u8; 4];
    match read_full(r, &mut header)? {
        0 => return Err(FrameError::Closed),
        4 => {}
        got => return Err(FrameError::Truncated { expected: 4, got }),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let got = read_full(r, &mut buf[..len])?;
    if got != len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    Ok(len)
}

/// Encodes the 4-byte header for a payload of `len` bytes.
pub fn header(len: usize, max: usize) -> Result<[u8; 4], FrameError> {
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // max is far below u32::MAX, so the cast cannot truncate.
    Ok((len as u32).to_be_bytes())
}

/// Writes one frame of at most `max` bytes, as a single write so that a
/// frame is never interleaved with another writer's bytes.
pub fn write_frame<W: Write + ?Sized>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&header(payload.len(), max)?);
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello", 16).unwrap();
        write_frame(&mut buf, b"", 16).unwrap();
        assert_eq!(buf[..4], [0, 0, 0, 5]);
        let mut r = buf.as_slice();
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"");
        assert!(matches!(read_frame(&mut r, 16), Err(FrameError::Closed)));
    }

    #[test]
    fn read_into_reuses_the_buffer() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello world", 16).unwrap();
        write_frame(&mut wire, b"abc", 16).unwrap();
        write_frame(&mut wire, b"", 16).unwrap();
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        let n = read_frame_into(&mut r, 16, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello world");
        let cap = buf.capacity();
        let n = read_frame_into(&mut r, 16, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"abc");
        assert_eq!(read_frame_into(&mut r, 16, &mut buf).unwrap(), 0);
        assert_eq!(buf.capacity(), cap);
        assert!(matches!(
            read_frame_into(&mut r, 16, &mut buf),
            Err(FrameError::Closed)
        ));
        // The limit is checked before the buffer grows.
        let mut empty = Vec::new();
        assert!(matches!(
            read_frame_into(
                &mut [0xffu8, 0xff, 0xff, 0xff].as_slice(),
                MAX_FRAME,
                &mut empty
            ),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(empty.capacity(), 0);
        assert!(matches!(
            read_frame_into(&mut [0u8, 0, 0, 8, 1, 2, 3].as_slice(), 16, &mut empty),
            Err(FrameError::Truncated {
                expected: 8,
                got: 3
            })
        ));
    }

    #[test]
    fn oversize_is_refused_before_allocation() {
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge.as_slice(), MAX_FRAME),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: MAX_FRAME
            })
        ));
        assert!(matches!(
            write_frame(&mut Vec::new(), &[0; 17], 16),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
    }

    #[test]
    fn short_reads_are_truncation() {
        let short_header = [0u8, 0];
        assert!(matches!(
            read_frame(&mut short_header.as_slice(), 16),
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        let short_body = [0u8, 0, 0, 8, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut short_body.as_slice(), 16),
            Err(FrameError::Truncated {
                expected: 8,
                got: 3
            })
        ));
    }
}
