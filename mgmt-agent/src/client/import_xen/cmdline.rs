//! Rewriting a Xen guest's kernel command line for Keel: its disks are
//! virtio (`/dev/vda`, ...) in the order the import gives them, and its
//! console is the serial port, not Xen's `hvc0`.

use super::report::Note;
use super::vdev::{keel_disk, Scheme, Vdev};

/// The console every Keel guest has.
pub const KEEL_CONSOLE: &str = "console=ttyS0";

/// `cmdline` rewritten for a guest whose Keel disks are `disks`, in
/// order, and a note for each change.
pub fn rewrite(cmdline: &str, disks: &[Vdev]) -> (String, Vec<Note>) {
    let mut notes = Vec::new();
    let mut words = Vec::new();
    for word in split(cmdline) {
        if let Some(value) = word.strip_prefix("console=") {
            if value.starts_with("hvc") || value.starts_with("xvc") {
                notes.push(Note::changed(format!(
                    "{word} is {KEEL_CONSOLE}: Keel's console is the serial port"
                )));
                words.push(KEEL_CONSOLE.to_string());
                continue;
            }
        }
        if word.starts_with("xencons=") {
            notes.push(Note::changed(format!("{word} dropped: Xen's console only")));
            continue;
        }
        words.push(devices(&word, disks, &mut notes));
    }
    (words.join(" "), notes)
}

/// Whether a command line names a console.
pub fn has_console(cmdline: &str) -> bool {
    split(cmdline).iter().any(|w| w.starts_with("console="))
}

