//! The key schedule and the encrypted session.
//!
//! Both are split into pure functions ([`derive_keys`], [`seal`], [`open`])
//! so that known-answer tests can pin them: ring will not let us fix an
//! X25519 ephemeral secret, but it does not need to for these steps.

use std::io::{Read, Write};

use keel_common::frame::{header, read_frame, read_frame_into, FrameError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::keys::PublicKey;
use crate::roles::Role;

/// HKDF info strings; one per direction so the two keys are independent.
pub const INFO_C2S: &[u8] = b"keel-mgmt v2 client-to-server key";
pub const INFO_S2C: &[u8] = b"keel-mgmt v2 server-to-client key";

/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Largest frame accepted once the session is up (ciphertext plus tag).
pub const MAX_FRAME: usize = 256 * 1024;

/// Largest plaintext that fits in one frame.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;

/// Errors once the session is up. Any of them ends the session.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("Frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("A frame failed authentication (tampered, replayed, reordered or forged); the session is closed.")]
    Decrypt,
    #[error("The message is too large for one frame ({0} bytes).")]
    TooLarge(usize),
    #[error("Could not encode the message: {0}")]
    Encode(#[source] postcard::Error),
    #[error("Could not decode the message: {0}")]
    Decode(#[source] postcard::Error),
    #[error("The frame counter is exhausted; reconnect.")]
    CounterExhausted,
    #[error("The session was closed by an earlier error.")]
    Closed,
    #[error("The key schedule failed.")]
    KeySchedule,
}

/// The two directional keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeys {
    pub client_to_server: [u8; 32],
    pub server_to_client: [u8; 32],
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256: extract with the transcript hash as salt and the X25519
/// shared secret, then the pairing exchange's key (empty unless pairing),
/// as input key material; then expand once per direction.
pub fn derive_keys(
    shared_secret: &[u8],
    pake_key: &[u8],
    transcript_hash: &[u8; 32],
) -> Result<SessionKeys, SessionError> {
    let ikm = [shared_secret, pake_key].concat();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, transcript_hash).extract(&ikm);
    let expand = |info: &[u8]| -> Result<[u8; 32], SessionError> {
        let mut out = [0u8; 32];
        let infos = [info];
        prk.expand(&infos, Len32)
            .and_then(|okm| okm.fill(&mut out))
            .map_err(|_| SessionError::KeySchedule)?;
        Ok(out)
    };
    Ok(SessionKeys {
        client_to_server: expand(INFO_C2S)?,
        server_to_client: expand(INFO_S2C)?,
    })
}

/// The nonce for frame number `counter`: 4 zero bytes, then the counter
/// big-endian.
pub fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, SessionError> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| SessionError::KeySchedule)
}

fn seal_with(key: &LessSafeKey, counter: u64, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
    let mut out = Vec::with_capacity(4 + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(plaintext);
    seal_frame_in_place(key, counter, &mut out)?;
    Ok(out)
}

/// Seals `frame` in place: on entry it is 4 placeholder bytes then the
/// plaintext; on return it is the whole frame (header, ciphertext, tag).
/// No copy of the plaintext is made.
fn seal_frame_in_place(
    key: &LessSafeKey,
    counter: u64,
    frame: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let plain_len = frame.len().saturating_sub(4);
    if frame.len() < 4 || plain_len > MAX_PLAINTEXT {
        return Err(SessionError::TooLarge(plain_len));
    }
    let header = header(plain_len + TAG_LEN, MAX_FRAME)?;
    frame[..4].copy_from_slice(&header);
    // The length header is the associated data: it is authenticated too.
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes(counter)),
            Aad::from(header),
            &mut frame[4..],
        )
        .map_err(|_| SessionError::TooLarge(plain_len))?;
    frame.extend_from_slice(tag.as_ref());
    Ok(())
}

fn open_with(key: &LessSafeKey, counter: u64, body: &[u8]) -> Result<Vec<u8>, SessionError> {
    open_owned(key, counter, body.to_vec())
}

/// Decrypts in place, reusing the body's allocation for the plaintext.
fn open_owned(key: &LessSafeKey, counter: u64, mut buf: Vec<u8>) -> Result<Vec<u8>, SessionError> {
    let plain_len = open_slice(key, counter, &mut buf)?;
    buf.truncate(plain_len);
    Ok(buf)
}

