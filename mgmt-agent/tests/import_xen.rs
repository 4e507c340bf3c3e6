//! `keelctl import xen` over the corpus in `tests/import_xen/`: each good
//! config next to the spec it must give, byte for byte, and the report
//! lines it must print; the bad ones with the error they must fail with;
//! then the keelctl binary itself on the same files.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_common::guest::{GuestSpec, RestartPolicy};
use keel_mgmt::client::exit;
use keel_mgmt::client::import_xen::{self, GuestFile, Import, Options};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import_xen")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(corpus().join(name)).unwrap()
}

fn imported(cfg: &str, options: &Options) -> Import {
    import_xen::import(cfg, &read(cfg), options).unwrap_or_else(|e| panic!("{e}"))
}

const FROM_DISK: &str =
    "keel-loader inside the guest boots what its disks' boot configuration names";

const HVM: &str = "hvm: the guest boots from its disks (from = \"disk\"): keel-loader boots the \
                   Linux kernel their boot configuration names, so only a Linux guest moves this way";

/// A good config: its exit status and every line of its report.
struct Case {
    cfg: &'static str,
    exit: i32,
    report: Vec<String>,
}

fn cases() -> Vec<Case> {
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Case {
            cfg: "pv-pygrub.cfg",
            exit: exit::OK,
            report: vec![
                "pv-pygrub.cfg:3: uuid: kept in a comment at the top of the spec; the guest does not see it".into(),
                format!("pv-pygrub.cfg:9: bootloader: pygrub: replaced by from = \"disk\": {FROM_DISK}, and the host never reads the disks"),
                "pv-pygrub.cfg:13: disk[0]: xvda: the block device /dev/vg0/web1-root becomes an image file on the Keel host".into(),
            ],
        },
        Case {
            cfg: "pv-kernel.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: lines(&[
                "pv-kernel.cfg:5: maxmem: not mapped: 4096 MiB: Keel has no memory ballooning; the guest has memory, 2048 MiB",
                "pv-kernel.cfg:7: maxvcpus: not mapped: 4: Keel has no vCPU hotplug; the guest has vcpus, 2",
                "pv-kernel.cfg:8: cpus: not mapped: Keel does not pin vCPUs to host CPUs",
                "pv-kernel.cfg:9: cpu_weight: not mapped: Keel has no per-guest CPU weight",
                "pv-kernel.cfg:14: root: /dev/xvda1 is /dev/vda under Keel (the disk xvda1)",
                "pv-kernel.cfg:15: extra: console=hvc0 is console=ttyS0: Keel's console is the serial port",
                "pv-kernel.cfg:15: extra: xencons=tty dropped: Xen's console only",
                "pv-kernel.cfg:15: extra: /dev/xvda2 is /dev/vdb under Keel (the disk xvda2)",
                "pv-kernel.cfg:17: disk[0]: xvda2: the block device /dev/vg0/db1-swap becomes an image file on the Keel host",
                "pv-kernel.cfg:17: disk[1]: xvda1: the block device /dev/vg0/db1-root becomes an image file on the Keel host",
                "pv-kernel.cfg:18: vif[0]: not mapped: ip=192.0.2.11: Keel does not filter a guest's traffic by IP address",
                "pv-kernel.cfg:18: vif[0]: not mapped: vifname=db1-eth0: Keel names the guest's taps itself",
                "pv-kernel.cfg:19: on_crash: not mapped: coredump-restart: Keel writes no core dump; it starts the guest again",
            ]),
        },
        Case {
            cfg: "xm-python.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: lines(&[
                "xm-python.cfg:3: kernel: console=ttyS0 added to the command line: Keel's console is the serial port",
                "xm-python.cfg:9: disk[0]: sda1: the block device /dev/vg0/mail-disk becomes an image file on the Keel host",
                "xm-python.cfg:10: disk[1]: sda2: the block device /dev/vg0/mail-swap becomes an image file on the Keel host",
                "xm-python.cfg:13: root: /dev/sda1 is /dev/vda under Keel (the disk sda1)",
                "xm-python.cfg:14: extra: xencons=tty dropped: Xen's console only",
                "xm-python.cfg:16: ip: not mapped: xm turned it into the kernel's ip= argument; write ip= into extra (or configure the guest's network itself)",
                "xm-python.cfg:17: on_xend_start: start: autostart = true, Keel starts the guest when the host boots",
                "xm-python.cfg:20: memory: given again: replaces the value on line 5, as Xen does",
            ]),
        },
        Case {
            cfg: "hvm.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: {
                let display = "Keel guests have no display, keyboard or mouse; use the serial console (keelctl guest console)";
                vec![
                    format!("hvm.cfg:3: builder: {HVM}"),
                    format!("hvm.cfg:4: kernel: /usr/lib/xen/boot/hvmloader: Xen's HVM firmware; {FROM_DISK} (from = \"disk\")"),
                    "hvm.cfg:5: device_model: not mapped: Keel has no device model (QEMU): keel-vmm's own devices serve the guest".into(),
                    "hvm.cfg:11: viridian: not mapped: Keel has no Hyper-V enlightenments (viridian)".into(),
                    "hvm.cfg:13: disk[0]: hda: the block device /dev/vg0/win-build becomes an image file on the Keel host".into(),
                    "hvm.cfg:14: vif[0]: not mapped: model=e1000: the guest gets a virtio-net NIC, so it needs the virtio_net driver".into(),
                    format!("hvm.cfg:15: vnc: not mapped: {display}"),
                    format!("hvm.cfg:16: vnclisten: not mapped: {display}"),
                    format!("hvm.cfg:19: videoram: not mapped: {display}"),
                    "hvm.cfg:21: usb: not mapped: Keel gives guests no USB".into(),
                    "hvm.cfg:22: usbdevice: not mapped: Keel gives guests no USB".into(),
                    "hvm.cfg:23: soundhw: not mapped: Keel gives guests no sound".into(),
                    "hvm.cfg:24: localtime: not mapped: a Keel guest's clock is UTC".into(),
                    "hvm.cfg:27: on_crash: not mapped: preserve: under restart = \"on-failure\", when the guest crashes Keel starts it again".into(),
                ]
            },
        },
        Case {
            cfg: "kv-disks.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: lines(&[
                "kv-disks.cfg:7: cmdline: /dev/xvda2 is /dev/vda2 under Keel (the disk xvda)",
                "kv-disks.cfg:7: cmdline: console=hvc0 is console=ttyS0: Keel's console is the serial port",
                "kv-disks.cfg:8: root: ignored, as xl does: cmdline is set",
                "kv-disks.cfg:13: disk[3]: backendtype=qdisk: Keel serves the disk with its own virtio-blk",
                "kv-disks.cfg:13: disk[3]: not mapped: discard: Keel's virtio-blk does not pass discards (TRIM) on",
            ]),
        },
        Case {
            cfg: "qcow2.cfg",
            exit: exit::OK,
            report: vec![format!(
                "qcow2.cfg:4: kernel: /usr/lib/xen/boot/pv-grub-x86_64.gz is pvgrub: replaced by from = \"disk\": {FROM_DISK}"
            )],
        },
        Case {
            cfg: "cdrom.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: vec![
                format!("cdrom.cfg:3: type: {HVM}"),
                "cdrom.cfg:7: disk[0]: not mapped: hdc: an empty CD-ROM drive; Keel has no removable media".into(),
                "cdrom.cfg:9: disk[2]: hda: the block device /dev/vg0/inst becomes an image file on the Keel host".into(),
                "cdrom.cfg:12: boot: not mapped: Keel boots the guest from its disks (keel-loader), never from a CD-ROM or the network first".into(),
            ],
        },
        Case {
            cfg: "vif-variants.cfg",
            exit: exit::IMPORT_PARTIAL,
            report: {
                let mut v = vec![
                    format!("vif-variants.cfg:4: bootloader: /usr/lib/xen-4.17/bin/pygrub: replaced by from = \"disk\": {FROM_DISK}, and the host never reads the disks"),
                ];
                v.extend(lines(&[
                    "vif-variants.cfg:5: bootloader_args: -q: not needed: keel-loader asks nothing",
                    "vif-variants.cfg:6: extra: console=hvc0 is console=ttyS0: Keel's console is the serial port",
                    "vif-variants.cfg:7: disk[0]: xvda: the block device /dev/vg0/gw becomes an image file on the Keel host",
                    "vif-variants.cfg:10: vif[1]: not mapped: bridge=xenbr1: Keel has one host bridge; the NIC is joined to the host bridge",
                    "vif-variants.cfg:11: vif[2]: not mapped: script=vif-route: Keel runs no vif scripts; the NIC is joined to the host bridge",
                    "vif-variants.cfg:11: vif[2]: not mapped: ip=10.1.0.2: Keel does not filter a guest's traffic by IP address",
                    "vif-variants.cfg:12: vif[3]: not mapped: mac=01:00:5e:00:00:01: not a unicast address; Keel picks one",
                    "vif-variants.cfg:13: vif[4]: not mapped: mac=00:16:3e:00:00:02: already the MAC of vif[2]; Keel picks one",
                    "vif-variants.cfg:14: vif[5]: not mapped: vifname=gw-ext: Keel names the guest's taps itself",
                    "vif-variants.cfg:14: vif[5]: not mapped: rate=10Mb/s: Keel does not limit a NIC's rate",
                    "vif-variants.cfg:14: vif[5]: not mapped: model=rtl8139: the guest gets a virtio-net NIC, so it needs the virtio_net driver",
                    "vif-variants.cfg:15: vif[6]: not mapped: backend=netdom: Keel has no driver domains; the host serves the NIC",
                    "vif-variants.cfg:19: on_crash: not mapped: rename-restart: Keel keeps no renamed copy of the guest that ended; it starts the guest again",
                ]));
                v
            },
        },
    ]
}

