use std::path::Path;

use super::*;
use crate::GuestSpec;

/// Made by ssh-keygen.
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID0R9D4yQ2LUd2JfSTwY4nfkeEeoOwZfI+W2Fqe/v8+P alice@laptop";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNnzkzrWem7xM1YvC0tlhFOG2Sfxxil6XHDqR9Fk4TZALvs+VkFj2flJWi63a8N513V0UspW9pCwXI2GhcZ7mQc= bob";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC20qFpC++WoHIccibztkdwF7Ig+VTYpQWIZ5Mswdub2tQJqYSSoNL3G8GJNZdETbSSlYiSoq1eGfSWKNRBg1EVubrAwAb9NVlvWq9fBctvSTpLZ/RHP08fHHrHunIty5wiW1oqlG0BFSE1eIF+OYKzDadM9V+IvHzsxnTKL6ia0n4Eh/d4G6C5NexbCqbaNqm8Apx0s7Uo1wWD3MlDjsLAj46szWvY+Wh1UHuXJG3c0TzBV6zu8o45d6mzGPDfZHCvxUjNLM2Zzwi+6xk+0gRtN6DDpy+lp5+//uy7p4TZB7aYbMf0f1EnK0Vv3KeZ/P0HaDAfL1I+HpKQ3/H5qoBT carol";
/// A security key's: type, a 32-byte key, the application "ssh:".
const SK: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAAABHNzaDo=";

const MINIMAL: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

fn parse(text: &str) -> Result<GuestSpec, ConfigError> {
    GuestSpec::parse(Path::new("web1.toml"), text)
}

#[track_caller]
fn assert_refused(text: &str, line: usize, field: &str) -> String {
    let message = parse(text).expect_err("spec refused").to_string();
    let prefix = format!("web1.toml:{line}: field `{field}`: ");
    assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
    message
}

/// MINIMAL with a `[cloud_init]` table of `body` (from line 7 on).
fn with_table(body: &str) -> String {
    format!("{MINIMAL}[cloud_init]\n{body}")
}

/// `text` as a TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A table whose key list holds `keys`, one per line from line 8 on.
fn with_keys(keys: &[&str]) -> String {
    let lines: String = keys.iter().map(|k| format!("  {},\n", quoted(k))).collect();
    with_table(&format!("ssh_authorized_keys = [\n{lines}]\n"))
}

#[test]
fn a_full_table_parses_with_its_values() {
    let text = with_table(&format!(
        "hostname = \"web1.example.org\"\nssh_authorized_keys = [{ED25519:?}, {ECDSA:?}, {RSA:?}, {SK:?}]\n\
         user_data = \"images/web1.user-data\"\nnetwork_config = \"./images/net/web1.yaml\"\n\
         instance_id = \"web1-2024.1_a\"\n"
    ));
    let spec = parse(&text).expect("valid");
    let ci = spec.cloud_init.as_ref().expect("cloud_init");
    assert_eq!(ci.hostname("web1"), "web1.example.org");
    assert_eq!(ci.ssh_authorized_keys(), [ED25519, ECDSA, RSA, SK]);
    assert_eq!(ci.instance_id.as_deref(), Some("web1-2024.1_a"));
    let files: Vec<_> = ci
        .files()
        .map(|(kind, path)| (kind.field(), path))
        .collect();
    assert_eq!(
        files,
        [
            ("cloud_init.user_data", Path::new("images/web1.user-data")),
            (
                "cloud_init.network_config",
                Path::new("./images/net/web1.yaml")
            ),
        ]
    );
}

#[test]
fn an_empty_table_defaults_to_the_guest_name_and_no_keys() {
    let spec = parse(&with_table("")).expect("valid");
    let ci = spec.cloud_init.expect("cloud_init");
    assert_eq!(ci.hostname(&spec.name), "web1");
    assert!(ci.ssh_authorized_keys().is_empty());
    assert!(ci.files().next().is_none());
    assert!(parse(MINIMAL).expect("valid").cloud_init.is_none());
    assert_eq!(cloud_init_image("web1"), Path::new("cloud-init/web1.img"));
}

#[test]
fn an_unknown_field_is_refused_at_its_line() {
    let message = assert_refused(
        &with_table("hostname = \"a\"\npassword = \"x\"\n"),
        8,
        "cloud_init.password",
    );
    assert!(message.contains("password"), "{message}");
}

