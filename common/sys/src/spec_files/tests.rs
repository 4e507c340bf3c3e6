use std::path::PathBuf;

use super::*;

fn parse(text: &str) -> Result<GuestSpec, ConfigError> {
    GuestSpec::parse(Path::new("web1.toml"), text)
}

/// A scratch data partition; the `TempDir`, held only for its drop,
/// removes it.
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> Self {
        let temp = tempfile::Builder::new()
            .prefix(&format!("keel-guest-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        let dir = temp.path().to_path_buf();
        for sub in ["images", "disks", "vsock"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create temp dir");
        }
        for file in [
            "images/vmlinux",
            "images/web1.initrd",
            "disks/a.raw",
            "disks/b.raw",
        ] {
            std::fs::write(dir.join(file), b"x").expect("create temp file");
        }
        TempDir(dir, temp)
    }
}

const FILES: &str = r#"name = "web1"
vcpus = 1
memory_mib = 64
[boot]
kernel = "images/vmlinux"
initrd = "images/web1.initrd"
[[disk]]
path = "disks/a.raw"
[[disk]]
path = "disks/b.raw"
[vsock]
uds_path = "vsock/web1.sock"
"#;

/// Parses `text` and checks its files against `dir`.
fn check_files(dir: &TempDir, text: &str) -> Result<GuestSpec, ConfigError> {
    let spec = parse(text)?;
    check_spec_files(&spec, Path::new("web1.toml"), text, &dir.0)?;
    Ok(spec)
}

#[track_caller]
fn assert_files_refused(dir: &TempDir, text: &str, line: usize, field: &str) -> String {
    let message = check_files(dir, text)
        .expect_err("files refused")
        .to_string();
    let prefix = format!("web1.toml:{line}: field `{field}`: ");
    assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
    message
}

#[test]
fn files_present_are_accepted_and_load_reads_the_file() {
    let dir = TempDir::new("present");
    check_files(&dir, FILES).expect("all files present");

    let spec_path = dir.0.join("web1.toml");
    std::fs::write(&spec_path, FILES).expect("write spec");
    let spec = load_guest_spec(&spec_path, &dir.0).expect("loads");
    assert_eq!(spec.disks.len(), 2);

    // Absolute paths are used as they are.
    let kernel = dir.0.join("images/vmlinux");
    let text = FILES.replace(
        "kernel = \"images/vmlinux\"",
        &format!("kernel = \"{}\"", kernel.display()),
    );
    check_files(&dir, &text).expect("absolute kernel path");
}

#[test]
fn load_names_an_unreadable_file() {
    let dir = TempDir::new("unreadable");
    let message = load_guest_spec(&dir.0.join("nope.toml"), &dir.0)
        .expect_err("no file")
        .to_string();
    assert!(
        message.contains("nope.toml: cannot read the file"),
        "{message}"
    );
}

#[test]
fn directory_as_kernel_is_refused() {
    let dir = TempDir::new("dirkernel");
    let text = FILES.replace("kernel = \"images/vmlinux\"", "kernel = \"images\"");
    let message = assert_files_refused(&dir, &text, 5, "boot.kernel");
    assert!(
        message.contains("is a directory, not a regular file"),
        "{message}"
    );
}

#[test]
fn missing_files_are_refused() {
    let dir = TempDir::new("missing");
    let text = FILES.replace("disks/b.raw", "disks/c.raw");
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("disks/c.raw"), "{message}");

    let text = FILES.replace("images/web1.initrd", "images/none.initrd");
    assert_files_refused(&dir, &text, 6, "boot.initrd");
}

#[test]
fn character_device_as_disk_is_refused() {
    let dir = TempDir::new("chardev");
    let text = FILES.replace("path = \"disks/b.raw\"", "path = \"/dev/null\"");
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("character device"), "{message}");
}

#[test]
fn one_image_through_two_paths_is_refused() {
    let dir = TempDir::new("samefile");
    let absolute = dir.0.join("disks/a.raw");
    let text = FILES.replace(
        "path = \"disks/b.raw\"",
        &format!("path = \"{}\"", absolute.display()),
    );
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("same file as disk[0]"), "{message}");
}

#[test]
fn parent_escape_is_refused_by_check_spec_files() {
    let dir = TempDir::new("escape");
    let mut spec = parse(FILES).expect("valid spec");
    // As if the spec had come from somewhere that skipped parse; the
    // check must come before any file system access.
    spec.disks[0].path = PathBuf::from("../keel-guest-outside");
    let message = check_spec_files(&spec, Path::new("web1.toml"), FILES, &dir.0)
        .expect_err("escape")
        .to_string();
    assert!(
        message.starts_with("web1.toml:8: field `disk[0].path`: "),
        "{message}"
    );
    assert!(message.contains("`..`"), "{message}");
}

#[test]
fn vsock_path_must_be_free_and_short() {
    let dir = TempDir::new("vsock");
    let text = FILES.replace("vsock/web1.sock", "vsock");
    let message = assert_files_refused(&dir, &text, 12, "vsock.uds_path");
    assert!(message.contains("a directory, not a socket"), "{message}");

    let long = format!("vsock/{}.sock", "s".repeat(MAX_UDS_PATH_LEN));
    let text = FILES.replace("vsock/web1.sock", &long);
    let message = assert_files_refused(&dir, &text, 12, "vsock.uds_path");
    assert!(message.contains("at most 107"), "{message}");
}
