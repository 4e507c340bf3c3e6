//! Boot Loader Specification Type #1: one `*.conf` file per entry under
//! `loader/entries/`, with `title`, `version`, `linux`, `initrd` (repeated),
//! `options` (repeated, joined) and `machine-id`.
//!
//! Fedora (before 35ish) writes `options $kernelopts`, taking the value from
//! GRUB's environment block; those variables are expanded from grubenv.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, Source};
use crate::fs::{BootFs, FileKind};
use crate::grub2::grubenv;
use crate::limits::{MAX_BLS_ENTRY_BYTES, MAX_ENTRIES};
use crate::text::{strip_device, to_text};
use crate::version;

/// Where entries live: `$BOOT/loader/entries`, on a boot partition or in /boot.
pub const DIRS: &[&str] = &["/loader/entries", "/boot/loader/entries"];

/// Where Fedora's GRUB keeps the block `$kernelopts` comes from.
const GRUBENV_PATHS: &[&str] = &[
    "/grub2/grubenv",
    "/boot/grub2/grubenv",
    "/grub/grubenv",
    "/boot/grub/grubenv",
];

/// What the specification sorts entries by.
#[derive(Debug, Default, Clone)]
pub struct SortKey {
    sort_key: Option<String>,
    machine_id: Option<String>,
    version: Option<String>,
    id: String,
}

/// The specification's order: entries with a sort-key first, by sort-key,
/// then machine-id, then version descending; the rest by id, descending.
fn order(a: &SortKey, b: &SortKey) -> Ordering {
    match (&a.sort_key, &b.sort_key) {
        (Some(x), Some(y)) => x
            .cmp(y)
            .then_with(|| a.machine_id.cmp(&b.machine_id))
            .then_with(|| {
                version::compare(
                    b.version.as_deref().unwrap_or(""),
                    a.version.as_deref().unwrap_or(""),
                )
            })
            .then_with(|| version::compare(&b.id, &a.id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => version::compare(
            b.version.as_deref().unwrap_or(""),
            a.version.as_deref().unwrap_or(""),
        )
        .then_with(|| version::compare(&b.id, &a.id)),
    }
}

/// The entries of the first directory on `fs` that has usable ones.
pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    for dir in DIRS {
        if let Some(list) = read_dir(fs, dir)? {
            return Ok(Some(list));
        }
    }
    Ok(None)
}

/// The entries in one directory, sorted, the first the default; `Ok(None)`
/// when the directory is missing or holds no `.conf` files.
pub fn read_dir(fs: &dyn BootFs, dir: &str) -> Result<Option<EntryList>, ConfigError> {
    let listing = match fs.list_dir(dir) {
        Ok(l) => l,
        Err(e) if e.is_not_found() || matches!(e, crate::fs::FsError::NotADir { .. }) => {
            return Ok(None)
        }
        Err(e) => return Err(ConfigError::fs(dir, 0, &e)),
    };
    let mut found = Vec::new();
    for item in listing {
        let Some(id) = item.name.strip_suffix(".conf") else {
            continue;
        };
        if id.is_empty() || !matches!(item.kind, FileKind::File | FileKind::Symlink) {
            continue;
        }
        if found.len() >= MAX_ENTRIES {
            log::warn!("{dir}: more than {MAX_ENTRIES} entries; reading the first only");
            break;
        }
        let file = format!("{dir}/{}", item.name);
        // One broken entry does not hide the others.
        let text = match fs.read_file(&file, MAX_BLS_ENTRY_BYTES) {
            Ok(bytes) => match to_text(&file, &bytes) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("{e}; skipping that entry");
                    continue;
                }
            },
            Err(e) => {
                log::warn!("{e}; skipping that entry");
                continue;
            }
        };
        found.push(parse_entry(&text, &file, id));
    }
    if found.is_empty() {
        return Ok(None);
    }
    found.sort_by(|a, b| order(&a.1, &b.1));
    let mut env: Option<HashMap<String, String>> = None;
    let entries = found
        .into_iter()
        .enumerate()
        .map(|(i, (mut e, _))| {
            e.path[0].index = i;
            if e.options.contains('$') {
                let env = env.get_or_insert_with(|| load_env(fs));
                e.options = expand(&e.options, env);
            }
            e
        })
        .collect();
    Ok(Some(EntryList::new(
        Format::Bls,
        dir.to_string(),
        entries,
        None,
    )))
}