/// Decrypts a frame body in place: on success the plaintext is
/// `body[..n]` and `n` is returned. The length header (the associated
/// data) is recomputed from `body.len()`, never taken from the wire.
fn open_slice(key: &LessSafeKey, counter: u64, body: &mut [u8]) -> Result<usize, SessionError> {
    let header = header(body.len(), MAX_FRAME)?;
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce_bytes(counter)),
            Aad::from(header),
            body,
        )
        .map_err(|_| SessionError::Decrypt)?
        .len();
    Ok(plain_len)
}

/// Encrypts `plaintext` as frame number `counter`: returns the whole
/// frame, length header included.
pub fn seal(key: &[u8; 32], counter: u64, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
    seal_with(&aead_key(key)?, counter, plaintext)
}

/// Decrypts the body (everything after the length header) of frame
/// number `counter`.
pub fn open(key: &[u8; 32], counter: u64, body: &[u8]) -> Result<Vec<u8>, SessionError> {
    open_with(&aead_key(key)?, counter, body)
}

/// An established session: one key and one counter per direction.
///
/// It does not own the stream, so the caller may split reading and
/// writing between threads by wrapping it as they see fit.
pub struct Session {
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    send_counter: u64,
    recv_counter: u64,
    version: u16,
    peer_key: PublicKey,
    pub(crate) role: Option<Role>,
    pub(crate) trusted_on_first_use: bool,
    dead: bool,
}

impl Session {
    pub(crate) fn new(
        keys: &SessionKeys,
        is_client: bool,
        version: u16,
        peer_key: PublicKey,
    ) -> Result<Self, SessionError> {
        let (send, recv) = if is_client {
            (&keys.client_to_server, &keys.server_to_client)
        } else {
            (&keys.server_to_client, &keys.client_to_server)
        };
        Ok(Session {
            send_key: aead_key(send)?,
            recv_key: aead_key(recv)?,
            send_counter: 0,
            recv_counter: 0,
            version,
            peer_key,
            role: None,
            trusted_on_first_use: false,
            dead: false,
        })
    }

    /// The role granted in the handshake: the peer's role on the server,
    /// our own on the client.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// On the client: whether the host key was unknown and has just been
    /// added to known_hosts because trust-on-first-use was allowed. The
    /// caller should show the fingerprint and save known_hosts.
    pub fn trusted_on_first_use(&self) -> bool {
        self.trusted_on_first_use
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The peer's long-term key: the host key on the client side, the
    /// client key on the server side.
    pub fn peer_key(&self) -> PublicKey {
        self.peer_key
    }

    pub(crate) fn set_peer_key(&mut self, key: PublicKey) {
        self.peer_key = key;
    }

    fn next(counter: &mut u64) -> Result<u64, SessionError> {
        let n = *counter;
        // Never reuse a nonce: stop one short of wrapping.
        *counter = n.checked_add(1).ok_or(SessionError::CounterExhausted)?;
        Ok(n)
    }

    /// Encrypts and sends raw bytes as one frame.
    pub fn send_bytes<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        plaintext: &[u8],
    ) -> Result<(), SessionError> {
        if self.dead {
            return Err(SessionError::Closed);
        }
        let result = Self::next(&mut self.send_counter)
            .and_then(|n| seal_with(&self.send_key, n, plaintext))
            .and_then(|frame| {
                w.write_all(&frame).map_err(FrameError::from)?;
                w.flush().map_err(FrameError::from)?;
                Ok(())
            });
        self.dead = result.is_err();
        result
    }

    /// Receives and decrypts one frame.
    pub fn recv_bytes<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<Vec<u8>, SessionError> {
        if self.dead {
            return Err(SessionError::Closed);
        }
        let result = read_frame(r, MAX_FRAME)
            .map_err(SessionError::from)
            .and_then(|body| {
                let n = Self::next(&mut self.recv_counter)?;
                open_owned(&self.recv_key, n, body)
            });
        self.dead = result.is_err();
        result
    }

    /// Receives and decrypts one frame into `buf`, reusing its
    /// allocation (see [`read_frame_into`]): on success
    /// `buf[..n]` is the plaintext and `n` is returned. The frame is
    /// authenticated and decrypted in place, so the bulk upload path
    /// neither allocates nor copies per frame. Failures close the session
    /// exactly as [`Session::recv_bytes`] does.
    pub fn recv_into<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<usize, SessionError> {
        if self.dead {
            return Err(SessionError::Closed);
        }
        let result = read_frame_into(r, MAX_FRAME, buf)
            .map_err(SessionError::from)
            .and_then(|len| {
                let n = Self::next(&mut self.recv_counter)?;
                open_slice(&self.recv_key, n, &mut buf[..len])
            });
        self.dead = result.is_err();
        result
    }

