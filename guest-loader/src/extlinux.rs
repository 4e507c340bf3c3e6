//! extlinux/syslinux configs: `DEFAULT`, `LABEL`, `KERNEL`/`LINUX`,
//! `INITRD`, `APPEND` (with `initrd=` inside), `MENU LABEL`,
//! `MENU DEFAULT`, `INCLUDE`. Keywords are case-insensitive; relative paths
//! are relative to the config's directory.

use crate::entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, Source};
use crate::fs::BootFs;
use crate::include::Includes;
use crate::limits::MAX_ENTRIES;
use crate::text::{dirname, relative_to};

pub const PATHS: &[&str] = &[
    "/boot/extlinux/extlinux.conf",
    "/extlinux/extlinux.conf",
    "/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/syslinux.cfg",
];

pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    for path in PATHS {
        if let Some(list) = parse(fs, path)? {
            if !list.entries.is_empty() {
                return Ok(Some(list));
            }
        }
    }
    Ok(None)
}

/// A label being read.
struct Label {
    name: String,
    menu_label: Option<String>,
    kernel: Option<String>,
    kernel_keyword: String,
    initrds: Vec<String>,
    append: Option<String>,
    local: bool,
    line: usize,
    file: String,
    dir: String,
}

#[derive(Default)]
struct State {
    default: Option<String>,
    menu_default: Option<String>,
    global_append: Option<String>,
    labels: Vec<Label>,
}

pub fn parse(fs: &dyn BootFs, path: &str) -> Result<Option<EntryList>, ConfigError> {
    let Some((mut includes, text)) = Includes::open_main(fs, path)? else {
        return Ok(None);
    };
    let mut st = State::default();
    read(fs, &text, path, &mut includes, &mut st)?;
    let entries: Vec<BootEntry> = st
        .labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| finish(i, l, st.global_append.as_deref()))
        .collect();
    // With a menu, MENU DEFAULT wins over DEFAULT.
    let default = st.menu_default.or(st.default);
    Ok(Some(EntryList::new(
        Format::Extlinux,
        path.to_string(),
        entries,
        default.as_deref(),
    )))
}

