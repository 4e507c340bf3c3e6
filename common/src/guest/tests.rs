use super::*;

const FULL: &str = r#"name = "web1"
vcpus = 2
memory_mib = 512
autostart = true
restart = "always"
rng = false
transport = "mmio"

[boot]
kernel = "images/vmlinux"
initrd = "images/web1.initrd"
cmdline = "console=ttyS0 root=/dev/vda rw"

[[disk]]
path = "disks/web1.raw"
read_only = false
serial = "web1-root"

[[disk]]
path = "disks/web1-data.raw"
read_only = true

[[net]]
mode = "tap"
tap = "tap0"
mac = "52:54:00:12:34:56"

[[net]]
mode = "bridge"

[[net]]
mode = "user"
mac = "52:54:00:AB:cd:EF"

[vsock]
cid = 7
uds_path = "vsock/web1.sock"
"#;

/// The smallest valid spec; tests append to it.
const MINIMAL: &str =
    "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/vmlinux\"\n";

fn parse(text: &str) -> Result<GuestSpec, ConfigError> {
    GuestSpec::parse(Path::new("web1.toml"), text)
}

/// Asserts that `text` fails with the exact `file:line: field` prefix.
#[track_caller]
fn assert_refused(text: &str, line: usize, field: &str) -> String {
    let err = parse(text).expect_err("spec should be refused");
    let message = err.to_string();
    let prefix = format!("web1.toml:{line}: field `{field}`: ");
    assert!(message.starts_with(&prefix), "{message}\nwanted {prefix}");
    message
}

/// MINIMAL with its first line replaced.
fn with_name(value: &str) -> String {
    MINIMAL.replacen("name = \"web1\"", &format!("name = {value}"), 1)
}

#[test]
fn full_example_parses() {
    let spec = parse(FULL).expect("valid spec");
    assert_eq!(spec.name, "web1");
    assert_eq!(spec.vcpus, 2);
    assert_eq!(spec.memory_mib, 512);
    assert_eq!(spec.memory_bytes(), 512 << 20);
    assert!(spec.autostart());
    assert_eq!(spec.restart(), RestartPolicy::Always);
    assert!(!spec.rng_enabled());
    assert_eq!(spec.transport(), Transport::Mmio);
    assert_eq!(
        spec.boot.kernel.as_deref(),
        Some(Path::new("images/vmlinux"))
    );
    assert_eq!(
        spec.boot.initrd.as_deref(),
        Some(Path::new("images/web1.initrd"))
    );
    assert_eq!(spec.boot.cmdline(), "console=ttyS0 root=/dev/vda rw");
    assert_eq!(spec.disks.len(), 2);
    assert_eq!(spec.disks[0].serial.as_deref(), Some("web1-root"));
    assert!(!spec.disks[0].read_only());
    assert!(spec.disks[1].read_only());
    assert_eq!(spec.nets.len(), 3);
    assert_eq!(spec.nets[0].mode, NetMode::Tap);
    assert_eq!(spec.nets[0].tap.as_deref(), Some("tap0"));
    assert_eq!(
        spec.nets[0].mac,
        Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
    );
    assert_eq!(spec.nets[1].mode, NetMode::Bridge);
    assert_eq!(spec.nets[2].mode, NetMode::User);
    assert_eq!(
        spec.nets[2].mac.map(|m| m.to_string()).as_deref(),
        Some("52:54:00:ab:cd:ef")
    );
    let vsock = spec.vsock.as_ref().expect("vsock");
    assert_eq!(vsock.cid(), 7);
    assert_eq!(vsock.uds_path, Path::new("vsock/web1.sock"));
}

#[test]
fn minimal_spec_gets_defaults() {
    let spec = parse(MINIMAL).expect("valid spec");
    assert!(!spec.autostart());
    assert_eq!(spec.restart(), RestartPolicy::OnFailure);
    assert!(spec.rng_enabled());
    assert_eq!(spec.transport(), Transport::Pci);
    assert_eq!(spec.boot.cmdline(), "");
    assert!(spec.boot.initrd.is_none());
    assert!(spec.disks.is_empty() && spec.nets.is_empty() && spec.vsock.is_none());

    let spec = parse(&format!(
        "{MINIMAL}[[disk]]\npath = \"disks/d.raw\"\n[vsock]\nuds_path = \"vsock/v.sock\"\n"
    ))
    .expect("valid spec");
    assert!(!spec.disks[0].read_only());
    assert_eq!(spec.vsock.map(|v| v.cid()), Some(DEFAULT_GUEST_CID));
}