#[test]
fn every_good_config_gives_its_spec_and_report_exactly() {
    for case in cases() {
        let import = imported(case.cfg, &Options::default());
        let expected = read(&case.cfg.replace(".cfg", ".toml"));
        assert_eq!(import.spec_toml, expected, "{}", case.cfg);
        // The expected spec is one the host takes, and it is the spec.
        let parsed = GuestSpec::parse(Path::new("x.toml"), &expected).unwrap();
        assert_eq!(parsed, import.spec, "{}", case.cfg);
        assert_eq!(import.report_lines(case.cfg), case.report, "{}", case.cfg);
        assert_eq!(import.exit_code(), case.exit, "{}", case.cfg);
    }
}

#[test]
fn every_config_of_the_corpus_is_checked() {
    let mut cfgs: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    cfgs.sort();
    let mut known: Vec<String> = cases().iter().map(|c| c.cfg.to_string()).collect();
    known.extend(bad_cases().iter().map(|(cfg, _)| cfg.to_string()));
    known.sort();
    assert_eq!(cfgs, known);
    // Each good one has its spec, and no spec is left over.
    let tomls = std::fs::read_dir(corpus())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("toml".as_ref()))
        .count();
    assert_eq!(tomls, cases().len());
}

#[test]
fn summaries_count_what_the_report_says() {
    let summary = |cfg: &str| imported(cfg, &Options::default()).summary(cfg);
    assert_eq!(
        summary("pv-pygrub.cfg"),
        "pv-pygrub.cfg: imported Xen domain web1 as guest web1: complete, 3 changes"
    );
    assert_eq!(
        summary("qcow2.cfg"),
        "qcow2.cfg: imported Xen domain build as guest build: complete, 1 change"
    );
    assert_eq!(
        summary("pv-kernel.cfg"),
        "pv-kernel.cfg: imported Xen domain db1 as guest db1: partial: 7 not mapped, 6 changes"
    );
}

