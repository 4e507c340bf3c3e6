//! The handshake: version negotiation, ephemeral X25519, host signature,
//! host key check, session keys, then client authentication inside the
//! encrypted channel. Pairing adds a SPAKE2 exchange ([`crate::pake`])
//! whose key goes into the session keys, and the server proves it first.
//! PROTOCOL.md gives the byte layouts and the argument.

use std::io::{Read, Write};

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

use keel_common::frame::{self, FrameError};

use crate::keys::{ClientKey, Fingerprint, HostKey, PublicKey};
use crate::known_hosts::{HostCheck, KnownHosts};
use crate::pake::{Pake, PAKE_MESSAGE_LEN};
use crate::roles::Role;
use crate::session::{derive_keys, Session, SessionError};

/// Protocol versions this build speaks, lowest first. Version 1's pairing
/// sent the code to whichever host answered, so it is refused outright.
pub const SUPPORTED_VERSIONS: &[u16] = &[2];

/// Domain-separation label that starts every transcript.
pub const TRANSCRIPT_LABEL: &[u8] = b"keel-mgmt handshake\0";
/// Prefix of the message the server signs, so a host signature can never
/// be replayed as a client signature or vice versa.
pub const SERVER_SIG_CONTEXT: &[u8] = b"keel-mgmt server signature\0";
/// Prefix of the message the client signs.
pub const CLIENT_SIG_CONTEXT: &[u8] = b"keel-mgmt client signature\0";

/// Message type bytes.
pub const MSG_CLIENT_HELLO: u8 = 0x01;
pub const MSG_SERVER_HELLO: u8 = 0x02;
pub const MSG_AUTH_KEY: u8 = 0x03;
pub const MSG_AUTH_PAIRING: u8 = 0x04;
pub const MSG_AUTH_ACCEPTED: u8 = 0x05;
pub const MSG_AUTH_REJECTED: u8 = 0x06;
pub const MSG_PAIRING_CONFIRM: u8 = 0x07;
pub const MSG_ALERT_NO_VERSION: u8 = 0x7f;

/// Hello mode bytes: how the client means to authenticate.
pub const MODE_KEY: u8 = 0x00;
pub const MODE_PAIRING: u8 = 0x01;

/// Most versions a hello may list.
pub const MAX_VERSIONS: usize = 16;
/// Longest pairing code, in bytes.
pub const MAX_PAIRING_CODE: usize = 64;

/// Largest handshake frame: the hellos and the client proof are all tiny.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// Errors from either side of the handshake.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("Handshake frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("Handshake session error: {0}")]
    Session(#[from] SessionError),
    #[error("The peer sent a malformed handshake message: {0}.")]
    Malformed(&'static str),
    #[error("No common protocol version: we offer {ours:?}, the peer supports {theirs:?}.")]
    NoCommonVersion { ours: Vec<u16>, theirs: Vec<u16> },
    #[error("Protocol downgrade detected: the server chose version {chosen}, but {expected} is the highest both sides support.")]
    Downgrade { chosen: u16, expected: u16 },
    #[error("The server's signature over the handshake is invalid: the connection was tampered with or the server is broken.")]
    HostSignatureInvalid,
    #[error("The host key of {host} is not known. Its fingerprint is {fingerprint}. Check it out of band, then connect again allowing trust on first use.")]
    UnknownHost {
        host: String,
        fingerprint: Fingerprint,
    },
    #[error("WARNING: THE HOST KEY OF {host} HAS CHANGED! Someone may be intercepting this connection. Expected {expected} (known_hosts line {line}), got {presented}. Refusing to connect.")]
    HostKeyChanged {
        host: String,
        expected: Fingerprint,
        presented: Fingerprint,
        line: usize,
    },
    /// What the client sees for every authentication failure.
    #[error("The server refused the authentication.")]
    Rejected,
    /// Server side: the client proved a key that the callback refused.
    #[error("Client key {fingerprint} is not authorized.")]
    Unauthorized { fingerprint: Fingerprint },
    /// Server side: the client's signature did not verify.
    #[error("The client's signature over the handshake is invalid.")]
    ClientSignatureInvalid,
    #[error("The pairing code must be 1 to {MAX_PAIRING_CODE} bytes long.")]
    BadPairingCode,
    /// Client side: the host did not answer the pairing exchange.
    #[error("The host is not open for pairing: it has an admin key already, its pairing window has closed, or another pairing attempt is under way (try again in a few seconds).")]
    PairingClosed,
    /// Client side: the host's confirmation did not open, so it does not
    /// know the code. Nothing derived from the code or the key was sent.
    #[error("Pairing failed: the host did not prove that it knows this pairing code. Either the code is wrong (the host shows a fresh one on its console after a failed attempt) or someone is intercepting the connection.")]
    PairingFailed,
    /// Server side: a pairing client's proof did not open under the key
    /// of this code, or it gave up after the server's confirmation.
    #[error("The client did not complete pairing: wrong code or abandoned attempt.")]
    WrongPairingCode,
    #[error("The X25519 key agreement failed.")]
    KeyAgreement,
    #[error("The system random source failed.")]
    Random,
}

/// The first message, client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    pub versions: Vec<u16>,
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 32],
    /// The client's SPAKE2 message when it comes to pair.
    pub pairing: Option<[u8; PAKE_MESSAGE_LEN]>,
}

