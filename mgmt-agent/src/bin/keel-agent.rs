//! keel-agent: the management daemon. See `keel_mgmt::agent`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keel_mgmt::agent::{self, AgentSettings, DEFAULT_LISTEN};
use nix::sys::signal::{SigSet, Signal};

/// How long a stopping agent waits for replies it is writing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Keel management agent: serves keelctl over the signed channel.
#[derive(Parser, Debug)]
#[command(name = "keel-agent", version = keel_common::VERSION)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Directory for the host key, authorized_keys and audit.log.
    #[arg(long, default_value = "/var/lib/keel/mgmt")]
    state_dir: PathBuf,
    /// Where `keelctl upload` puts files (below its images/ and disks/
    /// only); default: <state-dir>/uploads. init passes the data
    /// partition, which guest specs are relative to.
    #[arg(long)]
    upload_root: Option<PathBuf>,
    /// init's control socket, which owns the guests.
    #[arg(long, default_value = keel_common::init_api::INIT_SOCKET)]
    init_socket: PathBuf,
    /// Directory of the VMMs' API sockets, for attached consoles.
    #[arg(long, default_value = keel_common::init_api::VMM_SOCKET_DIR)]
    vmm_socket_dir: PathBuf,
    /// Most concurrent sessions.
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// Seconds a client has to complete the handshake.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Publish an open pairing code in this file (init shows it next to
    /// the management address); removed when pairing closes.
    #[arg(long)]
    pairing_file: Option<PathBuf>,
    /// Minutes the first-boot pairing code stays valid.
    #[arg(long, default_value_t = 15)]
    pairing_minutes: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut settings = AgentSettings::new(&args.state_dir);
    if let Some(root) = args.upload_root {
        settings.upload_root = root;
    }
    settings.max_sessions = args.max_sessions.max(1);
    settings.init_socket = args.init_socket;
    settings.vmm_socket_dir = args.vmm_socket_dir;
    let published = args.pairing_file.is_some();
    settings.pairing_file = args.pairing_file;
    settings.handshake_timeout = Duration::from_secs(args.handshake_timeout.max(1));
    settings.pairing_validity = Duration::from_secs(args.pairing_minutes.max(1) * 60);
    // Blocked before any thread starts, so every thread inherits the mask
    // and only the wait below takes these signals.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    if let Err(e) = stop_signals.thread_block() {
        eprintln!("keel-agent: cannot block the stop signals: {e}");
        return ExitCode::from(1);
    }
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("keel-agent: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let mut handle = match agent::serve(listener, settings) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("keel-agent: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "keel-agent {} listening on {}, host key {}",
        keel_common::VERSION,
        handle.local_addr(),
        handle.host_fingerprint()
    );
    if let Some(code) = handle.pairing_code() {
        let minutes = handle.pairing_validity().as_secs() / 60;
        if published {
            // Under init: stdout goes to the host log, which reader keys
            // can fetch, so the code goes only to the console (init shows
            // the pairing file there).
            println!("pairing is open for {minutes} minutes; the code is on the host's console");
        } else {
            // Standalone: stdout is the operator's terminal.
            println!("pairing code: {code}, valid for {minutes} minutes");
            let hosts = keel_mgmt::agent::connect_hosts(handle.local_addr());
            if hosts.is_empty() {
                println!("on your workstation: keelctl pair HOST {code}");
            }
            for host in hosts {
                println!("{}", keel_common::host::pairing_hint(&host, &code));
            }
        }
    }
    match stop_signals.wait() {
        Ok(signal) => log::info!("{signal}: stopping after the replies in flight"),
        Err(e) => log::error!("waiting for a stop signal failed: {e}; stopping"),
    }
    handle.drain(DRAIN_TIMEOUT);
    ExitCode::SUCCESS
}