#[test]
fn files_to_upload_are_the_disks_then_the_kernel_and_ramdisk() {
    let import = imported("pv-kernel.cfg", &Options::default());
    let file = |source: &str, remote: &str, block_device: bool| GuestFile {
        source: source.into(),
        remote: remote.into(),
        block_device,
    };
    assert_eq!(
        import.files,
        [
            file("/dev/vg0/db1-root", "disks/db1-xvda1.img", true),
            file("/dev/vg0/db1-swap", "disks/db1-xvda2.img", true),
            file("/boot/vmlinuz-6.1.0-18-amd64", "images/db1-vmlinuz", false),
            file(
                "/boot/initrd.img-6.1.0-18-amd64",
                "images/db1-initrd",
                false
            ),
        ]
    );
    // The target= of a key=value disk keeps its comma; the empty CD-ROM
    // drive has no file.
    let kv = imported("kv-disks.cfg", &Options::default());
    assert_eq!(
        kv.files[1].source,
        Path::new("/srv/xen/app/data,2024.qcow2")
    );
    assert_eq!(kv.files[1].remote, "disks/app-xvdb.qcow2");
    assert_eq!(imported("cdrom.cfg", &Options::default()).files.len(), 3);
    // A disk-booted guest needs its disks only.
    assert_eq!(
        imported("pv-pygrub.cfg", &Options::default()).files.len(),
        2
    );
}

