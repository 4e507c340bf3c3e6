//! Xen virtual disk names (`vdev`), read as xen-vbd-interface(7) reads
//! them, and the names the guest's disks get under Keel.
//!
//! A vdev is `xvd`, `hd` or `sd`, then the disk's letters (`a` to `z`,
//! then `aa`, `ab`, ...: bijective base 26), then an optional partition
//! number; or `d<disk>` / `d<disk>p<partition>`. Exporting a partition
//! (`xvda1`) gives the guest that partition as a disk of its own.
//! Keel's virtio disks are `vda`, `vdb`, ... in spec order.

use std::cmp::Ordering;
use std::fmt;

/// The naming scheme of a vdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `xvd*` and `d<N>p<M>`: Xen's own disks.
    Xvd,
    /// `hd*`: IDE, emulated for HVM guests.
    Hd,
    /// `sd*`: SCSI names, emulated for HVM guests (and used by old PV
    /// configs).
    Sd,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::Xvd => "xvd",
            Scheme::Hd => "hd",
            Scheme::Sd => "sd",
        }
    }

    /// The most disks and partitions the scheme encodes (Xen's limits;
    /// `xvd` with its extended numbering).
    fn limits(self) -> (u32, u32) {
        match self {
            Scheme::Xvd => (1 << 20, 255),
            Scheme::Hd => (4, 63),
            Scheme::Sd => (16, 15),
        }
    }
}

/// A parsed vdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vdev {
    pub scheme: Scheme,
    /// The disk, from 0 (`xvda`).
    pub disk: u32,
    /// The partition, 0 for the whole disk.
    pub partition: u32,
}

impl Vdev {
    /// Reads a vdev, or `None` if `name` is not one.
    pub fn parse(name: &str) -> Option<Vdev> {
        if let Some(rest) = name.strip_prefix('d') {
            if let Some(v) = numeric(rest) {
                return Some(v);
            }
        }
        let scheme = [Scheme::Xvd, Scheme::Hd, Scheme::Sd]
            .into_iter()
            .find(|s| name.starts_with(s.prefix()))?;
        let rest = &name[scheme.prefix().len()..];
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let disk = disk_index(&rest[..letters])?;
        let partition = partition(&rest[letters..], true)?;
        let v = Vdev {
            scheme,
            disk,
            partition,
        };
        v.within_limits().then_some(v)
    }

    fn within_limits(&self) -> bool {
        let (disks, partitions) = self.scheme.limits();
        self.disk < disks && self.partition <= partitions
    }

    /// Whether a guest device named by `self` (as on a kernel command
    /// line) is on the disk `disk` exports: the same disk index, under a
    /// scheme the guest would give it. PV drivers in an HVM guest name
    /// its emulated IDE disks `xvd` too.
    pub fn same_disk(&self, disk: &Vdev) -> bool {
        let scheme = match self.scheme {
            Scheme::Xvd => matches!(disk.scheme, Scheme::Xvd | Scheme::Hd),
            other => disk.scheme == other,
        };
        scheme && self.disk == disk.disk
    }
}

/// Disk order, then partition order: the order Xen numbers them in.
impl Ord for Vdev {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.disk, self.partition).cmp(&(other.disk, other.partition))
    }
}

impl PartialOrd for Vdev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Vdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scheme.prefix(), letters(self.disk))?;
        if self.partition > 0 {
            write!(f, "{}", self.partition)?;
        }
        Ok(())
    }
}

/// `d<disk>` or `d<disk>p<partition>`, after the `d`.
fn numeric(rest: &str) -> Option<Vdev> {
    let (disk, partition) = match rest.split_once('p') {
        Some((d, p)) => (number(d)?, partition(p, false)?),
        None => (number(rest)?, 0),
    };
    let v = Vdev {
        scheme: Scheme::Xvd,
        disk,
        partition,
    };
    v.within_limits().then_some(v)
}

