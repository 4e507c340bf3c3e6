use super::*;
use crate::testutil::Tree;

const ROOT: &str = "0f1a9c3e-5b7d-4c2a-9e61-3d8b2f4a7c10";
const BOOT: &str = "7c2b9e41-8d3f-4a6b-b1e2-9f0a3c5d7e28";
const DEBIAN12: &str = include_str!("../../fixtures/debian12-grub.cfg");

/// A Debian 12 root filesystem as its packages leave it.
fn debian_root(t: &Tree) {
    t.file("/boot/vmlinuz-6.1.0-18-amd64", &[0x4d; 4096]);
    t.file("/boot/initrd.img-6.1.0-18-amd64", &[1; 1000]);
    t.file("/boot/vmlinuz-6.1.0-13-amd64", &[0x4d; 2048]);
    t.file("/boot/initrd.img-6.1.0-13-amd64", &[1; 10]);
    t.link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
    t.link("/initrd.img", "boot/initrd.img-6.1.0-18-amd64");
    t.text("/etc/fstab", "UUID=... / ext4 defaults 0 1\n");
}

#[test]
fn debian12_disk_boots_grubs_default() {
    let t = Tree::new();
    debian_root(&t);
    t.text("/boot/grub/grub.cfg", DEBIAN12);
    let fs = t.fs();
    let plan = choose(&[Filesystem::new(ROOT, &fs)], None, "").unwrap();
    assert_eq!(plan.title, "Debian GNU/Linux");
    assert_eq!(plan.source.format, Format::Grub2);
    assert_eq!(plan.kernel.path, "/boot/vmlinuz-6.1.0-18-amd64");
    assert_eq!(plan.kernel.size, 4096);
    assert_eq!(plan.kernel.fs_uuid, ROOT);
    assert_eq!(
        plan.kernel.host_path,
        Some(t.path("/boot/vmlinuz-6.1.0-18-amd64"))
    );
    assert_eq!(plan.initrds.len(), 1);
    assert_eq!(plan.initrds[0].size, 1000);
    assert_eq!(
        plan.cmdline,
        format!("root=UUID={ROOT} ro quiet console=ttyS0")
    );
    assert!(!plan.uki);
}

#[test]
fn entries_are_picked_by_id_title_or_path_and_append_goes_last() {
    let t = Tree::new();
    debian_root(&t);
    t.text("/boot/grub/grub.cfg", DEBIAN12);
    let fs = t.fs();
    let disks = [Filesystem::new(ROOT, &fs)];
    for wanted in [
        "1>2".to_string(),
        format!("gnulinux-6.1.0-13-amd64-advanced-{ROOT}"),
        "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-13-amd64"
            .to_string(),
    ] {
        let plan = choose(&disks, Some(&wanted), "loglevel=7 console=hvc0").unwrap();
        assert_eq!(plan.kernel.path, "/boot/vmlinuz-6.1.0-13-amd64", "{wanted}");
        // The append names a console: none is added.
        assert_eq!(
            plan.cmdline,
            format!("root=UUID={ROOT} ro quiet loglevel=7 console=hvc0")
        );
    }
    let err = choose(&disks, Some("Windows"), "").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("entry \"Windows\" not found in /boot/grub/grub.cfg; entries are:\n  0 \"Debian GNU/Linux\" (id gnulinux-simple-"), "{msg}");
    assert!(
        msg.contains("\n  2 \"UEFI Firmware Settings\" (id uefi-firmware)"),
        "{msg}"
    );
    let err = choose(&disks, Some("uefi-firmware"), "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"UEFI Firmware Settings\" (/boot/grub/grub.cfg line 204) cannot be booted: it enters the firmware setup"
    );
}