#[test]
fn restart_policies_follow_the_configs_actions() {
    let restart = |cfg: &str| imported(cfg, &Options::default()).spec.restart();
    assert_eq!(restart("pv-pygrub.cfg"), RestartPolicy::OnFailure);
    assert_eq!(restart("vif-variants.cfg"), RestartPolicy::Always);
    assert_eq!(restart("cdrom.cfg"), RestartPolicy::Never);
}

#[test]
fn name_replaces_the_domains_and_cloud_init_takes_its_uuid() {
    let options = Options {
        name: Some("web-new".into()),
        cloud_init: true,
    };
    let import = imported("pv-pygrub.cfg", &options);
    assert_eq!(import.spec.name, "web-new");
    assert_eq!(import.files[0].remote, "disks/web-new-xvda.img");
    let seed = import.spec.cloud_init.as_ref().unwrap();
    assert_eq!(
        seed.instance_id.as_deref(),
        Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    );
    assert_eq!(seed.hostname, None);
    assert!(import.spec_toml.starts_with(
        "# Imported from Xen domain web1, uuid 3f2504e0-4f89-11d3-9a0c-0305e82c3301\nname = \"web-new\"\n"
    ));
    assert!(import
        .spec_toml
        .ends_with("\n[cloud_init]\ninstance_id = \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"\n"));
    let lines = import.report_lines("pv-pygrub.cfg");
    assert_eq!(
        lines[0],
        "pv-pygrub.cfg:2: name: the guest is named web-new (--name), not \"web1\""
    );
    assert_eq!(
        lines[1],
        "pv-pygrub.cfg:3: uuid: the cloud-init instance id, and a comment at the top of the spec"
    );
    assert_eq!(import.exit_code(), exit::OK);

    // Without a uuid the seed is the default one: an empty table.
    let import = imported(
        "qcow2.cfg",
        &Options {
            name: None,
            cloud_init: true,
        },
    );
    assert!(
        import.spec_toml.ends_with("\n[cloud_init]\n"),
        "{}",
        import.spec_toml
    );
    assert_eq!(import.spec.cloud_init, Some(Default::default()));

    // --name makes a config without a (valid) name importable.
    for cfg in ["bad-no-name.cfg", "bad-name.cfg"] {
        let options = Options {
            name: Some("fixed".into()),
            cloud_init: false,
        };
        assert_eq!(imported(cfg, &options).spec.name, "fixed");
    }
    let bad = import_xen::import(
        "pv-pygrub.cfg",
        &read("pv-pygrub.cfg"),
        &Options {
            name: Some("Not_Valid".into()),
            cloud_init: false,
        },
    )
    .unwrap_err();
    assert!(
        bad.0
            .starts_with("pv-pygrub.cfg: --name Not_Valid: character 'N'"),
        "{bad}"
    );
}

fn bad_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        ("bad-unterminated-string.cfg", "bad-unterminated-string.cfg:4: unterminated string"),
        (
            "bad-unbalanced-list.cfg",
            "bad-unbalanced-list.cfg:3: unterminated list: the `[` of `disk` has no `]` before `vif =` on line 6",
        ),
        (
            "bad-python-expression.cfg",
            "bad-python-expression.cfg:3: `*` after the value of `memory`: only KEY = VALUE is read, not a Python expression; write the value itself",
        ),
        (
            "bad-python-import.cfg",
            "bad-python-import.cfg:1: `import` is Python code, not a setting: only KEY = VALUE lines are read, and nothing in the config is run",
        ),
        ("bad-line.cfg", "bad-line.cfg:2: expected `=` after `memory`, found `:`"),
        ("bad-no-name.cfg", "bad-no-name.cfg: the config has no `name`; name the guest with --name"),
        (
            "bad-name.cfg",
            "bad-name.cfg:1: name: \"Web_1\" is not a Keel guest name: character 'W' is not allowed (use lowercase letters, digits and hyphens); choose one with --name (e.g. --name web-1)",
        ),
        (
            "bad-nothing-to-boot.cfg",
            "bad-nothing-to-boot.cfg: the config gives the guest no disk it can boot from and no kernel: there is nothing to boot",
        ),
    ]
}

