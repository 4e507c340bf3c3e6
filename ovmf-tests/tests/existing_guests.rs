//! The guests users already have, brought to the appliance as an operator
//! would, in one appliance boot:
//!
//! 1. a Xen guest: its xl config and its disk, imported with `keelctl
//!    import xen --upload`, booted by keel-loader from the Xen-era
//!    `menu.lst` on its disk to multi-user;
//! 2. a cloud image: the disk uploaded with `keelctl upload`, defined as a
//!    `from = "disk"` guest with `[cloud_init]`, which applies the spec's
//!    hostname and SSH key; the test logs in with ssh.
//!
//! The disk is the test bed's Debian 12 root filesystem (`make
//! debian-guest`) made into a Xen PV guest's: a pygrub `menu.lst` whose
//! kernel line says `root=/dev/xvda1 console=hvc0 xencons=tty`, and an
//! fstab by UUID. Xen exported the filesystem on its own as `xvda1`; here
//! it is the whole disk `/dev/vda`, which keel-loader finds by the serial
//! the import gave it. The disk is a qcow2 image (`tap:qcow2:` in the
//! config), so this is also the test of a qcow2 disk booted from its own
//! boot configuration. The same image has cloud-init and openssh-server,
//! as Debian's cloud images do; without a seed cloud-init stays out of the
//! way (phase 1), with the seed Keel builds it runs (phase 2).

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keel_ovmf_tests::operator::{free_port, pairing_code, start_and_wait_for, Operator};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// keel-loader, then Debian with systemd, nested in TCG.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// `keelctl import xen` for an import with keys it could not map.
const IMPORT_PARTIAL: i32 = 7;
/// The cloud guest's ssh port: its user-mode port forward in the
/// appliance, which QEMU forwards on to the test's machine.
const GUEST_SSH_PORT: u16 = 2222;
/// What cloud-init must set.
const CLOUD_HOSTNAME: &str = "cloudy-keel";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The generic kernel's release, from out/debian/kernels.
fn generic_release() -> String {
    let kernels = std::fs::read_to_string(artefact("debian/kernels")).unwrap();
    kernels
        .lines()
        .find_map(|l| l.strip_prefix("generic "))
        .unwrap_or_else(|| panic!("no generic kernel in out/debian/kernels:\n{kernels}"))
        .to_string()
}

/// The Debian disk as a Xen PV guest under pygrub had it, as the qcow2
/// image `qcow2`.
fn make_xen_disk(qcow2: &Path, release: &str) {
    let disk = qcow2.with_extension("raw");
    let disk = disk.as_path();
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(artefact("debian/root.img"))
        .arg(disk));
    let uuid = run(Command::new("blkid")
        .args(["-o", "value", "-s", "UUID"])
        .arg(disk));
    let uuid = uuid.trim();
    assert!(!uuid.is_empty(), "the Debian disk has no UUID");
    let dir = disk.parent().unwrap();
    let menu = dir.join("menu.lst");
    std::fs::write(
        &menu,
        format!(
            "# menu.lst of a Xen domU, as pygrub read it\ndefault 0\ntimeout 2\n\n\
             title Debian GNU/Linux 12, kernel {release} (Xen)\nroot (hd0)\n\
             kernel /boot/vmlinuz-{release} root=/dev/xvda1 ro console=hvc0 xencons=tty panic=1\n\
             initrd /boot/initrd.img-{release}\n"
        ),
    )
    .unwrap();
    let fstab = dir.join("fstab");
    std::fs::write(
        &fstab,
        format!("UUID={uuid} / ext4 errors=remount-ro 0 1\n"),
    )
    .unwrap();
    let script = dir.join("debugfs.cmds");
    std::fs::write(
        &script,
        format!(
            "rm /etc/fstab\nwrite {} /etc/fstab\nmkdir /boot/grub\nwrite {} /boot/grub/menu.lst\n",
            fstab.display(),
            menu.display()
        ),
    )
    .unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&script)
        .arg(disk));
    // debugfs says little on failure: read back what it wrote.
    let written = run(Command::new("debugfs")
        .args(["-R", "cat /boot/grub/menu.lst"])
        .arg(disk));
    assert!(written.contains("root=/dev/xvda1"), "{written}");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(disk)
        .arg(qcow2));
    std::fs::remove_file(disk).unwrap();
}