/// The server's reply. `signature` covers the transcript hash, which
/// includes every other field of both hellos.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHello {
    pub chosen: u16,
    pub versions: Vec<u16>,
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 32],
    pub host_key: [u8; 32],
    /// The server's SPAKE2 message, in answer to a pairing client; `None`
    /// tells it pairing is not open.
    pub pairing: Option<[u8; PAKE_MESSAGE_LEN]>,
    pub signature: [u8; 64],
}

/// How the client authenticates, inside the encrypted channel. Both
/// carry the client key and its signature over the transcript; a pairing
/// client has already proved the code through the session keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Key {
        public_key: [u8; 32],
        signature: [u8; 64],
    },
    Pairing {
        public_key: [u8; 32],
        signature: [u8; 64],
    },
}

/// What the server learned about a client whose signature verified, for
/// the agent's authorisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAuth {
    /// Look the key up in authorized_keys.
    Key { public_key: PublicKey },
    /// First-boot enrolment: the client proved the pairing code (its
    /// frames opened under the exchange's key) and holds the private half
    /// of `public_key`; enrol it.
    Paired { public_key: PublicKey },
}

/// The agent's side of the handshake's decisions.
pub trait Authority {
    /// The code to run a pairing exchange with, if a pairing attempt may
    /// start now; `None` tells the client that pairing is closed.
    fn pairing_code(&self) -> Option<String>;
    /// The role for a client that proved `auth`, or `None` to refuse.
    /// Called once, after the client's signature verified.
    fn authorize(&self, auth: &PeerAuth) -> Option<Role>;
}

/// An authenticated client, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    pub public_key: PublicKey,
    pub fingerprint: Fingerprint,
    /// Whether the client authenticated with a pairing code.
    pub paired: bool,
}

/// Client-side options beyond the common case.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Accept and pin an unknown host key. Never accepts a changed one.
    pub trust_on_first_use: bool,
    /// Versions to offer; defaults to [`SUPPORTED_VERSIONS`].
    pub versions: Vec<u16>,
    /// Pair with this code instead of authenticating with an authorized
    /// key, enrolling the client key. The host must prove the code first.
    pub pairing_code: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            trust_on_first_use: false,
            versions: SUPPORTED_VERSIONS.to_vec(),
            pairing_code: None,
        }
    }
}

/// Server-side options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Versions to accept; defaults to [`SUPPORTED_VERSIONS`].
    pub versions: Vec<u16>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            versions: SUPPORTED_VERSIONS.to_vec(),
        }
    }
}

