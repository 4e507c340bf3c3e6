//! `keelctl import xen --upload` and `--define` end to end over loopback
//! TCP: the real keelctl binary against an in-process keel-agent with
//! init's real control server behind it (which defines guests; no guest
//! is started, so no VMM is needed).

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use keel_common::guest::{DiskFormat, GuestSpec, NetMode, RestartPolicy};
use keel_mgmt::client::exit;
use support::{allocated, keelctl, noise, sparse_file, temp_dir, Agent, MIB};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An agent and a paired keelctl config home.
fn paired() -> (Agent, PathBuf, String) {
    let agent = Agent::start();
    let config = temp_dir("xdg-import");
    let host = format!("127.0.0.1:{}", agent.port());
    assert!(keelctl(&config, &["keygen"]).status.success());
    assert!(keelctl(&config, &["pair", &host, &agent.code()])
        .status
        .success());
    (agent, config, host)
}

fn import(config: &Path, host: &str, cfg: &Path, flag: &str) -> Output {
    keelctl(
        config,
        &["--host", host, "import", "xen", cfg.to_str().unwrap(), flag],
    )
}

/// The spec the host holds for `name`, as `guest show --json` gives it.
fn shown_spec(config: &Path, host: &str, name: &str) -> String {
    let out = keelctl(config, &["--json", "--host", host, "guest", "show", name]);
    assert!(out.status.success(), "{out:?}");
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    detail["spec_toml"].as_str().unwrap().to_string()
}

#[test]
fn upload_sends_every_disk_sparse_and_defines_the_guest() {
    let (agent, config, host) = paired();
    let dom0 = temp_dir("dom0");
    let root = dom0.join("imp-root.img");
    let data = dom0.join("imp-data.img");
    // A boot sector, a lone MiB far in, and a piece across a block edge.
    sparse_file(
        &root,
        64 * MIB,
        &[(0, noise(512, 1)), (40 * MIB, noise(MIB as usize, 2))],
    );
    sparse_file(&data, 16 * MIB, &[(5 * MIB + 4000, noise(9000, 3))]);
    let cfg = dom0.join("imp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"imp\"\nuuid = \"6a8a1c2e-0f7d-4a43-9c71-3d2f1e0b9a55\"\nmemory = 384\nvcpus = 2\n\
             bootloader = \"pygrub\"\n\
             disk = [ 'file:{},xvda,w',\n         'file:{},xvdb,w' ]\n\
             vif = [ 'mac=00:16:3e:01:02:03,bridge=xenbr0' ]\non_crash = 'restart'\n",
            root.display(),
            data.display()
        ),
    )
    .unwrap();

    let out = import(&config, &host, &cfg, "--upload");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::OK), "{stderr}");
    let spec_toml = text(&out.stdout);
    assert!(spec_toml.starts_with(
        "# Imported from Xen domain imp, uuid 6a8a1c2e-0f7d-4a43-9c71-3d2f1e0b9a55\n"
    ));
    for (local, remote) in [(&root, "disks/imp-xvda.img"), (&data, "disks/imp-xvdb.img")] {
        assert!(
            stderr.contains(&format!(
                "keelctl: uploaded {} to {remote} (",
                local.display()
            )),
            "{stderr}"
        );
        let landed = agent.state.join("uploads").join(remote);
        assert!(
            std::fs::read(&landed).unwrap() == std::fs::read(local).unwrap(),
            "{remote} differs"
        );
        // Holes are not sent, so the image lands sparse.
        let size = std::fs::metadata(&landed).unwrap().len();
        assert_eq!(size, std::fs::metadata(local).unwrap().len());
        assert!(
            allocated(&landed) < 4 * MIB,
            "{remote}: {} bytes",
            allocated(&landed)
        );
    }
    assert!(stderr.ends_with("keelctl: defined guest imp\n"), "{stderr}");
    // Nothing was said about files to copy: they were copied.
    assert!(!stderr.contains("--upload copies it"), "{stderr}");

    // The host holds the spec as printed, comment and all.
    assert_eq!(shown_spec(&config, &host, "imp"), spec_toml);
    assert_eq!(
        std::fs::read_to_string(agent.data.join("guests/imp.toml")).unwrap(),
        spec_toml
    );
    let spec = GuestSpec::parse(Path::new("imp.toml"), &spec_toml).unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.vcpus, spec.memory_mib),
        ("imp", 2, 384)
    );
    assert_eq!(spec.restart(), RestartPolicy::OnFailure);
    let disks: Vec<(&Path, Option<&str>, Option<DiskFormat>)> = spec
        .disks
        .iter()
        .map(|d| (d.path.as_path(), d.serial.as_deref(), d.format))
        .collect();
    assert_eq!(
        disks,
        [
            (
                Path::new("disks/imp-xvda.img"),
                Some("xvda"),
                Some(DiskFormat::Raw)
            ),
            (
                Path::new("disks/imp-xvdb.img"),
                Some("xvdb"),
                Some(DiskFormat::Raw)
            ),
        ]
    );
    assert_eq!(spec.nets.len(), 1);
    assert_eq!(spec.nets[0].mode, NetMode::Bridge);
    assert_eq!(
        spec.nets[0].mac.map(|m| m.to_string()).as_deref(),
        Some("00:16:3e:01:02:03")
    );
    agent.wait_audit(&["Upload(disks?imp-xvda.img,size=67108864) ok"]);
    agent.wait_audit(&["Upload(disks?imp-xvdb.img,size=16777216) ok"]);
    agent.wait_audit(&["GuestDefine ok"]);
    std::fs::remove_dir_all(&dom0).unwrap();
    std::fs::remove_dir_all(&config).unwrap();
}