/// Parses one entry file's text. Unknown keys are ignored, as the
/// specification asks; an entry with neither `linux` nor `efi` is unsupported.
pub fn parse_entry(text: &str, file: &str, id: &str) -> (BootEntry, SortKey) {
    let mut title = None;
    let mut linux = None;
    let mut efi = None;
    let mut initrds = Vec::new();
    let mut options = Vec::new();
    let mut key = SortKey {
        id: id.to_string(),
        ..SortKey::default()
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, value) = match line.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim().to_string()),
            None => (line, String::new()),
        };
        match k {
            "title" => title = Some(value),
            "version" => key.version = Some(value),
            "machine-id" => key.machine_id = Some(value),
            "sort-key" => key.sort_key = Some(value),
            "linux" => linux = Some(value),
            "efi" => efi = Some(value),
            "initrd" => initrds.extend(value.split_ascii_whitespace().map(strip_device)),
            "options" if !value.is_empty() => options.push(value),
            _ => {}
        }
    }
    let source = Source {
        format: Format::Bls,
        file: file.to_string(),
        line: 0,
    };
    let mut e = BootEntry::new(
        0,
        title.unwrap_or_else(|| id.to_string()),
        Some(id.to_string()),
        source,
    );
    e.version = key.version.clone();
    e.options = options.join(" ");
    match (linux, efi) {
        (Some(linux), _) => {
            e.kernel = strip_device(&linux);
            e.initrds = initrds;
        }
        (None, Some(efi)) => {
            e.kernel = strip_device(&efi);
            e.kind = EntryKind::Uki;
        }
        (None, None) => e.kind = EntryKind::Unsupported("it names no linux kernel".to_string()),
    }
    (e, key)
}

fn load_env(fs: &dyn BootFs) -> HashMap<String, String> {
    GRUBENV_PATHS
        .iter()
        .map(|p| grubenv::load(fs, p))
        .find(|env| !env.is_empty())
        .unwrap_or_default()
}