#[test]
fn bad_configs_fail_naming_the_file_and_line() {
    for (cfg, message) in bad_cases() {
        let failed = import_xen::import(cfg, &read(cfg), &Options::default()).unwrap_err();
        assert_eq!(failed.0, message);
    }
}

#[test]
fn bootloader_args_as_a_string_are_split_at_spaces_as_xl_does() {
    let text = "name = 'a'\nbootloader = 'pygrub'\nbootloader_args = '-q  --entry=2 --args=\"quiet console=hvc0\" --kernel=/boot/vmlinuz'\ndisk = ['phy:/dev/vg/a,xvda,w']\n";
    let import = import_xen::import("a.cfg", text, &Options::default()).unwrap();
    assert_eq!(import.spec.boot.entry.as_deref(), Some("2"));
    // xl splits at every space, quotes or not: pygrub would get the same
    // pieces.
    let lines = import.report_lines("a.cfg");
    assert!(
        lines.contains(&"a.cfg:3: bootloader_args: not mapped: --kernel=/boot/vmlinuz: keel-loader boots a boot entry's files; choose the entry with --entry".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"a.cfg:3: bootloader_args: not mapped: console=hvc0\": unknown to Keel".to_string()
        ),
        "{lines:#?}"
    );
    assert_eq!(import.spec.boot.cmdline_append.as_deref(), Some("\"quiet"));
}

// ---- the keelctl binary ----

/// Runs keelctl with a config home of its own, so no host is reachable.
fn keelctl(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("keel-import-xen-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_keelctl"))
        .args(args)
        .env("XDG_CONFIG_HOME", &home)
        .env_remove("KEEL_HOST")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn keelctl_prints_the_spec_on_stdout_and_the_report_on_stderr() {
    for case in cases() {
        let path = corpus().join(case.cfg);
        let shown = path.display().to_string();
        let out = keelctl(&["import", "xen", &shown]);
        assert_eq!(out.status.code(), Some(case.exit), "{}: {out:?}", case.cfg);
        assert_eq!(text(&out.stdout), read(&case.cfg.replace(".cfg", ".toml")));
        let mut expected: Vec<String> = case
            .report
            .iter()
            .map(|l| l.replacen(case.cfg, &shown, 1))
            .collect();
        let import = imported(case.cfg, &Options::default());
        expected.push(import.summary(&shown));
        // Then what to upload, since the dry run uploads nothing.
        for file in &import.files {
            expected.push(format!(
                "keelctl: the guest needs {} as {} on the host (--upload copies it)",
                file.source.display(),
                file.remote
            ));
        }
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{}", case.cfg);
    }
}

