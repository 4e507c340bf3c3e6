use super::*;
use crate::storage::test_support::Scratch;

const KEY_A: &str = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_B: &str = "ed25519:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

const GUEST: &str = r#"name = "web1"
vcpus = 2
memory_mib = 512
[boot]
kernel = "images/vmlinux"
"#;

fn dirs() -> (Scratch, PathBuf, PathBuf) {
    let s = Scratch::new("seeds");
    let esp = s.0.join("esp/keel");
    let data = s.0.join("data");
    std::fs::create_dir_all(&esp).expect("mkdir");
    std::fs::create_dir_all(&data).expect("mkdir");
    (s, esp, data)
}

#[test]
fn creates_the_data_directories() {
    let (_s, esp, data) = dirs();
    let report = import_seeds(&esp, &data);
    assert_eq!(report, SeedReport::default());
    for sub in DATA_SUBDIRS {
        assert!(data.join(sub).is_dir(), "{sub}");
    }
}

#[test]
fn a_valid_host_config_is_imported_when_it_differs() {
    let (_s, esp, data) = dirs();
    std::fs::write(esp.join("host.toml"), "hostname = \"hv01\"\n").expect("seed");
    let report = import_seeds(&esp, &data);
    assert!(report.host_config_updated, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("host.toml")).expect("copied"),
        "hostname = \"hv01\"\n"
    );
    // Same content again: nothing to do.
    let report = import_seeds(&esp, &data);
    assert!(!report.host_config_updated);
    assert!(report.errors.is_empty(), "{report:?}");
}

#[test]
fn an_invalid_host_config_keeps_the_old_copy_and_names_file_and_line() {
    let (_s, esp, data) = dirs();
    std::fs::write(data.join("host.toml"), "hostname = \"old\"\n").expect("old");
    std::fs::write(
        esp.join("host.toml"),
        "hostname = \"hv01\"\n[agent]\nlisten = 7\n",
    )
    .expect("seed");
    let report = import_seeds(&esp, &data);
    assert!(!report.host_config_updated);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let err = &report.errors[0];
    let seed = esp.join("host.toml");
    assert!(err.contains(&format!("{}:3", seed.display())), "{err}");
    assert!(err.contains("listen"), "{err}");
    assert_eq!(
        std::fs::read_to_string(data.join("host.toml")).expect("old"),
        "hostname = \"old\"\n"
    );
}

#[test]
fn authorized_keys_merge_is_idempotent_and_keeps_the_format() {
    let (_s, esp, data) = dirs();
    std::fs::create_dir_all(data.join("agent")).expect("mkdir");
    std::fs::write(
        data.join("agent/authorized_keys"),
        format!("# keys\nadmin {KEY_A} alice@laptop"),
    )
    .expect("existing");
    std::fs::write(
        esp.join("authorized_keys"),
        format!(
            "# seed\n\nreader {KEY_A} same key other role\noperator {KEY_B} bob\nadmin ed25519:short bad\nroot {KEY_B}x nope\n"
        ),
    )
    .expect("seed");
    let report = import_seeds(&esp, &data);
    assert_eq!(report.keys_added, 1, "{report:?}");
    assert_eq!(report.errors.len(), 2, "{report:?}");
    assert!(report.errors[0].contains("authorized_keys:5"), "{report:?}");
    assert!(report.errors[1].contains("authorized_keys:6"), "{report:?}");
    let merged = std::fs::read_to_string(data.join("agent/authorized_keys")).expect("read");
    assert_eq!(
        merged,
        format!("# keys\nadmin {KEY_A} alice@laptop\noperator {KEY_B} bob\n")
    );
    let again = import_seeds(&esp, &data);
    assert_eq!(again.keys_added, 0);
    assert_eq!(
        std::fs::read_to_string(data.join("agent/authorized_keys")).expect("read"),
        merged
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("agent/authorized_keys"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn authorized_keys_are_created_when_absent() {
    let (_s, esp, data) = dirs();
    std::fs::write(esp.join("authorized_keys"), format!("admin {KEY_B}\n")).expect("seed");
    let report = import_seeds(&esp, &data);
    assert_eq!(report.keys_added, 1);
    assert_eq!(
        std::fs::read_to_string(data.join("agent/authorized_keys")).expect("read"),
        format!("admin {KEY_B}\n")
    );
}

#[test]
fn guests_are_imported_once_and_never_overwritten() {
    let (_s, esp, data) = dirs();
    std::fs::create_dir_all(esp.join("guests")).expect("mkdir");
    std::fs::create_dir_all(data.join("guests")).expect("mkdir");
    std::fs::write(esp.join("guests/web1.toml"), GUEST).expect("seed");
    std::fs::write(esp.join("guests/db.toml"), GUEST.replace("web1", "db")).expect("seed");
    std::fs::write(
        esp.join("guests/bad.toml"),
        "name = \"bad\"\nvcpus = \"two\"\n",
    )
    .expect("seed");
    std::fs::write(esp.join("guests/notes.txt"), "ignored").expect("other");
    std::fs::write(data.join("guests/db.toml"), "# operator's own\n").expect("existing");

    let report = import_seeds(&esp, &data);
    assert_eq!(report.guests_imported, vec!["web1.toml".to_string()]);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let bad = esp.join("guests/bad.toml");
    assert!(
        report.errors[0].contains(&format!("{}:2", bad.display())),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("guests/web1.toml")).expect("read"),
        GUEST
    );
    assert_eq!(
        std::fs::read_to_string(data.join("guests/db.toml")).expect("read"),
        "# operator's own\n"
    );
    assert!(!data.join("guests/bad.toml").exists());
    assert!(!data.join("guests/notes.txt").exists());

    // The operator edits the imported guest; a second boot keeps it.
    std::fs::write(data.join("guests/web1.toml"), "# edited\n").expect("edit");
    let again = import_seeds(&esp, &data);
    assert!(again.guests_imported.is_empty());
    assert_eq!(
        std::fs::read_to_string(data.join("guests/web1.toml")).expect("read"),
        "# edited\n"
    );
}

#[test]
fn a_seeded_guest_the_operator_undefined_is_not_imported_again() {
    let (_s, esp, data) = dirs();
    std::fs::create_dir_all(esp.join("guests")).expect("mkdir");
    std::fs::write(esp.join("guests/web1.toml"), GUEST).expect("seed");
    assert_eq!(import_seeds(&esp, &data).guests_imported, vec!["web1.toml"]);

    let paths = crate::guests::Paths {
        data: data.clone(),
        sockets: data.join("vm"),
        vmm: PathBuf::from("/nonexistent/keel-vmm"),
        cgroup: None,
        drop_privileges: false,
        bridge: None,
        console_to_host: false,
        agent_port: keel_common::host::DEFAULT_AGENT_PORT,
    };
    let mut manager = crate::guests::GuestManager::load(paths.clone());
    manager.undefine("web1").expect("undefine");
    // The next boot.
    let report = import_seeds(&esp, &data);
    assert!(report.guests_imported.is_empty(), "{report:?}");
    assert!(!data.join("guests/web1.toml").exists());
    assert!(crate::guests::GuestManager::load(paths.clone())
        .show("web1")
        .is_err());

    // Defining it by hand again is the operator's word: the list forgets it.
    manager.define(GUEST).expect("define");
    assert!(!undefined::names(&data).contains("web1"));
}
