//! Length-prefixed frames, the one framing of every Keel protocol: a u32
//! big-endian length, then that many bytes.
//!
//! The management channel (keel-mgmt) carries its handshake messages and
//! sealed session frames in them with its own limits; the local control
//! sockets (keel-vmm's API socket, init's control socket) carry one
//! postcard message per frame with [`write_message`] and [`read_message`]
//! under [`LOCAL_MAX_FRAME`].
//!
//! The length is checked against the caller's limit before any allocation,
//! so a hostile peer cannot make us reserve 4 GiB with four bytes.

use std::io::{self, ErrorKind, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame of the local control protocols (keel-vmm's API socket
/// and init's control socket).
pub const LOCAL_MAX_FRAME: usize = 1 << 20;

/// Errors from reading or writing frames.
#[derive(Debug, thiserror::Error)]
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
    #[error("The message cannot be encoded: {0}")]
    Encode(#[source] postcard::Error),
    #[error("The frame does not decode: {0}")]
    Decode(#[source] postcard::Error),
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
    match u32::try_from(len) {
        Ok(n) if len <= max => Ok(n.to_be_bytes()),
        _ => Err(FrameError::TooLarge { len, max }),
    }
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

/// Writes one postcard message of a local control protocol as one frame.
pub fn write_message<W: Write + ?Sized, T: Serialize>(
    w: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(message).map_err(FrameError::Encode)?;
    write_frame(w, &body, LOCAL_MAX_FRAME)
}

/// Reads one postcard message of a local control protocol.
pub fn read_message<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let body = read_frame(r, LOCAL_MAX_FRAME)?;
    postcard::from_bytes(&body).map_err(FrameError::Decode)
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
                LOCAL_MAX_FRAME,
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
            read_frame(&mut huge.as_slice(), LOCAL_MAX_FRAME),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: LOCAL_MAX_FRAME
            })
        ));
        assert!(matches!(
            write_frame(&mut Vec::new(), &[0; 17], 16),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        let big = vec![0u8; LOCAL_MAX_FRAME];
        assert!(matches!(
            write_message(&mut Vec::new(), &big),
            Err(FrameError::TooLarge {
                max: LOCAL_MAX_FRAME,
                ..
            })
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

    #[test]
    fn messages_are_postcard_in_frames() {
        let mut wire = Vec::new();
        write_message(&mut wire, &(7u8, "ls".to_string())).unwrap();
        // The wire shape: length, then the postcard bytes.
        assert_eq!(wire, [0, 0, 0, 4, 7, 2, b'l', b's']);
        let back: (u8, String) = read_message(&mut wire.as_slice()).unwrap();
        assert_eq!(back, (7, "ls".to_string()));
        assert!(matches!(
            read_message::<_, (u8, String)>(&mut [0u8, 0, 0, 1, 0xff].as_slice()),
            Err(FrameError::Decode(_))
        ));
        assert!(matches!(
            read_message::<_, u8>(&mut &[][..]),
            Err(FrameError::Closed)
        ));
    }
}
