use std::os::unix::fs::symlink;

use super::*;

/// A scratch data partition with `disks/` and a secret beside it.
fn scratch() -> (tempfile::TempDir, File) {
    let temp = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(temp.path().join("disks/sub")).expect("disks");
    std::fs::create_dir_all(temp.path().join("agent")).expect("agent");
    std::fs::write(temp.path().join("disks/web.img"), b"disk").expect("disk");
    std::fs::write(temp.path().join("agent/host_key"), b"secret").expect("key");
    let dir = open_dir(&temp.path().join("disks")).expect("open disks");
    (temp, dir)
}

fn read(file: File) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    (&file).read_to_end(&mut bytes).expect("read");
    bytes
}

#[test]
fn a_plain_file_opens() {
    let (_temp, dir) = scratch();
    let file = open_beneath(&dir, Path::new("web.img"), libc::O_RDONLY).expect("opens");
    assert_eq!(read(file), b"disk");
}

#[test]
fn links_out_of_the_directory_are_refused() {
    let (temp, dir) = scratch();
    let disks = temp.path().join("disks");
    // Absolute, relative and through a subdirectory: all leave disks/.
    symlink(temp.path().join("agent/host_key"), disks.join("abs.img")).expect("link");
    symlink("../agent/host_key", disks.join("rel.img")).expect("link");
    symlink("../../agent/host_key", disks.join("sub/deep.img")).expect("link");
    symlink("/proc/self/root", disks.join("root")).expect("link");
    for name in ["abs.img", "rel.img", "sub/deep.img", "../agent/host_key"] {
        let err = open_beneath(&dir, Path::new(name), libc::O_RDONLY).expect_err(name);
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{name}: {err}");
        let message = describe_error(&err, Path::new(name), "disks");
        assert!(message.contains("leads out of disks/"), "{message}");
    }
    // A magic link is refused even where it resolves to a path inside.
    let err = open_beneath(&dir, Path::new("root/etc"), libc::O_RDONLY).expect_err("magic");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP)),
        "{err}"
    );
    // An absolute path is refused outright.
    let key = temp.path().join("agent/host_key");
    let err = open_beneath(&dir, &key, libc::O_RDONLY).expect_err("absolute");
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
}

#[test]
fn links_that_stay_inside_are_followed() {
    let (temp, dir) = scratch();
    let disks = temp.path().join("disks");
    symlink("web.img", disks.join("alias.img")).expect("link");
    symlink("../web.img", disks.join("sub/up.img")).expect("link");
    for name in ["alias.img", "sub/up.img"] {
        let file = open_beneath(&dir, Path::new(name), libc::O_RDONLY).expect(name);
        assert_eq!(read(file), b"disk");
    }
}

#[test]
fn the_anchor_directory_must_not_be_a_link() {
    let (temp, _dir) = scratch();
    symlink(temp.path().join("agent"), temp.path().join("images")).expect("link");
    let err = open_dir(&temp.path().join("images")).expect_err("link refused");
    // O_NOFOLLOW with O_DIRECTORY: ENOTDIR, not ELOOP.
    assert!(
        matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
        "{err}"
    );
}
