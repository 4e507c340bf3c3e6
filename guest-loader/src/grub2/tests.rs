use super::*;
use crate::testutil::Tree;

const UUID: &str = "0f1a9c3e-5b7d-4c2a-9e61-3d8b2f4a7c10";
const DEBIAN12: &str = include_str!("../../fixtures/debian12-grub.cfg");

fn grubenv(body: &str) -> Vec<u8> {
    let mut b = b"# GRUB Environment Block\n".to_vec();
    b.extend_from_slice(body.as_bytes());
    b.resize(1024, b'#');
    b
}

fn parse_text(text: &str) -> Result<EntryList, ConfigError> {
    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", text);
    parse(&t.fs(), "/boot/grub/grub.cfg").map(|l| l.unwrap())
}

#[test]
fn debian12_update_grub_output() {
    let list = parse_text(DEBIAN12).unwrap();
    let titles: Vec<String> = list.entries.iter().map(BootEntry::title).collect();
    assert_eq!(
        titles,
        [
            "Debian GNU/Linux",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-13-amd64",
            "UEFI Firmware Settings",
        ]
    );
    let indices: Vec<String> = list.entries.iter().map(BootEntry::index_path).collect();
    assert_eq!(indices, ["0", "1>0", "1>1", "1>2", "2"]);
    assert_eq!(list.default, 0);
    let e = &list.entries[0];
    assert_eq!(e.id(), Some(format!("gnulinux-simple-{UUID}").as_str()));
    assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
    assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-18-amd64"]);
    assert_eq!(e.options, format!("root=UUID={UUID} ro quiet"));
    assert_eq!(e.root_hint, Some(RootHint::Uuid(UUID.to_string())));
    assert_eq!(e.kind, EntryKind::Linux);
    assert_eq!(e.source.line, 120);
    assert_eq!(
        list.entries[2].options,
        format!("root=UUID={UUID} ro single")
    );
    assert_eq!(
        list.entries[2].path[0].id.as_deref(),
        Some(format!("gnulinux-advanced-{UUID}").as_str())
    );
    assert!(
        matches!(list.entries[4].kind, EntryKind::Unsupported(ref why) if why.contains("firmware setup"))
    );
}

#[test]
fn debian12_saved_entry_from_grubenv() {
    // GRUB_DEFAULT=saved writes `set default="${saved_entry}"` instead of "0".
    let cfg = DEBIAN12.replace("   set default=\"0\"", "   set default=\"${saved_entry}\"");
    assert_ne!(cfg, DEBIAN12);
    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", &cfg);
    t.file(
        "/boot/grub/grubenv",
        &grubenv(&format!(
            "saved_entry=gnulinux-advanced-{UUID}>gnulinux-6.1.0-13-amd64-advanced-{UUID}\n"
        )),
    );
    let list = parse(&t.fs(), "/boot/grub/grub.cfg").unwrap().unwrap();
    assert_eq!(list.entries[list.default].index_path(), "1>2");
    // No grubenv: the default names nothing and GRUB's fallback is entry 0.
    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", &cfg);
    assert_eq!(
        parse(&t.fs(), "/boot/grub/grub.cfg")
            .unwrap()
            .unwrap()
            .default,
        0
    );
}

#[test]
fn default_by_number_title_id_and_path() {
    let cfg = |d: &str| {
        format!(
            "set default={d}\nmenuentry 'A' {{ linux /a }}\nsubmenu 'Sub' --id sub {{\n menuentry 'B' --id=b {{ linux /b }}\n menuentry \"C\" {{ linux /c }}\n}}\nmenuentry D {{ linux /d }}\n"
        )
    };
    for (d, want) in [
        ("2", "/d"),
        ("'1>1'", "/c"),
        ("'Sub>B'", "/b"),
        ("b", "/b"),
        ("sub>1", "/c"),
        ("D", "/d"),
        ("9", "/a"),
    ] {
        let list = parse_text(&cfg(d)).unwrap();
        assert_eq!(list.entries[list.default].kernel, want, "default {d}");
    }
}