#[test]
fn keelctl_exit_codes_for_failed_imports() {
    for (cfg, message) in bad_cases() {
        let path = corpus().join(cfg);
        let out = keelctl(&["import", "xen", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(exit::IMPORT_FAILED), "{cfg}");
        assert_eq!(out.stdout, b"");
        let shown = message.replacen(cfg, path.to_str().unwrap(), 1);
        assert_eq!(text(&out.stderr), format!("keelctl: {shown}\n"));
    }
    // An unreadable file fails the same way.
    let missing = corpus().join("no-such-domain.cfg");
    let out = keelctl(&["import", "xen", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(exit::IMPORT_FAILED));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("keelctl: Cannot read {}: ", missing.display())),
        "{stderr}"
    );
    // --name and --cloud-init reach the import.
    let out = keelctl(&[
        "import",
        "xen",
        corpus().join("pv-pygrub.cfg").to_str().unwrap(),
        "--name",
        "other",
        "--cloud-init",
    ]);
    assert_eq!(out.status.code(), Some(exit::OK));
    assert!(text(&out.stdout).contains("name = \"other\"\n"));
    assert!(text(&out.stdout).contains("\n[cloud_init]\ninstance_id = "));
    // With no key on this workstation, --define fails locally after the
    // report, with keelctl's usual code; the spec is still printed.
    let out = keelctl(&[
        "--host",
        "127.0.0.1:1",
        "import",
        "xen",
        corpus().join("qcow2.cfg").to_str().unwrap(),
        "--define",
    ]);
    assert_eq!(out.status.code(), Some(exit::LOCAL), "{out:?}");
    assert_eq!(text(&out.stdout), read("qcow2.toml"));
}

/// Imports an inline config named `t.cfg`; its report lines without the
/// file name.
fn inline(text: &str) -> (Import, Vec<String>) {
    let import = import_xen::import("t.cfg", text, &Options::default())
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let lines = import
        .report_lines("t.cfg")
        .into_iter()
        .map(|l| l.trim_start_matches("t.cfg").to_string())
        .collect();
    (import, lines)
}

const DISK: &str = "disk = ['phy:/dev/vg/a,xvda,w']\n";

#[test]
fn defaults_fill_in_what_the_config_leaves_out() {
    let (import, lines) = inline(&format!("name = 'a'\n{DISK}"));
    assert_eq!(import.spec.memory_mib, 128);
    assert_eq!(import.spec.vcpus, 1);
    assert_eq!(
        import.spec.boot.from,
        Some(keel_common::guest::BootFrom::Disk)
    );
    assert_eq!(
        lines,
        [
            ":2: disk[0]: xvda: the block device /dev/vg/a becomes an image file on the Keel host"
                .to_string(),
            ": memory: not set: the guest has 128 MiB".to_string(),
            format!(
                ": kernel: neither kernel nor bootloader is set: {FROM_DISK} (from = \"disk\")"
            ),
        ]
    );
    // maxmem alone is the memory; maxvcpus alone brings every vCPU up.
    let (import, lines) = inline(&format!("name = 'a'\nmaxmem = 300\nmaxvcpus = 3\n{DISK}"));
    assert_eq!((import.spec.memory_mib, import.spec.vcpus), (300, 3));
    assert_eq!(
        lines[0],
        ":2: maxmem: memory is not set: the guest has maxmem, 300 MiB"
    );
    // A string holding a number is a number, as in xl.
    let (import, _) = inline(&format!(
        "name = 'a'\nmemory = '512'\nvcpus = \"2\"\n{DISK}"
    ));
    assert_eq!((import.spec.memory_mib, import.spec.vcpus), (512, 2));
}