/// `$name` and `${name}` from GRUB's environment; unknown names vanish, as
/// they do in GRUB.
fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => (inner, after.len()),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        if name.is_empty() && len == 0 {
            out.push('$');
        } else if let Some(v) = env.get(name) {
            out.push_str(v);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    // Expansion can leave doubled blanks where a name was unknown.
    out.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tree;

    const MID: &str = "6a9857a393724b7a981ebb5b8495b9ea";

    fn fedora_entry(version: &str, options: &str) -> String {
        format!(
            "title Fedora Linux ({version}) 39 (Server Edition)\nversion {version}\nlinux /vmlinuz-{version}\ninitrd /initramfs-{version}.img\noptions {options}\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class fedora\n"
        )
    }

    #[test]
    fn fedora_entries_sort_newest_first() {
        let t = Tree::new();
        for v in [
            "6.5.6-300.fc39.x86_64",
            "6.5.12-300.fc39.x86_64",
            "6.5.10-300.fc39.x86_64",
        ] {
            t.text(
                &format!("/boot/loader/entries/{MID}-{v}.conf"),
                &fedora_entry(v, "root=UUID=5d1c7a1e-27bb-4c8f-a2f2-1a0b7e2c9d31 ro rootflags=subvol=root rhgb quiet"),
            );
        }
        t.text("/boot/loader/entries/README", "not an entry");
        let list = discover(&t.fs()).unwrap().unwrap();
        assert_eq!(list.file, "/boot/loader/entries");
        let versions: Vec<_> = list
            .entries
            .iter()
            .map(|e| e.version.clone().unwrap())
            .collect();
        assert_eq!(
            versions,
            [
                "6.5.12-300.fc39.x86_64",
                "6.5.10-300.fc39.x86_64",
                "6.5.6-300.fc39.x86_64"
            ]
        );
        let e = &list.entries[list.default];
        assert_eq!(
            e.title(),
            "Fedora Linux (6.5.12-300.fc39.x86_64) 39 (Server Edition)"
        );
        assert_eq!(
            e.id(),
            Some(format!("{MID}-6.5.12-300.fc39.x86_64").as_str())
        );
        assert_eq!(e.kernel, "/vmlinuz-6.5.12-300.fc39.x86_64");
        assert_eq!(e.initrds, ["/initramfs-6.5.12-300.fc39.x86_64.img"]);
        assert_eq!(
            e.options,
            "root=UUID=5d1c7a1e-27bb-4c8f-a2f2-1a0b7e2c9d31 ro rootflags=subvol=root rhgb quiet"
        );
        assert_eq!(e.kind, EntryKind::Linux);
        assert_eq!(list.entries[2].index_path(), "2");
        assert!(list.find("1").unwrap().kernel.contains("6.5.10"));
    }

    #[test]
    fn kernelopts_come_from_grubenv() {
        let t = Tree::new();
        t.text(
            "/loader/entries/a.conf",
            &fedora_entry("6.0.7-301.fc37.x86_64", "$kernelopts ${extra} $missing"),
        );
        let mut env = b"# GRUB Environment Block\nkernelopts=root=/dev/mapper/fedora-root ro resume=/dev/mapper/fedora-swap\nextra=quiet\n".to_vec();
        env.resize(1024, b'#');
        t.file("/grub2/grubenv", &env);
        let list = discover(&t.fs()).unwrap().unwrap();
        assert_eq!(
            list.entries[0].options,
            "root=/dev/mapper/fedora-root ro resume=/dev/mapper/fedora-swap quiet"
        );
    }

    #[test]
    fn sort_key_machine_id_multiple_initrds_and_options() {
        let t = Tree::new();
        t.text(
            "/loader/entries/z-old.conf",
            "title Old\nversion 1.0\nlinux /old\n",
        );
        t.text(
            "/loader/entries/arch.conf",
            "# comment\ntitle   Arch Linux\nsort-key arch\nlinux /vmlinuz-linux\ninitrd /intel-ucode.img\ninitrd /initramfs-linux.img\noptions root=PARTUUID=1 rw\noptions console=ttyS0,115200\n",
        );
        t.text(
            "/loader/entries/arch-fallback.conf",
            "title Fallback\nsort-key arch\nversion 0.9\nlinux /vmlinuz-linux\n",
        );
        t.text(
            "/loader/entries/uki.conf",
            "title UKI\nefi /EFI/Linux/arch.efi\n",
        );
        t.text("/loader/entries/empty.conf", "title Nothing\n");
        let list = discover(&t.fs()).unwrap().unwrap();
        let titles: Vec<_> = list.entries.iter().map(BootEntry::title).collect();
        // sort-key entries first (equal keys: the one with a version first,
        // then by id), then the rest by version and id descending.
        assert_eq!(titles, ["Fallback", "Arch Linux", "Old", "UKI", "Nothing"]);
        let arch = list.find("arch").unwrap();
        assert_eq!(arch.initrds, ["/intel-ucode.img", "/initramfs-linux.img"]);
        assert_eq!(arch.options, "root=PARTUUID=1 rw console=ttyS0,115200");
        assert_eq!(list.find("uki").unwrap().kind, EntryKind::Uki);
        assert!(matches!(
            list.find("empty").unwrap().kind,
            EntryKind::Unsupported(_)
        ));
    }

    #[test]
    fn broken_entries_are_skipped_and_empty_dirs_are_none() {
        let t = Tree::new();
        t.dir("/loader/entries");
        assert_eq!(discover(&t.fs()).unwrap(), None);
        t.file("/loader/entries/bin.conf", b"\x00\x01\x02");
        t.file("/loader/entries/huge.conf", &vec![b'#'; 64 * 1024 + 1]);
        t.link("/loader/entries/escape.conf", "../../../../etc/passwd");
        assert_eq!(discover(&t.fs()).unwrap(), None);
        t.text("/loader/entries/ok.conf", "linux /vmlinuz\n");
        let list = discover(&t.fs()).unwrap().unwrap();
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].title(), "ok");
    }

    #[test]
    fn expansion_edge_cases() {
        let env: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert_eq!(expand("x $a ${a}b $ $? ${unclosed", &env), "x 1 1b $ $?");
    }
}