#[test]
fn separate_boot_partition_with_grub() {
    let root = Tree::new();
    root.link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
    root.dir("/boot");
    let boot = Tree::new();
    boot.file("/vmlinuz-6.1.0-18-amd64", b"kernel");
    boot.file("/initrd.img-6.1.0-18-amd64", b"initrd");
    // update-grub on a separate /boot writes paths without the /boot prefix.
    boot.text(
        "/grub/grub.cfg",
        &format!("menuentry 'Debian GNU/Linux' {{\n search --no-floppy --fs-uuid --set=root {}\n linux /vmlinuz-6.1.0-18-amd64 root=UUID={ROOT} ro quiet\n initrd /initrd.img-6.1.0-18-amd64\n}}\n", BOOT.to_uppercase()),
    );
    let (rfs, bfs) = (root.fs(), boot.fs());
    let plan = choose(
        &[Filesystem::new(ROOT, &rfs), Filesystem::new(BOOT, &bfs)],
        None,
        "",
    )
    .unwrap();
    assert_eq!(plan.kernel.fs_uuid, BOOT);
    assert_eq!(plan.kernel.path, "/vmlinuz-6.1.0-18-amd64");
    assert_eq!(plan.initrds[0].fs_uuid, BOOT);
}

#[test]
fn debian_links_alone_compose_root_even_across_a_boot_partition() {
    let root = Tree::new();
    root.link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
    root.link("/initrd.img", "boot/initrd.img-6.1.0-18-amd64");
    root.dir("/boot");
    let boot = Tree::new();
    boot.file("/vmlinuz-6.1.0-18-amd64", b"kernel");
    boot.file("/initrd.img-6.1.0-18-amd64", b"initrd");
    let (rfs, bfs) = (root.fs(), boot.fs());
    let plan = choose(
        &[Filesystem::new(BOOT, &bfs), Filesystem::new(ROOT, &rfs)],
        None,
        "net.ifnames=0",
    )
    .unwrap();
    assert_eq!(plan.source.format, Format::DebianLinks);
    assert_eq!(plan.kernel.fs_uuid, BOOT);
    assert_eq!(plan.kernel.path, "/vmlinuz-6.1.0-18-amd64");
    assert_eq!(
        plan.cmdline,
        format!("root=UUID={ROOT} ro console=ttyS0 net.ifnames=0")
    );

    let t = Tree::new();
    debian_root(&t);
    let fs = t.fs();
    let err = choose(&[Filesystem::new("", &fs)], None, "").unwrap_err();
    assert!(err.to_string().contains("needs root=UUID="), "{err}");
}

#[test]
fn priority_order_bls_then_grub_then_links() {
    let t = Tree::new();
    debian_root(&t);
    t.text("/boot/grub/grub.cfg", DEBIAN12);
    let fs = t.fs();
    let disks = [Filesystem::new(ROOT, &fs)];
    assert_eq!(
        choose(&disks, None, "").unwrap().source.format,
        Format::Grub2
    );
    t.text(
        "/boot/loader/entries/x.conf",
        "title BLS\nlinux /boot/vmlinuz-6.1.0-13-amd64\noptions root=/dev/vda1 console=ttyS1\n",
    );
    let plan = choose(&disks, None, "").unwrap();
    assert_eq!(plan.source.format, Format::Bls);
    assert_eq!(plan.cmdline, "root=/dev/vda1 console=ttyS1");
    assert!(plan.initrds.is_empty());
    // An entry that only a lower-priority format has is not looked for there.
    assert!(matches!(
        choose(&disks, Some("1>2"), ""),
        Err(ChooseError::EntryNotFound { .. })
    ));
}

