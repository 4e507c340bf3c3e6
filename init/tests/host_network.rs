//! Host networking against the real kernel and a real DHCP server: each
//! test runs in a network namespace of its own (unshare(CLONE_NEWNET) on a
//! thread, which the threads and processes it starts inherit), with a veth
//! pair whose far end (lan0) is the "LAN" and whose near end (up0) is the
//! uplink. dnsmasq serves DHCP on lan0; init's own code (`net::attach`,
//! `net::dhcp::run`, `net::apply_static`) configures up0 and the bridge
//! kbr0 over it. The host's own interfaces are never touched.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2's `ip` and
//! dnsmasq (`dnsmasq-base`); without them a test says SKIPPED on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_init::net::netlink::{LinkInfo, Netlink};
use keel_init::net::{self, Announcer};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const RANGE_FIRST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 50);
const RANGE_LAST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 60);
/// How long a lease (or a carrier change) may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Keeps every log record (with the logging thread's name) and echoes it
/// on stderr, so a failure shows what init's code did.
struct CaptureLog;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOGGER: CaptureLog = CaptureLog;
static LOGGER_ONCE: Once = Once::new();

impl log::Log for CaptureLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let thread = std::thread::current();
        let line = format!(
            "[{}] {}: {}",
            thread.name().unwrap_or("?"),
            record.level(),
            record.args()
        );
        eprintln!("{line}");
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}

fn init_logging() {
    LOGGER_ONCE.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// How many captured log lines contain `needle`.
fn logged(needle: &str) -> usize {
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn skip(test: &str, why: &str) {
    eprintln!("\n********************************************************");
    eprintln!("SKIPPED: {test}: {why}");
    eprintln!("********************************************************\n");
}

/// The absolute path of `tool` on PATH (or in the sbin directories, which
/// a non-login PATH may lack).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The tools a test needs, resolved before anything else happens.
struct Tools {
    ip: PathBuf,
    dnsmasq: Option<PathBuf>,
}

impl Tools {
    /// Runs `ip args...` and fails the test if it fails.
    fn ip(&self, args: &str) {
        let out = Command::new(&self.ip)
            .args(args.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("ip {args}: {e}"));
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `body` on a thread in a fresh network namespace with a scratch
/// directory; returns without running it (loudly) when the namespace or a
/// tool is unavailable.
fn in_netns(test: &str, need_dnsmasq: bool, body: impl FnOnce(&Tools, &Path) + Send + 'static) {
    init_logging();
    let Some(ip) = find_tool("ip") else {
        return skip(test, "iproute2's `ip` is not installed");
    };
    let dnsmasq = find_tool("dnsmasq");
    if need_dnsmasq && dnsmasq.is_none() {
        return skip(
            test,
            "dnsmasq is not installed (apt-get install dnsmasq-base)",
        );
    }
    let tools = Tools { ip, dnsmasq };
    let name = test.to_owned();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            match unshare(CloneFlags::CLONE_NEWNET) {
                Ok(()) => {}
                Err(Errno::EPERM) => {
                    return skip(
                        &name,
                        "cannot create a network namespace (EPERM: needs CAP_SYS_ADMIN)",
                    );
                }
                Err(e) => panic!("{name}: unshare(CLONE_NEWNET): {e}"),
            }
            let dir = tempfile::tempdir().expect("temporary directory");
            body(&tools, dir.path());
        })
        .expect("spawn the test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `lo` up and the veth pair up0 (uplink) <-> lan0 (the LAN, with the
/// gateway's address), both ends up.
fn lan(tools: &Tools) {
    tools.ip("link set lo up");
    tools.ip("link add up0 type veth peer name lan0");
    tools.ip(&format!("addr add {GATEWAY}/24 dev lan0"));
    tools.ip("link set lan0 up");
}

fn links() -> Vec<LinkInfo> {
    Netlink::open().unwrap().links().unwrap()
}

fn link(name: &str) -> LinkInfo {
    let links = links();
    links
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("{name} is not in {links:?}"))
        .clone()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn in_range(addr: Ipv4Addr) -> bool {
    (RANGE_FIRST..=RANGE_LAST).contains(&addr)
}

/// The leased address on `ifname`, once the lease is fully applied: the
/// address in the pool, the default route via the gateway on `ifname`, and
/// resolv.conf naming the DNS server.
fn applied_lease(ifname: &str, resolv_conf: &Path) -> Option<Ipv4Addr> {
    let mut nl = Netlink::open().unwrap();
    let addresses = nl.addresses(ifname).unwrap();
    let (address, _) = addresses
        .iter()
        .copied()
        .find(|&(a, prefix)| in_range(a) && prefix == 24)?;
    let index = nl.link_index(ifname).unwrap();
    if nl.default_route().unwrap() != Some((GATEWAY, index)) {
        return None;
    }
    let resolv = std::fs::read_to_string(resolv_conf).ok()?;
    resolv
        .lines()
        .any(|l| l == format!("nameserver {GATEWAY}"))
        .then_some(address)
}

/// dnsmasq serving DHCP on lan0, its log (stderr) in a file; killed when
/// dropped, also when the test fails.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(binary: &Path, dir: &Path) -> Self {
        let log = dir.join("dnsmasq.log");
        let file = File::create(&log).unwrap();
        let child = Command::new(binary)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-hosts",
                "--no-resolv",
                "--bind-interfaces",
                "--interface=lan0",
                "--except-interface=lo",
                "--port=0",
                "--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,2m",
                "--dhcp-option=option:router,192.168.77.1",
                "--dhcp-option=option:dns-server,192.168.77.1",
                "--log-dhcp",
                // Log to stderr only, never to the host's syslog.
                "--log-facility=-",
            ])
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut dnsmasq = Self { child, log };
        wait_for("dnsmasq to start", PATIENCE, || {
            if let Some(status) = dnsmasq.child.try_wait().unwrap() {
                panic!("dnsmasq exited ({status}):\n{}", dnsmasq.text());
            }
            dnsmasq.text().contains("DHCP, IP range").then_some(())
        });
        dnsmasq
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("dnsmasq log:\n{}", self.text());
        }
    }
}

