//! Fuzz-style tests with no fuzzer: a fixed-seed generator feeds each parser
//! random bytes and random soups of its own keywords. A panic, a hang or an
//! entry list over the limits fails the test; so does an error that does
//! not name the file at fault.

use crate::entry::{EntryList, Format};
use crate::limits::MAX_ENTRIES;
use crate::testutil::Tree;
use crate::{bls, chooser, extlinux, grub2, grub_legacy};

/// xorshift64*: small, deterministic, good enough to shake parsers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Words from `vocab` glued with random separators, sometimes a raw byte.
    fn soup(&mut self, vocab: &[&str], max_words: usize) -> Vec<u8> {
        const SEPS: &[&str] = &[" ", " ", "\n", "\t", ";", "", "\\\n"];
        let mut out = Vec::new();
        for _ in 0..self.below(max_words) {
            out.extend_from_slice(vocab[self.below(vocab.len())].as_bytes());
            out.extend_from_slice(SEPS[self.below(SEPS.len())].as_bytes());
            match self.below(100) {
                0 | 1 => out.push(self.next() as u8 | 0x80),
                2 => out.extend_from_slice(["'", "\"", "${", "\\"][self.below(4)].as_bytes()),
                _ => {}
            }
        }
        out
    }
}

const GRUB_WORDS: &[&str] = &[
    // Whole entries, several times, so short soups often hold one.
    "menuentry 'e' { linux /k a b; }",
    "menuentry 'e' { linux /k a b; }",
    "submenu s { menuentry \"f\" --id f { linux /k; initrd /i; } }",
    "menuentry",
    "submenu",
    "{",
    "}",
    "'t'",
    "\"t\"",
    "linux",
    "linux16",
    "initrd",
    "/boot/vmlinuz",
    "ro",
    "set",
    "default=",
    "default=1>0",
    "default=\"${saved_entry}\"",
    "$menuentry_id_option",
    "'id'",
    "--id",
    "--class",
    "x",
    "if",
    "then",
    "else",
    "fi",
    "function",
    "f",
    "search",
    "--fs-uuid",
    "--set=root",
    "UUID",
    "source",
    "/x.cfg",
    "/boot/grub/grub.cfg",
    "configfile",
    "load_env",
    "#",
    "$x",
    "${x}",
    "\\",
    "(hd0,1)/k",
    "multiboot2",
    "/xen.gz",
    "module2",
    "chainloader",
    "x=y",
];
const EXTLINUX_WORDS: &[&str] = &[
    "LABEL",
    "label",
    "a",
    "b",
    "KERNEL",
    "LINUX",
    "/k",
    "k.c32",
    "APPEND",
    "initrd=/i,/j",
    "-",
    "INITRD",
    "MENU",
    "LABEL",
    "DEFAULT",
    "INCLUDE",
    "/x.cfg",
    "/extlinux.conf",
    "TEXT",
    "HELP",
    "ENDTEXT",
    "LOCALBOOT",
    "#",
    "\n",
];
const LEGACY_WORDS: &[&str] = &[
    "title",
    "x",
    "kernel",
    "/xen.gz",
    "/vmlinuz",
    "module",
    "initrd",
    "/i",
    "default",
    "default=",
    "saved",
    "1",
    "root",
    "(hd0,0)",
    "chainloader",
    "+1",
    "--type=linux",
    "#",
    "\n",
    "=",
];
const BLS_WORDS: &[&str] = &[
    "title",
    "version",
    "1.2~rc3",
    "linux",
    "/vmlinuz",
    "initrd",
    "/i",
    "options",
    "$kernelopts",
    "${",
    "}",
    "sort-key",
    "machine-id",
    "efi",
    "#",
    "\n",
];

const ROUNDS: usize = 300;

/// How many inputs gave entries and how many gave errors, so a test can
/// show the generator reached past the first line of the parser.
#[derive(Default, Debug)]
struct Tally {
    entries: usize,
    errors: usize,
}

impl Tally {
    fn check(&mut self, result: Result<Option<EntryList>, crate::ConfigError>, file: &str) {
        match result {
            Ok(Some(list)) => {
                assert!(list.entries.len() <= MAX_ENTRIES);
                if !list.entries.is_empty() {
                    assert!(list.default < list.entries.len());
                    self.entries += 1;
                }
            }
            Ok(None) => {}
            Err(e) => {
                assert!(
                    e.file == file || e.file == "/x.cfg",
                    "error names {}, not the file: {e}",
                    e.file
                );
                assert!(!e.message.is_empty());
                self.errors += 1;
            }
        }
    }

