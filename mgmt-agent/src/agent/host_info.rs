//! The answer to `HostInfo`: hostname, uptime and memory from /proc,
//! the CPU count, and the running guests as init counts them.

use std::time::Duration;

use crate::messages::HostInfo;
use keel_sys::fsutil::read_trimmed;

use super::init_client::InitClient;

/// `agent_uptime` stands in for the host's where /proc is not mounted.
pub fn host_info(init: &InitClient, agent_uptime: Duration) -> HostInfo {
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| "unknown".into());
    let uptime_secs = read_trimmed("/proc/uptime")
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(agent_uptime.as_secs());
    let memory_mib = read_trimmed("/proc/meminfo")
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024);
    HostInfo {
        hostname,
        version: keel_common::VERSION.to_string(),
        uptime_secs,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mib,
        guests_running: init.running(),
    }
}