/// The words of a command line: split at whitespace outside double
/// quotes, as the kernel reads it.
fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `word` with each `/dev/NAME` of a Xen disk replaced by its Keel name.
fn devices(word: &str, disks: &[Vdev], notes: &mut Vec<Note>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find("/dev/") {
        let (before, from_dev) = rest.split_at(at);
        out.push_str(before);
        let name_at = "/dev/".len();
        let name_len = from_dev[name_at..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let name = &from_dev[name_at..name_at + name_len];
        rest = &from_dev[name_at + name_len..];
        let Some(device) = Vdev::parse(name) else {
            out.push_str(&from_dev[..name_at + name_len]);
            continue;
        };
        let (to, note) = match keel_name(&device, disks) {
            Some((to, disk)) => {
                let to = format!("/dev/{to}");
                let note =
                    Note::changed(format!("/dev/{name} is {to} under Keel (the disk {disk})"));
                (to, note)
            }
            None if device.scheme == Scheme::Xvd => {
                let to = format!("/dev/{}", name.replacen("xvd", "vd", 1));
                let note = Note::not_mapped(format!(
                    "/dev/{name}: no disk of the config is {name}; renamed {to} by name only"
                ));
                (to, note)
            }
            None => {
                let to = format!("/dev/{name}");
                let note = Note::not_mapped(format!(
                    "/dev/{name}: no disk of the config is {name}; left as it is"
                ));
                (to, note)
            }
        };
        out.push_str(&to);
        notes.push(note);
    }
    out.push_str(rest);
    out
}

/// The Keel name of guest device `device` and the vdev of the disk it is
/// on: a disk exported as this very device is a whole Keel disk, and a
/// partition of an exported whole disk is that partition of its Keel disk.
fn keel_name(device: &Vdev, disks: &[Vdev]) -> Option<(String, Vdev)> {
    let on = |whole: bool| {
        disks.iter().position(|d| {
            device.same_disk(d)
                && if whole {
                    d.partition == 0
                } else {
                    d.partition == device.partition
                }
        })
    };
    if let Some(k) = on(false) {
        return Some((keel_disk(k), disks[k]));
    }
    let k = on(true).filter(|_| device.partition > 0)?;
    Some((format!("{}{}", keel_disk(k), device.partition), disks[k]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::import_xen::report::Kind;

    fn disks(names: &[&str]) -> Vec<Vdev> {
        names.iter().filter_map(|n| Vdev::parse(n)).collect()
    }

    fn run(cmdline: &str, names: &[&str]) -> (String, Vec<(Kind, String)>) {
        let (out, notes) = rewrite(cmdline, &disks(names));
        (out, notes.into_iter().map(|n| (n.kind, n.text)).collect())
    }

    #[test]
    fn a_partition_exported_as_a_disk_is_a_whole_keel_disk() {
        let (out, notes) = run("root=/dev/xvda1 ro", &["xvda1", "xvda2"]);
        assert_eq!(out, "root=/dev/vda ro");
        assert_eq!(
            notes,
            [(
                Kind::Changed,
                "/dev/xvda1 is /dev/vda under Keel (the disk xvda1)".to_string()
            )]
        );
        let (out, _) = run("root=/dev/xvda2 resume=/dev/xvda1", &["xvda1", "xvda2"]);
        assert_eq!(out, "root=/dev/vdb resume=/dev/vda");
    }

    #[test]
    fn a_partition_of_a_whole_disk_keeps_its_number() {
        let (out, notes) = run("root=/dev/xvda2 resume=/dev/xvdb", &["xvda", "xvdb"]);
        assert_eq!(out, "root=/dev/vda2 resume=/dev/vdb");
        assert_eq!(notes.len(), 2);
        assert!(notes.iter().all(|(k, _)| *k == Kind::Changed));
    }

    #[test]
    fn disks_count_in_keel_order_not_by_letter() {
        // xvdb is the only disk: the guest sees it as vda.
        let (out, _) = run("root=/dev/xvdb1", &["xvdb"]);
        assert_eq!(out, "root=/dev/vda1");
        let (out, _) = run("root=/dev/xvdc", &["xvda", "xvdc"]);
        assert_eq!(out, "root=/dev/vdb");
    }

    #[test]
    fn emulated_names_map_to_emulated_disks_only() {
        let (out, notes) = run("root=/dev/sda1 swap=/dev/hda2", &["sda1", "hda"]);
        assert_eq!(out, "root=/dev/vda swap=/dev/vdb2");
        assert_eq!(notes.len(), 2);
        // PV drivers call an HVM guest's hda xvda.
        let (out, _) = run("root=/dev/xvda1", &["hda"]);
        assert_eq!(out, "root=/dev/vda1");
        // An sd name is no xvd disk: left alone, and reported.
        let (out, notes) = run("root=/dev/sda1", &["xvda"]);
        assert_eq!(out, "root=/dev/sda1");
        assert_eq!(
            notes,
            [(
                Kind::NotMapped,
                "/dev/sda1: no disk of the config is sda1; left as it is".to_string()
            )]
        );
    }

    #[test]
    fn a_device_no_disk_covers_is_renamed_by_text_and_reported() {
        let (out, notes) = run("root=/dev/xvdc3 ro", &["xvda"]);
        assert_eq!(out, "root=/dev/vdc3 ro");
        assert_eq!(
            notes,
            [(
                Kind::NotMapped,
                "/dev/xvdc3: no disk of the config is xvdc3; renamed /dev/vdc3 by name only"
                    .to_string()
            )]
        );
        // The whole disk of exported partitions is not exported.
        let (out, notes) = run("root=/dev/xvda", &["xvda1"]);
        assert_eq!(out, "root=/dev/vda");
        assert_eq!(notes[0].0, Kind::NotMapped);
    }

    #[test]
    fn consoles_become_the_serial_port_and_xencons_goes() {
        let (out, notes) = run(
            "console=hvc0 xencons=tty console=xvc0 earlyprintk=xen quiet",
            &[],
        );
        assert_eq!(out, "console=ttyS0 console=ttyS0 earlyprintk=xen quiet");
        assert_eq!(notes.len(), 3);
        assert!(notes.iter().all(|(k, _)| *k == Kind::Changed));
        assert!(notes[1].1.contains("xencons=tty dropped"));
        assert!(has_console(&out));
        assert!(!has_console("root=/dev/vda ro"));
    }

    #[test]
    fn other_devices_quotes_and_several_devices_in_one_word_are_kept_right() {
        let (out, notes) = run(
            "root=/dev/mapper/vg-root md=0,/dev/xvda1,/dev/xvdb1  init=\"/sbin/my init\" dev=/dev/xvdab",
            &["xvda", "xvdb"],
        );
        assert_eq!(
            out,
            "root=/dev/mapper/vg-root md=0,/dev/vda1,/dev/vdb1 init=\"/sbin/my init\" dev=/dev/vdab"
        );
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[2].0, Kind::NotMapped);
    }
}