    fn reached_both(&self) {
        assert!(self.entries > 10 && self.errors > 10, "{self:?}");
    }
}

fn inputs(rng: &mut Rng, vocab: &[&str]) -> Vec<u8> {
    match rng.below(3) {
        0 => rng.bytes(4096),
        // Short soups often parse; long ones reach the limits.
        1 => rng.soup(vocab, 12),
        _ => rng.soup(vocab, 400),
    }
}

#[test]
fn grub2_survives_random_input() {
    let mut rng = Rng(0x6b65_656c_0001);
    let t = Tree::new();
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        t.file("/boot/grub/grub.cfg", &inputs(&mut rng, GRUB_WORDS));
        t.file("/x.cfg", &inputs(&mut rng, GRUB_WORDS));
        tally.check(
            grub2::parse(&t.fs(), "/boot/grub/grub.cfg"),
            "/boot/grub/grub.cfg",
        );
    }
    tally.reached_both();
}

#[test]
fn grubenv_survives_random_input() {
    let mut rng = Rng(0x6b65_656c_0002);
    for _ in 0..ROUNDS * 10 {
        let mut block = b"# GRUB Environment Block\n".to_vec();
        if rng.below(4) == 0 {
            block.clear();
        }
        block.extend(rng.bytes(1100));
        match grub2::grubenv::parse(&block) {
            Ok(vars) => assert!(vars.len() <= 256 && block.len() <= 1024),
            Err(why) => assert!(!why.is_empty()),
        }
    }
}

#[test]
fn extlinux_survives_random_input() {
    let mut rng = Rng(0x6b65_656c_0003);
    let t = Tree::new();
    let mut tally = Tally::default();
    for _ in 0..ROUNDS {
        t.file("/extlinux.conf", &inputs(&mut rng, EXTLINUX_WORDS));
        t.file("/x.cfg", &inputs(&mut rng, EXTLINUX_WORDS));
        tally.check(extlinux::parse(&t.fs(), "/extlinux.conf"), "/extlinux.conf");
    }
    tally.reached_both();
}

#[test]
fn grub_legacy_survives_random_input() {
    let mut rng = Rng(0x6b65_656c_0004);
    let mut tally = Tally::default();
    for _ in 0..ROUNDS * 3 {
        let text = String::from_utf8_lossy(&inputs(&mut rng, LEGACY_WORDS)).into_owned();
        tally.check(
            grub_legacy::parse(&text, "/boot/grub/menu.lst").map(Some),
            "/boot/grub/menu.lst",
        );
    }
    // menu.lst has few ways to be wrong: only the entry count is an error.
    assert!(tally.entries > 10, "{tally:?}");
}

#[test]
fn bls_survives_random_input() {
    let mut rng = Rng(0x6b65_656c_0005);
    let t = Tree::new();
    for round in 0..ROUNDS / 3 {
        t.file(
            &format!("/loader/entries/e{}.conf", round % 7),
            &inputs(&mut rng, BLS_WORDS),
        );
        let list = bls::discover(&t.fs());
        Tally::default().check(list.clone(), "/loader/entries");
        if let Ok(Some(list)) = list {
            assert_eq!(list.format, Format::Bls);
        }
    }
}

#[test]
fn the_chooser_survives_random_disks() {
    let mut rng = Rng(0x6b65_656c_0006);
    let mut planned = 0;
    for _ in 0..ROUNDS / 6 {
        let t = Tree::new();
        t.file("/boot/grub/grub.cfg", &inputs(&mut rng, GRUB_WORDS));
        t.file("/boot/grub/menu.lst", &inputs(&mut rng, LEGACY_WORDS));
        t.file("/extlinux.conf", &inputs(&mut rng, EXTLINUX_WORDS));
        t.file("/boot/vmlinuz", &rng.bytes(3));
        t.file("/vmlinuz", b"k");
        let fs = t.fs();
        let disks = [chooser::Filesystem::new("u", &fs)];
        let wanted = ["0", "1>0", "t", "x"][rng.below(4)];
        for w in [None, Some(wanted)] {
            match chooser::choose(&disks, w, "") {
                Ok(plan) => {
                    assert!(plan.cmdline.len() <= 2047);
                    planned += 1;
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
    // /vmlinuz is always there, so most random disks still boot something.
    assert!(planned > 10, "{planned}");
}