#[test]
fn a_broken_config_falls_back_and_is_reported_when_nothing_else_works() {
    let t = Tree::new();
    debian_root(&t);
    t.text(
        "/boot/grub/grub.cfg",
        "source /boot/grub/grub.cfg\nmenuentry a { linux /a }\n",
    );
    let fs = t.fs();
    let disks = [Filesystem::new(ROOT, &fs)];
    assert_eq!(
        choose(&disks, None, "").unwrap().source.format,
        Format::DebianLinks
    );

    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", "source /boot/grub/grub.cfg\n");
    let fs = t.fs();
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no boot entry found: looked for /loader/entries/*.conf, /boot/loader/entries/*.conf, /boot/grub/grub.cfg,"), "{err}");
    assert!(err.contains(&format!(" on UUID={ROOT}; problems seen:\n  UUID={ROOT}: /boot/grub/grub.cfg line 1: the include of /boot/grub/grub.cfg makes a loop")), "{err}");
}

#[test]
fn nothing_at_all() {
    let t = Tree::new();
    t.dir("/etc");
    let fs = t.fs();
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/vmlinuz, /boot/vmlinuz, /EFI/Linux/*.efi"),
        "{err}"
    );
    assert!(!err.contains("problems"), "{err}");
    assert!(matches!(
        choose(&[], None, ""),
        Err(ChooseError::NoFilesystems)
    ));
}

#[test]
fn missing_and_escaping_kernels_are_clear_errors() {
    let t = Tree::new();
    t.text(
        "/boot/grub/grub.cfg",
        "\nmenuentry 'Gone' {\n linux /boot/vmlinuz-gone ro\n}\n",
    );
    let fs = t.fs();
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, "").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("entry \"Gone\" (/boot/grub/grub.cfg line 2) names kernel /boot/vmlinuz-gone, which is on none of the filesystems (UUID={ROOT})")
    );

    let t = Tree::new();
    t.text(
        "/boot/grub/grub.cfg",
        "menuentry 'Evil' {\n linux /boot/vmlinuz\n initrd /boot/initrd\n}\n",
    );
    t.file("/boot/vmlinuz-real", b"k");
    t.link("/boot/vmlinuz", "vmlinuz-real");
    t.link("/boot/initrd", "../../../etc/shadow");
    let fs = t.fs();
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("entry \"Evil\" (/boot/grub/grub.cfg line 1) names initrd /boot/initrd, which cannot be used:"), "{err}");
    assert!(err.contains("outside the filesystem"), "{err}");

    t.file("/boot/vmlinuz-real", b"");
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("names kernel /boot/vmlinuz, which cannot be used: it is empty"),
        "{err}"
    );
}

#[test]
fn ukis_are_the_last_resort_and_flagged() {
    let t = Tree::new();
    t.file("/EFI/Linux/debian-6.1.0-18-amd64.efi", b"MZ....");
    let fs = t.fs();
    let plan = choose(&[Filesystem::new("1234-ABCD", &fs)], None, "quiet").unwrap();
    assert!(plan.uki);
    assert_eq!(plan.kernel.path, "/EFI/Linux/debian-6.1.0-18-amd64.efi");
    assert_eq!(plan.cmdline, "console=ttyS0 quiet");
}

#[test]
fn overlong_command_lines_are_refused() {
    let t = Tree::new();
    debian_root(&t);
    let fs = t.fs();
    let err = choose(&[Filesystem::new(ROOT, &fs)], None, &"x".repeat(3000)).unwrap_err();
    assert!(
        matches!(err, ChooseError::CmdlineTooLong { max: 2047, .. }),
        "{err}"
    );
}

#[test]
fn menu_lst_and_extlinux_through_the_chooser() {
    let boot = Tree::new();
    boot.text(
        "/grub/menu.lst",
        "default 0\ntitle CentOS (2.6.18-8.el5xen)\n root (hd0,0)\n kernel /vmlinuz-2.6.18-xen ro root=/dev/VolGroup00/LogVol00\n initrd /initrd-2.6.18-8.el5xen.img\n",
    );
    boot.file("/vmlinuz-2.6.18-xen", b"k");
    boot.file("/initrd-2.6.18-8.el5xen.img", b"i");
    let fs = boot.fs();
    let plan = choose(&[Filesystem::new(BOOT, &fs)], None, "").unwrap();
    assert_eq!(
        plan.cmdline,
        "ro root=/dev/VolGroup00/LogVol00 console=ttyS0"
    );
    assert_eq!(plan.initrds[0].path, "/initrd-2.6.18-8.el5xen.img");

    let t = Tree::new();
    t.text("/boot/extlinux/extlinux.conf", "DEFAULT linux\nLABEL linux\n KERNEL /boot/vmlinuz\n APPEND initrd=/boot/initrd root=/dev/vda1\n");
    t.file("/boot/vmlinuz", b"k");
    t.file("/boot/initrd", b"i");
    let fs = t.fs();
    let plan = choose(&[Filesystem::new(ROOT, &fs)], None, "").unwrap();
    assert_eq!(plan.source.format, Format::Extlinux);
    assert_eq!(plan.initrds[0].path, "/boot/initrd");
    assert_eq!(plan.cmdline, "root=/dev/vda1 console=ttyS0");
}