/// Decimal digits without a leading zero.
fn number(digits: &str) -> Option<u32> {
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

/// A partition number, from 1; `none_is_whole`: no digits at all is the
/// whole disk (0).
fn partition(digits: &str, none_is_whole: bool) -> Option<u32> {
    if digits.is_empty() {
        return none_is_whole.then_some(0);
    }
    number(digits).filter(|p| *p > 0)
}

/// `a` is 0, `z` 25, `aa` 26: bijective base 26.
fn disk_index(letters: &str) -> Option<u32> {
    if letters.is_empty() {
        return None;
    }
    letters
        .bytes()
        .try_fold(0u32, |n, b| {
            n.checked_mul(26)?.checked_add(u32::from(b - b'a') + 1)
        })
        .map(|n| n - 1)
}

/// The letters of disk `index`: 0 is `a`, 26 is `aa`.
pub fn letters(index: u32) -> String {
    let mut out = Vec::new();
    let mut n = u64::from(index) + 1;
    while n > 0 {
        n -= 1;
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The name the guest gives the `k`-th disk of a Keel spec: `vda`, ...
pub fn keel_disk(k: usize) -> String {
    format!("vd{}", letters(u32::try_from(k).unwrap_or(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> Vdev {
        Vdev::parse(name).unwrap_or_else(|| panic!("{name} is a vdev"))
    }

    #[test]
    fn names_read_as_xen_numbers_them() {
        for (name, scheme, disk, partition) in [
            ("xvda", Scheme::Xvd, 0, 0),
            ("xvda1", Scheme::Xvd, 0, 1),
            ("xvdz", Scheme::Xvd, 25, 0),
            ("xvdaa", Scheme::Xvd, 26, 0),
            ("xvdab3", Scheme::Xvd, 27, 3),
            ("xvdba", Scheme::Xvd, 52, 0),
            ("xvdzz", Scheme::Xvd, 701, 0),
            ("xvdaaa", Scheme::Xvd, 702, 0),
            ("xvda255", Scheme::Xvd, 0, 255),
            ("hdc", Scheme::Hd, 2, 0),
            ("hdd63", Scheme::Hd, 3, 63),
            ("sda1", Scheme::Sd, 0, 1),
            ("sdp15", Scheme::Sd, 15, 15),
            ("d0", Scheme::Xvd, 0, 0),
            ("d2p1", Scheme::Xvd, 2, 1),
        ] {
            assert_eq!(
                Vdev::parse(name),
                Some(Vdev {
                    scheme,
                    disk,
                    partition
                }),
                "{name}"
            );
        }
    }

    #[test]
    fn other_names_are_not_vdevs() {
        for name in [
            "",
            "xvd",
            "xvd1",
            "xvdA",
            "xvda0",
            "xvda01",
            "xvda0x",
            "xvda256",
            "hde",
            "hda64",
            "sdq",
            "sda16",
            "vda",
            "d",
            "dp1",
            "d01",
            "d1p",
            "d1p0",
            "cdrom",
            "xvda-1",
            "hdc:cdrom",
        ] {
            assert_eq!(Vdev::parse(name), None, "{name}");
        }
    }

    #[test]
    fn names_print_back_and_letters_count_on() {
        for name in ["xvda", "xvdz", "xvdaa", "xvdzz", "xvdaaa", "hdc", "sdb2"] {
            assert_eq!(v(name).to_string(), name);
        }
        assert_eq!(v("d1p2").to_string(), "xvdb2");
        for index in 0..2000 {
            assert_eq!(disk_index(&letters(index)), Some(index));
        }
        assert_eq!(keel_disk(0), "vda");
        assert_eq!(keel_disk(25), "vdz");
        assert_eq!(keel_disk(26), "vdaa");
    }

    #[test]
    fn vdevs_sort_by_disk_then_partition() {
        let mut names = ["xvdb", "xvdaa", "xvda2", "hdc", "xvda1", "xvdz", "xvda"];
        names.sort_by_key(|n| v(n));
        assert_eq!(
            names,
            ["xvda", "xvda1", "xvda2", "xvdb", "hdc", "xvdz", "xvdaa"]
        );
    }

    #[test]
    fn guest_names_find_their_disk_by_scheme() {
        assert!(v("xvda1").same_disk(&v("xvda")));
        assert!(v("xvda").same_disk(&v("hda")));
        assert!(v("sda1").same_disk(&v("sda")));
        assert!(v("hda").same_disk(&v("hda2")));
        assert!(!v("xvda").same_disk(&v("sda")));
        assert!(!v("sda").same_disk(&v("xvda")));
        assert!(!v("hda").same_disk(&v("sda")));
        assert!(!v("xvdb").same_disk(&v("xvda")));
    }
}
