//! GRUB legacy's `menu.lst`/`grub.conf`, as CentOS 5 and the Xen era left
//! them: `default N`, `title`, `root (hd0,0)`, `kernel`, `initrd`, and for
//! Xen dom0 entries `kernel /xen.gz` with the Linux kernel as a `module`.

use crate::entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, Source};
use crate::fs::BootFs;
use crate::limits::{MAX_CONFIG_BYTES, MAX_ENTRIES};
use crate::text::{read_config, strip_device};

pub const PATHS: &[&str] = &[
    "/boot/grub/menu.lst",
    "/boot/grub/grub.conf",
    "/grub/menu.lst",
    "/grub/grub.conf",
];

pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    for path in PATHS {
        if let Some(text) = read_config(fs, path, MAX_CONFIG_BYTES)? {
            let list = parse(&text, path)?;
            if !list.entries.is_empty() {
                return Ok(Some(list));
            }
        }
    }
    Ok(None)
}

/// The entry being read and its multiboot modules.
struct Pending {
    entry: BootEntry,
    kernel: Option<(String, String)>,
    modules: Vec<(String, String)>,
    initrd: Option<String>,
    other: Option<&'static str>,
}

impl Pending {
    fn finish(self) -> BootEntry {
        let mut e = self.entry;
        let Some((kernel, options)) = self.kernel else {
            e.kind = EntryKind::Unsupported(self.other.unwrap_or("it names no kernel").to_string());
            return e;
        };
        let is_xen = kernel
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("xen"));
        match (is_xen, self.modules.first()) {
            // Xen dom0: the guest wants the Linux module, not the hypervisor.
            (true, Some((linux, args))) => {
                e.kernel = linux.clone();
                e.options = args.clone();
                e.initrds = self.modules.iter().skip(1).map(|m| m.0.clone()).collect();
            }
            _ => {
                e.kernel = kernel;
                e.options = options;
                e.initrds = self.initrd.into_iter().collect();
            }
        }
        e
    }
}

/// A command and its arguments; legacy GRUB allows `default=0` too.
fn split(line: &str) -> (&str, &str) {
    let line = line.trim();
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let rest = line[end..].trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    (&line[..end], rest.trim())
}

/// Splits `path args` and strips the path's device.
fn path_and_args(rest: &str) -> Option<(String, String)> {
    let mut words = rest
        .split_ascii_whitespace()
        .skip_while(|w| w.starts_with("--"));
    let path = strip_device(words.next()?);
    Some((path, words.collect::<Vec<_>>().join(" ")))
}

