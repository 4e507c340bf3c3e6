use super::*;
use crate::client::import_xen::report::Kind;

fn ok(spec: &str) -> XenDisk {
    parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

/// Target, format, vdev, read-only, CD-ROM, block device.
fn summary(d: &XenDisk) -> (&str, Format, String, bool, bool, bool) {
    (
        d.target.as_str(),
        d.format,
        d.vdev.to_string(),
        d.read_only,
        d.cdrom,
        d.block_device,
    )
}

#[test]
fn legacy_prefixes_are_stripped_and_read() {
    for (spec, target, format, vdev, read_only, block) in [
        (
            "phy:/dev/vg/web1,xvda,w",
            "/dev/vg/web1",
            Format::Raw,
            "xvda",
            false,
            true,
        ),
        (
            "phy:vg/web1,xvda1,w",
            "/dev/vg/web1",
            Format::Raw,
            "xvda1",
            false,
            true,
        ),
        (
            "file:/srv/xen/web1.img,xvda2,w",
            "/srv/xen/web1.img",
            Format::Raw,
            "xvda2",
            false,
            false,
        ),
        (
            "tap:aio:/srv/a.img,xvdb,r",
            "/srv/a.img",
            Format::Raw,
            "xvdb",
            true,
            false,
        ),
        (
            "tap:qcow2:/srv/a.qcow2,xvdc,w",
            "/srv/a.qcow2",
            Format::Qcow2,
            "xvdc",
            false,
            false,
        ),
        (
            "tap2:tapdisk:aio:/srv/a.img,xvdd,ro",
            "/srv/a.img",
            Format::Raw,
            "xvdd",
            true,
            false,
        ),
        (
            "tap:tapdisk:qcow2:/srv/b.qcow2,xvde,rw",
            "/srv/b.qcow2",
            Format::Qcow2,
            "xvde",
            false,
            false,
        ),
        (
            "aio:/srv/c.img,sda1,w",
            "/srv/c.img",
            Format::Raw,
            "sda1",
            false,
            false,
        ),
        (
            "raw:/root/image.iso,hdc:cdrom,ro",
            "/root/image.iso",
            Format::Raw,
            "hdc",
            true,
            false,
        ),
        (
            "tap:vhd:/srv/d.vhd,xvdf,w",
            "/srv/d.vhd",
            Format::Vhd,
            "xvdf",
            false,
            false,
        ),
        (
            "file:/srv/e.img,ioemu:hda,w",
            "/srv/e.img",
            Format::Raw,
            "hda",
            false,
            false,
        ),
        // xm spacing, and no access (read-write).
        (
            "phy:/dev/vg/x, xvdg",
            "/dev/vg/x",
            Format::Raw,
            "xvdg",
            false,
            true,
        ),
    ] {
        let d = ok(spec);
        assert_eq!(
            summary(&d),
            (
                target,
                format,
                vdev.to_string(),
                read_only,
                vdev == "hdc",
                block
            ),
            "{spec}"
        );
        assert_eq!(d.notes, vec![], "{spec}");
    }
}

#[test]
fn the_positional_format_is_the_second_field() {
    let d = ok("/dev/vg/guest-volume,raw,hda,rw");
    assert_eq!(
        summary(&d),
        (
            "/dev/vg/guest-volume",
            Format::Raw,
            "hda".into(),
            false,
            false,
            true
        )
    );
    let d = ok("/srv/a.qcow2,qcow2,xvda,w");
    assert_eq!(d.format, Format::Qcow2);
    // An empty field takes the default.
    let d = ok("/dev/vg/guest-volume,,hda");
    assert_eq!((d.format, d.read_only), (Format::Raw, false));
    // A target with no prefix, then the vdev, as xend took it.
    let d = ok("/srv/a.img,xvda,w");
    assert_eq!(
        summary(&d),
        (
            "/srv/a.img",
            Format::Raw,
            "xvda".into(),
            false,
            false,
            false
        )
    );
    let err = parse("/srv/a.img,floppy,xvda,w").expect_err("not a format");
    assert!(err.contains("not a disk format"), "{err}");
}

#[test]
fn cdroms_in_every_spelling_are_read_only() {
    for spec in [
        "/root/image.iso,,hdc,cdrom",
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
        "raw:/root/image.iso,hdc:cdrom,ro",
        "file:/root/image.iso,hdc:cdrom,r",
    ] {
        let d = ok(spec);
        assert_eq!(
            summary(&d),
            (
                "/root/image.iso",
                Format::Raw,
                "hdc".into(),
                true,
                true,
                false
            ),
            "{spec}"
        );
    }
    // Empty drives, as xend and xl write them.
    for spec in [",hdc:cdrom,r", "phy:,hdc:cdrom,r", "vdev=hdc,devtype=cdrom"] {
        let d = ok(spec);
        assert_eq!(
            (d.target.as_str(), d.cdrom, d.read_only),
            ("", true, true),
            "{spec}"
        );
    }
    assert_eq!(ok("file:/a.iso,xvda1:cdrom,r").vdev.to_string(), "xvda1");
    assert!(!ok("file:/a.img,xvda:disk,w").cdrom);
}

#[test]
fn key_value_syntax_with_target_last_taking_the_rest() {
    let d = ok("format=qcow2, vdev=xvdb, access=rw, target=/srv/with,comma and space ");
    assert_eq!(d.target, "/srv/with,comma and space ");
    assert_eq!(
        (d.format, d.vdev.to_string(), d.read_only),
        (Format::Qcow2, "xvdb".into(), false)
    );
    let d = ok("vdev=xvda,target=/dev/vg/x");
    assert!(d.block_device);
    // An empty positional target may be given again by name.
    assert_eq!(ok(",,xvda,w,target=/srv/a.img").target, "/srv/a.img");
    assert_eq!(
        parse("/srv/b.img,,xvda,w,target=/srv/a.img"),
        Err("the target is given twice".into())
    );
}

#[test]
fn access_modes() {
    for (access, read_only) in [
        ("r", true),
        ("ro", true),
        ("w", false),
        ("rw", false),
        ("", false),
    ] {
        assert_eq!(
            ok(&format!("file:/a,xvda,{access}")).read_only,
            read_only,
            "{access}"
        );
    }
    let d = ok("file:/a,xvda,w!");
    assert!(!d.read_only);
    assert_eq!(d.notes.len(), 1);
    assert_eq!(d.notes[0].kind, Kind::NotMapped);
    assert!(d.notes[0].text.starts_with("access w!"), "{:?}", d.notes);
    let err = parse("file:/a,xvda,rwx").expect_err("bad access");
    assert!(err.contains("`rwx` is not an access mode"), "{err}");
}

#[test]
fn parameters_keel_has_no_use_for_are_noted() {
    let d = ok("/srv/a.img,raw,xvda,rw,backendtype=qdisk,script=block-drbd,discard,no-discard,direct-io-safe,untrusted,colo,colo-host=h,backend=drv,specification=xen,frob=1");
    let notes: Vec<(Kind, &str)> = d
        .notes
        .iter()
        .map(|n| (n.kind, n.text.split(':').next().unwrap_or("")))
        .collect();
    assert_eq!(
        notes,
        [
            (Kind::NotMapped, "script=block-drbd"),
            (Kind::Changed, "backendtype=qdisk"),
            (Kind::NotMapped, "discard"),
            (Kind::Changed, "direct-io-safe"),
            (Kind::Changed, "untrusted"),
            (Kind::NotMapped, "colo"),
            (Kind::NotMapped, "colo-host=h"),
            (Kind::NotMapped, "backend=drv"),
            (Kind::NotMapped, "frob=1"),
        ]
    );
    assert!(d.notes[8].text.ends_with("unknown to Keel"));
    // Script prefixes are scripts; their targets keep their colons.
    let d = ok("iscsi:iqn.2001-04.com.example:storage,xvda,w");
    assert_eq!(d.target, "iqn.2001-04.com.example:storage");
    assert!(d.notes[0].text.starts_with("script=block-iscsi"));
}

#[test]
fn malformed_disks_say_why() {
    for (spec, why) in [
        ("file:/a.img", "no vdev"),
        ("file:/a.img,,w", "no vdev"),
        ("file:/a.img,vda,w", "`vda` is not a Xen vdev"),
        (
            "file:/a.img,xvda:floppy,w",
            "`:floppy` is not a device type",
        ),
        (",xvda,w", "no target"),
        ("file:/a.img,xvda,w,extra", "too many parameters"),
        ("foo:/a.img,xvda,w", "`foo:` is not a disk prefix"),
        (
            "format=vmdk,vdev=xvda,target=/a",
            "`vmdk` is not a disk format",
        ),
        (
            "devtype=floppy,vdev=xvda,target=/a",
            "`devtype=floppy` is not cdrom or disk",
        ),
        ("vdev=xvda,vdev=xvdb,target=/a", "the vdev is given twice"),
        ("", "no vdev"),
    ] {
        let err = parse(spec).expect_err(spec);
        assert!(err.contains(why), "{spec:?}: {err}");
    }
}
