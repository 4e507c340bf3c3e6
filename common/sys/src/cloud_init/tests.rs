use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keel_common::guest::{CloudInitSpec, MAX_USER_DATA_BYTES};

use super::*;

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID0R9D4yQ2LUd2JfSTwY4nfkeEeoOwZfI+W2Fqe/v8+P alice@laptop";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC20qFpC++WoHIccibztkdwF7Ig+VTYpQWIZ5Mswdub2tQJqYSSoNL3G8GJNZdETbSSlYiSoq1eGfSWKNRBg1EVubrAwAb9NVlvWq9fBctvSTpLZ/RHP08fHHrHunIty5wiW1oqlG0BFSE1eIF+OYKzDadM9V+IvHzsxnTKL6ia0n4Eh/d4G6C5NexbCqbaNqm8Apx0s7Uo1wWD3MlDjsLAj46szWvY+Wh1UHuXJG3c0TzBV6zu8o45d6mzGPDfZHCvxUjNLM2Zzwi+6xk+0gRtN6DDpy+lp5+//uy7p4TZB7aYbMf0f1EnK0Vv3KeZ/P0HaDAfL1I+HpKQ3/H5qoBT carol";

const BASE: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

/// A scratch data partition with a kernel in images/.
struct Data(tempfile::TempDir);

impl Data {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keel-cloud-init-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("images")).expect("mkdir");
        std::fs::write(dir.path().join("images/vmlinux"), b"k").expect("kernel");
        Data(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        std::fs::write(self.path().join(rel), bytes).expect("write");
    }
}

fn spec(text: &str) -> GuestSpec {
    GuestSpec::parse(Path::new("web1.toml"), text).expect("valid spec")
}

/// BASE with a `[cloud_init]` table of `body`.
fn with_table(body: &str) -> String {
    format!("{BASE}[cloud_init]\n{body}")
}

fn table(body: &str) -> CloudInitSpec {
    spec(&with_table(body)).cloud_init.expect("cloud_init")
}

fn prepare_text(data: &Data, text: &str) -> Result<Option<Prepared>, CloudInitError> {
    prepare(&spec(text), Path::new("web1.toml"), text, data.path())
}

/// The 12 hex digits after `keel-web1-`.
#[track_caller]
fn digest_part(id: &str) -> &str {
    let hex = id.strip_prefix("keel-web1-").expect("keel-NAME- prefix");
    assert_eq!(hex.len(), 12, "{id}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    hex
}

#[test]
fn the_generated_seed_is_exactly_this_text() {
    let ci = table(&format!(
        "hostname = \"web1.example.org\"\nssh_authorized_keys = [{ED25519:?}, {RSA:?}]\n"
    ));
    let seed = render("web1", &ci, None, None);
    digest_part(&seed.instance_id);
    assert_eq!(
        seed.meta_data,
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"web1.example.org\"\n",
            seed.instance_id
        )
    );
    assert_eq!(
        String::from_utf8(seed.user_data.clone()).expect("utf-8"),
        format!(
            "#cloud-config\nhostname: \"web1.example.org\"\nusers:\n  - default\n\
             ssh_authorized_keys:\n  - \"{ED25519}\"\n  - \"{RSA}\"\n"
        )
    );
    assert_eq!(seed.network_config, None);
    let names: Vec<&str> = seed.files().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["meta-data", "user-data"]);

    // No keys, no key list; the hostname defaults to the guest's name.
    let seed = render("web1", &table(""), None, None);
    assert_eq!(
        seed.user_data,
        b"#cloud-config\nhostname: \"web1\"\nusers:\n  - default\n"
    );
    assert!(seed.meta_data.ends_with("\nlocal-hostname: \"web1\"\n"));
}

