//! virtio-net transmit and receive against a hostile driver, over a
//! backend that is two queues of frames in memory.
//!
//! Input: a control byte (which offloads the backend claims, and whether
//! its writes fail), the driver's setup header and ops (see the crate
//! docs). Device-specific ops: 0 queue a frame (u8 length, bytes, header
//! included) for the guest, 1 a backend readiness event, 2 toggle
//! failing backend writes.
#![no_main]

use std::collections::VecDeque;
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex, PoisonError};

use keel_common::guest::MacAddr;
use keel_vmm::devices::virtio::net::{BACKEND_EVENT, OFFLOAD_FEATURES};
use keel_vmm::devices::virtio::{Net, NetBackend, NetBackendError, VirtioDevice};
use keel_vmm_fuzz::{Driver, Input, Step, DEVICE_OPS};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::epoll::EventSet;

/// Frames the backend holds for the guest, at most.
const MAX_QUEUED: usize = 64;

#[derive(Default)]
struct State {
    to_guest: VecDeque<Vec<u8>>,
    fail_writes: bool,
    sent: usize,
}

struct MemoryBackend {
    state: Arc<Mutex<State>>,
    offloads: u64,
}

impl NetBackend for MemoryBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let frame = state
            .to_guest
            .pop_front()
            .ok_or(NetBackendError::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.fail_writes {
            return Err(NetBackendError::Io(std::io::Error::other("fuzz")));
        }
        assert!(
            hdr_and_frame.len() <= keel_vmm::devices::virtio::net::MAX_PACKET_LEN,
            "the device sent a {}-byte frame",
            hdr_and_frame.len()
        );
        state.sent += 1;
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn offload_features(&self) -> u64 {
        self.offloads
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ctl = input.u8();
    let state = Arc::new(Mutex::new(State {
        fail_writes: ctl & 1 != 0,
        ..State::default()
    }));
    let offloads = if ctl & 2 != 0 { OFFLOAD_FEATURES } else { 0 };
    let backend = MemoryBackend {
        state: state.clone(),
        offloads,
    };
    let mac = MacAddr([0x02, 0x4b, 0x45, 0x45, 0x4c, 0x01]);
    let mut net = Net::new(Box::new(backend), mac).expect("cannot create the net device");
    let mut driver = Driver::new(&mut input, 2, net.device_features());
    driver.activate(&mut net);
    loop {
        match driver.step(&mut input, Some(&mut net)) {
            Step::Done => {}
            Step::Device(tag, input) => match (tag - DEVICE_OPS) % 3 {
                0 => {
                    let frame = input.blob().to_vec();
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if state.to_guest.len() < MAX_QUEUED {
                        state.to_guest.push_back(frame);
                    }
                }
                1 => {
                    net.handle_event(BACKEND_EVENT, EventSet::IN | EventSet::EDGE_TRIGGERED);
                    driver.check_used();
                }
                2 => {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.fail_writes = !state.fail_writes;
                }
                _ => {}
            },
            Step::End => break,
        }
    }
    driver.reset(&mut net);
});