#[test]
fn an_unknown_transport_is_refused_at_its_line() {
    let text = MINIMAL.replacen("vcpus = 1", "vcpus = 1\ntransport = \"isa\"", 1);
    let message = parse(&text).expect_err("isa is no transport").to_string();
    assert!(
        message.contains(":3:") && message.contains("transport"),
        "{message}"
    );
}

#[test]
fn memory_above_3_gib_and_limits_are_accepted() {
    for mib in [3 * 1024 + 1, 8 * 1024, MAX_MEMORY_MIB, MIN_MEMORY_MIB] {
        let text = MINIMAL.replace("memory_mib = 64", &format!("memory_mib = {mib}"));
        let spec = parse(&text).expect("valid memory size");
        assert_eq!(spec.memory_mib, mib);
    }
    let spec = parse(&MINIMAL.replace("memory_mib = 64", "memory_mib = 8192")).expect("8 GiB");
    assert_eq!(spec.memory_bytes(), 8 << 30);
}

#[test]
fn memory_out_of_range_is_refused() {
    for mib in ["15", "0", "1048577"] {
        let text = MINIMAL.replace("memory_mib = 64", &format!("memory_mib = {mib}"));
        assert_refused(&text, 3, "memory_mib");
    }
    // Negative sizes are a type error, still located.
    assert_refused(
        &MINIMAL.replace("memory_mib = 64", "memory_mib = -1"),
        3,
        "memory_mib",
    );
}

#[test]
fn vcpus_out_of_range_is_refused() {
    assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = 0"), 2, "vcpus");
    let message = assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = 65"), 2, "vcpus");
    assert!(message.contains("1 to 64"), "{message}");
    assert!(parse(&MINIMAL.replace("vcpus = 1", "vcpus = 64")).is_ok());
    assert_refused(&MINIMAL.replace("vcpus = 1", "vcpus = \"two\""), 2, "vcpus");
}

#[test]
fn name_rules() {
    for bad in [
        "\"\"",
        "\"Web1\"",
        "\"web_1\"",
        "\"web.1\"",
        "\"-web1\"",
        "\"web1-\"",
        "\"wéb\"",
    ] {
        assert_refused(&with_name(bad), 1, "name");
    }
    let long = format!("\"{}\"", "a".repeat(64));
    let message = assert_refused(&with_name(&long), 1, "name");
    assert!(message.contains("not 64"), "{message}");
    let max = format!("\"{}\"", "a".repeat(63));
    assert!(parse(&with_name(&max)).is_ok());
    assert!(parse(&with_name("\"0-web-1\"")).is_ok());
}

#[test]
fn restart_must_be_a_known_policy() {
    let text = MINIMAL.replace(
        "memory_mib = 64\n",
        "memory_mib = 64\nrestart = \"sometimes\"\n",
    );
    let message = assert_refused(&text, 4, "restart");
    assert!(message.contains("on-failure"), "{message}");
    for (value, policy) in [
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ] {
        let text = MINIMAL.replace(
            "memory_mib = 64\n",
            &format!("memory_mib = 64\nrestart = \"{value}\"\n"),
        );
        assert_eq!(parse(&text).expect("valid").restart(), policy);
    }
}

#[test]
fn each_policy_restarts_after_the_endings_it_names() {
    use GuestEnd::{Failure, PowerOff, Reboot};
    let restarts = |policy: RestartPolicy| -> Vec<GuestEnd> {
        GuestEnd::ALL
            .into_iter()
            .filter(|end| policy.restarts_after(*end))
            .collect()
    };
    assert_eq!(
        restarts(RestartPolicy::Always),
        vec![PowerOff, Reboot, Failure]
    );
    // A guest that powers itself off meant to stop.
    assert_eq!(restarts(RestartPolicy::OnFailure), vec![Reboot, Failure]);
    assert_eq!(restarts(RestartPolicy::Never), vec![]);
}