// Not in `make test` yet: under nested TCG its Debian guests stall or
// fault in too many boots for CI (see the issue notes); `make
// test-existing-guests` runs it.
#[test]
#[ignore = "flaky under nested TCG; run with `make test-existing-guests`"]
fn a_xen_guest_and_a_cloud_image_come_over_and_boot_to_multi_user() {
    let release = generic_release();
    let port = free_port();
    let ssh_port = free_port();
    // The server's boot disk, not a USB stick: guests' disks then come at
    // virtio-blk speed. From emulated USB storage under TCG the nested
    // Debian guests stalled or faulted in most boots.
    let mut options = QemuOptions::new(artefact("keel.img"), BootMedia::BootDisk);
    options.memory_mib = 2048;
    options.agent_port = Some(port);
    options.forwards = vec![(ssh_port, GUEST_SSH_PORT)];
    // Room on KEEL-DATA for the guest's disk.
    options.disk_size_mib = Some(6144);
    let mut qemu = Qemu::start("existing-guests", &options);
    let work = qemu.workdir().join("operator");
    std::fs::create_dir_all(&work).unwrap();
    let disk = work.join("debian-xen.qcow2");
    make_xen_disk(&disk, &release);
    let cfg = work.join("debian-xen.cfg");
    std::fs::write(
        &cfg,
        format!(
            "# An xl config of a Debian PV guest booted by pygrub.\n\
             name = \"debian-xen\"\nuuid = \"3f8b2a1c-9d4e-4f60-8a7b-1c2d3e4f5a6b\"\n\
             memory = 512\nvcpus = 1\nbootloader = \"pygrub\"\n\
             disk = [ 'tap:qcow2:{},xvda1,w' ]\n\
             vif = [ 'mac=00:16:3e:4b:12:7a,bridge=xenbr0' ]\n\
             vfb = [ 'vnc=1' ]\n\
             on_reboot = \"destroy\"\non_crash = \"destroy\"\n",
            disk.display()
        ),
    )
    .unwrap();

    let op = Operator {
        config: work.join("config"),
        host: format!("127.0.0.1:{port}"),
    };
    let code = pairing_code(&mut qemu, 0, BOOT_TIMEOUT);
    qemu.wait_for(&format!(" {code}`"), BOOT_TIMEOUT);
    op.ok(&["keygen"]);
    op.ok(&["pair", &op.host, &code]);

    // The dry run prints the spec and names what it could not map.
    let cfg_arg = cfg.to_string_lossy().into_owned();
    let dry = op.run(&["import", "xen", &cfg_arg]);
    assert_eq!(dry.status.code(), Some(IMPORT_PARTIAL));
    let spec = String::from_utf8_lossy(&dry.stdout);
    let report = String::from_utf8_lossy(&dry.stderr);
    assert!(spec.contains("from = \"disk\""), "{spec}");
    assert!(spec.contains("serial = \"xvda1\""), "{spec}");
    assert!(spec.contains("format = \"qcow2\""), "{spec}");
    assert!(spec.contains("00:16:3e:4b:12:7a"), "{spec}");
    assert!(report.contains("vfb"), "{report}");
    assert!(
        !op.ok(&["guest", "list"]).contains("debian-xen"),
        "a dry run defined the guest"
    );

    // The import proper: the disk goes up sparse, the spec is defined.
    let imported = op.run(&["import", "xen", "--upload", &cfg_arg]);
    assert_eq!(imported.status.code(), Some(IMPORT_PARTIAL));
    assert_eq!(op.state("debian-xen"), "Stopped");

    let (console, line) = start_and_wait_for(
        &op,
        &qemu,
        "debian-xen",
        "KEEL-DEBIAN multi-user ",
        GUEST_TIMEOUT,
    );
    // keel-loader found the menu.lst and gave the kernel KVM's names.
    let booting = console.wait_for(&qemu, "keel-loader: booting ", Duration::ZERO);
    assert!(booting.contains("/boot/grub/menu.lst"), "{booting}");
    let root = console.wait_for(&qemu, "root=/dev/xvda1 is root=/dev/vda", Duration::ZERO);
    assert!(root.contains("serial xvda1"), "{root}");
    assert!(line.contains(&format!("kernel={release}")), "{line}");
    assert!(line.contains("root=/dev/vda "), "{line}");
    assert!(line.contains("target=active"), "{line}");
    // A lease over the bridge the vif became.
    assert!(!line.contains("lease=none"), "{line}");
    drop(console);
    // The report powers the guest off; on_reboot/on_crash = destroy keep
    // it down.
    let shown = op.wait_guest(&qemu, "debian-xen", GUEST_TIMEOUT, |s| {
        s["summary"]["state"] == "Stopped"
    });
    assert_eq!(shown["last_exit"], "powered off", "{shown}");

    cloud_image_with_cloud_init(&qemu, &op, &work, ssh_port);
}