/// `net::dhcp::run` on a thread of its own; stopped and joined when
/// dropped, also when the test fails.
struct DhcpThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DhcpThread {
    /// Must be called on the namespaced thread: the new thread inherits
    /// its network namespace, which it proves by sending back the links it
    /// sees.
    fn start(host_if: &str, uplink: &str, bridge: Option<&str>, announcer: Announcer) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_tx, seen_rx) = mpsc::channel();
        let (host_if, uplink) = (host_if.to_owned(), uplink.to_owned());
        let bridge = bridge.map(str::to_owned);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{host_if}"))
            .spawn(move || {
                let names: Vec<String> = links().into_iter().map(|l| l.name).collect();
                seen_tx.send(names).unwrap();
                net::dhcp::run(&host_if, &uplink, bridge.as_deref(), &announcer, &stop2);
            })
            .expect("spawn the DHCP thread");
        let dhcp = Self {
            stop,
            thread: Some(thread),
        };
        let seen = seen_rx
            .recv_timeout(PATIENCE)
            .expect("the DHCP thread lists its links");
        let mine: Vec<String> = links().into_iter().map(|l| l.name).collect();
        assert_eq!(
            seen, mine,
            "the DHCP thread is not in the test's network namespace"
        );
        assert!(seen.iter().any(|n| n == "lan0"), "{seen:?}");
        dhcp
    }
}

impl Drop for DhcpThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let started = Instant::now();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            eprintln!("dhcp::run returned {:?} after stop", started.elapsed());
            if result.is_err() && !std::thread::panicking() {
                panic!("the DHCP thread panicked");
            }
        }
    }
}

