//! The fixture the agent's integration tests share: keel-agent in-process
//! on an ephemeral loopback port, with init's real control server behind
//! it, each in its own temporary directories.

// A failed assumption in a test is a failed test, and each test crate
// uses a different part of the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_init::control::HostAction;
use keel_init::guests::{GuestManager, Paths, Shared};
use keel_init::shutdown::Action;
use keel_mgmt::agent::{serve, AgentHandle, AgentSettings};
use keel_mgmt::client::{Client, ClientError, ConnectOptions, Target};
use keel_mgmt::{ClientKey, KnownHosts, Request, Response, Role};
use ring::digest::{Context, SHA256};

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "keel-agent-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Agent {
    pub handle: AgentHandle,
    pub state: PathBuf,
    pub data: PathBuf,
    /// Host reboots and power-offs init was asked for.
    pub host_actions: Arc<Mutex<Vec<Action>>>,
}

/// What runs guests behind init.
pub struct Guests {
    /// A shell script standing in for keel-vmm; `None`: no VMM, so no
    /// guest can start.
    pub vmm_script: Option<String>,
    /// How long init gives a guest to shut down cleanly before the kill.
    pub stop_timeout: Duration,
}

impl Default for Guests {
    fn default() -> Self {
        Guests {
            vmm_script: None,
            stop_timeout: Duration::from_secs(2),
        }
    }
}

/// Serves init's control socket for a data directory, as PID 1 does.
pub fn start_init(data: &Path, host_actions: Arc<Mutex<Vec<Action>>>, guests: Guests) -> PathBuf {
    start_init_acting(
        data,
        Arc::new(move |a| host_actions.lock().unwrap().push(a)),
        guests,
    )
}

/// As [`start_init`], doing `host_action` where PID 1 would shut down.
pub fn start_init_acting(data: &Path, host_action: HostAction, guests: Guests) -> PathBuf {
    let run = data.join("run");
    let vmm = match &guests.vmm_script {
        Some(script) => {
            use std::os::unix::fs::PermissionsExt;
            let vmm = data.join("fake-vmm");
            std::fs::write(&vmm, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
            // The kernel that guest specs name must exist.
            std::fs::create_dir_all(data.join("images")).unwrap();
            std::fs::write(data.join("images/vmlinux"), b"kernel").unwrap();
            vmm
        }
        None => PathBuf::from("/usr/bin/keel-vmm"),
    };
    let paths = Paths {
        data: data.to_path_buf(),
        sockets: run.join("vm"),
        vmm,
        cgroup: None,
        drop_privileges: false,
        bridge: None,
        console_to_host: false,
        agent_port: keel_common::host::DEFAULT_AGENT_PORT,
    };
    let socket = run.join("init.sock");
    let shared = Arc::new(Shared::new(GuestManager::load(paths)));
    if guests.vmm_script.is_some() {
        supervise(Arc::clone(&shared));
    }
    let control = keel_init::control::Control {
        shared,
        host_action,
        stop_timeout: guests.stop_timeout,
    };
    keel_init::control::serve(&socket, control).unwrap();
    socket
}

/// Does what init's main loop does for guests: kills those whose stop
/// timed out and reaps their VMMs. Only the VMMs' own pids are waited
/// for, so the keelctl children of other tests are left alone.
fn supervise(shared: Arc<Shared>) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    std::thread::spawn(move || loop {
        {
            let mut manager = shared.lock();
            manager.tick();
            let pids: Vec<u32> = manager.list().iter().filter_map(|g| g.pid).collect();
            for pid in pids {
                let pid = Pid::from_raw(i32::try_from(pid).unwrap());
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => {}
                    Ok(status) => {
                        manager.reaped(&status);
                    }
                }
            }
        }
        shared.notify();
        std::thread::sleep(Duration::from_millis(50));
    });
}

impl Agent {
    pub fn start_with(bind: &str, tweak: impl FnOnce(&mut AgentSettings)) -> Agent {
        Agent::start_full(bind, Guests::default(), tweak)
    }

    /// An agent whose init runs guests with `guests`.
    pub fn start_with_guests(guests: Guests) -> Agent {
        Agent::start_full("127.0.0.1:0", guests, |_| {})
    }

