//! Xen's device names on a chosen command line, made the ones this guest
//! has under keel-vmm.
//!
//! A guest moved from Xen keeps boot entries written for Xen's block and
//! console front ends: `root=/dev/xvda1 console=hvc0 xencons=tty`. Here its
//! disks are virtio-blk (`/dev/vdX`) and its console is the serial port.
//! `keelctl import xen` gives each disk the serial of its Xen vdev, so a
//! filesystem that Xen exported on its own as `xvda1` (a whole disk here,
//! `/dev/vda`, with no partition 1) is still found; a name no serial
//! matches is translated letter for letter (`xvdb2` to `vdb2`).

use crate::chooser::{BootPlan, ChooseError};
use crate::limits::MAX_CMDLINE_BYTES;

/// One of the guest's virtio disks as the loader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestDisk<'a> {
    /// The kernel's name for it: `vda`.
    pub name: &'a str,
    /// Its virtio-blk serial, if it has one.
    pub serial: Option<&'a str>,
}

/// One change made to the command line, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    /// Empty when the argument was dropped.
    pub to: String,
    pub why: String,
}

/// A Xen virtual block device name after `/dev/`: `xvd`, the disk's
/// letters, and a partition number if any (`xvda1` is ("a", "1")).
fn split_vdev(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("xvd")?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let (disk, part) = rest.split_at(letters);
    (letters > 0 && part.bytes().all(|b| b.is_ascii_digit())).then_some((disk, part))
}

