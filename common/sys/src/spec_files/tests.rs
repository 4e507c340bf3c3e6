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
    check_spec_files(&spec, Path::new("web1.toml"), text, &dir.0, &[])?;
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
    let spec = load_guest_spec(&spec_path, &dir.0, &[]).expect("loads");
    assert_eq!(spec.disks.len(), 2);

    // Not even the data partition's own files by absolute path.
    let kernel = dir.0.join("images/vmlinux");
    let text = FILES.replace(
        "kernel = \"images/vmlinux\"",
        &format!("kernel = \"{}\"", kernel.display()),
    );
    let message = assert_files_refused(&dir, &text, 5, "boot.kernel");
    assert!(message.contains("host path"), "{message}");
}

#[test]
fn links_out_of_images_and_disks_are_refused() {
    let dir = TempDir::new("links");
    std::fs::create_dir_all(dir.0.join("agent")).expect("agent");
    std::fs::write(dir.0.join("agent/host_key"), b"secret").expect("key");
    std::os::unix::fs::symlink(dir.0.join("agent/host_key"), dir.0.join("disks/evil.img"))
        .expect("link");
    std::os::unix::fs::symlink("../agent/host_key", dir.0.join("images/evil")).expect("link");
    let text = FILES.replace("disks/b.raw", "disks/evil.img");
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("leads out of disks/"), "{message}");
    let text = FILES.replace("images/web1.initrd", "images/evil");
    let message = assert_files_refused(&dir, &text, 6, "boot.initrd");
    assert!(message.contains("leads out of images/"), "{message}");
    // The same refusal when opening for real.
    let err = open_guest_file(&dir.0, Path::new("disks/evil.img"), &[], libc::O_RDWR)
        .expect_err("refused");
    assert!(err.contains("leads out of disks/"), "{err}");

    // A link that stays inside its directory is followed.
    std::os::unix::fs::symlink("a.raw", dir.0.join("disks/alias.raw")).expect("link");
    let text = FILES.replace("disks/b.raw", "disks/alias.raw");
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("same file as disk[0]"), "{message}");
    open_guest_file(&dir.0, Path::new("disks/alias.raw"), &[], libc::O_RDONLY).expect("inside");

    // disks/ itself must not be a link to elsewhere.
    std::fs::remove_dir_all(dir.0.join("disks")).expect("rm");
    std::os::unix::fs::symlink(dir.0.join("agent"), dir.0.join("disks")).expect("link");
    let text = FILES.replace("disks/b.raw", "disks/host_key");
    let message = assert_files_refused(&dir, &text, 8, "disk[0].path");
    assert!(message.contains("is not a directory"), "{message}");
}

#[test]
fn load_names_an_unreadable_file() {
    let dir = TempDir::new("unreadable");
    let message = load_guest_spec(&dir.0.join("nope.toml"), &dir.0, &[])
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
    std::fs::create_dir_all(dir.0.join("images/sub")).expect("mkdir");
    let text = FILES.replace("kernel = \"images/vmlinux\"", "kernel = \"images/sub\"");
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
fn allow_listed_device_must_be_a_block_device() {
    let dir = TempDir::new("chardev");
    let text = FILES.replace("path = \"disks/b.raw\"", "path = \"/dev/null\"");
    let message = assert_files_refused(&dir, &text, 10, "disk[1].path");
    assert!(message.contains("host path"), "{message}");
    // Listed (as host.toml would not allow), it is still no block device.
    let spec =
        GuestSpec::parse_with_devices(Path::new("web1.toml"), &text, &[PathBuf::from("/dev/null")])
            .expect("listed");
    let message = check_spec_files(
        &spec,
        Path::new("web1.toml"),
        &text,
        &dir.0,
        &[PathBuf::from("/dev/null")],
    )
    .expect_err("character device")
    .to_string();
    assert!(
        message.starts_with("web1.toml:10: field `disk[1].path`: "),
        "{message}"
    );
    assert!(message.contains("character device"), "{message}");
}

#[test]
fn one_image_through_two_paths_is_refused() {
    let dir = TempDir::new("samefile");
    std::fs::hard_link(dir.0.join("disks/a.raw"), dir.0.join("disks/a-link.raw")).expect("link");
    let text = FILES.replace("path = \"disks/b.raw\"", "path = \"disks/a-link.raw\"");
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
    let message = check_spec_files(&spec, Path::new("web1.toml"), FILES, &dir.0, &[])
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
    std::fs::create_dir_all(dir.0.join("vsock/web1.sock")).expect("mkdir");
    let message = assert_files_refused(&dir, FILES, 12, "vsock.uds_path");
    assert!(message.contains("a directory, not a socket"), "{message}");
    std::fs::remove_dir(dir.0.join("vsock/web1.sock")).expect("rmdir");

    // vsock/ itself must not lead elsewhere: init removes stale sockets there.
    std::fs::remove_dir_all(dir.0.join("vsock")).expect("rm");
    std::os::unix::fs::symlink("/run", dir.0.join("vsock")).expect("link");
    let message = assert_files_refused(&dir, FILES, 12, "vsock.uds_path");
    assert!(message.contains("not a directory"), "{message}");
    std::fs::remove_file(dir.0.join("vsock")).expect("rm");

    let long = format!("vsock/{}.sock", "s".repeat(MAX_UDS_PATH_LEN));
    let text = FILES.replace("vsock/web1.sock", &long);
    let message = assert_files_refused(&dir, &text, 12, "vsock.uds_path");
    assert!(message.contains("at most 107"), "{message}");
}

#[test]
fn a_backing_file_is_a_regular_file_in_images_and_no_disk() {
    let dir = TempDir::new("backing");
    std::fs::write(dir.0.join("images/base.qcow2"), b"x").expect("base");
    let with_backing = |backing: &str| {
        FILES.replace(
            "path = \"disks/b.raw\"\n",
            &format!("path = \"disks/b.raw\"\nformat = \"qcow2\"\nbacking = \"{backing}\"\n"),
        )
    };
    check_files(&dir, &with_backing("images/base.qcow2")).expect("backing present");

    let message = assert_files_refused(
        &dir,
        &with_backing("images/none.qcow2"),
        12,
        "disk[1].backing",
    );
    assert!(message.contains("none.qcow2"), "{message}");
    std::fs::create_dir(dir.0.join("images/dir.qcow2")).expect("dir");
    let message = assert_files_refused(
        &dir,
        &with_backing("images/dir.qcow2"),
        12,
        "disk[1].backing",
    );
    assert!(message.contains("directory"), "{message}");

    // A link out of images/ is refused like any guest file's.
    std::os::unix::fs::symlink("../disks/a.raw", dir.0.join("images/out.raw")).expect("link");
    assert_files_refused(&dir, &with_backing("images/out.raw"), 12, "disk[1].backing");

    // A link in images/ to a disk of the guest is that disk: refused.
    std::fs::write(dir.0.join("images/disk.raw"), b"x").expect("disk");
    std::os::unix::fs::symlink("disk.raw", dir.0.join("images/same.raw")).expect("link");
    let text = with_backing("images/same.raw").replace("disks/a.raw", "images/disk.raw");
    let message = assert_files_refused(&dir, &text, 12, "disk[1].backing");
    assert!(message.contains("same file as disk[0]"), "{message}");
}
