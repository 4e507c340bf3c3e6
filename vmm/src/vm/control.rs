//! What the control socket may do to a running VM.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use keel_common::vmm_api::{DeviceStats, VmInfo, VmState, VmStats};

use super::Vm;
use crate::control::peer::Peer;
use crate::control::VmControl;
use crate::exit::VmExit;
use crate::vcpu;

/// How long a pause may take before it is reported as failed.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Vm {
    /// Per-device counters: the virtio devices', then what console
    /// clients missed.
    fn device_stats(&self) -> Vec<DeviceStats> {
        let mut devices: Vec<DeviceStats> = self
            .virtio
            .iter()
            .map(|slot| {
                let counters = slot
                    .transport
                    .lock()
                    .map(|t| {
                        t.counters()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    })
                    .unwrap_or_default();
                DeviceStats {
                    name: slot.name.clone(),
                    counters,
                }
            })
            .collect();
        let dropped = self
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped_bytes();
        devices.push(DeviceStats {
            name: "console".into(),
            counters: vec![("dropped_bytes".into(), dropped)],
        });
        devices
    }

    fn kick_vcpus(&self) {
        if let Ok(threads) = self.vcpu_threads.lock() {
            for thread in threads.iter() {
                // SAFETY: the pthread handles belong to vCPU threads that live
                // as long as the process; the signal's handler does nothing.
                unsafe { libc::pthread_kill(*thread, vcpu::kick_signal()) };
            }
        }
    }
}

impl VmControl for Vm {
    fn info(&self) -> VmInfo {
        VmInfo {
            name: self.config.name.clone(),
            state: if self.state.is_paused() {
                VmState::Paused
            } else {
                VmState::Running
            },
            vcpus: u32::from(self.config.vcpus),
            memory_mib: self.config.memory_bytes >> 20,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            boot_marker_ms: self
                .boot_marker
                .lock()
                .ok()
                .and_then(|m| m.map(|(_, ms)| ms)),
        }
    }

    fn stats(&self) -> VmStats {
        VmStats {
            devices: self.device_stats(),
            exits: self
                .counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    fn pause(&self) -> Result<(), String> {
        self.state.set_paused(true);
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        // A kick can land just before a vCPU enters KVM_RUN; kick again
        // until every vCPU reports itself parked.
        while self.state.parked() < usize::from(self.config.vcpus) {
            if Instant::now() > deadline {
                return Err("the vCPUs did not stop within 2 s".into());
            }
            self.kick_vcpus();
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn resume(&self) {
        self.state.set_paused(false);
    }

    fn shutdown(&self) -> bool {
        self.i8042
            .lock()
            .map(|mut k| k.send_ctrl_alt_del())
            .unwrap_or(false)
    }

    fn kill(&self) {
        self.exit.request(VmExit::Killed);
    }

    fn attach_console(&self, peer: Arc<Peer>) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attach(peer);
    }

    fn detach_console(&self, peer: &Arc<Peer>) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .detach(peer);
    }

    fn console_input(&self, data: &[u8]) -> usize {
        self.serial.lock().map(|mut s| s.input(data)).unwrap_or(0)
    }
}