#[test]
fn aliases_quoting_continuations_and_search_forms() {
    let list = parse_text(concat!(
        "menuentry \"Fancy \\\"quoted\\\" title\" {\n",
        "  search.fs_uuid 1234-ABCD root\n",
        "  linuxefi (hd0,gpt1)/vmlinuz root=/dev/sda2 \\\n",
        "     'acpi_osi=Windows 2020' ro\n",
        "  initrdefi /intel-ucode.img /initramfs.img\n",
        "}\n",
        "menuentry old { linux16 /boot/vmlinuz; initrd16 /boot/initrd; search --label --set=bootvar BOOT; search --set ROOTLABEL --label }\n",
        "menuentry lbl { search --no-floppy --label --set=root BOOT; linux /v; }\n",
        "menuentry tmp { set k=/vmlinuz-$v; set v=1; linux $k $unset x }\n",
    ))
    .unwrap();
    let e = &list.entries[0];
    assert_eq!(e.title(), "Fancy \"quoted\" title");
    assert_eq!(e.kernel, "/vmlinuz");
    assert_eq!(e.options, "root=/dev/sda2 acpi_osi=\"Windows 2020\" ro");
    assert_eq!(e.initrds, ["/intel-ucode.img", "/initramfs.img"]);
    assert_eq!(e.root_hint, Some(RootHint::Uuid("1234-ABCD".into())));
    assert_eq!(list.entries[1].kernel, "/boot/vmlinuz");
    // `--set=bootvar` sets another variable, not the entry's root; a bare
    // `--set` takes no value, so ROOTLABEL is what is searched for.
    assert_eq!(
        list.entries[1].root_hint,
        Some(RootHint::Label("ROOTLABEL".into()))
    );
    let list2 = parse_text("menuentry x { search --label --set=bootvar BOOT; linux /v }").unwrap();
    assert_eq!(list2.entries[0].root_hint, None);
    assert_eq!(
        list.entries[2].root_hint,
        Some(RootHint::Label("BOOT".into()))
    );
    // Variables expand when their command runs, not before; unset ones vanish.
    assert_eq!(list.entries[3].kernel, "/vmlinuz-");
    assert_eq!(list.entries[3].options, "x");
}

#[test]
fn an_entrys_sets_stay_inside_it() {
    let list =
        parse_text("menuentry a { set default=1; linux /a }\nmenuentry b { linux /b }\n").unwrap();
    assert_eq!(list.default, 0);
}

#[test]
fn xen_multiboot_entries_boot_the_dom0_kernel_and_others_are_marked() {
    let list = parse_text(concat!(
        "menuentry 'Debian GNU/Linux, with Xen hypervisor' {\n",
        "  multiboot2 /boot/xen-4.17-amd64.gz placeholder dom0_mem=1G\n",
        "  module2 /boot/vmlinuz-6.1.0-18-amd64 placeholder root=/dev/xvda1 ro\n",
        "  module2 --nounzip /boot/initrd.img-6.1.0-18-amd64\n",
        "}\n",
        "menuentry win { chainloader +1 }\n",
        "menuentry nothing { echo hi }\n",
    ))
    .unwrap();
    let e = &list.entries[0];
    assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
    assert_eq!(e.options, "placeholder root=/dev/xvda1 ro");
    assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-18-amd64"]);
    assert!(matches!(&list.entries[1].kind, EntryKind::Unsupported(w) if w.contains("chainloads")));
    assert!(
        matches!(&list.entries[2].kind, EntryKind::Unsupported(w) if w.contains("no linux kernel"))
    );
}

#[test]
fn includes_are_followed_and_read_once() {
    let t = Tree::new();
    t.text(
        "/boot/grub/grub.cfg",
        "menuentry a { linux /a }\nif [ -f $prefix/custom.cfg ]; then source $prefix/custom.cfg\nelse source ${config_directory}/custom.cfg; fi\nsource /boot/grub/missing.cfg\n",
    );
    t.text(
        "/boot/grub/custom.cfg",
        "menuentry custom { linux /c }\nset default=custom\n",
    );
    let list = parse(&t.fs(), "/boot/grub/grub.cfg").unwrap().unwrap();
    let titles: Vec<String> = list.entries.iter().map(BootEntry::title).collect();
    assert_eq!(titles, ["a", "custom"]);
    assert_eq!(list.entries[1].source.file, "/boot/grub/custom.cfg");
    assert_eq!(list.entries[1].source.line, 1);
    assert_eq!(list.default, 1);
}