fn read(
    fs: &dyn BootFs,
    text: &str,
    file: &str,
    includes: &mut Includes,
    st: &mut State,
) -> Result<(), ConfigError> {
    let dir = dirname(file).to_string();
    let mut in_text = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if in_text {
            in_text = !line.eq_ignore_ascii_case("endtext");
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kw, rest) = split(line);
        let kw = kw.to_ascii_lowercase();
        match kw.as_str() {
            "menu" => {
                let (sub, arg) = split(rest);
                match sub.to_ascii_lowercase().as_str() {
                    "label" => {
                        if let Some(l) = st.labels.last_mut() {
                            l.menu_label = Some(arg.replace('^', ""));
                        }
                    }
                    "default" => st.menu_default = st.labels.last().map(|l| l.name.clone()),
                    "include" => include(fs, arg, &dir, file, n, includes, st)?,
                    _ => {}
                }
            }
            "text" => in_text = true,
            "include" => include(fs, rest, &dir, file, n, includes, st)?,
            "default" => st.default = rest.split_ascii_whitespace().next().map(str::to_string),
            "label" => {
                if st.labels.len() >= MAX_ENTRIES {
                    return Err(ConfigError::new(
                        file,
                        n,
                        format!("more than {MAX_ENTRIES} labels"),
                    ));
                }
                st.labels.push(Label {
                    name: rest.to_string(),
                    menu_label: None,
                    kernel: None,
                    kernel_keyword: String::new(),
                    initrds: Vec::new(),
                    append: None,
                    local: false,
                    line: n,
                    file: file.to_string(),
                    dir: dir.clone(),
                });
            }
            "append" => match st.labels.last_mut() {
                Some(l) => l.append = Some(rest.to_string()),
                None => st.global_append = Some(rest.to_string()),
            },
            _ => {
                let Some(l) = st.labels.last_mut() else {
                    continue;
                };
                match kw.as_str() {
                    "kernel" | "linux" | "boot" | "bss" | "pxe" | "fdimage" | "comboot"
                    | "com32" | "config" => {
                        // Anything after the file is a command line too.
                        let (k, args) = split(rest);
                        l.kernel = Some(k.to_string());
                        l.kernel_keyword = kw.clone();
                        if !args.is_empty() && l.append.is_none() {
                            l.append = Some(args.to_string());
                        }
                    }
                    "initrd" => l.initrds = list(rest),
                    "localboot" => l.local = true,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn include(
    fs: &dyn BootFs,
    target: &str,
    dir: &str,
    file: &str,
    line: usize,
    includes: &mut Includes,
    st: &mut State,
) -> Result<(), ConfigError> {
    let Some(target) = target.split_ascii_whitespace().next() else {
        return Ok(());
    };
    let target = relative_to(dir, target);
    if let Some(text) = includes.enter(fs, &target, file, line)? {
        let result = read(fs, &text, &target, includes, st);
        includes.leave();
        result?;
    }
    Ok(())
}

fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn finish(index: usize, l: Label, global_append: Option<&str>) -> BootEntry {
    let source = Source {
        format: Format::Extlinux,
        file: l.file,
        line: l.line,
    };
    let title = l.menu_label.unwrap_or_else(|| l.name.clone());
    let mut e = BootEntry::new(index, title, Some(l.name), source);
    let Some(kernel) = l.kernel else {
        e.kind = EntryKind::Unsupported(
            if l.local {
                "it boots the local disk"
            } else {
                "it names no kernel"
            }
            .to_string(),
        );
        return e;
    };
    let lower = kernel.to_ascii_lowercase();
    if !matches!(l.kernel_keyword.as_str(), "kernel" | "linux")
        || lower.ends_with(".c32")
        || lower.ends_with(".com")
        || lower.ends_with(".0")
    {
        e.kind =
            EntryKind::Unsupported(format!("{kernel} is a syslinux module, not a Linux kernel"));
        return e;
    }
    e.kernel = relative_to(&l.dir, &kernel);
    let append = l.append.as_deref().or(global_append).unwrap_or("");
    let mut initrds = l.initrds;
    let mut options = Vec::new();
    for word in append.split_ascii_whitespace() {
        match word.strip_prefix("initrd=") {
            // The loader hands initrds to kexec, not to the kernel.
            Some(list_) => initrds.extend(list(list_)),
            None if word == "-" => {}
            None => options.push(word),
        }
    }
    e.initrds = initrds.iter().map(|i| relative_to(&l.dir, i)).collect();
    e.options = options.join(" ");
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    const ALPINE: &str = "\
# Generated by update-extlinux 6.04_pre1-r9
DEFAULT menu.c32
PROMPT 0
MENU TITLE Alpine/Linux Boot Menu
MENU HIDDEN
MENU AUTOBOOT Alpine will be booted automatically in # seconds.
TIMEOUT 10
LABEL lts
  MENU DEFAULT
  MENU LABEL Linux ^lts
  LINUX vmlinuz-lts
  INITRD initramfs-lts
  APPEND root=UUID=4b2a1c3d-1111-2222-3333-444455556666 modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4

MENU SEPARATOR
label old
  kernel /boot/vmlinuz-old
  append initrd=/boot/intel-ucode.img,/boot/initrd-old root=/dev/vda3 -
label hdt
  menu label Hardware Info
  com32 hdt.c32
label local
  localboot 0
";

    fn list_of(t: &Tree, path: &str) -> EntryList {
        parse(&t.fs(), path).unwrap().unwrap()
    }

    #[test]
    fn alpine_extlinux() {
        let t = Tree::new();
        t.text("/boot/extlinux/extlinux.conf", ALPINE);
        let list = list_of(&t, "/boot/extlinux/extlinux.conf");
        assert_eq!(list.entries.len(), 4);
        let e = &list.entries[list.default];
        assert_eq!(e.title(), "Linux lts");
        assert_eq!(e.id(), Some("lts"));
        assert_eq!(e.kernel, "/boot/extlinux/vmlinuz-lts");
        assert_eq!(e.initrds, ["/boot/extlinux/initramfs-lts"]);
        assert!(e
            .options
            .starts_with("root=UUID=4b2a1c3d-1111-2222-3333-444455556666 modules="));
        assert_eq!(e.source.line, 8);
        let old = list.find("old").unwrap();
        assert_eq!(old.initrds, ["/boot/intel-ucode.img", "/boot/initrd-old"]);
        assert_eq!(old.options, "root=/dev/vda3");
        assert!(
            matches!(&list.find("hdt").unwrap().kind, EntryKind::Unsupported(w) if w.contains("syslinux module"))
        );
        assert!(
            matches!(&list.find("local").unwrap().kind, EntryKind::Unsupported(w) if w.contains("local disk"))
        );
    }

    #[test]
    fn default_global_append_and_includes() {
        let t = Tree::new();
        t.text(
            "/syslinux.cfg",
            "default two\nAPPEND console=ttyS0 ro\nInclude /entries.cfg\nlabel one\n kernel /k1\n",
        );
        t.text(
            "/entries.cfg",
            "LABEL two\n  KERNEL /k2 root=/dev/sda1\nlabel three\n  KERNEL k3\n",
        );
        let list = list_of(&t, "/syslinux.cfg");
        let titles: Vec<String> = list.entries.iter().map(BootEntry::title).collect();
        assert_eq!(titles, ["two", "three", "one"]);
        assert_eq!(list.entries[list.default].kernel, "/k2");
        // Arguments on the KERNEL line are this label's own.
        assert_eq!(list.entries[0].options, "root=/dev/sda1");
        assert_eq!(list.entries[1].options, "console=ttyS0 ro");
        assert_eq!(list.entries[1].source.file, "/entries.cfg");
    }

    #[test]
    fn include_loops_are_refused() {
        let t = Tree::new();
        t.text("/extlinux.conf", "include a.cfg\n");
        t.text("/a.cfg", "label x\nkernel /k\nINCLUDE /extlinux.conf\n");
        let err = parse(&t.fs(), "/extlinux.conf").unwrap_err();
        assert_eq!(err.file, "/a.cfg");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("loop"), "{err}");
    }

    #[test]
    fn text_blocks_are_skipped_and_discover_finds_syslinux() {
        let t = Tree::new();
        t.text(
            "/boot/syslinux/syslinux.cfg",
            "label a\ntext help\nlabel fake\nendtext\nlinux /vmlinuz\n",
        );
        let list = discover(&t.fs()).unwrap().unwrap();
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].kernel, "/vmlinuz");
    }
}
