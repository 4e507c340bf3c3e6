//! How a device registers its host-side descriptors (a tap, vsock
//! sockets) with the VMM's event loop, after Cloud Hypervisor's
//! `EpollHelper` and Firecracker's event-manager subscribers: the device
//! names each descriptor with an id of its own, and the event loop hands
//! readiness back to it as `VirtioDevice::handle_event(id, events)`.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::vm::token::Token;

/// A device's handle on the event loop's epoll set: cheap to clone, and
/// usable from any thread (epoll_ctl needs no lock), so a device can add
/// and remove descriptors while serving a queue on a vCPU thread.
#[derive(Clone)]
pub struct DeviceEvents {
    epoll: Arc<Epoll>,
    slot: u16,
}

impl DeviceEvents {
    /// The handle of the device in virtio slot `slot`.
    pub fn new(epoll: Arc<Epoll>, slot: u16) -> Self {
        DeviceEvents { epoll, slot }
    }

    fn event(&self, id: u32, events: EventSet) -> EpollEvent {
        let token = Token::Device {
            slot: self.slot,
            id,
        };
        EpollEvent::new(events, token.into())
    }

    /// Watches `fd` for `events`, reported to the device as `id`.
    pub fn add(&self, fd: RawFd, id: u32, events: EventSet) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Add, fd, self.event(id, events))
    }

    /// Changes what `fd` is watched for, or the id it is reported as.
    pub fn modify(&self, fd: RawFd, id: u32, events: EventSet) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Modify, fd, self.event(id, events))
    }

    /// Stops watching `fd`. Closing it would drop it from the set too; this
    /// keeps the set exact even if the descriptor was duplicated.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// A handle on an epoll set of its own, for device tests.
    #[cfg(test)]
    pub fn for_test() -> Self {
        DeviceEvents::new(Arc::new(Epoll::new().expect("epoll")), 0)
    }

    /// What is ready in a test handle's set, waiting up to `timeout_ms`.
    #[cfg(test)]
    pub fn wait(&self, timeout_ms: i32) -> Vec<(u32, EventSet)> {
        let mut events = [EpollEvent::default(); 64];
        let n = self
            .epoll
            .wait(timeout_ms, &mut events)
            .expect("epoll_wait");
        events[..n]
            .iter()
            .filter_map(|e| match Token::decode(e.data()) {
                Some(Token::Device { slot, id }) if slot == self.slot => {
                    Some((id, EventSet::from_bits_truncate(e.events())))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn registrations_come_back_with_their_id() {
        use std::os::fd::AsRawFd;
        let events = DeviceEvents::for_test();
        let efd = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        events.add(efd.as_raw_fd(), 7, EventSet::IN).expect("add");
        assert!(events.wait(0).is_empty());
        efd.write(1).expect("write");
        assert_eq!(events.wait(0), vec![(7, EventSet::IN)]);
        events
            .modify(efd.as_raw_fd(), 9, EventSet::IN)
            .expect("modify");
        assert_eq!(events.wait(0), vec![(9, EventSet::IN)]);
        events.remove(efd.as_raw_fd()).expect("remove");
        assert!(events.wait(0).is_empty());
        assert!(events.remove(efd.as_raw_fd()).is_err());
    }
}