#[test]
fn missing_kernel_is_refused() {
    let text = "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\ninitrd = \"images/i\"\n";
    let message = parse(text).expect_err("no kernel").to_string();
    assert!(message.starts_with("web1.toml:"), "{message}");
    assert!(message.contains("kernel"), "{message}");
}

#[test]
fn unknown_field_is_refused_with_its_name() {
    let message = parse(&format!("memroy_mib = 1\n{MINIMAL}"))
        .expect_err("typo")
        .to_string();
    assert!(message.starts_with("web1.toml:1:"), "{message}");
    assert!(message.contains("memroy_mib"), "{message}");

    let text = format!("{MINIMAL}[[disk]]\npath = \"disks/d.raw\"\nreadonly = true\n");
    let message = parse(&text).expect_err("typo").to_string();
    assert!(message.starts_with("web1.toml:8:"), "{message}");
    assert!(message.contains("readonly"), "{message}");

    // The design suggested an [rng] table; this spec uses a boolean.
    let message = parse(&format!("{MINIMAL}[rng]\n"))
        .expect_err("table")
        .to_string();
    assert!(message.contains("rng"), "{message}");
}

#[test]
fn syntax_error_has_a_line() {
    let message = parse(&format!("{MINIMAL}[[disk]\n"))
        .expect_err("syntax")
        .to_string();
    assert!(message.starts_with("web1.toml:6:"), "{message}");
}

#[test]
fn cmdline_limits() {
    let spec = |cmdline: &str| {
        format!("name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/k\"\ncmdline = \"{cmdline}\"\n")
    };
    assert!(parse(&spec(&"x".repeat(MAX_CMDLINE_LEN))).is_ok());
    let message = assert_refused(&spec(&"x".repeat(MAX_CMDLINE_LEN + 1)), 6, "boot.cmdline");
    assert!(message.contains("2047"), "{message}");
    assert_refused(&spec("a\\u0000b"), 6, "boot.cmdline");
}

#[test]
fn parent_components_are_refused() {
    let text = MINIMAL.replace("images/vmlinux", "images/../../etc/passwd");
    let message = assert_refused(&text, 5, "boot.kernel");
    assert!(message.contains("`..`"), "{message}");
    assert_refused(&MINIMAL.replace("images/vmlinux", ""), 5, "boot.kernel");
    assert_refused(
        &format!("{MINIMAL}initrd = \"/data/../i\"\n"),
        6,
        "boot.initrd",
    );
    assert_refused(
        &format!("{MINIMAL}[[disk]]\npath = \"../d.raw\"\n"),
        7,
        "disk[0].path",
    );
    assert_refused(
        &format!("{MINIMAL}[vsock]\nuds_path = \"../v.sock\"\n"),
        7,
        "vsock.uds_path",
    );
}

/// MINIMAL with one disk at `path`, checked against the allow-list `devices`.
fn with_disk(path: &str, devices: &[PathBuf]) -> Result<GuestSpec, ConfigError> {
    let text = format!("{MINIMAL}[[disk]]\npath = \"{path}\"\n");
    GuestSpec::parse_with_devices(Path::new("web1.toml"), &text, devices)
}

