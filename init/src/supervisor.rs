//! Supervision: init starts long-running services and restarts them with
//! exponential backoff when they exit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Shortest and longest wait before a restart.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff: the service was healthy.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a service gets to exit after SIGTERM at host shutdown.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One supervised program.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pid: Option<i32>,
    started: Option<Instant>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Service {
    pub fn new(name: &str, program: &str, args: &[&str]) -> Self {
        Service {
            name: name.to_string(),
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            pid: None,
            started: None,
            backoff: BACKOFF_MIN,
            restart_at: Some(Instant::now()),
        }
    }

    /// The delay before the next restart after a run of `ran`, and the
    /// backoff that follows it.
    pub fn next_backoff(current: Duration, ran: Duration) -> (Duration, Duration) {
        if ran >= HEALTHY_RUN {
            (BACKOFF_MIN, BACKOFF_MIN * 2)
        } else {
            (current, (current * 2).min(BACKOFF_MAX))
        }
    }
}

/// The services init keeps running.
#[derive(Debug, Default)]
pub struct Supervisor {
    services: Vec<Service>,
}

impl Supervisor {
    pub fn add(&mut self, service: Service) {
        self.services.push(service);
    }

    /// Starts every service whose restart time has come. Returns how long
    /// until the next pending restart, if any.
    pub fn tick(&mut self) -> Option<Duration> {
        let now = Instant::now();
        for service in &mut self.services {
            match service.restart_at {
                Some(at) if at <= now => start(service, now),
                _ => {}
            }
        }
        self.services
            .iter()
            .filter_map(|s| s.restart_at)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Records that a child exited; schedules a restart if it was a service.
    pub fn reaped(&mut self, status: &WaitStatus) {
        let Some(pid) = status.pid().map(|p| p.as_raw()) else {
            return;
        };
        let now = Instant::now();
        for service in &mut self.services {
            if service.pid != Some(pid) {
                continue;
            }
            let ran = service
                .started
                .map(|s| now.duration_since(s))
                .unwrap_or_default();
            let (delay, next) = Service::next_backoff(service.backoff, ran);
            log::error!(
                "{} exited ({}) after {} s; restarting in {} s",
                service.name,
                describe(status),
                ran.as_secs(),
                delay.as_secs()
            );
            service.pid = None;
            service.backoff = next;
            service.restart_at = Some(now + delay);
        }
    }

    /// Stops every service for the host shutdown, for good: SIGTERM, up to
    /// `timeout` to exit, then SIGKILL. Runs on the main thread, which
    /// reaps the services itself here. Returns how each running one ended.
    pub fn stop_all(&mut self, timeout: Duration) -> Vec<(String, WaitStatus)> {
        let mut ended = Vec::new();
        for service in &mut self.services {
            service.restart_at = None;
            let Some(pid) = service.pid.take().map(Pid::from_raw) else {
                continue;
            };
            log::info!("stopping {} (pid {pid})", service.name);
            if let Some(status) = stop(pid, timeout, &service.name) {
                log::info!("{} stopped ({})", service.name, describe(&status));
                ended.push((service.name.clone(), status));
            }
        }
        ended
    }
}

/// SIGTERM to `pid`, then SIGKILL once `timeout` has passed; its exit
/// status, or `None` when it was already reaped.
fn stop(pid: Pid, timeout: Duration, name: &str) -> Option<WaitStatus> {
    let _ = kill(pid, Signal::SIGTERM);
    crate::child::wait_or_kill(pid, timeout, || {
        log::warn!(
            "{name} still running {} s after SIGTERM; killing it",
            timeout.as_secs()
        );
    })
}

fn start(service: &mut Service, now: Instant) {
    // The service's output goes to init's stdout and stderr: the console.
    let mut cmd = Command::new(&service.program);
    let spawned = crate::child::unblock_signals(&mut cmd)
        .args(&service.args)
        .stdin(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => {
            log::info!("started {} (pid {})", service.name, child.id());
            service.pid = i32::try_from(child.id()).ok();
            service.started = Some(now);
            service.restart_at = None;
        }
        Err(err) => {
            let (delay, next) = Service::next_backoff(service.backoff, Duration::ZERO);
            log::error!(
                "cannot start {}: {err}; retrying in {} s",
                service.name,
                delay.as_secs()
            );
            service.backoff = next;
            service.restart_at = Some(now + delay);
        }
    }
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {}", signal.as_str()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() {
        let (delay, next) = Service::next_backoff(BACKOFF_MIN, Duration::from_secs(1));
        assert_eq!((delay, next), (BACKOFF_MIN, BACKOFF_MIN * 2));
        let (delay, next) = Service::next_backoff(Duration::from_secs(16), Duration::ZERO);
        assert_eq!((delay, next), (Duration::from_secs(16), BACKOFF_MAX));
        let (_, next) = Service::next_backoff(BACKOFF_MAX, Duration::ZERO);
        assert_eq!(next, BACKOFF_MAX);
        let (delay, _) = Service::next_backoff(BACKOFF_MAX, HEALTHY_RUN);
        assert_eq!(delay, BACKOFF_MIN);
    }

    #[test]
    fn a_crashed_service_is_restarted_after_its_backoff() {
        let mut sup = Supervisor::default();
        sup.add(Service::new("true", "/bin/true", &[]));
        assert_eq!(sup.tick(), None, "started at once, nothing pending");
        let pid = sup.services[0].pid.expect("started");
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid), None).expect("wait");
        sup.reaped(&status);
        let pending = sup.tick().expect("a restart is pending");
        assert!(pending <= BACKOFF_MIN);
        // Another process's exit changes nothing.
        sup.reaped(&WaitStatus::Exited(Pid::from_raw(1), 0));
        assert_eq!(sup.services[0].backoff, BACKOFF_MIN * 2);
    }

    /// As at host shutdown: init's threads block SIGTERM for its signalfd,
    /// yet the agent it started stops on SIGTERM, at once, not after the
    /// timeout and a SIGKILL.
    #[test]
    fn stop_all_ends_services_with_sigterm_though_init_blocks_it() {
        std::thread::spawn(|| {
            let mut blocked = nix::sys::signal::SigSet::empty();
            blocked.add(Signal::SIGTERM);
            blocked.thread_block().expect("block SIGTERM");
            let mut sup = Supervisor::default();
            sup.add(Service::new("sleeper", "/bin/sleep", &["30"]));
            sup.tick();
            let started = Instant::now();
            let ended = sup.stop_all(Duration::from_secs(5));
            assert!(started.elapsed() < Duration::from_secs(5), "{ended:?}");
            match ended.as_slice() {
                [(name, WaitStatus::Signaled(_, Signal::SIGTERM, _))] => {
                    assert_eq!(name, "sleeper")
                }
                other => panic!("not ended by SIGTERM: {other:?}"),
            }
            // Stopped for good: nothing is restarted.
            assert_eq!(sup.tick(), None);
            assert!(sup.services[0].pid.is_none());
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn a_missing_program_is_retried_not_fatal() {
        let mut sup = Supervisor::default();
        sup.add(Service::new("ghost", "/nonexistent/keel-ghost", &[]));
        assert!(sup.tick().is_some(), "retry scheduled");
        assert!(sup.services[0].pid.is_none());
    }
}
