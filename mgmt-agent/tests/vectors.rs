//! Known-answer tests against tests/vectors/kat.json, which
//! tests/vectors/gen_vectors.py generates with an independent
//! implementation (Python `cryptography`).

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keel_mgmt::handshake::{
    signed_message, transcript_hash, ClientAuth, ClientHello, ServerHello, CLIENT_SIG_CONTEXT,
    MSG_PAIRING_CONFIRM, SERVER_SIG_CONTEXT,
};
use keel_mgmt::messages::{ClientMessage, Request};
use keel_mgmt::session::{derive_keys, open, seal};
use keel_mgmt::{ClientKey, HostKey};
use serde_json::Value;

fn kat() -> Value {
    let text = include_str!("vectors/kat.json");
    serde_json::from_str(text).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hex(v).try_into().unwrap()
}

#[test]
fn handshake_vector() {
    let v = &kat()["handshake"];

    let client_hello = ClientHello {
        versions: vec![2],
        ephemeral: arr(&v["client_ephemeral_public"]),
        nonce: arr(&v["client_nonce"]),
        pairing: None,
    };
    assert_eq!(client_hello.encode(), hex(&v["client_hello"]));

    let host = HostKey::from_pkcs8(&hex(&v["host_pkcs8"])).unwrap();
    assert_eq!(host.public_key().0.to_vec(), hex(&v["host_public"]));
    let mut server_hello = ServerHello {
        chosen: 2,
        versions: vec![2],
        ephemeral: arr(&v["server_ephemeral_public"]),
        nonce: arr(&v["server_nonce"]),
        host_key: host.public_key().0,
        pairing: None,
        signature: [0; 64],
    };
    assert_eq!(
        server_hello.encode_unsigned(),
        hex(&v["server_hello_unsigned"])
    );

    let th = transcript_hash(&client_hello.encode(), &server_hello.encode_unsigned());
    assert_eq!(th.to_vec(), hex(&v["transcript_hash"]));

    server_hello.signature = host.sign(&signed_message(SERVER_SIG_CONTEXT, &th));
    assert_eq!(server_hello.signature.to_vec(), hex(&v["server_signature"]));
    assert_eq!(server_hello.encode(), hex(&v["server_hello"]));
    assert_eq!(
        ServerHello::decode(&hex(&v["server_hello"])).unwrap(),
        server_hello
    );

    let client = ClientKey::from_pkcs8(&hex(&v["client_pkcs8"])).unwrap();
    assert_eq!(client.public_key().0.to_vec(), hex(&v["client_public"]));
    let client_sig = client.sign(&signed_message(CLIENT_SIG_CONTEXT, &th));
    assert_eq!(client_sig.to_vec(), hex(&v["client_signature"]));
    assert!(client
        .public_key()
        .verify(&signed_message(CLIENT_SIG_CONTEXT, &th), &client_sig));

    let keys = derive_keys(&hex(&v["shared_secret"]), &[], &th).unwrap();
    assert_eq!(
        keys.client_to_server.to_vec(),
        hex(&v["key_client_to_server"])
    );
    assert_eq!(
        keys.server_to_client.to_vec(),
        hex(&v["key_server_to_client"])
    );

    let auth = ClientAuth::Key {
        public_key: client.public_key().0,
        signature: client_sig,
    };
    assert_eq!(auth.encode(), hex(&v["client_auth"]));
    let frame = seal(&keys.client_to_server, 0, &auth.encode()).unwrap();
    assert_eq!(frame, hex(&v["client_auth_frame"]));
    assert_eq!(
        seal(&keys.server_to_client, 0, &[0x05, 0x03]).unwrap(),
        hex(&v["auth_accepted_frame"])
    );

    let request = postcard::to_stdvec(&ClientMessage {
        id: 1,
        request: Request::HostInfo,
    })
    .unwrap();
    let frame = seal(&keys.client_to_server, 1, &request).unwrap();
    assert_eq!(frame, hex(&v["first_request_frame"]));
}