#[test]
fn host_paths_are_refused_where_they_stand() {
    for path in [
        "/dev/sda",
        "/var/lib/keel/agent/host_key",
        "/var/lib/keel/disks/web.img",
        "/dev/disk/by-id/ata-XYZ",
        "../x",
        "disks/../agent/host_key",
        "agent/host_key",
        "guests/web1.toml",
        "disks",
        "./images",
        "web.img",
    ] {
        let message = with_disk(path, &[]).expect_err(path).to_string();
        let prefix = "web1.toml:7: field `disk[0].path`: ";
        assert!(message.starts_with(prefix), "{path}: {message}");
    }
    let message = with_disk("/dev/sda", &[])
        .expect_err("/dev/sda")
        .to_string();
    assert!(message.contains("host path"), "{message}");
    assert!(message.contains("guest_devices"), "{message}");

    // The kernel and initrd never are host paths, allow-listed or not.
    let text = MINIMAL.replace("images/vmlinux", "/var/lib/keel/agent/host_key");
    let message = assert_refused(&text, 5, "boot.kernel");
    assert!(message.contains("host path"), "{message}");
    assert_refused(
        &format!("{MINIMAL}initrd = \"/boot/initrd\"\n"),
        6,
        "boot.initrd",
    );
    assert_refused(
        &format!("{MINIMAL}initrd = \"logs/web1/console.log\"\n"),
        6,
        "boot.initrd",
    );

    // The vsock socket is one name in vsock/, nowhere else.
    for path in [
        "/run/keel/init.sock",
        "v.sock",
        "vsock",
        "vsock/a/b.sock",
        "agent/x.sock",
    ] {
        let text = format!("{MINIMAL}[vsock]\nuds_path = \"{path}\"\n");
        let message = assert_refused(&text, 7, "vsock.uds_path");
        assert!(message.contains("vsock/"), "{message}");
    }
}