/// A cursor for decoding with bounds checks instead of panics.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HandshakeError> {
        if self.buf.len() < n {
            return Err(HandshakeError::Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HandshakeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HandshakeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], HandshakeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn versions(&mut self) -> Result<Vec<u16>, HandshakeError> {
        let n = self.u8("version count")? as usize;
        if n == 0 || n > MAX_VERSIONS {
            return Err(HandshakeError::Malformed("version count out of range"));
        }
        (0..n).map(|_| self.u16("version")).collect()
    }

    fn end(&self) -> Result<(), HandshakeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed("trailing bytes"))
        }
    }
}

fn put_versions(out: &mut Vec<u8>, versions: &[u16]) {
    // Callers cap the list at MAX_VERSIONS, so the count fits in a byte.
    out.push(versions.len().min(MAX_VERSIONS) as u8);
    for v in versions.iter().take(MAX_VERSIONS) {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

impl ClientHello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MSG_CLIENT_HELLO];
        put_versions(&mut out, &self.versions);
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.nonce);
        match &self.pairing {
            None => out.push(MODE_KEY),
            Some(msg) => {
                out.push(MODE_PAIRING);
                out.extend_from_slice(msg);
            }
        }
        out
    }

    /// Only the offered versions: every version's hello starts with them,
    /// so a client of another version gets a version alert rather than a
    /// parse error.
    pub fn offered_versions(buf: &[u8]) -> Result<Vec<u16>, HandshakeError> {
        let mut r = Reader { buf };
        if r.u8("message type")? != MSG_CLIENT_HELLO {
            return Err(HandshakeError::Malformed("expected a client hello"));
        }
        r.versions()
    }

    pub fn decode(buf: &[u8]) -> Result<Self, HandshakeError> {
        let mut r = Reader { buf };
        if r.u8("message type")? != MSG_CLIENT_HELLO {
            return Err(HandshakeError::Malformed("expected a client hello"));
        }
        let versions = r.versions()?;
        let ephemeral = r.array("ephemeral key")?;
        let nonce = r.array("nonce")?;
        let pairing = match r.u8("mode")? {
            MODE_KEY => None,
            MODE_PAIRING => Some(r.array("pairing message")?),
            _ => return Err(HandshakeError::Malformed("unknown hello mode")),
        };
        r.end()?;
        Ok(ClientHello {
            versions,
            ephemeral,
            nonce,
            pairing,
        })
    }
}

impl ServerHello {
    /// Everything but the signature: the part the transcript covers.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut out = vec![MSG_SERVER_HELLO];
        out.extend_from_slice(&self.chosen.to_be_bytes());
        put_versions(&mut out, &self.versions);
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.host_key);
        match &self.pairing {
            None => out.push(0),
            Some(msg) => {
                // PAKE_MESSAGE_LEN is 33: it fits the length byte.
                out.push(PAKE_MESSAGE_LEN as u8);
                out.extend_from_slice(msg);
            }
        }
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, HandshakeError> {
        let mut r = Reader { buf };
        if r.u8("message type")? != MSG_SERVER_HELLO {
            return Err(HandshakeError::Malformed("expected a server hello"));
        }
        let hello = ServerHello {
            chosen: r.u16("chosen version")?,
            versions: r.versions()?,
            ephemeral: r.array("ephemeral key")?,
            nonce: r.array("nonce")?,
            host_key: r.array("host key")?,
            pairing: match r.u8("pairing length")? as usize {
                0 => None,
                PAKE_MESSAGE_LEN => Some(r.array("pairing message")?),
                _ => return Err(HandshakeError::Malformed("bad pairing message length")),
            },
            signature: r.array("signature")?,
        };
        r.end()?;
        Ok(hello)
    }
}