/// The device this guest has for Xen's `/dev/NAME`, and why.
fn map_device(name: &str, disks: &[GuestDisk<'_>]) -> Option<(String, String)> {
    let (letters, part) = split_vdev(name)?;
    let with_serial = |serial: &str| disks.iter().find(|d| d.serial == Some(serial));
    if let Some(disk) = with_serial(name) {
        return Some((
            format!("/dev/{}", disk.name),
            format!("the disk with serial {name}"),
        ));
    }
    let whole = format!("xvd{letters}");
    if let Some(disk) = with_serial(&whole) {
        return Some((
            format!("/dev/{}{part}", disk.name),
            format!("on the disk with serial {whole}"),
        ));
    }
    Some((
        format!("/dev/vd{letters}{part}"),
        "no disk has its Xen name as serial; the same letters".to_string(),
    ))
}

/// One argument rewritten: `None` keeps it, `Some("")` drops it.
fn rewrite_arg(arg: &str, disks: &[GuestDisk<'_>]) -> Option<(String, String)> {
    if arg.starts_with("xencons=") {
        return Some((String::new(), "Xen's console driver is not here".into()));
    }
    // Options after the name (rarely any) mean nothing to a serial port.
    if arg.starts_with("console=hvc0") || arg.starts_with("console=xvc0") {
        return Some((
            "console=ttyS0".into(),
            "the guest's console is its serial port".into(),
        ));
    }
    let at = arg.find("/dev/xvd")?;
    let name_len = arg[at + 5..]
        .bytes()
        .take_while(u8::is_ascii_alphanumeric)
        .count();
    let name = &arg[at + 5..at + 5 + name_len];
    let (device, why) = map_device(name, disks)?;
    Some((
        format!("{}{device}{}", &arg[..at], &arg[at + 5 + name_len..]),
        why,
    ))
}

/// `cmdline` with Xen's device and console names replaced, and what was
/// changed.
pub fn rewrite(cmdline: &str, disks: &[GuestDisk<'_>]) -> (String, Vec<Rewrite>) {
    let mut out = Vec::new();
    let mut changes = Vec::new();
    for arg in cmdline.split_ascii_whitespace() {
        match rewrite_arg(arg, disks) {
            Some((to, why)) => {
                if !to.is_empty() {
                    out.push(to.clone());
                }
                changes.push(Rewrite {
                    from: arg.to_string(),
                    to,
                    why,
                });
            }
            None => out.push(arg.to_string()),
        }
    }
    (out.join(" "), changes)
}

/// Applies [`rewrite`] to the plan's command line; refuses a result the
/// kernel could not take.
pub fn apply(plan: &mut BootPlan, disks: &[GuestDisk<'_>]) -> Result<Vec<Rewrite>, ChooseError> {
    let (cmdline, changes) = rewrite(&plan.cmdline, disks);
    if cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(ChooseError::CmdlineTooLong {
            len: cmdline.len(),
            max: MAX_CMDLINE_BYTES,
            cmdline: crate::fs::shorten(&cmdline),
        });
    }
    plan.cmdline = cmdline;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks<'a>(list: &[(&'a str, Option<&'a str>)]) -> Vec<GuestDisk<'a>> {
        list.iter()
            .map(|(name, serial)| GuestDisk {
                name,
                serial: *serial,
            })
            .collect()
    }

    #[test]
    fn a_filesystem_xen_exported_as_a_partition_is_the_whole_disk_with_its_serial() {
        let d = disks(&[("vda", Some("xvda1")), ("vdb", Some("xvda2"))]);
        let (line, changes) = rewrite("root=/dev/xvda1 ro resume=/dev/xvda2 quiet", &d);
        assert_eq!(line, "root=/dev/vda ro resume=/dev/vdb quiet");
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].from, "root=/dev/xvda1");
        assert!(changes[0].why.contains("serial xvda1"), "{changes:?}");
    }

    #[test]
    fn a_partition_of_a_whole_xen_disk_keeps_its_number() {
        let d = disks(&[("vda", Some("boot")), ("vdb", Some("xvdb"))]);
        let (line, _) = rewrite("root=/dev/xvdb3", &d);
        assert_eq!(line, "root=/dev/vdb3");
    }

    #[test]
    fn without_serials_the_letters_are_kept() {
        let (line, changes) = rewrite("root=/dev/xvda1 ro", &disks(&[("vda", None)]));
        assert_eq!(line, "root=/dev/vda1 ro");
        assert!(changes[0].why.contains("same letters"), "{changes:?}");
        let (line, _) = rewrite("root=/dev/xvdab ro", &[]);
        assert_eq!(line, "root=/dev/vdab ro");
    }

    #[test]
    fn xen_consoles_become_the_serial_port() {
        let (line, changes) = rewrite("ro console=hvc0 xencons=tty console=xvc0,9600 quiet", &[]);
        assert_eq!(line, "ro console=ttyS0 console=ttyS0 quiet");
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[1].to, "");
    }

    #[test]
    fn a_kvm_command_line_is_left_alone() {
        let text = "root=UUID=1234 ro console=ttyS0 rootflags=subvol=@ /dev/xvd init=/bin/sh";
        let (line, changes) = rewrite(text, &disks(&[("vda", Some("xvda"))]));
        assert_eq!(line, text);
        assert!(changes.is_empty(), "{changes:?}");
        // Not Xen names: no letters, or letters then not a number.
        assert_eq!(rewrite("root=/dev/xvd1", &[]).0, "root=/dev/xvd1");
        assert_eq!(rewrite("root=/dev/xvdA", &[]).0, "root=/dev/xvdA");
    }

    #[test]
    fn a_xen_era_menu_lst_boots_with_kvm_names() {
        use crate::chooser::{choose, Filesystem};
        use crate::testutil::Tree;
        // A Debian guest as pygrub booted it: menu.lst on its root, which
        // Xen exported on its own as xvda1.
        let t = Tree::new();
        t.file("/boot/vmlinuz-6.1.0-18-amd64", &[0x4d; 4096]);
        t.file("/boot/initrd.img-6.1.0-18-amd64", &[1; 100]);
        t.text(
            "/boot/grub/menu.lst",
            "default 0\ntimeout 2\ntitle Debian (Xen domU)\nroot (hd0)\n\
             kernel /boot/vmlinuz-6.1.0-18-amd64 root=/dev/xvda1 ro console=hvc0 xencons=tty\n\
             initrd /boot/initrd.img-6.1.0-18-amd64\n",
        );
        let fs = t.fs();
        let mut plan = choose(&[Filesystem::new("1234", &fs)], None, "panic=1").unwrap();
        assert_eq!(plan.kernel.path, "/boot/vmlinuz-6.1.0-18-amd64");
        let changes = apply(&mut plan, &disks(&[("vda", Some("xvda1"))])).unwrap();
        assert_eq!(plan.cmdline, "root=/dev/vda ro console=ttyS0 panic=1");
        assert_eq!(changes.len(), 3, "{changes:?}");
    }

    #[test]
    fn names_inside_other_arguments_and_hostile_text_are_handled() {
        let (line, _) = rewrite("resume=/dev/xvdb1:offset", &disks(&[("vdb", Some("xvdb"))]));
        assert_eq!(line, "resume=/dev/vdb1:offset");
        // Multibyte text after a name: no panic, kept as it is.
        let (line, _) = rewrite("root=/dev/xvda1é", &[]);
        assert_eq!(line, "root=/dev/vda1é");
    }
}