#[test]
fn yaml_specials_in_a_comment_are_quoted() {
    let comment = "alice: \"root\" # \\ - [x] {y} &a *b !t |> 'q' % @ ` é ✓";
    let key = ED25519.replace("alice@laptop", comment);
    let quoted = yaml_string(&key);
    assert_eq!(
        quoted,
        format!(
            "\"{}alice: \\\"root\\\" # \\\\ - [x] {{y}} &a *b !t |> 'q' % @ ` \\u00e9 \\u2713\"",
            &ED25519[..ED25519.len() - "alice@laptop".len()]
        )
    );
    assert_eq!(yaml_string("null"), "\"null\"");
    assert_eq!(yaml_string("\u{1f511}"), "\"\\U0001f511\"");

    // PyYAML, cloud-init's parser, reads back the very strings.
    let ci = table(&format!(
        "hostname = \"null\"\nssh_authorized_keys = [{}, {RSA:?}]\n",
        toml_string(&key)
    ));
    let seed = render("web1", &ci, None, None);
    let script = "import sys, yaml, json\n\
                  d = yaml.safe_load(open(sys.argv[1], encoding='utf-8'))\n\
                  print(json.dumps([d['hostname'], d['users'], d['ssh_authorized_keys']]))";
    let data = Data::new();
    data.write("images/user-data", &seed.user_data);
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(data.path().join("images/user-data"))
        .output()
        .expect("python3 with PyYAML (Debian's python3-yaml)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "[{}, [\"default\"], [{}, {}]]\n",
        json_string("null"),
        json_string(&key),
        json_string(RSA)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// `text` as TOML writes a string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as Python's json.dumps writes it (ASCII only).
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[test]
fn own_user_data_is_verbatim_and_the_keys_move_to_meta_data() {
    let ci = table(&format!(
        "ssh_authorized_keys = [{ED25519:?}]\nuser_data = \"images/u\"\nnetwork_config = \"images/n\"\n"
    ));
    let own = b"#!/bin/sh\necho hi\n";
    let net = b"version: 2\nethernets: {}\n";
    let seed = render("web1", &ci, Some(own), Some(net));
    assert_eq!(seed.user_data, own);
    assert_eq!(seed.network_config.as_deref(), Some(&net[..]));
    assert_eq!(
        seed.meta_data,
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"web1\"\npublic-keys:\n  - \"{ED25519}\"\n",
            seed.instance_id
        )
    );
    let names: Vec<&str> = seed.files().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["meta-data", "user-data", "network-config"]);
}

#[test]
fn the_instance_id_follows_the_content_unless_pinned() {
    let base = render(
        "web1",
        &table(&format!("ssh_authorized_keys = [{ED25519:?}]\n")),
        None,
        None,
    );
    let again = render(
        "web1",
        &table(&format!("ssh_authorized_keys = [{ED25519:?}]\n")),
        None,
        None,
    );
    assert_eq!(base, again, "the same spec, the same seed");
    let id = digest_part(&base.instance_id).to_string();
    let variants = [
        render(
            "web1",
            &table(&format!(
                "hostname = \"other\"\nssh_authorized_keys = [{ED25519:?}]\n"
            )),
            None,
            None,
        ),
        render(
            "web1",
            &table(&format!("ssh_authorized_keys = [{RSA:?}]\n")),
            None,
            None,
        ),
        render(
            "web1",
            &table("user_data = \"images/u\"\n"),
            Some(b"#cloud-config\n"),
            None,
        ),
        render(
            "web1",
            &table("user_data = \"images/u\"\n"),
            Some(b"#cloud-config\n\n"),
            None,
        ),
        render(
            "web1",
            &table(&format!(
                "ssh_authorized_keys = [{ED25519:?}]\nnetwork_config = \"images/n\"\n"
            )),
            None,
            Some(b"version: 2\n"),
        ),
    ];
    let mut ids = vec![id];
    for seed in &variants {
        let hex = digest_part(&seed.instance_id).to_string();
        assert!(!ids.contains(&hex), "{} repeats an id", seed.instance_id);
        ids.push(hex);
    }
    let pinned = render(
        "web1",
        &table("instance_id = \"i-1\"\nhostname = \"a\"\n"),
        None,
        None,
    );
    let pinned_b = render(
        "web1",
        &table("instance_id = \"i-1\"\nhostname = \"b\"\n"),
        None,
        None,
    );
    assert_eq!(
        (pinned.instance_id.as_str(), pinned_b.instance_id.as_str()),
        ("i-1", "i-1")
    );
    assert!(pinned.meta_data.starts_with("instance-id: \"i-1\"\n"));
    assert_ne!(pinned.digest(), pinned_b.digest());
}

/// Runs a tool on an image and returns its stdout.
#[track_caller]
fn tool(program: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(image)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (util-linux, mtools): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// mtools take the image as `-i IMAGE` before the path.
#[track_caller]
fn mtool(program: &str, image: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .arg("-i")
        .arg(image)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (mtools): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_volume_is_a_cidata_fat_that_real_tools_read() {
    let data = Data::new();
    data.write("images/net.yaml", b"version: 2\n");
    let text = with_table(&format!(
        "ssh_authorized_keys = [{ED25519:?}]\nnetwork_config = \"images/net.yaml\"\n"
    ));
    let prepared = prepare_text(&data, &text)
        .expect("prepare")
        .expect("a seed");
    assert_eq!(prepared.path, data.path().join("cloud-init/web1.img"));
    assert!(prepared.written);
    let image = prepared.path.as_path();
    assert_eq!(
        std::fs::metadata(image).expect("stat").len(),
        IMAGE_BYTES as u64
    );
    let mode = std::fs::metadata(image).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        tool("blkid", &["-p", "-o", "value", "-s", "LABEL"], image),
        "cidata\n"
    );
    assert_eq!(
        tool("blkid", &["-p", "-o", "value", "-s", "TYPE"], image),
        "vfat\n"
    );
    assert_eq!(
        tool("blkid", &["-p", "-o", "value", "-s", "VERSION"], image),
        "FAT12\n"
    );
    // dosfstools finds nothing to repair (-n: read-only; it fails otherwise).
    tool("fsck.fat", &["-n"], image);

    let mut listed: Vec<String> = mtool("mdir", image, &["-b", "::"])
        .lines()
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, ["meta-data", "network-config", "user-data"]);

    let meta = mtool("mtype", image, &["::meta-data"]);
    assert_eq!(
        meta,
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"web1\"\n",
            prepared.instance_id
        )
    );
    let user = mtool("mtype", image, &["::user-data"]);
    assert_eq!(
        user,
        format!("#cloud-config\nhostname: \"web1\"\nusers:\n  - default\nssh_authorized_keys:\n  - \"{ED25519}\"\n")
    );
    assert_eq!(mtool("mtype", image, &["::network-config"]), "version: 2\n");
}

#[test]
fn builds_are_byte_identical_and_rewritten_only_on_change() {
    let seed = render("web1", &table(""), None, None);
    let a = build_image(7, &seed.files()).expect("build");
    let b = build_image(7, &seed.files()).expect("build");
    assert!(a == b, "two builds of one seed differ");
    assert_ne!(a, build_image(8, &seed.files()).expect("build"));

    let data = Data::new();
    let text = with_table("hostname = \"one\"\n");
    let first = prepare_text(&data, &text).expect("prepare").expect("seed");
    assert!(first.written);
    let bytes = std::fs::read(&first.path).expect("read");
    let inode =
        |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
    let ino = inode(&first.path);

    let second = prepare_text(&data, &text).expect("prepare").expect("seed");
    assert_eq!(
        second,
        Prepared {
            written: false,
            ..first.clone()
        }
    );
    assert_eq!(
        inode(&second.path),
        ino,
        "an unchanged seed is not rewritten"
    );

    let changed = prepare_text(&data, &with_table("hostname = \"two\"\n"))
        .expect("prepare")
        .expect("seed");
    assert!(changed.written);
    assert_ne!(changed.instance_id, first.instance_id);
    let new_bytes = std::fs::read(&changed.path).expect("read");
    assert_ne!(new_bytes, bytes);
    assert!(mtool("mtype", &changed.path, &["::meta-data"]).contains("local-hostname: \"two\"\n"));

    // A damaged image is rewritten even though the spec did not change.
    std::fs::write(&changed.path, b"garbage").expect("damage");
    let repaired = prepare_text(&data, &with_table("hostname = \"two\"\n"))
        .expect("prepare")
        .expect("seed");
    assert!(repaired.written);
    assert_eq!(std::fs::read(&repaired.path).expect("read"), new_bytes);

    // The table removed: the seed goes.
    assert_eq!(prepare_text(&data, BASE).expect("prepare"), None);
    assert!(!changed.path.exists());
    assert_eq!(prepare_text(&data, BASE).expect("nothing to remove"), None);
}

#[test]
fn the_largest_allowed_files_fit() {
    let data = Data::new();
    data.write("images/u", &vec![b'#'; MAX_USER_DATA_BYTES as usize]);
    data.write(
        "images/n",
        &vec![b' '; keel_common::guest::MAX_NETWORK_CONFIG_BYTES as usize],
    );
    let text = with_table(&format!(
        "ssh_authorized_keys = [{ED25519:?}, {RSA:?}]\nuser_data = \"images/u\"\nnetwork_config = \"images/n\"\n"
    ));
    let prepared = prepare_text(&data, &text).expect("prepare").expect("seed");
    let user = mtool("mtype", &prepared.path, &["::user-data"]);
    assert_eq!(user.len(), MAX_USER_DATA_BYTES as usize);
}

#[track_caller]
fn assert_spec_error(err: CloudInitError, line: usize, field: &str, wanted: &str) {
    let message = err.to_string();
    let prefix = format!("web1.toml:{line}: field `{field}`: ");
    assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
    assert!(message.contains(wanted), "{message}\nwanted {wanted}");
}

#[test]
fn seed_files_are_read_beneath_images_with_a_bound() {
    let data = Data::new();
    let text = with_table("hostname = \"h\"\nuser_data = \"images/u\"\n");
    let err = prepare_text(&data, &text).expect_err("missing");
    assert_spec_error(err, 8, "cloud_init.user_data", "does not exist");

    data.write("images/u", &vec![b'x'; MAX_USER_DATA_BYTES as usize + 1]);
    let err = prepare_text(&data, &text).expect_err("too large");
    assert_spec_error(err, 8, "cloud_init.user_data", "larger than 1024 KiB");

    // A link out of images/ is refused by the kernel, at the open.
    std::fs::remove_file(data.path().join("images/u")).expect("rm");
    std::fs::create_dir_all(data.path().join("agent")).expect("mkdir");
    data.write("agent/host_key", b"secret");
    std::os::unix::fs::symlink("../agent/host_key", data.path().join("images/u")).expect("ln");
    let err = prepare_text(&data, &text).expect_err("link out");
    assert_spec_error(err, 8, "cloud_init.user_data", "leads out of images/");

    // A FIFO must neither hang init nor be taken.
    std::fs::remove_file(data.path().join("images/u")).expect("rm");
    let fifo = std::ffi::CString::new(
        data.path()
            .join("images/u")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("path");
    // SAFETY: mkfifo reads the NUL-terminated path, which outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let err = prepare_text(&data, &text).expect_err("fifo");
    assert_spec_error(err, 8, "cloud_init.user_data", "not a regular file");
    assert!(!data.path().join("cloud-init/web1.img").exists());

    // The spec-file checks refuse the same before a start.
    let parsed = spec(&text);
    let err = crate::spec_files::check_spec_files(
        &parsed,
        Path::new("web1.toml"),
        &text,
        data.path(),
        &[],
    )
    .expect_err("a FIFO is no user data");
    assert!(
        err.to_string()
            .starts_with("web1.toml:8: field `cloud_init.user_data`: "),
        "{err}"
    );
    std::fs::remove_file(data.path().join("images/u")).expect("rm");
    data.write("images/u", &vec![b'x'; MAX_USER_DATA_BYTES as usize + 1]);
    let err = crate::spec_files::check_spec_files(
        &parsed,
        Path::new("web1.toml"),
        &text,
        data.path(),
        &[],
    )
    .expect_err("too large");
    assert!(err.to_string().contains("at most 1048576"), "{err}");
    data.write("images/u", b"#cloud-config\n");
    crate::spec_files::check_spec_files(&parsed, Path::new("web1.toml"), &text, data.path(), &[])
        .expect("a small regular file");
}

#[test]
fn the_vmm_opens_the_image_only_beneath_cloud_init() {
    let data = Data::new();
    let err = open_image(data.path(), "web1").expect_err("not built");
    assert!(err.contains("init builds the cloud-init volume"), "{err}");

    let text = with_table("");
    let prepared = prepare_text(&data, &text).expect("prepare").expect("seed");
    let mut opened = open_image(data.path(), "web1").expect("open");
    let mut bytes = Vec::new();
    opened.read_to_end(&mut bytes).expect("read");
    assert_eq!(bytes, std::fs::read(&prepared.path).expect("read"));
    // Read-only: the guest cannot change its seed through this descriptor.
    assert!(std::io::Write::write(&mut opened, b"x").is_err());

    // The image replaced by a link to a host file: refused.
    data.write("secret", b"s");
    std::fs::remove_file(&prepared.path).expect("rm");
    std::os::unix::fs::symlink("../secret", &prepared.path).expect("ln");
    let err = open_image(data.path(), "web1").expect_err("link out");
    assert!(err.contains("leads out of cloud-init/"), "{err}");

    // The directory itself a link: refused, and init will not write there.
    let dir = data.path().join(CLOUD_INIT_DIR);
    std::fs::remove_dir_all(&dir).expect("rm");
    std::fs::create_dir(data.path().join("elsewhere")).expect("mkdir");
    std::os::unix::fs::symlink("elsewhere", &dir).expect("ln");
    let err = open_image(data.path(), "web1").expect_err("dir link");
    assert!(err.contains("symbolic link"), "{err}");
    let err = prepare_text(&data, &text).expect_err("dir link");
    assert!(matches!(err, CloudInitError::Store { .. }), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(std::fs::read_dir(data.path().join("elsewhere"))
        .expect("ls")
        .next()
        .is_none());
}