#[test]
fn pairing_vector() {
    let kat = kat();
    let (base, v) = (&kat["handshake"], &kat["pairing"]);
    let client_hello = ClientHello {
        versions: vec![2],
        ephemeral: arr(&base["client_ephemeral_public"]),
        nonce: arr(&base["client_nonce"]),
        pairing: Some(arr(&v["pake_client_message"])),
    };
    assert_eq!(client_hello.encode(), hex(&v["client_hello"]));
    assert_eq!(
        ClientHello::decode(&hex(&v["client_hello"])).unwrap(),
        client_hello
    );
    let host = HostKey::from_pkcs8(&hex(&base["host_pkcs8"])).unwrap();
    let mut server_hello = ServerHello {
        chosen: 2,
        versions: vec![2],
        ephemeral: arr(&base["server_ephemeral_public"]),
        nonce: arr(&base["server_nonce"]),
        host_key: host.public_key().0,
        pairing: Some(arr(&v["pake_server_message"])),
        signature: [0; 64],
    };
    assert_eq!(
        server_hello.encode_unsigned(),
        hex(&v["server_hello_unsigned"])
    );
    let th = transcript_hash(&client_hello.encode(), &server_hello.encode_unsigned());
    assert_eq!(th.to_vec(), hex(&v["transcript_hash"]));
    server_hello.signature = host.sign(&signed_message(SERVER_SIG_CONTEXT, &th));
    assert_eq!(server_hello.encode(), hex(&v["server_hello"]));

    let keys = derive_keys(&hex(&base["shared_secret"]), &hex(&v["pake_key"]), &th).unwrap();
    assert_eq!(
        keys.client_to_server.to_vec(),
        hex(&v["key_client_to_server"])
    );
    assert_eq!(
        keys.server_to_client.to_vec(),
        hex(&v["key_server_to_client"])
    );
    assert_eq!(
        seal(&keys.server_to_client, 0, &[MSG_PAIRING_CONFIRM]).unwrap(),
        hex(&v["confirm_frame"])
    );
    let client = ClientKey::from_pkcs8(&hex(&base["client_pkcs8"])).unwrap();
    let auth = ClientAuth::Pairing {
        public_key: client.public_key().0,
        signature: client.sign(&signed_message(CLIENT_SIG_CONTEXT, &th)),
    };
    assert_eq!(auth.encode(), hex(&v["client_auth"]));
    assert_eq!(
        seal(&keys.client_to_server, 0, &auth.encode()).unwrap(),
        hex(&v["client_auth_frame"])
    );
    assert_eq!(
        seal(&keys.server_to_client, 1, &[0x05, 0x03]).unwrap(),
        hex(&v["auth_accepted_frame"])
    );
}

#[test]
fn kdf_vectors() {
    for v in kat()["kdf"].as_array().unwrap() {
        let keys = derive_keys(
            &hex(&v["shared_secret"]),
            &hex(&v["pake_key"]),
            &arr(&v["transcript_hash"]),
        )
        .unwrap();
        assert_eq!(keys.client_to_server.to_vec(), hex(&v["client_to_server"]));
        assert_eq!(keys.server_to_client.to_vec(), hex(&v["server_to_client"]));
    }
}

#[test]
fn aead_vectors() {
    for v in kat()["aead"].as_array().unwrap() {
        let key: [u8; 32] = arr(&v["key"]);
        let counter = v["counter"].as_u64().unwrap();
        let frame = seal(&key, counter, &hex(&v["plaintext"])).unwrap();
        assert_eq!(frame, hex(&v["frame"]));
        assert_eq!(
            open(&key, counter, &frame[4..]).unwrap(),
            hex(&v["plaintext"])
        );
        assert!(open(&key, counter + 1, &frame[4..]).is_err());
    }
}
