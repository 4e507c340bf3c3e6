//! The Linux-guest test bed: an L1 initramfs holding keel-vmm, the guest
//! kernel, the test guest and the `keel-testbed` init, booted by QEMU with
//! the Keel kernel as L1 (see testbed/ and tests/linux_guest.rs).

use std::path::{Path, PathBuf};

use keel_image::initramfs::{Node, Tree};

use crate::{artefact, repo_root};

/// A static release binary built by `make binaries`.
pub fn static_binary(name: &str) -> PathBuf {
    let path = repo_root()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `make binaries`",
        path.display()
    );
    path
}

/// Builds the L1 initramfs in `dir` and returns its path.
pub fn testbed_initramfs(dir: &Path) -> PathBuf {
    build(dir, false, &[])
}

/// The L1 initramfs plus QEMU, its shared libraries and the microvm
/// firmware, for the boot-time baseline in `make bench`.
pub fn testbed_initramfs_with_qemu(dir: &Path) -> PathBuf {
    build(dir, true, &[])
}

/// What `make debian-guest` leaves in out/debian/ for L1's initramfs:
/// each Debian kernel and the initrd initramfs-tools made for it.
pub const DEBIAN_BOOT_FILES: [&str; 4] = [
    "vmlinuz-cloud",
    "initrd.img-cloud",
    "vmlinuz-generic",
    "initrd.img-generic",
];

/// The L1 initramfs plus the Debian guest's kernels and initrds in
/// /guest/debian/ (its root disk is a drive of L1, see
/// tests/debian_guest.rs).
pub fn testbed_initramfs_with_debian(dir: &Path) -> PathBuf {
    let files: Vec<(String, PathBuf)> = DEBIAN_BOOT_FILES
        .iter()
        .map(|f| {
            (
                format!("guest/debian/{f}"),
                artefact(&format!("debian/{f}")),
            )
        })
        .collect();
    build(dir, false, &files)
}

/// The shared libraries `binary` loads, as ldd resolves them here.
fn shared_libraries(binary: &str) -> Vec<PathBuf> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// `extra` adds files to L1's initramfs: (path there, source).
fn build(dir: &Path, with_qemu: bool, extra: &[(String, PathBuf)]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the test bed directory");
    let mut guest = Tree::skeleton();
    guest.insert(
        "usr/bin/keel-test-guest",
        Node::File {
            source: static_binary("keel-test-guest"),
            executable: true,
        },
    );
    guest.insert("init", Node::Symlink("usr/bin/keel-test-guest".into()));
    let guest_cpio = dir.join("guest.cpio");
    let cpio = guest.write_cpio(Vec::new(), 0).expect("guest cpio");
    std::fs::write(&guest_cpio, cpio).expect("write guest cpio");
    // keel-loader's initramfs, for `from = "disk"` guests.
    let mut loader = Tree::skeleton();
    loader.insert(
        "usr/bin/keel-loader",
        Node::File {
            source: static_binary("keel-loader"),
            executable: true,
        },
    );
    loader.insert("init", Node::Symlink("usr/bin/keel-loader".into()));
    let loader_cpio = dir.join("loader.cpio");
    let cpio = loader.write_cpio(Vec::new(), 0).expect("loader cpio");
    std::fs::write(&loader_cpio, cpio).expect("write loader cpio");

    let mut l1 = Tree::skeleton();
    l1.insert(
        "usr/bin/keel-testbed",
        Node::File {
            source: static_binary("keel-testbed"),
            executable: true,
        },
    );
    l1.insert(
        "usr/bin/keel-vmm",
        Node::File {
            source: static_binary("keel-vmm"),
            executable: true,
        },
    );
    l1.insert(
        "guest/bzImage",
        Node::File {
            source: artefact("kernel/bzImage"),
            executable: false,
        },
    );
    l1.insert(
        "guest/initrd.cpio",
        Node::File {
            source: guest_cpio,
            executable: false,
        },
    );
    l1.insert(
        "guest/loader.cpio",
        Node::File {
            source: loader_cpio,
            executable: false,
        },
    );
    l1.insert("init", Node::Symlink("usr/bin/keel-testbed".into()));
    // The ELF kernel for PVH boot, without its symbols (25 MB instead of 38).
    let vmlinux = dir.join("vmlinux");
    let status = std::process::Command::new("objcopy")
        .arg("--strip-all")
        .arg(artefact("kernel/vmlinux"))
        .arg(&vmlinux)
        .status()
        .expect("run objcopy (binutils)");
    assert!(status.success(), "stripping vmlinux failed");
    l1.insert(
        "guest/vmlinux",
        Node::File {
            source: vmlinux,
            executable: false,
        },
    );
    for (path, source) in extra {
        l1.insert(
            path,
            Node::File {
                source: source.clone(),
                executable: false,
            },
        );
    }
    if with_qemu {
        let qemu = "/usr/bin/qemu-system-x86_64";
        for file in std::iter::once(PathBuf::from(qemu)).chain(shared_libraries(qemu)) {
            // Libraries too: the kernel needs exec permission on the ELF
            // interpreter, and the rest do no harm with it.
            l1.insert(
                &file.to_string_lossy(),
                Node::File {
                    source: file.clone(),
                    executable: true,
                },
            );
        }
        for firmware in [
            "/usr/share/qemu/bios-microvm.bin",
            "/usr/share/qemu/qboot.rom",
        ] {
            l1.insert(
                firmware,
                Node::File {
                    source: PathBuf::from(firmware),
                    executable: false,
                },
            );
        }
    }
    let image = l1.build_with_level(0, 3).expect("L1 initramfs");
    let path = dir.join(match (with_qemu, extra.is_empty()) {
        (true, _) => "l1-qemu.cpio.zst",
        (false, false) => "l1-extra.cpio.zst",
        (false, true) => "l1.cpio.zst",
    });
    std::fs::write(&path, image).expect("write L1 initramfs");
    path
}