/// A fresh ed25519 key pair for ssh at `dir/id`; returns the public key.
fn ssh_key(dir: &Path) -> String {
    let key = dir.join("id");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "keel-test", "-f"])
        .arg(&key));
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Phase 2: the Debian disk as it was built, a cloud image with no boot
/// loader config (keel-loader boots Debian's /vmlinuz links with
/// root=UUID=), and a NoCloud seed from the spec.
fn cloud_image_with_cloud_init(qemu: &Qemu, op: &Operator, work: &Path, ssh_port: u16) {
    let public = ssh_key(work);
    let disk = work.join("cloud.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(artefact("debian/root.img"))
        .arg(&disk));
    op.ok(&["upload", &disk.to_string_lossy(), "disks/cloud.qcow2"]);
    // keel.stay: the image's report unit leaves the guest up to log in to.
    let spec = format!(
        "name = \"cloud\"\nvcpus = 1\nmemory_mib = 512\nrestart = \"never\"\n\n\
         [boot]\nfrom = \"disk\"\ncmdline_append = \"keel.stay\"\n\n\
         [[disk]]\npath = \"disks/cloud.qcow2\"\nformat = \"qcow2\"\n\n\
         [[net]]\nmode = \"user\"\nhostfwd = [\"tcp:0.0.0.0:{GUEST_SSH_PORT}-:22\"]\n\n\
         [cloud_init]\nhostname = \"{CLOUD_HOSTNAME}\"\nssh_authorized_keys = [\"{public}\"]\n"
    );
    let path = work.join("cloud.toml");
    std::fs::write(&path, spec).unwrap();
    op.ok(&["guest", "define", &path.to_string_lossy()]);
    let (console, _) =
        start_and_wait_for(op, qemu, "cloud", "KEEL-DEBIAN multi-user ", GUEST_TIMEOUT);
    // cloud-init's last stage may still be running: ssh until it lets us in.
    let key = work.join("id");
    let deadline = std::time::Instant::now() + GUEST_TIMEOUT;
    let hostname = loop {
        let out = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
                "-i",
            ])
            .arg(&key)
            .args(["-p", &ssh_port.to_string(), "debian@127.0.0.1", "hostname"])
            .output()
            .expect("run ssh (openssh-client; run `make deps`)");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ssh login to the cloud guest: {}; its console:\n{}",
            String::from_utf8_lossy(&out.stderr),
            op.ok(&["logs", "--guest", "cloud", "--tail", "200"])
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    assert_eq!(hostname, CLOUD_HOSTNAME);
    drop(console);
    op.ok(&["guest", "kill", "cloud"]);
}
