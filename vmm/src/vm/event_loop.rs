//! The event loop: virtio queue notifications and the devices' own
//! descriptors, console input from stdin, the control socket, and the exit
//! signal.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, PoisonError};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::token::Token;
use super::Vm;
use crate::control::{ControlServer, FdChange, VmControl};
use crate::exit::VmExit;

pub(super) struct EventLoop<'a> {
    vm: &'a Vm,
    epoll: Arc<Epoll>,
    control: Option<ControlServer>,
}

impl<'a> EventLoop<'a> {
    /// Registers every event source in the VM's epoll set (the devices
    /// registered theirs when the VM was built).
    pub(super) fn new(vm: &'a Vm, control: Option<ControlServer>) -> Result<Self, String> {
        let event_loop = EventLoop {
            vm,
            epoll: vm.epoll.clone(),
            control,
        };
        if !event_loop.register() {
            return Err("cannot register event sources with epoll".into());
        }
        Ok(event_loop)
    }

    fn add(&self, fd: RawFd, token: Token, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, token.into()),
        )
    }

    fn remove(&self, fd: RawFd) -> std::io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Registers every source; false if any registration failed.
    fn register(&self) -> bool {
        let vm = self.vm;
        let mut ok = self
            .add(vm.exit.eventfd.as_raw_fd(), Token::Exit, EventSet::IN)
            .is_ok();
        for (i, slot) in vm.virtio.iter().enumerate() {
            let Ok(slot_index) = u16::try_from(i) else {
                return false;
            };
            for (q, notify) in slot.notifies.iter().enumerate() {
                let Ok(queue) = u16::try_from(q) else {
                    return false;
                };
                let token = Token::QueueNotify {
                    slot: slot_index,
                    queue,
                };
                ok &= self.add(notify.as_raw_fd(), token, EventSet::IN).is_ok();
            }
        }
        if let Some(server) = self.control.as_ref() {
            for (fd, id) in server.fds() {
                ok &= self.add(fd, Token::Control(id), EventSet::IN).is_ok();
            }
        }
        if vm.config.console_stdio {
            // Best effort: stdin may be /dev/null or closed under a supervisor.
            let _ = self.add(libc::STDIN_FILENO, Token::Stdin, EventSet::IN);
        }
        ok
    }

    /// Serves events until the VM must end, and returns why.
    pub(super) fn run(mut self) -> VmExit {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return VmExit::Error(format!("epoll_wait failed: {err}")),
            };
            for event in &events[..n] {
                match Token::decode(event.data()) {
                    Some(Token::Exit) => {
                        let _ = self.vm.exit.eventfd.read();
                        if let Some(reason) = self.vm.exit.reason() {
                            return reason;
                        }
                    }
                    Some(Token::Stdin) => self.stdin(),
                    Some(Token::Control(id)) => self.control(id),
                    Some(Token::QueueNotify { slot, queue }) => self.queue_notify(slot, queue),
                    Some(Token::Device { slot, id }) => {
                        self.device_event(slot, id, EventSet::from_bits_truncate(event.events()))
                    }
                    None => log::warn!("event loop: unknown token {:#x}", event.data()),
                }
            }
        }
    }

    fn stdin(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: reading into a stack buffer of the given length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => {
                self.vm.console_input(&buf[..n]);
            }
            _ => {
                let _ = self.remove(libc::STDIN_FILENO);
            }
        }
    }

    fn control(&mut self, id: u32) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        for change in server.handle(id, self.vm) {
            let result = match change {
                FdChange::Add { fd, id, events } => self.add(fd, Token::Control(id), events),
                // The peer is dropped once out of the set.
                FdChange::Remove(peer) => self.remove(peer.as_raw_fd()),
            };
            if let Err(err) = result {
                log::warn!("control socket: epoll update failed: {err}");
            }
        }
    }

    fn queue_notify(&self, slot: u16, queue: u16) {
        if let Some(slot) = self.vm.virtio.get(usize::from(slot)) {
            if let Some(notify) = slot.notifies.get(usize::from(queue)) {
                let _ = notify.read();
            }
            slot.transport
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue_notify(queue);
        }
    }

    fn device_event(&self, slot: u16, id: u32, events: EventSet) {
        if let Some(slot) = self.vm.virtio.get(usize::from(slot)) {
            slot.transport
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .handle_event(id, events);
        }
    }
}