/// The `TESTBED scenario=NAME ...` reports of the scenario's last run in
/// `serial`, each taken from its tag on: keel-vmm's log on stderr shares
/// L1's console and can land in front of a report on the same line.
pub fn reports<'a>(serial: &'a str, scenario: &str) -> Vec<&'a str> {
    let tag = format!("TESTBED scenario={scenario} ");
    last_run(serial, scenario)
        .lines()
        .filter_map(|l| l.find(&tag).map(|at| &l[at..]))
        .collect()
}

/// `serial` from the scenario's last run on: past its `retry` report, if
/// keel-testbed ran it again.
pub fn last_run<'a>(serial: &'a str, scenario: &str) -> &'a str {
    let retry = format!("TESTBED scenario={scenario} retry ");
    serial
        .rfind(&retry)
        .map_or(serial, |at| &serial[at + retry.len()..])
}

/// The scenarios keel-testbed ran a second time, with why (`hung` or
/// `crashed`). Under TCG a guest boot meets a fault of QEMU's emulated
/// SVM about once in twenty; a second fault in the same scenario fails
/// its test. Tests print these loudly, so a retry is never silent.
pub fn retries(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|l| {
            let at = l.find("TESTBED scenario=")?;
            let report = &l[at..];
            report
                .contains(" retry reason=")
                .then(|| report.to_string())
        })
        .collect()
}

/// Prints every [`retries`] entry of `serial` to the test's stderr.
pub fn say_retries(test: &str, serial: &str) {
    for retry in retries(serial) {
        eprintln!("[{test}] WARNING: RETRIED after an emulator fault: {retry}");
    }
}

/// The value of `key=` in one report.
pub fn report_field<'a>(report: &'a str, key: &str) -> Option<&'a str> {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_found_behind_interleaved_log_output() {
        let serial = "TESTBED scenario=a x=1\nkeel-vmm[a]: boot marker TESTBED scenario=a y=2\nTESTBED scenario=ab x=9\n";
        let found = reports(serial, "a");
        assert_eq!(
            found,
            vec!["TESTBED scenario=a x=1", "TESTBED scenario=a y=2"]
        );
        assert_eq!(report_field(found[1], "y"), Some("2"));
        assert_eq!(report_field(found[1], "x"), None);
    }

    #[test]
    fn a_retried_scenario_is_judged_by_its_last_run_and_named() {
        let serial = "TESTBED scenario=a started\nTESTBED scenario=a exit=4\n\
                      TESTBED scenario=ab exit=0\nTESTBED scenario=a retry reason=crashed\n\
                      TESTBED scenario=a started\nTESTBED scenario=a exit=0\n";
        assert_eq!(
            reports(serial, "a"),
            vec!["TESTBED scenario=a started", "TESTBED scenario=a exit=0"]
        );
        assert_eq!(reports(serial, "ab"), vec!["TESTBED scenario=ab exit=0"]);
        assert_eq!(
            retries(serial),
            vec!["TESTBED scenario=a retry reason=crashed"]
        );
        assert!(retries("TESTBED scenario=a exit=0\n").is_empty());
    }
}