    /// Splits the session for a bulk transfer in which one thread seals
    /// frames while another writes them and reads the peer's replies:
    /// the [`Sealer`] owns the sending counter, the [`Opener`] the
    /// receiving one. Frames are sealed in counter order and must be
    /// written in that order; if any sealed frame is not written (an
    /// error on either side), the caller must [`Session::close`] the
    /// session, as the peer would fail on the next counter anyway.
    pub fn split(&mut self) -> Result<(Sealer<'_>, Opener<'_>), SessionError> {
        if self.dead {
            return Err(SessionError::Closed);
        }
        Ok((
            Sealer {
                key: &self.send_key,
                counter: &mut self.send_counter,
                failed: false,
            },
            Opener {
                key: &self.recv_key,
                counter: &mut self.recv_counter,
                failed: false,
            },
        ))
    }

    /// Marks the session closed, for a caller that found an
    /// authenticated frame it cannot decode (as [`Session::recv`] does).
    pub fn close(&mut self) {
        self.dead = true;
    }

    /// Encodes `message` with postcard and sends it.
    pub fn send<W: Write + ?Sized, T: Serialize>(
        &mut self,
        w: &mut W,
        message: &T,
    ) -> Result<(), SessionError> {
        if self.dead {
            return Err(SessionError::Closed);
        }
        let bytes = postcard::to_stdvec(message).map_err(SessionError::Encode)?;
        self.send_bytes(w, &bytes)
    }

    /// Receives one message and decodes it with postcard. A message that
    /// authenticates but does not decode also ends the session: the peer
    /// is authenticated, so it is broken, not an attacker we can ignore.
    pub fn recv<R: Read + ?Sized, T: DeserializeOwned>(
        &mut self,
        r: &mut R,
    ) -> Result<T, SessionError> {
        let bytes = self.recv_bytes(r)?;
        let result = postcard::from_bytes(&bytes).map_err(SessionError::Decode);
        self.dead = result.is_err();
        result
    }
}

/// The sending half of a [`Session::split`] session.
pub struct Sealer<'a> {
    key: &'a LessSafeKey,
    counter: &'a mut u64,
    failed: bool,
}

impl Sealer<'_> {
    /// Builds and seals one frame in `buf`, which is cleared first and
    /// reused between calls: `fill` appends the plaintext, which is sealed
    /// in place with no intermediate copy (the bulk upload path uses
    /// this). On success `buf` holds the whole frame, header included,
    /// for the caller to write in order.
    pub fn seal_with<F>(&mut self, buf: &mut Vec<u8>, fill: F) -> Result<(), SessionError>
    where
        F: FnOnce(&mut Vec<u8>) -> Result<(), SessionError>,
    {
        if self.failed {
            return Err(SessionError::Closed);
        }
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        let result = fill(buf)
            .and_then(|()| Session::next(self.counter))
            .and_then(|n| seal_frame_in_place(self.key, n, buf));
        self.failed = result.is_err();
        result
    }
}

/// The receiving half of a [`Session::split`] session.
pub struct Opener<'a> {
    key: &'a LessSafeKey,
    counter: &'a mut u64,
    failed: bool,
}

impl Opener<'_> {
    /// Receives one message as [`Session::recv`] does.
    pub fn recv<R: Read + ?Sized, T: DeserializeOwned>(
        &mut self,
        r: &mut R,
    ) -> Result<T, SessionError> {
        if self.failed {
            return Err(SessionError::Closed);
        }
        let result = read_frame(r, MAX_FRAME)
            .map_err(SessionError::from)
            .and_then(|body| {
                let n = Session::next(self.counter)?;
                open_owned(self.key, n, body)
            })
            .and_then(|bytes| postcard::from_bytes(&bytes).map_err(SessionError::Decode));
        self.failed = result.is_err();
        result
    }
}

impl std::fmt::Debug for Session {
    // Never print keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("version", &self.version)
            .field("peer_key", &self.peer_key)
            .field("send_counter", &self.send_counter)
            .field("recv_counter", &self.recv_counter)
            .field("closed", &self.dead)
            .finish()
    }
}

#[cfg(test)]
mod tests;