#[test]
fn include_loops_are_refused_with_the_chain() {
    let t = Tree::new();
    t.text(
        "/boot/grub/grub.cfg",
        "menuentry a { linux /a }\nsource /boot/grub/b.cfg\n",
    );
    t.text(
        "/boot/grub/b.cfg",
        "\n\nconfigfile ($root)/boot/grub/grub.cfg\n",
    );
    let err = parse(&t.fs(), "/boot/grub/grub.cfg").unwrap_err();
    assert_eq!(err.file, "/boot/grub/b.cfg");
    assert_eq!(err.line, 3);
    assert!(
        err.message
            .contains("loop: /boot/grub/grub.cfg -> /boot/grub/b.cfg -> /boot/grub/grub.cfg"),
        "{err}"
    );
    // A self-include through a symlink is the same file.
    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", "source /boot/grub/alias.cfg\n");
    t.link("/boot/grub/alias.cfg", "grub.cfg");
    assert!(parse(&t.fs(), "/boot/grub/grub.cfg")
        .unwrap_err()
        .message
        .contains("loop"));
}

#[test]
fn deep_includes_and_deep_nesting_are_refused() {
    let t = Tree::new();
    t.text("/boot/grub/grub.cfg", "source /i0.cfg\n");
    for i in 0..20 {
        t.text(&format!("/i{i}.cfg"), &format!("source /i{}.cfg\n", i + 1));
    }
    let err = parse(&t.fs(), "/boot/grub/grub.cfg").unwrap_err();
    assert!(err.message.contains("deeper than 8"), "{err}");

    let deep = "submenu s {\n".repeat(40) + &"}\n".repeat(40);
    let err = parse_text(&deep).unwrap_err();
    assert!(err.message.contains("nest deeper than 16"), "{err}");
    assert_eq!(err.line, 17);
}

#[test]
fn unbalanced_braces_and_too_many_entries() {
    let err = parse_text("menuentry a {\n linux /a\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/boot/grub/grub.cfg line 1: this block's \"{\" is never closed"
    );
    let err = parse_text("linux /a\n}\n").unwrap_err();
    assert_eq!(err.line, 2);
    let err = parse_text(&"menuentry a { linux /a }\n".repeat(600)).unwrap_err();
    assert!(err.message.contains("more than 512 menu entries"), "{err}");
    assert!(parse_text("menuentry --class x { linux /a }")
        .unwrap_err()
        .message
        .contains("no title"));
}

#[test]
fn huge_and_binary_configs_are_refused() {
    let t = Tree::new();
    t.file("/boot/grub/grub.cfg", &vec![b'#'; 1024 * 1024 + 1]);
    let err = parse(&t.fs(), "/boot/grub/grub.cfg").unwrap_err();
    assert!(
        err.to_string().contains("more than the 1048576 allowed"),
        "{err}"
    );
    let t = Tree::new();
    t.file("/boot/grub/grub.cfg", b"menuentry a {\x00\xff}");
    assert!(parse(&t.fs(), "/boot/grub/grub.cfg")
        .unwrap_err()
        .message
        .contains("NUL"));
}

#[test]
fn discover_skips_configs_without_entries() {
    let t = Tree::new();
    // Fedora's grub.cfg lists no entries: blscfg reads BLS ones.
    t.text("/boot/grub2/grub.cfg", "insmod blscfg\nblscfg\n");
    assert_eq!(discover(&t.fs()).unwrap(), None);
    t.text("/grub/grub.cfg", "menuentry a { linux /vmlinuz }\n");
    assert_eq!(discover(&t.fs()).unwrap().unwrap().file, "/grub/grub.cfg");
}

#[test]
fn exponential_expansion_is_refused() {
    let cfg = "set a=0123456789abcdef\n".to_string()
        + &"set a=$a$a\n".repeat(40)
        + "menuentry x { linux /k $a }\n";
    let err = parse_text(&cfg).unwrap_err();
    assert!(
        err.message.contains("expand to more than 16777216 bytes"),
        "{err}"
    );
    assert!(err.line > 20 && err.line <= 42, "{err}");
    // Many variables are bounded too, and the config still parses.
    let cfg: String = (0..2000)
        .map(|i| format!("set v{i}=x\n"))
        .collect::<String>()
        + "menuentry x { linux /k }\n";
    assert_eq!(parse_text(&cfg).unwrap().entries.len(), 1);
}
