//! Shows the agent's open pairing code on the local console, and only
//! there: not in init's recent lines (which `keelctl logs` serves to any
//! reader key) nor in the kernel log. The agent publishes the code in a
//! file; a failed pairing attempt replaces it, so the file is watched and
//! each new code is shown as it appears.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::logger;

/// How often the pairing file is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Starts the watcher thread for `file`, for an agent on `agent_port`.
pub fn spawn(file: PathBuf, agent_port: u16) {
    let spawned = std::thread::Builder::new()
        .name("pairing-display".into())
        .spawn(move || {
            let mut shown: Option<String> = None;
            loop {
                let code = read_code(&file);
                if let Some(new) = code.as_ref().filter(|c| Some(*c) != shown.as_ref()) {
                    show(new, agent_port);
                }
                shown = code;
                std::thread::sleep(POLL);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the pairing display: {e}; pairing codes will not be shown");
    }
}

/// Prints the pairing hint for each address the host has now.
pub fn show(code: &str, agent_port: u16) {
    logger::console_only(&format!(
        "pairing code: {code}, for `keelctl pair` (shown on this console only; a failed attempt brings a fresh one)"
    ));
    for ip in keel_sys::host_addrs::reachable_ipv4_addresses() {
        let host = keel_common::host::agent_host(ip.into(), agent_port);
        logger::console_only(&keel_common::host::pairing_hint(&host, code));
    }
}

/// The published code, if pairing is open.
pub fn read_code(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let code = text.trim();
    (!code.is_empty() && code.len() < 64).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("keel-pairing-display-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("code");
        assert_eq!(read_code(&file), None);
        std::fs::write(&file, "1234-5678\n").unwrap();
        assert_eq!(read_code(&file).as_deref(), Some("1234-5678"));
        std::fs::write(&file, "x".repeat(100)).unwrap();
        assert_eq!(read_code(&file), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