#[test]
fn bad_hostnames_are_refused_at_their_line() {
    for bad in [
        "",
        "web_1",
        "-web",
        "web-",
        "web..example",
        "web.",
        ".web",
        "web 1",
        "wéb",
        &"a".repeat(64),
        &["a"; 128].join("."),
    ] {
        let text = with_table(&format!("hostname = {bad:?}\n"));
        assert_refused(&text, 7, "cloud_init.hostname");
    }
    for good in ["a", "Web-1", "web1.example.org", &"a".repeat(63)] {
        parse(&with_table(&format!("hostname = {good:?}\n"))).expect(good);
    }
}

#[test]
fn each_kind_of_bad_key_is_refused_at_its_own_line() {
    let type_only = "ssh-ed25519";
    let not_base64 = "ssh-ed25519 AAAA!!!! x";
    // Valid base64 of an ed25519 key, written under another type.
    let wrong_type = ED25519.replacen("ssh-ed25519", "ssh-rsa", 1);
    let options = format!("command=\"/bin/sh\" {ED25519}");
    let no_material = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5";
    let newline = format!("{ED25519}\nssh-rsa AAAA");
    let dss = "ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old";
    let separator = format!("{ED25519} a\u{2028}b");
    let long = format!("{ED25519} {}", "c".repeat(MAX_SSH_KEY_LEN));
    for (bad, wanted) in [
        (type_only, "no base64 key"),
        (not_base64, "not base64"),
        (wrong_type.as_str(), "not a `ssh-rsa` key"),
        (options.as_str(), "key type"),
        (no_material, "no key material"),
        (newline.as_str(), "one line"),
        (dss, "key type"),
        (separator.as_str(), "one line"),
        (long.as_str(), "at most 8192 bytes"),
        ("", "key type"),
    ] {
        // The bad key is the second: its own line, its own index.
        let message = assert_refused(
            &with_keys(&[ED25519, bad]),
            9,
            "cloud_init.ssh_authorized_keys[1]",
        );
        assert!(message.contains(wanted), "{bad:?}: {message}");
    }
}

#[test]
fn a_key_listed_twice_or_too_many_keys_are_refused() {
    // The same key with another comment is the same key.
    let again = ED25519.replace("alice@laptop", "alice@desk");
    let message = assert_refused(
        &with_keys(&[ED25519, RSA, &again]),
        10,
        "cloud_init.ssh_authorized_keys[2]",
    );
    assert!(message.contains("ssh_authorized_keys[0]"), "{message}");

    // Distinct keys, one too many.
    let keys: Vec<String> = (0..=MAX_SSH_KEYS)
        .map(|i| {
            let mut blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20".to_vec();
            blob.extend((0..32).map(|b| (b as u8) ^ (i as u8)));
            format!("ssh-ed25519 {} k{i}", STANDARD.encode(&blob))
        })
        .collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let message = assert_refused(&with_keys(&refs), 7, "cloud_init.ssh_authorized_keys");
    assert!(message.contains("at most 64 keys, not 65"), "{message}");
    parse(&with_keys(&refs[..MAX_SSH_KEYS])).expect("64 keys are fine");
}

#[test]
fn comments_with_yaml_specials_are_keys_like_any_other() {
    for comment in [
        "alice: \"admin\" # yes",
        "- [x] {y} &z *w !t |>",
        "'q' \\ %",
    ] {
        let key = ED25519.replace("alice@laptop", comment);
        parse(&with_keys(&[&key])).expect(comment);
    }
}

#[test]
fn seed_files_must_be_beneath_images() {
    for (field, line) in [("user_data", 7), ("network_config", 7)] {
        for bad in [
            "disks/web1.user-data",
            "/etc/shadow",
            "images/../agent/host_key",
            "images",
            "guests/web1.toml",
        ] {
            let text = with_table(&format!("{field} = {bad:?}\n"));
            assert_refused(&text, line, &format!("cloud_init.{field}"));
        }
    }
}

#[test]
fn bad_instance_ids_are_refused() {
    for bad in ["", "a/b", "..", ".hidden", "a b", "ü", &"i".repeat(129)] {
        let text = with_table(&format!("hostname = \"h\"\ninstance_id = {bad:?}\n"));
        assert_refused(&text, 8, "cloud_init.instance_id");
    }
}