#[test]
fn guest_files_beneath_images_and_disks_are_accepted() {
    for path in [
        "disks/web.img",
        "images/base.img",
        "./disks/web/root.img",
        "disks//a.raw",
    ] {
        with_disk(path, &[]).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(
        guest_file_parts(Path::new("./disks/web/root.img")).expect("parts"),
        ("disks", PathBuf::from("web/root.img"))
    );
}

#[test]
fn allow_listed_devices_are_accepted_as_listed_only() {
    let devices = [PathBuf::from("/dev/disk/by-id/ata-XYZ")];
    let spec = with_disk("/dev/disk/by-id/ata-XYZ", &devices).expect("allow-listed");
    assert_eq!(spec.disks[0].path, Path::new("/dev/disk/by-id/ata-XYZ"));
    for path in ["/dev/disk/by-id/ata-OTHER", "/dev/sda"] {
        let message = with_disk(path, &devices).expect_err(path).to_string();
        assert!(
            message.starts_with("web1.toml:7: field `disk[0].path`: "),
            "{message}"
        );
    }
    // An allow-listed device is a disk, never a kernel.
    let text = MINIMAL.replace("images/vmlinux", "/dev/disk/by-id/ata-XYZ");
    let message = GuestSpec::parse_with_devices(Path::new("web1.toml"), &text, &devices)
        .expect_err("kernel")
        .to_string();
    assert!(
        message.starts_with("web1.toml:5: field `boot.kernel`: "),
        "{message}"
    );
}

#[test]
fn duplicate_disks_are_refused() {
    let text = format!(
        "{MINIMAL}[[disk]]\npath = \"disks/a.raw\"\n[[disk]]\npath = \"disks/b.raw\"\n[[disk]]\npath = \"./disks//a.raw\"\n"
    );
    let message = assert_refused(&text, 11, "disk[2].path");
    assert!(message.contains("disk[0]"), "{message}");
}

#[test]
fn disk_serial_rules() {
    let disk = |serial: &str| {
        format!("{MINIMAL}[[disk]]\npath = \"disks/d.raw\"\nserial = \"{serial}\"\n")
    };
    assert!(parse(&disk(&"s".repeat(MAX_SERIAL_LEN))).is_ok());
    assert_refused(&disk(&"s".repeat(MAX_SERIAL_LEN + 1)), 8, "disk[0].serial");
    assert_refused(&disk("séri"), 8, "disk[0].serial");
    assert_refused(&disk("a\\tb"), 8, "disk[0].serial");
    assert_refused(&disk(""), 8, "disk[0].serial");
    let twice = format!(
        "{MINIMAL}[[disk]]\npath = \"disks/a\"\nserial = \"s1\"\n[[disk]]\npath = \"disks/b\"\nserial = \"s1\"\n"
    );
    assert_refused(&twice, 11, "disk[1].serial");
}

#[test]
fn mac_rules() {
    let net = |mac: &str| format!("{MINIMAL}[[net]]\nmode = \"user\"\nmac = \"{mac}\"\n");
    for bad in [
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52-54-00-12-34-56",
        "52:54:00:12:34:5g",
        "52:54:00:12:34:5",
        "52:54:00:12:34:+5",
        "525400123456",
        "",
    ] {
        let message = assert_refused(&net(bad), 8, "net[0].mac");
        assert!(message.contains("not a MAC address"), "{message}");
    }
    let message = assert_refused(&net("01:00:5e:00:00:01"), 8, "net[0].mac");
    assert!(message.contains("multicast"), "{message}");
    assert_refused(&net("ff:ff:ff:ff:ff:ff"), 8, "net[0].mac");
    let message = assert_refused(&net("00:00:00:00:00:00"), 8, "net[0].mac");
    assert!(message.contains("all zeros"), "{message}");
    assert!(parse(&net("02:00:00:00:00:01")).is_ok());
}

#[test]
fn duplicate_macs_are_refused_whatever_the_case() {
    let text = format!(
        "{MINIMAL}[[net]]\nmode = \"user\"\nmac = \"52:54:00:aa:bb:cc\"\n[[net]]\nmode = \"bridge\"\nmac = \"52:54:00:AA:BB:CC\"\n"
    );
    let message = assert_refused(&text, 11, "net[1].mac");
    assert!(message.contains("net[0]"), "{message}");
}

#[test]
fn tap_rules() {
    let tap =
        |mode: &str, tap: &str| format!("{MINIMAL}[[net]]\nmode = \"{mode}\"\ntap = \"{tap}\"\n");
    assert!(parse(&tap("tap", &"t".repeat(MAX_IFNAME_LEN))).is_ok());
    let message = assert_refused(&tap("tap", &"t".repeat(16)), 8, "net[0].tap");
    assert!(message.contains("15"), "{message}");
    assert_refused(&tap("tap", ""), 8, "net[0].tap");
    assert_refused(&tap("tap", "tap 0"), 8, "net[0].tap");
    assert_refused(&tap("tap", "a/b"), 8, "net[0].tap");
    assert_refused(&tap("tap", ".."), 8, "net[0].tap");
    // A tap name with another mode is a mistake, not something to ignore.
    assert_refused(&tap("bridge", "tap0"), 8, "net[0].tap");
    assert_refused(&tap("user", "tap0"), 8, "net[0].tap");

    // Missing: located at the mode that requires it.
    let missing = format!("{MINIMAL}[[net]]\nmac = \"52:54:00:00:00:01\"\nmode = \"tap\"\n");
    let message = assert_refused(&missing, 8, "net[0].tap");
    assert!(message.contains("required"), "{message}");

    let message = assert_refused(
        &format!("{MINIMAL}[[net]]\nmode = \"macvtap\"\n"),
        7,
        "net[0].mode",
    );
    assert!(message.contains("bridge"), "{message}");
}

#[test]
fn duplicate_taps_are_refused() {
    let text = format!(
        "{MINIMAL}[[net]]\nmode = \"tap\"\ntap = \"tap0\"\n[[net]]\nmode = \"tap\"\ntap = \"tap0\"\n"
    );
    assert_refused(&text, 11, "net[1].tap");
}

#[test]
fn vsock_cid_rules() {
    let vsock = |cid: &str| format!("{MINIMAL}[vsock]\ncid = {cid}\nuds_path = \"vsock/v.sock\"\n");
    for bad in ["0", "1", "2", "4294967295"] {
        assert_refused(&vsock(bad), 7, "vsock.cid");
    }
    assert_refused(&vsock("4294967296"), 7, "vsock.cid");
    assert_eq!(
        parse(&vsock("3")).expect("valid").vsock.map(|v| v.cid()),
        Some(3)
    );
}

#[test]
fn inline_tables_are_located_too() {
    let text = "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\nboot = { kernel = \"images/k\" }\n\
                disk = [\n  { path = \"disks/a\" },\n  { path = \"disks/a\" },\n]\n";
    assert_refused(text, 7, "disk[1].path");
}

#[test]
fn round_trips_through_toml() {
    let spec = parse(FULL).expect("valid spec");
    let text = toml::to_string(&spec).expect("serialises");
    assert_eq!(parse(&text).expect("reparses"), spec);
    let minimal = parse(MINIMAL).expect("valid spec");
    let text = toml::to_string(&minimal).expect("serialises");
    assert_eq!(parse(&text).expect("reparses"), minimal);
    // What the author left out stays out, empty lists included.
    assert!(minimal.disks.is_empty() && minimal.nets.is_empty());
    assert!(!text.contains("disk") && !text.contains("net"), "{text}");
}

#[test]
fn spec_from_elsewhere_validates_with_line_zero() {
    let mut spec = parse(MINIMAL).expect("valid spec");
    spec.vcpus = 0;
    let message = spec
        .validate(Path::new("<wire>"), "")
        .expect_err("invalid")
        .to_string();
    assert!(
        message.starts_with("<wire>:0: field `vcpus`: "),
        "{message}"
    );
}

#[test]
fn resolve_keeps_allow_listed_devices() {
    let spec = parse(MINIMAL).expect("valid spec");
    let base = Path::new("/var/lib/keel");
    assert_eq!(
        spec.resolve(base, Path::new("images/vmlinux")),
        Path::new("/var/lib/keel/images/vmlinux")
    );
    assert_eq!(
        spec.resolve(base, Path::new("/dev/disk/by-id/ata-XYZ")),
        Path::new("/dev/disk/by-id/ata-XYZ")
    );
}

#[test]
fn hostfwd_rules_are_checked_where_they_stand() {
    let user = |rules: &str| format!("{MINIMAL}[[net]]\nmode = \"user\"\nhostfwd = [{rules}]\n");
    let spec =
        parse(&user("\"tcp:127.0.0.1:8022-:22\", \"udp::5353-:53\"")).expect("valid forwards");
    assert_eq!(spec.nets[0].hostfwd.as_ref().map(Vec::len), Some(2));
    let message = assert_refused(
        &user("\"tcp:127.0.0.1:8022-:22\", \"sctp::1-:2\""),
        8,
        "net[0].hostfwd[1]",
    );
    assert!(message.contains("sctp"), "{message}");
    let message = assert_refused(
        &user("\"tcp::8022-:22\", \"tcp:127.0.0.1:8022-:23\""),
        8,
        "net[0].hostfwd[1]",
    );
    assert!(message.contains("same host port"), "{message}");
    let tap =
        format!("{MINIMAL}[[net]]\nmode = \"tap\"\ntap = \"tap0\"\nhostfwd = [\"tcp::1-:2\"]\n");
    assert_refused(&tap, 9, "net[0].hostfwd");
}

#[test]
fn hostfwd_rules_are_typed_located_per_rule_and_round_trip() {
    let text = format!(
        "{MINIMAL}[[net]]\nmode = \"user\"\nhostfwd = [\n  \"tcp::8022-:22\",\n  \"udp:0.0.0.0:5353-10.0.2.15:53\",\n]\n"
    );
    let spec = parse(&text).expect("valid forwards");
    let rules = spec.nets[0].hostfwd.as_deref().expect("forwards");
    assert_eq!(rules[0].to_string(), "tcp:127.0.0.1:8022-:22");
    assert_eq!(rules[1].host.port(), 5353);
    assert_eq!(rules[1].guest_port, 53);
    let reparsed = parse(&toml::to_string(&spec).expect("serialises")).expect("reparses");
    assert_eq!(reparsed, spec);

    let bad = text.replace("udp:0.0.0.0", "udp:0.0.0");
    let message = assert_refused(&bad, 10, "net[0].hostfwd[1]");
    assert!(message.contains("bad address"), "{message}");
    let twice = text.replace("udp:0.0.0.0:5353", "tcp:0.0.0.0:8022");
    assert_refused(&twice, 10, "net[0].hostfwd[1]");
}

#[test]
fn host_ports_rules() {
    let ports = |mode: &str, list: &str| {
        format!("{MINIMAL}[[net]]\nmode = \"{mode}\"\nhost_ports = [{list}]\n")
    };
    let spec = parse(&ports("user", "8080, 9000")).expect("valid");
    assert_eq!(spec.nets[0].host_ports, Some(vec![8080, 9000]));
    let closed = parse(&format!("{MINIMAL}[[net]]\nmode = \"user\"\n")).expect("valid");
    assert_eq!(closed.nets[0].host_ports, None);
    // The agent's port is never reachable from a guest.
    let message = assert_refused(&ports("user", "8080, 7444"), 8, "net[0].host_ports[1]");
    assert!(message.contains("7444"), "{message}");
    assert_refused(&ports("user", "0"), 8, "net[0].host_ports[0]");
    let message = assert_refused(&ports("user", "22, 22"), 8, "net[0].host_ports[1]");
    assert!(message.contains("twice"), "{message}");
    assert_refused(&ports("user", "65536"), 8, "net[0].host_ports[0]");
    // Only user mode has a gateway standing for the host.
    let message = assert_refused(&ports("bridge", "8080"), 8, "net[0].host_ports");
    assert!(message.contains("user"), "{message}");
}

const FROM_DISK: &str = "name = \"web1\"\nvcpus = 1\nmemory_mib = 512\n[boot]\nfrom = \"disk\"\n\
entry = \"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-28-amd64\"\n\
cmdline_append = \"systemd.unit=multi-user.target quiet\"\n[[disk]]\npath = \"disks/debian.qcow2\"\n";

#[test]
fn a_disk_booted_guest_boots_the_loader_with_its_entry_and_additions() {
    let spec = parse(FROM_DISK).expect("valid spec");
    assert_eq!(spec.boot.from(), BootFrom::Disk);
    assert!(
        spec.boot.files().next().is_none(),
        "the spec names no kernel"
    );
    let boot = spec.boot.kernel_boot();
    assert_eq!(boot.kernel, Path::new(LOADER_KERNEL));
    assert_eq!(boot.initrd.as_deref(), Some(Path::new(LOADER_INITRD)));
    let words: Vec<&str> = boot.cmdline.split(' ').collect();
    assert!(boot.cmdline.starts_with(LOADER_CMDLINE), "{}", boot.cmdline);
    let word = |arg: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{arg}=")))
            .and_then(|w| crate::cmdline_arg::decode(w).ok())
    };
    assert_eq!(word(crate::cmdline_arg::ENTRY_KEY), spec.boot.entry);
    assert_eq!(
        word(crate::cmdline_arg::APPEND_KEY),
        spec.boot.cmdline_append
    );
    // Without either, the loader gets neither word.
    let plain = parse(
        &FROM_DISK
            .lines()
            .filter(|l| !l.starts_with("entry") && !l.starts_with("cmdline_append"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("valid spec");
    assert_eq!(plain.boot.kernel_boot().cmdline, LOADER_CMDLINE);
    // A kernel-booted spec boots what it names.
    let kernel = parse(MINIMAL).expect("valid").boot.kernel_boot();
    assert_eq!(kernel.kernel, Path::new("images/vmlinux"));
    assert_eq!(kernel.cmdline, "");
}

#[test]
fn boot_fields_that_do_not_fit_the_source_are_refused_where_they_stand() {
    // A kernel (or initrd, cmdline) beside from = "disk".
    let text = FROM_DISK.replace(
        "from = \"disk\"\n",
        "from = \"disk\"\nkernel = \"images/k\"\n",
    );
    let message = assert_refused(&text, 6, "boot.kernel");
    assert!(message.contains("entry"), "{message}");
    let text = FROM_DISK.replace("from = \"disk\"\n", "from = \"disk\"\ncmdline = \"ro\"\n");
    assert_refused(&text, 6, "boot.cmdline");
    // from = "disk" with nothing to boot from.
    let text = FROM_DISK.replace("[[disk]]\npath = \"disks/debian.qcow2\"\n", "");
    let message = assert_refused(&text, 5, "boot.from");
    assert!(message.contains("[[disk]]"), "{message}");
    // entry and cmdline_append are for disks only.
    assert_refused(&format!("{MINIMAL}entry = \"1\"\n"), 6, "boot.entry");
    assert_refused(
        &format!("{MINIMAL}cmdline_append = \"x\"\n"),
        6,
        "boot.cmdline_append",
    );
    // No kernel and no from: the [boot] table is pointed at.
    let message = assert_refused(
        &MINIMAL.replace("kernel = \"images/vmlinux\"\n", "cmdline = \"x\"\n"),
        4,
        "boot.kernel",
    );
    assert!(
        message.contains("from = \\\"disk\\\"") || message.contains("from = \"disk\""),
        "{message}"
    );
    // Bounds and NULs.
    let long = FROM_DISK.replace(
        "entry = \"Advanced",
        &format!("entry = \"{}Advanced", "x".repeat(MAX_ENTRY_LEN)),
    );
    assert_refused(&long, 6, "boot.entry");
    let nul = FROM_DISK.replace("quiet\"", "quiet\\u0000\"");
    assert_refused(&nul, 7, "boot.cmdline_append");
    let empty = FROM_DISK
        .lines()
        .map(|l| {
            if l.starts_with("entry") {
                "entry = \"\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_refused(&empty, 6, "boot.entry");
    // An unknown source names the accepted ones.
    let message = assert_refused(&FROM_DISK.replace("\"disk\"", "\"pxe\""), 5, "boot.from");
    assert!(
        message.contains("kernel") && message.contains("disk"),
        "{message}"
    );
}

#[test]
fn disk_formats_parse_and_default_to_none() {
    let text = format!(
        "{MINIMAL}[[disk]]\npath = \"disks/a.raw\"\nformat = \"raw\"\n\
         [[disk]]\npath = \"disks/b.qcow2\"\nformat = \"qcow2\"\n\
         [[disk]]\npath = \"disks/c.img\"\n"
    );
    let spec = parse(&text).expect("formats");
    let formats: Vec<_> = spec.disks.iter().map(|d| d.format).collect();
    assert_eq!(
        formats,
        [Some(DiskFormat::Raw), Some(DiskFormat::Qcow2), None]
    );
    assert_eq!(DiskFormat::Qcow2.to_string(), "qcow2");
    // Written back out, an unset format stays unset.
    let out = toml::to_string(&spec).expect("serialise");
    assert_eq!(out.matches("format = ").count(), 2, "{out}");
}

#[test]
fn an_unknown_disk_format_is_refused_at_its_line() {
    let text = format!("{MINIMAL}[[disk]]\npath = \"disks/a.vmdk\"\nformat = \"vmdk\"\n");
    let message = assert_refused(&text, 8, "disk[0].format");
    assert!(message.contains("vmdk"), "{message}");
}

#[test]
fn backing_files_need_qcow2_and_images() {
    let disk = |format: &str, backing: &str| {
        format!("{MINIMAL}[[disk]]\npath = \"disks/web.qcow2\"\n{format}backing = \"{backing}\"\n")
    };
    let spec = parse(&disk("format = \"qcow2\"\n", "images/base.qcow2")).expect("backing");
    assert_eq!(
        spec.disks[0].backing.as_deref(),
        Some(Path::new("images/base.qcow2"))
    );

    // Without format = "qcow2" (raw, or left out): refused at `backing`.
    let message = assert_refused(
        &disk("format = \"raw\"\n", "images/b.qcow2"),
        9,
        "disk[0].backing",
    );
    assert!(message.contains("qcow2"), "{message}");
    assert_refused(&disk("", "images/b.qcow2"), 8, "disk[0].backing");

    // Only beneath images/: not disks/, not a host path, no `..`.
    for bad in [
        "disks/base.qcow2",
        "/var/lib/keel/images/b.qcow2",
        "images/../disks/b",
        "images",
        "b.qcow2",
    ] {
        let message = assert_refused(&disk("format = \"qcow2\"\n", bad), 9, "disk[0].backing");
        assert!(
            message.contains(bad.trim_end_matches(".qcow2")),
            "{bad}: {message}"
        );
    }
}

#[test]
fn a_backing_file_must_not_be_a_disk_of_the_same_guest() {
    let text = format!(
        "{MINIMAL}[[disk]]\npath = \"images/base.qcow2\"\nformat = \"qcow2\"\n\
         [[disk]]\npath = \"disks/web.qcow2\"\nformat = \"qcow2\"\nbacking = \"./images/base.qcow2\"\n"
    );
    let message = assert_refused(&text, 12, "disk[1].backing");
    assert!(message.contains("disk[0]"), "{message}");
}