    fn start_full(bind: &str, guests: Guests, tweak: impl FnOnce(&mut AgentSettings)) -> Agent {
        let state = temp_dir("state");
        let data = temp_dir("data");
        let host_actions = Arc::new(Mutex::new(Vec::new()));
        let mut settings = AgentSettings::new(&state);
        settings.handshake_timeout = Duration::from_secs(2);
        settings.init_socket = start_init(&data, Arc::clone(&host_actions), guests);
        settings.vmm_socket_dir = data.join("run/vm");
        tweak(&mut settings);
        let listener = TcpListener::bind(bind).unwrap();
        Agent {
            handle: serve(listener, settings).unwrap(),
            state,
            data,
            host_actions,
        }
    }

    pub fn start() -> Agent {
        Agent::start_with("127.0.0.1:0", |_| {})
    }

    pub fn port(&self) -> u16 {
        self.handle.local_addr().port()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    pub fn target(&self) -> Target {
        Target {
            known_hosts_name: format!("127.0.0.1:{}", self.port()),
            host: "127.0.0.1".into(),
            port: self.port(),
        }
    }

    pub fn code(&self) -> String {
        self.handle.pairing_code().unwrap()
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.state.join("audit.log")).unwrap()
    }

    /// Waits for a line containing all of `parts` (session threads write
    /// the audit line just after replying).
    pub fn wait_audit(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.audit();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no audit line with {parts:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self, key: &ClientKey, code: Option<&str>) -> Result<Client, ClientError> {
        let mut kh = KnownHosts::default();
        let options = ConnectOptions {
            trust_on_first_use: true,
            pairing_code: code.map(str::to_string),
            // Room for multi-MiB uploads on a busy 2-core machine.
            timeout: Some(Duration::from_secs(10)),
        };
        Client::connect(&self.target(), key, &mut kh, &options)
    }

    /// A fresh key that `admin` authorises with `role`.
    pub fn new_key(&self, admin: &mut Client, role: Role) -> ClientKey {
        let key = ClientKey::generate().unwrap();
        let add = Request::AuthorizeKey {
            role,
            public_key: key.public_key().0,
            comment: role.to_string(),
        };
        assert_eq!(admin.call(add).unwrap(), Response::Ok);
        key
    }

    /// Pairs a fresh key as admin.
    pub fn admin(&self) -> (ClientKey, Client) {
        let key = ClientKey::generate().unwrap();
        let c = self.connect(&key, Some(&self.code())).unwrap();
        (key, c)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Runs the real keelctl binary with `config` as its XDG config home, as
/// the README shows it, and echoes the exchange for the test log.
pub fn keelctl(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_keelctl"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("KEEL_HOST")
        .output()
        .unwrap();
    eprintln!(
        "$ keelctl {}\n{}{}[exit {:?}]",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

/// The SHA-256 of `d`, as an upload announces it.
pub fn sha(d: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, d).as_ref());
    out
}

/// Uploads `body` to `path` in full-size chunks.
pub fn put(c: &mut Client, path: &str, body: &[u8]) -> Result<(), ClientError> {
    let done = c.upload(
        path,
        body.len() as u64,
        &mut &body[..],
        keel_mgmt::messages::MAX_CHUNK,
        &mut |_| {},
    )?;
    assert_eq!(done.sha256, sha(body));
    Ok(())
}

pub const MIB: u64 = 1 << 20;

/// Deterministic, incompressible-looking bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file of `size` bytes, holes but for `pieces`, and its SHA-256
/// computed from the pieces (zeros fed in 1 MiB slices).
pub fn sparse_file(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) -> [u8; 32] {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut ctx = Context::new(&SHA256);
    let zeros = vec![0u8; MIB as usize];
    let mut at = 0;
    for (offset, bytes) in pieces {
        f.write_all_at(bytes, *offset).unwrap();
        while at < *offset {
            let n = (offset - at).min(MIB);
            ctx.update(&zeros[..n as usize]);
            at += n;
        }
        ctx.update(bytes);
        at += bytes.len() as u64;
    }
    while at < size {
        let n = (size - at).min(MIB);
        ctx.update(&zeros[..n as usize]);
        at += n;
    }
    f.sync_all().unwrap();
    ctx.finish().as_ref().try_into().unwrap()
}

/// The bytes a file has allocated on disk.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}