/// Lines of the dnsmasq log from byte `from` on that contain `needle`.
fn dnsmasq_lines(text: &str, from: usize, needle: &str) -> usize {
    text[from..].lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn dhcp_on_a_bridge_from_dnsmasq_survives_a_link_flap() {
    in_netns(
        "dhcp_on_a_bridge_from_dnsmasq_survives_a_link_flap",
        true,
        |tools, dir| {
            lan(tools);
            let dnsmasq = Dnsmasq::start(tools.dnsmasq.as_deref().unwrap(), dir);

            let host_if = net::attach("up0", Some("kbr0")).unwrap();
            assert_eq!(host_if, "kbr0");
            let up0 = link("up0");
            let kbr0 = link("kbr0");
            assert_eq!(kbr0.kind.as_deref(), Some("bridge"));
            assert!(up0.mac.is_some(), "{up0:?}");
            assert_eq!(kbr0.mac, up0.mac, "the bridge has the uplink's MAC");
            assert_eq!(up0.master, Some(kbr0.index), "up0 is a port of kbr0");

            // An unpaired host: the lease announcement shows the code.
            let announcer = Announcer {
                agent_port: 7444,
                pairing_file: dir.join("pairing-code"),
                resolv_conf: dir.join("resolv.conf"),
            };
            std::fs::write(&announcer.pairing_file, "ABCD-1234\n").unwrap();

            // 1. The first lease, on the bridge.
            let started = Instant::now();
            let dhcp = DhcpThread::start("kbr0", "up0", Some("kbr0"), announcer.clone());
            let address = wait_for("the first DHCP lease on kbr0", PATIENCE, || {
                applied_lease("kbr0", &announcer.resolv_conf)
            });
            eprintln!(
                "FIGURE: first lease {address}/24 on kbr0 applied after {:?}",
                started.elapsed()
            );
            assert_eq!(
                std::fs::read_to_string(&announcer.resolv_conf).unwrap(),
                format!("nameserver {GATEWAY}\n")
            );
            // Attaching and leasing left the bridge and its port as they were.
            let up0 = link("up0");
            let kbr0 = link("kbr0");
            assert_eq!(kbr0.mac, up0.mac);
            assert_eq!(up0.master, Some(kbr0.index));
            assert!(kbr0.up && kbr0.carrier && up0.carrier, "{kbr0:?} {up0:?}");
            // 4. The announcement with a pairing code (it writes to the
            // consoles of a logger that is not installed here).
            announcer.address("kbr0", address, 24);
            let leases = std::fs::read_to_string(dir.join("leases")).unwrap();
            assert!(leases.contains(&address.to_string()), "{leases}");

            // 2. The cable is pulled: up0 loses its carrier...
            tools.ip("link set lan0 down");
            let down_at = Instant::now();
            wait_for("up0 to lose its carrier", PATIENCE, || {
                (!link("up0").carrier).then_some(())
            });
            wait_for("the DHCP client to see the link go down", PATIENCE, || {
                (logged("up0: link down") >= 1).then_some(())
            });
            eprintln!("FIGURE: link down seen after {:?}", down_at.elapsed());

            // ...and plugged back in: the client starts over from DISCOVER.
            let log_mark = dnsmasq.text().len();
            let lost_before = logged("lost; removing the address");
            tools.ip("link set lan0 up");
            let up_at = Instant::now();
            wait_for(
                "the DHCP client to see the link come back",
                PATIENCE,
                || (logged("up0: link up again; confirming the DHCP lease") >= 1).then_some(()),
            );
            wait_for("a new DISCOVER and ACK at dnsmasq", PATIENCE, || {
                let text = dnsmasq.text();
                let discover = log_mark + text[log_mark..].find("DHCPDISCOVER(lan0)")?;
                (dnsmasq_lines(&text, discover, "DHCPACK(lan0)") >= 1).then_some(())
            });
            // The old lease was dropped before the new one was applied.
            assert!(
                logged("lost; removing the address") > lost_before,
                "the client did not remove the lost lease"
            );
            let again = wait_for(
                "the lease on kbr0 after the link came back",
                PATIENCE,
                || applied_lease("kbr0", &announcer.resolv_conf),
            );
            eprintln!(
                "FIGURE: lease {again}/24 back on kbr0 {:?} after the link came up",
                up_at.elapsed()
            );
            let text = dnsmasq.text();
            eprintln!(
                "FIGURE: dnsmasq saw {} DISCOVERs, {} REQUESTs, {} ACKs in all",
                dnsmasq_lines(&text, 0, "DHCPDISCOVER(lan0)"),
                dnsmasq_lines(&text, 0, "DHCPREQUEST(lan0)"),
                dnsmasq_lines(&text, 0, "DHCPACK(lan0)")
            );
            assert_eq!(link("up0").master, Some(link("kbr0").index));

            drop(dhcp);
            drop(dnsmasq);
        },
    );
}

#[test]
fn static_address_and_gateway_on_the_uplink() {
    in_netns(
        "static_address_and_gateway_on_the_uplink",
        false,
        |tools, _dir| {
            lan(tools);
            let host_if = net::attach("up0", None).unwrap();
            assert_eq!(host_if, "up0");
            let up0 = link("up0");
            assert!(up0.up && up0.master.is_none(), "{up0:?}");

            let address = Ipv4Addr::new(192, 168, 77, 9);
            net::apply_static("up0", address, 24, Some(GATEWAY)).unwrap();
            let mut nl = Netlink::open().unwrap();
            assert_eq!(nl.addresses("up0").unwrap(), vec![(address, 24)]);
            assert_eq!(nl.default_route().unwrap(), Some((GATEWAY, up0.index)));

            // Applying it again changes nothing and is not an error.
            net::apply_static("up0", address, 24, Some(GATEWAY)).unwrap();
            assert_eq!(nl.addresses("up0").unwrap(), vec![(address, 24)]);

            // A gateway outside every connected subnet is refused, naming
            // the interface; the working route stays.
            let off_link = Ipv4Addr::new(10, 99, 0, 1);
            let err = net::apply_static("up0", address, 24, Some(off_link)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("up0"), "{text}");
            assert!(text.contains(&off_link.to_string()), "{text}");
            assert_eq!(nl.default_route().unwrap(), Some((GATEWAY, up0.index)));

            // Without a gateway only the address is set.
            let second = Ipv4Addr::new(192, 168, 78, 9);
            net::apply_static("up0", second, 24, None).unwrap();
            let mut addresses = nl.addresses("up0").unwrap();
            addresses.sort();
            assert_eq!(addresses, vec![(address, 24), (second, 24)]);
            assert_eq!(nl.default_route().unwrap(), Some((GATEWAY, up0.index)));
        },
    );
}
