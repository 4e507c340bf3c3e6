//! keelctl: the command-line client for keel-agent.
//!
//! Exit codes (`keel_mgmt::client::exit`): 0 ok, 1 the host returned an
//! error, 2 usage, 3 connection or handshake failure (including an unknown
//! host key), 4 host key mismatch, 5 not authorised, 6 local problem (key
//! or config files, a file to upload), 7 `import` partial (the spec was
//! made, and defined if asked, but the report lists settings it could not
//! map), 8 `import` failed (no spec).

#[path = "keelctl/import.rs"]
mod import;
#[path = "keelctl/transfer.rs"]
mod transfer;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel_common::init_api::GUEST_STOP_TIMEOUT;
use keel_mgmt::client::{
    exit, parse_fingerprint, Client, ClientError, ConfigDir, ConnectOptions, GUEST_STOP_WAIT,
};
use keel_mgmt::messages::{GuestDetail, GuestSummary, HostInfo, KeyInfo};
use keel_mgmt::util::rfc3339;
use keel_mgmt::{FrameError, HandshakeError, PublicKey, Request, Response, Role, SessionError};

/// Manage a Keel host over its signed management channel.
#[derive(Parser, Debug)]
#[command(name = "keelctl", version = keel_common::VERSION)]
struct Cli {
    /// Host to manage: a name from hosts.toml or HOST[:PORT] (port 7444).
    #[arg(long, global = true, env = "KEEL_HOST")]
    host: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate this workstation's client key.
    Keygen {
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Enrol this key as admin with the host's first-boot pairing code.
    Pair { host: String, code: String },
    /// Pin a host's key on first use, printing its fingerprint.
    Trust { host: String },
    /// Host commands.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Guest commands.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
    /// Show the host log.
    Logs {
        /// Show this guest's log instead.
        #[arg(long)]
        guest: Option<String>,
        #[arg(long, default_value_t = 100)]
        tail: u32,
        /// Keep printing the guest's console as it grows, until the guest
        /// stops (or Ctrl-C).
        #[arg(long, short = 'f', requires = "guest")]
        follow: bool,
    },
    /// Upload a file to the host's images/ or disks/ (operator or admin).
    Upload {
        /// The local file.
        local_file: PathBuf,
        /// Destination on the host, starting with images/ or disks/ (e.g.
        /// images/vmlinux), as guest specs name it: relative to the data
        /// partition in the appliance, to <state-dir>/uploads for a
        /// standalone keel-agent.
        remote_path: String,
        /// Replace a file that defined guests use (admin only, while
        /// they are stopped).
        #[arg(long)]
        replace: bool,
    },
    /// Keys: show this workstation's; list, authorise, revoke or change
    /// the role of the host's.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Show the audit log (admin only).
    Audit {
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Turn another hypervisor's guest into a Keel guest.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImportCommand {
    /// Read a Xen domain config (xl or xm) and print the Keel guest spec
    /// it becomes (stdout) and what changed or could not be mapped
    /// (stderr); with --define or --upload, also create the guest.
    Xen(import::XenArgs),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Print this workstation's public key, to hand to an admin.
    Show,
    /// Authorise a key on the host with a role (admin only).
    Add {
        /// admin, operator or reader.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// The key, as `keelctl key show` prints it (`ed25519:...`).
        public_key: String,
        /// Who the key belongs to.
        #[arg(default_value = "")]
        comment: String,
    },
    /// List the keys the host authorises (admin only).
    List,
    /// Remove a key, ending its sessions (admin only; not the last admin).
    Revoke {
        /// The key's fingerprint, as `keelctl key list` prints it.
        fingerprint: String,
    },
    /// Change a key's role; a lowered key's sessions end (admin only; not
    /// the last admin).
    SetRole {
        fingerprint: String,
        /// admin, operator or reader.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Hostname, version, uptime and resources.
    Info,
    /// Stop every guest cleanly, then reboot the host (admin only).
    Reboot,
    /// Stop every guest cleanly, then power the host off (admin only).
    Poweroff,
}

#[derive(Subcommand, Debug)]
enum GuestCommand {
    List,
    Show {
        name: String,
    },
    /// Define (or redefine) a guest from a TOML spec file.
    Define {
        file: PathBuf,
    },
    Undefine {
        name: String,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Kill {
        name: String,
    },
    Restart {
        name: String,
    },
    /// Attach to the guest's serial console (recent output first).
    /// Keystrokes go to the guest; Ctrl-] detaches.
    Console {
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("keelctl: {e}");
            if let ClientError::Handshake(HandshakeError::UnknownHost { host, .. }) = &e {
                eprintln!("keelctl: to pin it, run: keelctl trust {host}");
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn json_out<T: serde::Serialize>(value: &T) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ClientError::Local(format!("JSON encoding failed: {e}")))?;
    println!("{text}");
    Ok(())
}

fn connect(
    dir: &ConfigDir,
    typed: Option<&str>,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    let target = dir.resolve(typed)?;
    let key = dir.load_key()?;
    let mut kh = dir.load_known_hosts()?;
    let client = Client::connect(&target, &key, &mut kh, options)?;
    if client.session().trusted_on_first_use() {
        dir.save_known_hosts(&kh)?;
        eprintln!(
            "keelctl: pinned host key of {} ({})",
            target.known_hosts_name,
            client.session().peer_key().fingerprint()
        );
    }
    Ok(client)
}

fn run(cli: &Cli) -> Result<i32, ClientError> {
    let dir = ConfigDir::from_env()?;
    let done = match &cli.command {
        Command::Keygen { force } => {
            let key = dir.keygen(*force)?;
            if cli.json {
                json_out(&serde_json::json!({
                    "path": dir.key_path(),
                    "public_key": key.public_key().to_string(),
                    "fingerprint": key.fingerprint().to_string(),
                }))?;
            } else {
                println!("wrote {}", dir.key_path().display());
                println!("public key: {}", key.public_key());
                println!("fingerprint: {}", key.fingerprint());
            }
            Ok(())
        }
        Command::Pair { host, code } => {
            // No blind trust: the host key is pinned only once the host
            // has proved it knows the code.
            let options = ConnectOptions {
                trust_on_first_use: false,
                pairing_code: Some(code.clone()),
                timeout: None,
            };
            let client = connect(&dir, Some(host), &options)?;
            let fp = client.session().peer_key().fingerprint();
            let role = client
                .session()
                .role()
                .map_or("?".into(), |r| r.to_string());
            if cli.json {
                json_out(&serde_json::json!({"host_fingerprint": fp.to_string(), "role": role}))
            } else {
                println!("paired with {host} as {role}; host key {fp}");
                println!("the host proved it knows the pairing code, so its key is pinned");
                Ok(())
            }
        }
        Command::Trust { host } => {
            let target = dir.resolve(Some(host))?;
            let key = dir.load_key()?;
            let mut kh = dir.load_known_hosts()?;
            let options = ConnectOptions {
                trust_on_first_use: true,
                ..ConnectOptions::default()
            };
            // The host may refuse our key; the host key is known as soon
            // as its signature verified, so pin it either way.
            let result = Client::connect(&target, &key, &mut kh, &options);
            let fp = match &result {
                Ok(c) => Some(c.session().peer_key().fingerprint()),
                Err(_) => None,
            };
            match result {
                Ok(_) | Err(ClientError::Handshake(HandshakeError::Rejected)) => {
                    dir.save_known_hosts(&kh)?;
                    let fp = fp.map_or_else(|| "(see known_hosts)".to_string(), |f| f.to_string());
                    if cli.json {
                        json_out(
                            &serde_json::json!({"host": target.known_hosts_name, "fingerprint": fp}),
                        )
                    } else {
                        println!("trusted {} with host key {fp}", target.known_hosts_name);
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            }
        }
        Command::Host { command } => {
            let mut c = connect(&dir, cli.host.as_deref(), &ConnectOptions::default())?;
            let (request, done) = match command {
                HostCommand::Info => (Request::HostInfo, ""),
                HostCommand::Reboot => (Request::HostReboot, "rebooting: guests stop first"),
                HostCommand::Poweroff => (Request::HostPowerOff, "powering off: guests stop first"),
            };
            match (command, c.call(request)?) {
                (HostCommand::Info, Response::HostInfo(info)) => print_host_info(cli.json, &info),
                (HostCommand::Info, _) => Err(ClientError::Unexpected),
                (_, response) => report_ok(cli, response, done),
            }
        }
        Command::Guest { command } => guest(cli, &dir, command),
        Command::Logs {
            guest: Some(name),
            tail,
            follow: true,
        } => {
            let mut c = connect(&dir, cli.host.as_deref(), &ConnectOptions::default())?;
            follow_log(&mut c, name, *tail)
        }
        Command::Logs { guest, tail, .. } => {
            let mut c = connect(&dir, cli.host.as_deref(), &ConnectOptions::default())?;
            let request = Request::Logs {
                guest: guest.clone(),
                tail: *tail,
                follow: false,
            };
            match c.call(request)? {
                Response::LogLines(lines) if cli.json => json_out(&lines),
                Response::LogLines(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    Ok(())
                }
                _ => Err(ClientError::Unexpected),
            }
        }
        Command::Upload {
            local_file,
            remote_path,
            replace,
        } => upload(cli, &dir, local_file, remote_path, *replace),
        Command::Key {
            command: KeyCommand::Show,
        } => {
            let key = dir.load_key()?;
            if cli.json {
                json_out(&serde_json::json!({
                    "public_key": key.public_key().to_string(),
                    "fingerprint": key.fingerprint().to_string(),
                }))
            } else {
                println!("{}", key.public_key());
                Ok(())
            }
        }
        Command::Key {
            command:
                KeyCommand::Add {
                    role,
                    public_key,
                    comment,
                },
        } => {
            let key = PublicKey::parse(public_key).map_err(|e| {
                ClientError::Local(format!("{public_key} is not a public key: {e}"))
            })?;
            let mut c = connect(&dir, cli.host.as_deref(), &ConnectOptions::default())?;
            let request = Request::AuthorizeKey {
                role: *role,
                public_key: key.0,
                comment: comment.clone(),
            };
            report_ok(
                cli,
                c.call(request)?,
                &format!("authorised {} as {role}", key.fingerprint()),
            )
        }
        Command::Key { command } => key(cli, &dir, command),
        Command::Import {
            command: ImportCommand::Xen(args),
        } => return import::xen(cli.host.as_deref(), cli.json, args),
        Command::Audit { tail } => {
            let mut c = connect(&dir, cli.host.as_deref(), &ConnectOptions::default())?;
            match c.call(Request::Audit { tail: *tail })? {
                Response::Audit(entries) if cli.json => json_out(&entries),
                Response::Audit(entries) => {
                    println!(
                        "{:<20}  {:<52}  {:<8}  {:<24}  RESULT",
                        "TIME", "KEY", "ROLE", "REQUEST"
                    );
                    for e in entries {
                        println!(
                            "{:<20}  {:<52}  {:<8}  {:<24}  {}",
                            rfc3339(e.unix_time),
                            e.fingerprint,
                            e.role.to_string(),
                            e.request,
                            e.outcome
                        );
                    }
                    Ok(())
                }
                _ => Err(ClientError::Unexpected),
            }
        }
    };
    done.map(|()| exit::OK)
}

fn key(cli: &Cli, dir: &ConfigDir, command: &KeyCommand) -> Result<(), ClientError> {
    let fingerprint = match command {
        KeyCommand::Revoke { fingerprint } | KeyCommand::SetRole { fingerprint, .. } => {
            Some(parse_fingerprint(fingerprint)?)
        }
        _ => None,
    };
    let mut c = connect(dir, cli.host.as_deref(), &ConnectOptions::default())?;
    match (command, fingerprint) {
        (KeyCommand::Revoke { .. }, Some(fp)) => {
            c.key_revoke(fp)?;
            report_ok(cli, Response::Ok, &format!("revoked {fp}"))
        }
        (KeyCommand::SetRole { role, .. }, Some(fp)) => {
            c.key_set_role(fp, *role)?;
            report_ok(cli, Response::Ok, &format!("{fp} is now {role}"))
        }
        (KeyCommand::List, _) => {
            let keys = c.key_list()?;
            let rows: Vec<(String, &KeyInfo)> = keys
                .iter()
                .map(|k| (PublicKey(k.public_key).fingerprint().to_string(), k))
                .collect();
            if cli.json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|(fp, k)| {
                        serde_json::json!({
                            "fingerprint": fp,
                            "public_key": PublicKey(k.public_key).to_string(),
                            "role": k.role,
                            "comment": k.comment,
                        })
                    })
                    .collect();
                return json_out(&rows);
            }
            println!("{:<51}  {:<8}  COMMENT", "FINGERPRINT", "ROLE");
            for (fp, k) in rows {
                println!("{fp:<51}  {:<8}  {}", k.role.to_string(), k.comment);
            }
            Ok(())
        }
        _ => Err(ClientError::Unexpected),
    }
}

fn print_host_info(json: bool, info: &HostInfo) -> Result<(), ClientError> {
    if json {
        return json_out(info);
    }
    println!("hostname:       {}", info.hostname);
    println!("version:        {}", info.version);
    println!("uptime:         {}s", info.uptime_secs);
    println!("cpus:           {}", info.cpus);
    println!("memory:         {} MiB", info.memory_mib);
    println!("guests running: {}", info.guests_running);
    Ok(())
}

fn print_guests(guests: &[GuestSummary]) {
    println!(
        "{:<24}  {:<9}  {:>5}  {:>10}",
        "NAME", "STATE", "VCPUS", "MEMORY"
    );
    for g in guests {
        println!(
            "{:<24}  {:<9}  {:>5}  {:>6} MiB",
            g.name,
            format!("{:?}", g.state).to_lowercase(),
            g.vcpus,
            g.memory_mib
        );
    }
}

fn print_guest(d: &GuestDetail) {
    println!("name:    {}", d.summary.name);
    println!(
        "state:   {}",
        format!("{:?}", d.summary.state).to_lowercase()
    );
    println!("vcpus:   {}", d.summary.vcpus);
    println!("memory:  {} MiB", d.summary.memory_mib);
    if let Some(pid) = d.pid {
        println!("pid:     {pid}");
    }
    if let Some(up) = d.uptime_secs {
        println!("uptime:  {up}s");
    }
    println!("autostart: {}", if d.autostart { "yes" } else { "no" });
    println!("restart: {} ({} restarts)", d.restart, d.restarts);
    if let Some(exit) = &d.last_exit {
        println!("last exit: {exit}");
    }
    println!("spec:");
    for l in d.spec_toml.lines() {
        println!("  {l}");
    }
}

fn guest(cli: &Cli, dir: &ConfigDir, command: &GuestCommand) -> Result<(), ClientError> {
    // Read local files before connecting, so a typo fails fast.
    let spec = match command {
        GuestCommand::Define { file } => Some(
            std::fs::read_to_string(file)
                .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}", file.display())))?,
        ),
        _ => None,
    };
    let mut c = connect(dir, cli.host.as_deref(), &ConnectOptions::default())?;
    let (request, done) = match command {
        GuestCommand::List => {
            return match c.call(Request::GuestList)? {
                Response::Guests(g) if cli.json => json_out(&g),
                Response::Guests(g) => {
                    print_guests(&g);
                    Ok(())
                }
                _ => Err(ClientError::Unexpected),
            }
        }
        GuestCommand::Show { name } => {
            return match c.call(Request::GuestShow { name: name.clone() })? {
                Response::Guest(d) if cli.json => json_out(&d),
                Response::Guest(d) => {
                    print_guest(&d);
                    Ok(())
                }
                _ => Err(ClientError::Unexpected),
            }
        }
        GuestCommand::Console { name } => return console(&mut c, name),
        GuestCommand::Define { .. } => (
            Request::GuestDefine {
                spec_toml: spec.unwrap_or_default(),
            },
            "defined",
        ),
        GuestCommand::Undefine { name } => {
            (Request::GuestUndefine { name: name.clone() }, "undefined")
        }
        GuestCommand::Start { name } => (Request::GuestStart { name: name.clone() }, "started"),
        GuestCommand::Stop { name } => {
            let request = Request::GuestStop { name: name.clone() };
            return stop_guest(cli, &mut c, request, name, ("stopping", "stopped"));
        }
        GuestCommand::Kill { name } => (Request::GuestKill { name: name.clone() }, "killed"),
        GuestCommand::Restart { name } => {
            let request = Request::GuestRestart { name: name.clone() };
            return stop_guest(cli, &mut c, request, name, ("restarting", "restarted"));
        }
    };
    report_ok(cli, c.call(request)?, done)
}

/// Sends a request that stops a guest (a stop or a restart). The host
/// answers once the guest is down, which may take init's whole stop
/// timeout, so this waits that long, saying so on a terminal.
fn stop_guest(
    cli: &Cli,
    c: &mut Client,
    request: Request,
    name: &str,
    (doing, done): (&str, &str),
) -> Result<(), ClientError> {
    use std::io::IsTerminal;
    if !cli.json && std::io::stderr().is_terminal() {
        eprintln!(
            "keelctl: {doing} {name} (it has {} s to shut down cleanly before it is killed)...",
            GUEST_STOP_TIMEOUT.as_secs()
        );
    }
    match c.call_waiting(request, GUEST_STOP_WAIT) {
        Ok(response) => report_ok(cli, response, done),
        Err(ClientError::Session(SessionError::Frame(FrameError::TimedOut))) => {
            Err(ClientError::StillInProgress(format!(
                "{name} is still stopping on the host; `keelctl guest show {name}` tells when it has stopped."
            )))
        }
        Err(e) => Err(e),
    }
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a role (admin, operator or reader)"))
}

/// Prints the outcome of a request whose answer is a plain `Ok`.
fn report_ok(cli: &Cli, response: Response, done: &str) -> Result<(), ClientError> {
    match response {
        Response::Ok if cli.json => json_out(&serde_json::json!({"result": "ok"})),
        Response::Ok => {
            println!("{done}");
            Ok(())
        }
        _ => Err(ClientError::Unexpected),
    }
}

fn upload(
    cli: &Cli,
    dir: &ConfigDir,
    local: &std::path::Path,
    remote: &str,
    replace: bool,
) -> Result<(), ClientError> {
    use std::io::IsTerminal;
    // Open before connecting, so a missing file fails fast.
    let local = transfer::Local::open(local)?;
    let mut c = connect(dir, cli.host.as_deref(), &ConnectOptions::default())?;
    let bar = !cli.json && std::io::stdout().is_terminal();
    let sent = transfer::send(&mut c, &local, remote, replace, bar.then_some(""))?;
    let done = sent.done;
    let sha256 = transfer::hex(&done.sha256);
    if cli.json {
        json_out(&serde_json::json!({
            "result": "ok",
            "path": remote,
            "bytes": done.size,
            "sent": done.data,
            "sha256": sha256,
            "seconds": sent.seconds,
        }))
    } else {
        println!(
            "uploaded {} ({} bytes, {} of them data; sha256 {sha256}) to {remote}",
            local.path.display(),
            done.size,
            done.data
        );
        Ok(())
    }
}

/// The byte that detaches an interactive console: Ctrl-], as in telnet
/// and virsh.
const DETACH: u8 = 0x1d;

/// Puts a terminal into raw mode and restores it when dropped.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Prints a guest's console log as it grows (the host streams it like a
/// read-only console) until the guest stops.
fn follow_log(c: &mut Client, name: &str, tail: u32) -> Result<(), ClientError> {
    let mut response = c.call(Request::Logs {
        guest: Some(name.to_string()),
        tail,
        follow: true,
    })?;
    let id = c.last_id();
    c.set_read_timeout(None);
    let mut out = std::io::stdout();
    loop {
        match response {
            Response::ConsoleData(data) => {
                let _ = out.write_all(&data);
                let _ = out.flush();
            }
            Response::ConsoleClosed => return Ok(()),
            _ => return Err(ClientError::Unexpected),
        }
        response = c.recv(id)?;
    }
}

/// Attaches to a guest console: output to stdout, stdin to the guest.
/// On a terminal, Ctrl-] detaches; otherwise stdin is sent until it ends
/// and output is printed until the host closes the console.
fn console(c: &mut Client, name: &str) -> Result<(), ClientError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::{IsTerminal, Read};
    use std::os::fd::AsFd;

    let first = c.call(Request::GuestConsole {
        name: name.to_string(),
    })?;
    let id = c.last_id();
    c.set_read_timeout(None);
    let mut out = std::io::stdout();
    let mut print = |data: &[u8]| {
        let _ = out.write_all(data);
        let _ = out.flush();
    };
    match first {
        Response::ConsoleData(data) => print(&data),
        Response::ConsoleClosed => return Ok(()),
        _ => return Err(ClientError::Unexpected),
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let _raw = if interactive {
        eprint!("keelctl: attached to {name}; Ctrl-] detaches\r\n");
        RawTerminal::enter()
    } else {
        None
    };
    let mut stdin_open = true;
    let mut buf = [0u8; 4096];
    loop {
        let (net_ready, stdin_ready) = {
            let stdin_fd = stdin.as_fd();
            let mut fds = vec![PollFd::new(c.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(ClientError::Local(format!("poll failed: {e}"))),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if net_ready {
            match c.recv(id)? {
                Response::ConsoleData(data) => print(&data),
                Response::ConsoleClosed => {
                    if interactive {
                        eprint!("\r\nkeelctl: console closed\r\n");
                    }
                    return Ok(());
                }
                _ => return Err(ClientError::Unexpected),
            }
        }
        if stdin_ready {
            let n = stdin.lock().read(&mut buf).unwrap_or(0);
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let data = &buf[..n];
            let detach_at = interactive
                .then(|| data.iter().position(|b| *b == DETACH))
                .flatten();
            let input = &data[..detach_at.unwrap_or(n)];
            if !input.is_empty() {
                c.send_on(
                    id,
                    Request::ConsoleInput {
                        data: input.to_vec(),
                    },
                )?;
            }
            if detach_at.is_some() {
                c.send_on(id, Request::ConsoleDetach)?;
                stdin_open = false;
            }
        }
    }
}