pub fn parse(text: &str, file: &str) -> Result<EntryList, ConfigError> {
    let mut default: Option<String> = None;
    let mut entries: Vec<BootEntry> = Vec::new();
    let mut cur: Option<Pending> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (cmd, rest) = split(trimmed);
        match cmd {
            "title" => {
                if let Some(p) = cur.take() {
                    entries.push(p.finish());
                }
                if entries.len() >= MAX_ENTRIES {
                    return Err(ConfigError::new(
                        file,
                        n,
                        format!("more than {MAX_ENTRIES} entries"),
                    ));
                }
                let source = Source {
                    format: Format::GrubLegacy,
                    file: file.to_string(),
                    line: n,
                };
                // Everything after "title", spaces and all.
                let title = rest.to_string();
                cur = Some(Pending {
                    entry: BootEntry::new(entries.len(), title, None, source),
                    kernel: None,
                    modules: Vec::new(),
                    initrd: None,
                    other: None,
                });
            }
            "default" if cur.is_none() => {
                // `default saved` reads /boot/grub/default, which records the
                // entry booted last; the first entry is the usual value.
                default = rest.parse::<usize>().ok().map(|d| d.to_string());
            }
            _ => {
                let Some(p) = cur.as_mut() else {
                    continue;
                };
                match cmd {
                    "kernel" => p.kernel = path_and_args(rest),
                    "initrd" => p.initrd = path_and_args(rest).map(|(path, _)| path),
                    "module" | "modulenounzip" => p.modules.extend(path_and_args(rest)),
                    "chainloader" => p.other = Some("it chainloads another boot loader"),
                    _ => {}
                }
            }
        }
    }
    if let Some(p) = cur.take() {
        entries.push(p.finish());
    }
    Ok(EntryList::new(
        Format::GrubLegacy,
        file.to_string(),
        entries,
        default.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    const CENTOS5_XEN_DOMU: &str = "\
# grub.conf generated by anaconda
#
# Note that you do not have to rerun grub after making changes to this file
# NOTICE:  You have a /boot partition.  This means that
#          all kernel and initrd paths are relative to /boot/, eg.
#          root (hd0,0)
#          kernel /vmlinuz-version ro root=/dev/VolGroup00/LogVol00
#          initrd /initrd-version.img
#boot=/dev/xvda
default=1
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
title CentOS (2.6.18-398.el5xen)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.18-398.el5xen ro root=/dev/VolGroup00/LogVol00 console=xvc0
\tinitrd /initrd-2.6.18-398.el5xen.img
title CentOS (2.6.18-8.el5xen)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.18-xen ro root=/dev/VolGroup00/LogVol00
\tinitrd /initrd-2.6.18-8.el5xen.img
";

    #[test]
    fn centos5_xen_guest_menu() {
        let list = parse(CENTOS5_XEN_DOMU, "/boot/grub/grub.conf").unwrap();
        assert_eq!(list.entries.len(), 2);
        let e = &list.entries[list.default];
        assert_eq!(list.default, 1);
        assert_eq!(e.title(), "CentOS (2.6.18-8.el5xen)");
        assert_eq!(e.kernel, "/vmlinuz-2.6.18-xen");
        assert_eq!(e.options, "ro root=/dev/VolGroup00/LogVol00");
        assert_eq!(e.initrds, ["/initrd-2.6.18-8.el5xen.img"]);
        assert_eq!(e.source.line, 18);
        assert_eq!(
            list.entries[0].options,
            "ro root=/dev/VolGroup00/LogVol00 console=xvc0"
        );
    }

    #[test]
    fn xen_dom0_entries_boot_the_linux_module() {
        let list = parse(
            "default saved\ntitle CentOS (2.6.18-398.el5xen)\n root (hd0,0)\n kernel /xen.gz-2.6.18-398.el5 dom0_mem=512M\n module /vmlinuz-2.6.18-398.el5xen ro root=LABEL=/\n module /initrd-2.6.18-398.el5xen.img\ntitle Other\n rootnoverify (hd0,1)\n chainloader +1\ntitle (hd0,0)/only kernel\n kernel --type=linux (hd0,0)/vmlinuz\n",
            "/grub/menu.lst",
        )
        .unwrap();
        assert_eq!(list.default, 0);
        let e = &list.entries[0];
        assert_eq!(e.kernel, "/vmlinuz-2.6.18-398.el5xen");
        assert_eq!(e.options, "ro root=LABEL=/");
        assert_eq!(e.initrds, ["/initrd-2.6.18-398.el5xen.img"]);
        assert!(
            matches!(&list.entries[1].kind, EntryKind::Unsupported(w) if w.contains("chainloads"))
        );
        assert_eq!(list.entries[2].kernel, "/vmlinuz");
        assert!(list.entries[2].initrds.is_empty());
    }

    #[test]
    fn discover_takes_the_first_menu_with_entries() {
        let t = Tree::new();
        t.text("/boot/grub/menu.lst", "# nothing but comments\ntimeout 5\n");
        t.text("/boot/grub/grub.conf", CENTOS5_XEN_DOMU);
        assert_eq!(
            discover(&t.fs()).unwrap().unwrap().file,
            "/boot/grub/grub.conf"
        );
        let err = parse(&"title x\n".repeat(600), "/m").unwrap_err();
        assert_eq!(err.line, 513);
    }
}