#[test]
fn sizes_keel_cannot_give_fail_the_import() {
    for (line, why) in [
        (
            "memory = 8",
            "t.cfg:2: memory: 8 MiB is not what a Keel guest can have (16 MiB to 1 TiB)",
        ),
        (
            "memory = 'lots'",
            "t.cfg:2: memory: \"lots\" is not a number of MiB",
        ),
        (
            "vcpus = 0",
            "t.cfg:2: vcpus: 0 is not what a Keel guest can have (1 to 64)",
        ),
        (
            "vcpus = 65",
            "t.cfg:2: vcpus: 65 is not what a Keel guest can have (1 to 64)",
        ),
        ("name2 = 1\nname = 5", "t.cfg:3: name: 5 is not a string"),
    ] {
        let text = format!("name = 'a'\n{line}\n{DISK}");
        let failed = import_xen::import("t.cfg", &text, &Options::default()).unwrap_err();
        assert_eq!(failed.0, why, "{line}");
    }
}

#[test]
fn unknown_and_unmappable_keys_are_listed_and_keel_defaults_are_not() {
    let (import, lines) = inline(&format!(
        "name = 'a'\n{DISK}bootloader = 'pygrub'\nfrobnicate = 1\nvfb = ['vnc=1']\npci = ['01:00.0']\n\
         vtpm = ['backend=0']\nacpi = 0\nhap = 1\nnographic = 1\nusb = 0\ncap = 0\non_watchdog = 'destroy'\n\
         on_soft_reset = 'soft-reset'\non_xend_stop = 'suspend'\nseclabel = 'x'\nchannel = ['name=a']\n"
    ));
    assert_eq!(import.exit_code(), exit::IMPORT_PARTIAL);
    let not_mapped: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(": not mapped: "))
        .map(|l| l.as_str())
        .collect();
    assert_eq!(
        not_mapped,
        [
            ":4: frobnicate: not mapped: unknown to Keel",
            ":5: vfb: not mapped: Keel guests have no display, keyboard or mouse; use the serial console (keelctl guest console)",
            ":6: pci: not mapped: Keel does not pass host devices through to guests",
            ":7: vtpm: not mapped: Keel gives guests no TPM",
            ":8: acpi: not mapped: Keel guests always have ACPI",
            ":13: on_watchdog: not mapped: Keel gives guests no Xen watchdog",
            ":15: on_xend_stop: not mapped: suspend: Keel shuts its guests down when the host stops",
            ":16: seclabel: not mapped: a Xen hypervisor setting; Keel (KVM) has no counterpart",
            ":17: channel: not mapped: Keel has no Xen channels; virtio-vsock ([vsock]) is the nearest",
        ]
    );
}

#[test]
fn pvgrub_arguments_are_pvgrubs_and_firmware_pvgrub_is_pvgrub_too() {
    let (import, lines) = inline(&format!(
        "name = 'a'\n{DISK}kernel = '/usr/lib/grub-xen/grub-x86_64-xen.bin'\nextra = '(hd0,0)/boot/grub/menu.lst'\n"
    ));
    assert_eq!(import.spec.boot.cmdline_append, None);
    assert_eq!(import.files.len(), 1, "pvgrub itself is not uploaded");
    assert_eq!(
        lines[2],
        ":4: extra: not mapped: pvgrub's own arguments (such as the menu.lst to read); keel-loader finds the boot configuration itself"
    );
    let (import, lines) = inline(&format!("name = 'a'\n{DISK}firmware = 'pvgrub64'\n"));
    assert_eq!(
        import.spec.boot.from,
        Some(keel_common::guest::BootFrom::Disk)
    );
    assert_eq!(
        lines[1],
        format!(":3: firmware: pvgrub64 is pvgrub: replaced by from = \"disk\": {FROM_DISK}")
    );
    assert_eq!(import.exit_code(), exit::OK);
}

