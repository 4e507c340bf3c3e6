//! Ed25519 identities: the host key, client keys, their text form and
//! SHA-256 fingerprints.

use std::fmt;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use keel_common::authorized_keys::KeyTextError;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use thiserror::Error;

/// Errors from generating, loading or parsing keys.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Could not generate a key: the system random source failed.")]
    Generate,
    #[error("The private key is not a valid Ed25519 PKCS#8 document.")]
    BadPkcs8,
    /// The text form of a public key is refused (keel-common's reasons).
    #[error(transparent)]
    Text(#[from] KeyTextError),
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the text form `ed25519:<base64>` (the authorized_keys
    /// format's, in keel-common).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        keel_common::authorized_keys::decode_public_key(text)
            .map(PublicKey)
            .map_err(KeyError::from)
    }

    /// The SHA-256 fingerprint of the raw key bytes.
    pub fn fingerprint(&self) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// Checks an Ed25519 signature made by this key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&keel_common::authorized_keys::encode_public_key(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// SHA-256 of a public key, shown as `SHA256:<base64 without padding>`
/// like OpenSSH so operators can compare it by eye.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses the form it is shown in, `SHA256:<base64 without padding>`.
    pub fn parse(text: &str) -> Option<Self> {
        let raw = STANDARD_NO_PAD.decode(text.strip_prefix("SHA256:")?).ok()?;
        raw.try_into().ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// An Ed25519 key pair together with its PKCS#8 encoding, which ring
/// cannot give back once parsed and which the caller needs to save.
struct Identity {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl Identity {
    fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        // maybe_unchecked also accepts v1 documents, as written by OpenSSL.
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| KeyError::BadPkcs8)?;
        Ok(Identity {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    fn public_key(&self) -> PublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

macro_rules! identity_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Identity);

        impl $name {
            /// Generates a fresh key from the system random source.
            pub fn generate() -> Result<Self, KeyError> {
                Identity::generate().map($name)
            }

            /// Loads a key from its PKCS#8 (v1 or v2) DER encoding.
            pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
                Identity::from_pkcs8(pkcs8).map($name)
            }

            /// The PKCS#8 encoding, for saving to disk.
            pub fn pkcs8(&self) -> &[u8] {
                &self.0.pkcs8
            }

            /// The public half.
            pub fn public_key(&self) -> PublicKey {
                self.0.public_key()
            }

            /// The SHA-256 fingerprint of the public half.
            pub fn fingerprint(&self) -> Fingerprint {
                self.0.public_key().fingerprint()
            }

            /// Signs `message` (Ed25519 is deterministic).
            pub fn sign(&self, message: &[u8]) -> [u8; 64] {
                self.0.sign(message)
            }
        }

        impl fmt::Debug for $name {
            // Never print private material.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.fingerprint())
            }
        }
    };
}

identity_type!(
    /// The server's long-term Ed25519 host key.
    HostKey
);
identity_type!(
    /// An operator's Ed25519 key, used by keelctl.
    ClientKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_round_trips_through_pkcs8() {
        let k = HostKey::generate().unwrap();
        let again = HostKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        assert!(k.public_key().verify(b"m", &k.sign(b"m")));
        assert!(!k.public_key().verify(b"n", &k.sign(b"m")));
        assert_eq!(HostKey::from_pkcs8(b"junk").err(), Some(KeyError::BadPkcs8));
    }

    #[test]
    fn public_key_text_form() {
        let k = ClientKey::generate().unwrap().public_key();
        let text = k.to_string();
        assert!(text.starts_with("ed25519:"));
        assert_eq!(PublicKey::parse(&text).unwrap(), k);
        assert_eq!(
            PublicKey::parse("ssh-ed25519:AAAA"),
            Err(KeyError::Text(KeyTextError::BadPrefix))
        );
        assert_eq!(
            PublicKey::parse("ed25519:!!"),
            Err(KeyError::Text(KeyTextError::BadBase64))
        );
        assert_eq!(
            PublicKey::parse("ed25519:AAAA"),
            Err(KeyError::Text(KeyTextError::BadLength(3)))
        );
    }

    #[test]
    fn fingerprint_format() {
        let fp = PublicKey([0; 32]).fingerprint().to_string();
        // SHA-256 of 32 zero bytes.
        assert_eq!(fp, "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU");
        assert_eq!(
            Fingerprint::parse(&fp),
            Some(PublicKey([0; 32]).fingerprint())
        );
        assert_eq!(Fingerprint::parse("SHA256:Zmh6"), None);
        assert_eq!(Fingerprint::parse(&fp[7..]), None);
    }
}