impl ClientAuth {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientAuth::Key {
                public_key,
                signature,
            } => {
                let mut out = vec![MSG_AUTH_KEY];
                out.extend_from_slice(public_key);
                out.extend_from_slice(signature);
                out
            }
            ClientAuth::Pairing {
                public_key,
                signature,
            } => {
                let mut out = vec![MSG_AUTH_PAIRING];
                out.extend_from_slice(public_key);
                out.extend_from_slice(signature);
                out
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Self, HandshakeError> {
        let mut r = Reader { buf };
        let auth = match r.u8("message type")? {
            MSG_AUTH_KEY => ClientAuth::Key {
                public_key: r.array("public key")?,
                signature: r.array("signature")?,
            },
            MSG_AUTH_PAIRING => ClientAuth::Pairing {
                public_key: r.array("public key")?,
                signature: r.array("signature")?,
            },
            _ => {
                return Err(HandshakeError::Malformed(
                    "expected a client authentication",
                ))
            }
        };
        r.end()?;
        Ok(auth)
    }
}

/// SHA-256 over the label, then each hello as a length-prefixed frame
/// (the server hello without its signature).
pub fn transcript_hash(client_hello: &[u8], server_hello_unsigned: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(TRANSCRIPT_LABEL);
    for part in [client_hello, server_hello_unsigned] {
        // Hello messages are far below 4 GiB.
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The bytes a signer signs: a role-specific context, then the hash.
pub fn signed_message(context: &[u8], transcript_hash: &[u8; 32]) -> Vec<u8> {
    [context, transcript_hash.as_slice()].concat()
}

/// The highest version in both lists.
pub fn negotiate(ours: &[u16], theirs: &[u16]) -> Option<u16> {
    ours.iter().filter(|v| theirs.contains(v)).max().copied()
}

fn random32(rng: &SystemRandom) -> Result<[u8; 32], HandshakeError> {
    let mut out = [0u8; 32];
    rng.fill(&mut out).map_err(|_| HandshakeError::Random)?;
    Ok(out)
}

fn ephemeral(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, [u8; 32]), HandshakeError> {
    let private =
        EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| HandshakeError::Random)?;
    let public = private
        .compute_public_key()
        .map_err(|_| HandshakeError::KeyAgreement)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    Ok((private, out))
}

fn agree(
    private: EphemeralPrivateKey,
    peer: &[u8; 32],
    pake_key: &[u8],
    transcript: &[u8; 32],
) -> Result<crate::session::SessionKeys, HandshakeError> {
    // ring rejects an all-zero shared secret (a low-order peer point).
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |shared| {
        derive_keys(shared, pake_key, transcript)
    })
    .map_err(|_| HandshakeError::KeyAgreement)?
    .map_err(HandshakeError::from)
}

/// Runs the client side. `host` is the known_hosts name, e.g.
/// `hv01:7444`. A host key that is new is added to `known_hosts` (the
/// caller saves it) when trust on first use is allowed, or when the host
/// proved the pairing code.
pub fn client_handshake_with<S: Read + Write + ?Sized>(
    stream: &mut S,
    key: &ClientKey,
    known_hosts: &mut KnownHosts,
    host: &str,
    options: &ClientOptions,
) -> Result<Session, HandshakeError> {
    if let Some(code) = &options.pairing_code {
        if code.is_empty() || code.len() > MAX_PAIRING_CODE {
            return Err(HandshakeError::BadPairingCode);
        }
    }
    let rng = SystemRandom::new();
    let (private, ephemeral_public) = ephemeral(&rng)?;
    let pake = options.pairing_code.as_deref().map(Pake::client);
    let hello = ClientHello {
        versions: options
            .versions
            .iter()
            .take(MAX_VERSIONS)
            .copied()
            .collect(),
        ephemeral: ephemeral_public,
        nonce: random32(&rng)?,
        pairing: pake.as_ref().map(|(_, msg)| *msg),
    };
    let hello_bytes = hello.encode();
    frame::write_frame(stream, &hello_bytes, MAX_HANDSHAKE_FRAME)?;

    let reply = frame::read_frame(stream, MAX_HANDSHAKE_FRAME)?;
    if reply.first() == Some(&MSG_ALERT_NO_VERSION) {
        let mut r = Reader { buf: &reply[1..] };
        let theirs = r.versions()?;
        return Err(HandshakeError::NoCommonVersion {
            ours: hello.versions,
            theirs,
        });
    }
    let server = ServerHello::decode(&reply)?;
    let transcript = transcript_hash(&hello_bytes, &server.encode_unsigned());

    // Authenticity first: everything below trusts the hello's fields.
    let host_key = PublicKey(server.host_key);
    if !host_key.verify(
        &signed_message(SERVER_SIG_CONTEXT, &transcript),
        &server.signature,
    ) {
        return Err(HandshakeError::HostSignatureInvalid);
    }
    let expected = negotiate(&hello.versions, &server.versions);
    if expected != Some(server.chosen) {
        return Err(HandshakeError::Downgrade {
            chosen: server.chosen,
            expected: expected.unwrap_or(0),
        });
    }

    let mut session = match pake {
        None => {
            let pinned = check_host(known_hosts, host, host_key, options.trust_on_first_use)?;
            let keys = agree(private, &server.ephemeral, &[], &transcript)?;
            let mut session = Session::new(&keys, true, server.chosen, host_key)?;
            session.trusted_on_first_use = pinned;
            session
        }
        Some((pake, _)) => {
            let theirs = server.pairing.ok_or(HandshakeError::PairingClosed)?;
            let pake_key = pake
                .finish(&theirs)
                .map_err(|_| HandshakeError::Malformed("invalid pairing message"))?;
            let keys = agree(private, &server.ephemeral, &pake_key, &transcript)?;
            let mut session = Session::new(&keys, true, server.chosen, host_key)?;
            // The host proves the code before we send anything that
            // depends on it: its confirmation opens only under the key of
            // the same code and the same transcript.
            match session.recv_bytes(stream) {
                Ok(confirm) if confirm == [MSG_PAIRING_CONFIRM] => {}
                Ok(_) => return Err(HandshakeError::Malformed("expected a pairing confirmation")),
                Err(SessionError::Decrypt) => return Err(HandshakeError::PairingFailed),
                Err(e) => return Err(e.into()),
            }
            // Now the host key is vouched for by the code.
            session.trusted_on_first_use = check_host(known_hosts, host, host_key, true)?;
            session
        }
    };

    let signature = key.sign(&signed_message(CLIENT_SIG_CONTEXT, &transcript));
    let public_key = key.public_key().0;
    let auth = match &options.pairing_code {
        None => ClientAuth::Key {
            public_key,
            signature,
        },
        Some(_) => ClientAuth::Pairing {
            public_key,
            signature,
        },
    };
    session.send_bytes(stream, &auth.encode())?;
    let result = session.recv_bytes(stream)?;
    match result.as_slice() {
        [MSG_AUTH_ACCEPTED, role] => {
            session.role =
                Some(Role::from_byte(*role).ok_or(HandshakeError::Malformed("unknown role"))?);
            Ok(session)
        }
        [MSG_AUTH_REJECTED] => Err(HandshakeError::Rejected),
        _ => Err(HandshakeError::Malformed(
            "expected an authentication result",
        )),
    }
}

/// Checks `host_key` against known_hosts; a new key is pinned when
/// `pin_new` allows it. Returns whether it was pinned now.
fn check_host(
    known_hosts: &mut KnownHosts,
    host: &str,
    host_key: PublicKey,
    pin_new: bool,
) -> Result<bool, HandshakeError> {
    match known_hosts.check(host, &host_key) {
        HostCheck::Trusted => Ok(false),
        HostCheck::Unknown(fingerprint) if !pin_new => Err(HandshakeError::UnknownHost {
            host: host.to_string(),
            fingerprint,
        }),
        HostCheck::Unknown(_) => {
            known_hosts.add(host, host_key);
            Ok(true)
        }
        HostCheck::Changed {
            expected,
            presented,
            line,
        } => Err(HandshakeError::HostKeyChanged {
            host: host.to_string(),
            expected,
            presented,
            line,
        }),
    }
}

/// Runs the server side with default options. `authority` is asked for
/// the pairing code when a client comes to pair, and to authorise the
/// client once it has proved its key. The caller bounds the whole
/// handshake in time (see the agent's deadline) so that a silent client
/// cannot hold a connection slot.
pub fn server_handshake<S, A>(
    stream: &mut S,
    host_key: &HostKey,
    authority: &A,
) -> Result<(Session, Peer), HandshakeError>
where
    S: Read + Write + ?Sized,
    A: Authority + ?Sized,
{
    server_handshake_with(stream, host_key, &ServerOptions::default(), authority)
}

/// Runs the server side.
pub fn server_handshake_with<S, A>(
    stream: &mut S,
    host_key: &HostKey,
    options: &ServerOptions,
    authority: &A,
) -> Result<(Session, Peer), HandshakeError>
where
    S: Read + Write + ?Sized,
    A: Authority + ?Sized,
{
    let rng = SystemRandom::new();
    let hello_bytes = frame::read_frame(stream, MAX_HANDSHAKE_FRAME)?;
    let offered = ClientHello::offered_versions(&hello_bytes)?;
    let Some(chosen) = negotiate(&options.versions, &offered) else {
        // Tell the client what we speak so its error is useful; the list
        // is no secret.
        let mut alert = vec![MSG_ALERT_NO_VERSION];
        put_versions(&mut alert, &options.versions);
        // Best effort: the handshake has failed either way.
        let _ = frame::write_frame(stream, &alert, MAX_HANDSHAKE_FRAME);
        return Err(HandshakeError::NoCommonVersion {
            ours: options.versions.clone(),
            theirs: offered,
        });
    };
    let hello = ClientHello::decode(&hello_bytes)?;
    // A pairing client gets our SPAKE2 message if pairing is open now.
    let pake = match hello.pairing {
        Some(_) => authority.pairing_code().map(|code| Pake::server(&code)),
        None => None,
    };

    let (private, ephemeral_public) = ephemeral(&rng)?;
    let mut server = ServerHello {
        chosen,
        versions: options
            .versions
            .iter()
            .take(MAX_VERSIONS)
            .copied()
            .collect(),
        ephemeral: ephemeral_public,
        nonce: random32(&rng)?,
        host_key: host_key.public_key().0,
        pairing: pake.as_ref().map(|(_, msg)| *msg),
        signature: [0; 64],
    };
    let transcript = transcript_hash(&hello_bytes, &server.encode_unsigned());
    server.signature = host_key.sign(&signed_message(SERVER_SIG_CONTEXT, &transcript));
    frame::write_frame(stream, &server.encode(), MAX_HANDSHAKE_FRAME)?;

    let pake_key = match (hello.pairing, pake) {
        (None, _) => None,
        (Some(_), None) => return Err(HandshakeError::PairingClosed),
        (Some(theirs), Some((pake, _))) => Some(
            pake.finish(&theirs)
                .map_err(|_| HandshakeError::Malformed("invalid pairing message"))?,
        ),
    };
    let keys = agree(
        private,
        &hello.ephemeral,
        pake_key.as_ref().map_or(&[][..], |k| &k[..]),
        &transcript,
    )?;
    let client_public_placeholder = PublicKey([0; 32]);
    let mut session = Session::new(&keys, false, chosen, client_public_placeholder)?;
    if pake_key.is_some() {
        // Proof that we know the code, before the client sends anything.
        session.send_bytes(stream, &[MSG_PAIRING_CONFIRM])?;
    }

    let auth = match session.recv_bytes(stream) {
        Ok(bytes) => ClientAuth::decode(&bytes)?,
        // Under a pairing key, a frame that does not open came from a
        // client with another code; a client that gives up after our
        // confirmation has tested its one guess.
        Err(SessionError::Decrypt | SessionError::Frame(FrameError::Closed))
            if pake_key.is_some() =>
        {
            return Err(HandshakeError::WrongPairingCode)
        }
        Err(e) => return Err(e.into()),
    };
    let (public_key, signature, peer_auth) = match (auth, pake_key.is_some()) {
        (
            ClientAuth::Key {
                public_key,
                signature,
            },
            false,
        ) => (
            public_key,
            signature,
            PeerAuth::Key {
                public_key: PublicKey(public_key),
            },
        ),
        (
            ClientAuth::Pairing {
                public_key,
                signature,
            },
            true,
        ) => (
            public_key,
            signature,
            PeerAuth::Paired {
                public_key: PublicKey(public_key),
            },
        ),
        _ => {
            return Err(HandshakeError::Malformed(
                "authentication does not match the hello's mode",
            ))
        }
    };
    let public_key = PublicKey(public_key);
    // Every refusal sends the same single byte, so the client cannot tell
    // an unknown key from a bad signature.
    if !public_key.verify(&signed_message(CLIENT_SIG_CONTEXT, &transcript), &signature) {
        session.send_bytes(stream, &[MSG_AUTH_REJECTED])?;
        return Err(HandshakeError::ClientSignatureInvalid);
    }
    let paired = matches!(peer_auth, PeerAuth::Paired { .. });
    let Some(role) = authority.authorize(&peer_auth) else {
        session.send_bytes(stream, &[MSG_AUTH_REJECTED])?;
        return Err(HandshakeError::Unauthorized {
            fingerprint: public_key.fingerprint(),
        });
    };
    session.send_bytes(stream, &[MSG_AUTH_ACCEPTED, role.to_byte()])?;
    session.role = Some(role);
    session.set_peer_key(public_key);
    Ok((
        session,
        Peer {
            role,
            public_key,
            fingerprint: public_key.fingerprint(),
            paired,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_round_trip() {
        let mut c = ClientHello {
            versions: vec![1, 2],
            ephemeral: [1; 32],
            nonce: [2; 32],
            pairing: None,
        };
        assert_eq!(ClientHello::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.encode().len(), 1 + 1 + 4 + 64 + 1);
        c.pairing = Some([9; PAKE_MESSAGE_LEN]);
        assert_eq!(ClientHello::decode(&c.encode()).unwrap(), c);
        assert_eq!(ClientHello::offered_versions(&c.encode()).unwrap(), [1, 2]);
        let s = ServerHello {
            chosen: 2,
            versions: vec![1, 2],
            ephemeral: [3; 32],
            nonce: [4; 32],
            host_key: [5; 32],
            pairing: Some([7; PAKE_MESSAGE_LEN]),
            signature: [6; 64],
        };
        assert_eq!(ServerHello::decode(&s.encode()).unwrap(), s);
        let a = ClientAuth::Pairing {
            public_key: [7; 32],
            signature: [8; 64],
        };
        assert_eq!(ClientAuth::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [&[][..], &[0x01], &[0x01, 0], &[0x01, 17], &[0x09, 1, 0, 1]] {
            assert!(matches!(
                ClientHello::decode(bad),
                Err(HandshakeError::Malformed(_))
            ));
        }
        let mut long = ClientHello {
            versions: vec![1],
            ephemeral: [0; 32],
            nonce: [0; 32],
            pairing: None,
        }
        .encode();
        long.push(0);
        assert!(matches!(
            ClientHello::decode(&long),
            Err(HandshakeError::Malformed("trailing bytes"))
        ));
        assert!(matches!(
            ClientAuth::decode(&[0x04]),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            ServerHello::decode(&[0x02, 0, 1]),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(negotiate(&[1, 2, 3], &[2, 3, 4]), Some(3));
        assert_eq!(negotiate(&[1], &[2]), None);
    }
}