#[test]
fn a_missing_disk_fails_locally_before_anything_is_sent() {
    let (agent, config, host) = paired();
    let dom0 = temp_dir("dom0-missing");
    let present = dom0.join("present.img");
    sparse_file(&present, MIB, &[(0, noise(4096, 4))]);
    let missing = dom0.join("missing.img");
    let cfg = dom0.join("gone.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"gone\"\nmemory = 256\nbootloader = 'pygrub'\n\
             disk = [ 'file:{},xvda,w', 'file:{},xvdb,w' ]\n",
            present.display(),
            missing.display()
        ),
    )
    .unwrap();
    let audited = agent.audit().lines().count();

    let out = import(&config, &host, &cfg, "--upload");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::LOCAL), "{stderr}");
    assert!(
        stderr.contains(&format!("keelctl: Cannot read {}: ", missing.display())),
        "{stderr}"
    );
    // The spec and the report come first; nothing reached the host.
    assert!(text(&out.stdout).contains("name = \"gone\"\n"));
    assert!(!stderr.contains("uploaded"), "{stderr}");
    assert!(!agent.state.join("uploads/disks/gone-xvda.img").exists());
    assert_eq!(agent.audit().lines().count(), audited);
    let out = keelctl(&config, &["--host", &host, "guest", "show", "gone"]);
    assert_eq!(out.status.code(), Some(exit::HOST_ERROR));
    std::fs::remove_dir_all(&dom0).unwrap();
    std::fs::remove_dir_all(&config).unwrap();
}

#[test]
fn define_sends_the_spec_alone_and_keeps_the_partial_status() {
    let (agent, config, host) = paired();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import_xen/pv-kernel.cfg");
    let out = import(&config, &host, &cfg, "--define");
    let stderr = text(&out.stderr);
    // pv-kernel.cfg has settings Keel does not map: partial, but defined.
    assert_eq!(out.status.code(), Some(exit::IMPORT_PARTIAL), "{stderr}");
    assert!(stderr.ends_with("keelctl: defined guest db1\n"), "{stderr}");
    // It names the files to copy, and copies none.
    assert!(
        stderr.contains(
            "keelctl: the guest needs /boot/vmlinuz-6.1.0-18-amd64 as images/db1-vmlinuz on the host (--upload copies it)"
        ),
        "{stderr}"
    );
    assert!(!agent.state.join("uploads").join("images").exists());
    let spec_toml = text(&out.stdout);
    assert_eq!(shown_spec(&config, &host, "db1"), spec_toml);
    let spec = GuestSpec::parse(Path::new("db1.toml"), &spec_toml).unwrap();
    assert_eq!(
        spec.boot.cmdline(),
        "root=/dev/vda ro console=ttyS0 resume=/dev/vdb elevator=noop"
    );
    // Defining again replaces the definition, as `guest define` does.
    let out = import(&config, &host, &cfg, "--define");
    assert_eq!(out.status.code(), Some(exit::IMPORT_PARTIAL));
    std::fs::remove_dir_all(&config).unwrap();
}
