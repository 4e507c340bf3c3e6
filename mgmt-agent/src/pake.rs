//! Pairing's password-authenticated key exchange: SPAKE2 over the
//! Ed25519 group (RustCrypto's `spake2`), with the pairing code as the
//! password. Each side sends one message; the shared key it yields goes
//! into the session's key schedule, so only a peer that knows the code
//! can read or write the session. PROTOCOL.md section 3.6 has the
//! argument.

use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Length of a SPAKE2 message: a side byte and a compressed group element.
pub const PAKE_MESSAGE_LEN: usize = 33;

/// The identities both sides bind into the exchange: fixed roles, so a
/// client's message cannot be reflected back as a server's.
pub const CLIENT_IDENTITY: &[u8] = b"keel-mgmt v2 pairing client";
pub const SERVER_IDENTITY: &[u8] = b"keel-mgmt v2 pairing server";

/// One side's half-finished exchange.
pub struct Pake(Spake2<Ed25519Group>);

/// The peer's message was not a valid SPAKE2 message for the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The peer's pairing message is invalid.")]
pub struct BadPakeMessage;

impl Pake {
    /// Starts the client's side with `code`; returns the message to send.
    pub fn client(code: &str) -> (Pake, [u8; PAKE_MESSAGE_LEN]) {
        let (state, msg) = Spake2::<Ed25519Group>::start_a(
            &Password::new(normalize_code(code)),
            &Identity::new(CLIENT_IDENTITY),
            &Identity::new(SERVER_IDENTITY),
        );
        (Pake(state), message(&msg))
    }

    /// Starts the server's side with `code`.
    pub fn server(code: &str) -> (Pake, [u8; PAKE_MESSAGE_LEN]) {
        let (state, msg) = Spake2::<Ed25519Group>::start_b(
            &Password::new(normalize_code(code)),
            &Identity::new(CLIENT_IDENTITY),
            &Identity::new(SERVER_IDENTITY),
        );
        (Pake(state), message(&msg))
    }

    /// The shared key, from the peer's message. Both sides get the same
    /// key exactly when they used the same code; a wrong code is not an
    /// error here, it only yields a different key.
    pub fn finish(self, peer: &[u8; PAKE_MESSAGE_LEN]) -> Result<[u8; 32], BadPakeMessage> {
        let key = self.0.finish(peer).map_err(|_| BadPakeMessage)?;
        key.try_into().map_err(|_| BadPakeMessage)
    }
}

fn message(msg: &[u8]) -> [u8; PAKE_MESSAGE_LEN] {
    let mut out = [0u8; PAKE_MESSAGE_LEN];
    // The crate's messages are always this long; a shorter one would
    // leave zeros and simply fail at the peer.
    let n = msg.len().min(PAKE_MESSAGE_LEN);
    out[..n].copy_from_slice(&msg[..n]);
    out
}

/// The code as both sides feed it to SPAKE2: what the operator typed
/// without spaces and hyphens, so `1234-5678` and `1234 5678` agree.
pub fn normalize_code(code: &str) -> Vec<u8> {
    code.bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'-')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_code_same_key_and_a_wrong_code_a_different_one() {
        let (client, c_msg) = Pake::client("1234-5678");
        let (server, s_msg) = Pake::server("1234 5678");
        assert_eq!(c_msg[0], b'A');
        assert_eq!(s_msg[0], b'B');
        assert_eq!(
            client.finish(&s_msg).unwrap(),
            server.finish(&c_msg).unwrap()
        );

        let (client, c_msg) = Pake::client("1234-5678");
        let (server, s_msg) = Pake::server("1234-5679");
        assert_ne!(
            client.finish(&s_msg).unwrap(),
            server.finish(&c_msg).unwrap()
        );
    }

    #[test]
    fn a_reflected_or_garbled_message_is_refused() {
        let (client, c_msg) = Pake::client("1234-5678");
        // The client's own message sent back as if from the server.
        assert_eq!(client.finish(&c_msg), Err(BadPakeMessage));
        let (server, _) = Pake::server("1234-5678");
        assert_eq!(
            server.finish(&[0xff; PAKE_MESSAGE_LEN]),
            Err(BadPakeMessage)
        );
    }
}