#[test]
fn pygrub_passes_root_and_extra_on_and_refuses_a_kernel_path() {
    let (import, lines) = inline(&format!(
        "name = 'a'\n{DISK}bootloader = 'pygrub'\nkernel = '/boot/vmlinuz'\nroot = '/dev/xvda1 ro'\nextra = 'console=hvc0'\n"
    ));
    // xl hands root and extra to pygrub, which appends them.
    assert_eq!(
        import.spec.boot.cmdline_append.as_deref(),
        Some("root=/dev/vda1 ro console=ttyS0")
    );
    assert_eq!(import.files.len(), 1, "the kernel is in the guest's disk");
    assert!(
        lines[2].starts_with(":4: kernel: not mapped: /boot/vmlinuz: a file pygrub took"),
        "{lines:#?}"
    );
    // pygrub's --args are the entry's too, with Keel's device names.
    let (import, _) = inline(&format!(
        "name = 'a'\n{DISK}bootloader = 'pygrub'\nbootloader_args = ['--args', 'resume=/dev/xvda2', '-i']\n"
    ));
    assert_eq!(
        import.spec.boot.cmdline_append.as_deref(),
        Some("resume=/dev/vda2")
    );
    assert_eq!(import.exit_code(), exit::OK);
    // Another bootloader is replaced too, but reported.
    let (import, lines) = inline(&format!(
        "name = 'a'\n{DISK}bootloader = '/usr/bin/pypxeboot'\n"
    ));
    assert_eq!(
        import.spec.boot.from,
        Some(keel_common::guest::BootFrom::Disk)
    );
    assert!(
        lines[1].starts_with(
            ":3: bootloader: not mapped: /usr/bin/pypxeboot: Keel runs no bootloader in the host"
        ),
        "{lines:#?}"
    );
}

#[test]
fn a_direct_kernel_gets_a_serial_console_and_keeps_its_device_names_right() {
    // xvdb is the only disk: the guest sees it as vda.
    let (import, lines) = inline(
        "name = 'a'\nkernel = '/k'\nroot = '/dev/xvdb1'\nextra = 'resume=/dev/xvdc'\ndisk = ['file:/b,xvdb,w']\n",
    );
    assert_eq!(
        import.spec.boot.cmdline(),
        "root=/dev/vda1 resume=/dev/vdc console=ttyS0"
    );
    assert_eq!(
        lines,
        [
            ":2: kernel: console=ttyS0 added to the command line: Keel's console is the serial port",
            ":3: root: /dev/xvdb1 is /dev/vda1 under Keel (the disk xvdb)",
            ":4: extra: not mapped: /dev/xvdc: no disk of the config is xvdc; renamed /dev/vdc by name only",
            ": memory: not set: the guest has 128 MiB",
        ]
    );
    // A kernel and nothing else boots, with no disks at all.
    let (import, _) = inline("name = 'a'\nkernel = '/k'\n");
    assert!(import.spec.disks.is_empty());
    assert_eq!(import.spec.boot.cmdline(), "console=ttyS0");
}

#[test]
fn disks_keel_cannot_use_are_reported_and_left_out() {
    let (import, lines) = inline(
        "name = 'a'\nbootloader = 'pygrub'\ndisk = [\n 'file:/a.img,xvda,w',\n 'tap:vhd:/b.vhd,xvdb,w',\n \
         'file:/c.img,hda,w',\n 'file:/d.img,nonsense,w',\n 42,\n]\n",
    );
    assert_eq!(import.spec.disks.len(), 1);
    assert_eq!(
        lines[1..],
        [
            ":5: disk[1]: not mapped: xvdb: Keel reads raw and qcow2 images, not vhd; convert it (qemu-img convert -O qcow2) and import again",
            ":6: disk[2]: not mapped: hda: the same Xen disk as disk[0]; left out",
            ":7: disk[3]: not mapped: \"file:/d.img,nonsense,w\": `nonsense` is not a Xen vdev (such as xvda, xvda1, hdc or sda)",
            ":8: disk[4]: not mapped: 42 is not a disk string",
            ": memory: not set: the guest has 128 MiB",
        ]
    );
}
