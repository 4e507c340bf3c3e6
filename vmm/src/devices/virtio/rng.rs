//! Virtio entropy device: fills the guest's buffers from the host's
//! getrandom(2).

use std::io;
use std::sync::Arc;

use log::debug;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestMemory, GuestMemoryMmap, Permissions};

use super::chain::Parts;
use super::{
    serve_queue, signal_used, ActivateError, VirtioDevice, VirtioInterrupt, TYPE_RNG,
    VIRTIO_F_VERSION_1,
};

/// Size of the request queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per request (64 KiB). Linux asks for at most a
/// page or so at a time; the cap keeps a hostile chain from making us
/// generate gigabytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    requests: u64,
    bytes: u64,
    errors: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// A virtio-rng device.
pub struct Rng {
    /// Random bytes are generated here before being copied into the guest.
    buffer: Vec<u8>,
    counters: Counters,
    active: Option<Active>,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            buffer: vec![0; MAX_REQUEST_BYTES],
            counters: Counters::default(),
            active: None,
        }
    }

    /// Fills the buffers of `chain`, which must all be device-writable (the
    /// direction rule in [`super::chain`]), stopping at the first that is
    /// not in guest memory. Returns how many bytes were written.
    fn fill_chain(
        buffer: &mut [u8],
        counters: &mut Counters,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        let descs = match Parts::split(chain).and_then(Parts::only_writable) {
            Ok(descs) => descs,
            Err(e) => {
                debug!("virtio-rng: returning a malformed request: {e}");
                counters.requests += 1;
                counters.errors += 1;
                return 0;
            }
        };
        let mut written = 0usize;
        for desc in descs {
            let want = (desc.len() as usize).min(MAX_REQUEST_BYTES - written);
            if want == 0 {
                if written == MAX_REQUEST_BYTES {
                    break;
                }
                continue;
            }
            if !mem.check_range(desc.addr(), want, Permissions::Write) {
                debug!("virtio-rng: a buffer lies outside guest memory");
                counters.errors += 1;
                break;
            }
            let Some(chunk) = buffer.get_mut(..want) else {
                break;
            };
            if let Err(e) = getrandom(chunk) {
                debug!("virtio-rng: getrandom failed: {e}");
                counters.errors += 1;
                break;
            }
            if let Err(e) = mem.write_slice(chunk, desc.addr()) {
                debug!("virtio-rng: cannot write the guest buffer: {e}");
                counters.errors += 1;
                break;
            }
            written += want;
        }
        counters.requests += 1;
        counters.bytes += written as u64;
        // written <= MAX_REQUEST_BYTES.
        written as u32
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no config space.
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-rng: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        mut queues: Vec<Queue>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let got = queues.len();
        match queues.pop() {
            Some(queue) if got == 1 => {
                self.active = Some(Active {
                    mem,
                    interrupt,
                    queue,
                });
                Ok(())
            }
            _ => Err(ActivateError::QueueCount { expected: 1, got }),
        }
    }

    fn queue_notify(&mut self, index: u16) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if index != 0 {
            return;
        }
        let mem = &active.mem;
        let (buffer, counters) = (&mut self.buffer, &mut self.counters);
        let needed = serve_queue("virtio-rng", &mut active.queue, mem, |chain| {
            Self::fill_chain(buffer, counters, mem, chain)
        });
        signal_used("virtio-rng", active.interrupt.as_ref(), index, needed);
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("requests", self.counters.requests),
            ("bytes", self.counters.bytes),
            ("errors", self.counters.errors),
        ]
    }
}

/// Fills `buf` from the kernel's CSPRNG.
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes and
        // getrandom writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            // Never happens for a non-empty buffer, but must not spin.
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{add_chain, guest_mem, irq, kick, used, R, W};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const MEM_SIZE: usize = 0x4_0000;
    const FILL: u8 = 0xa5;

    fn setup(mem: &GuestMemoryMmap) -> (Rng, MockSplitQueue<'_, GuestMemoryMmap>) {
        let vq = MockSplitQueue::new(mem, 16);
        let mut rng = Rng::new();
        let queue: Queue = vq.create_queue().expect("queue");
        rng.activate(mem.clone(), irq(), vec![queue], VIRTIO_F_VERSION_1)
            .expect("activate");
        mem.write_slice(&vec![FILL; MEM_SIZE - 0x1000], GuestAddress(0x1000))
            .expect("fill");
        (rng, vq)
    }

    fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).expect("read");
        buf
    }

    fn counter(rng: &Rng, name: &str) -> u64 {
        rng.counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .expect("counter")
    }

    /// Whether `len` bytes at `addr` were overwritten. 64 random bytes all
    /// equal to the fill pattern has probability 2^-512.
    fn changed(mem: &GuestMemoryMmap, addr: u64, len: usize) -> bool {
        read_mem(mem, addr, len) != vec![FILL; len]
    }

    #[test]
    fn fills_writable_buffers() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        add_chain(&vq, 0, &[(0x1000, 64, W), (0x2000, 64, W)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 0), (1, 0, 128));
        assert!(changed(&mem, 0x1000, 64));
        assert!(changed(&mem, 0x2000, 64));
        assert_eq!(read_mem(&mem, 0x1040, 16), vec![FILL; 16]);
        assert_eq!(counter(&rng, "requests"), 1);
        assert_eq!(counter(&rng, "bytes"), 128);
        assert!(!kick(&mut rng, 0), "nothing new: no interrupt");
    }

    #[test]
    fn read_only_buffers_make_the_request_malformed() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        // The direction rule: a readable descriptor after a writable one,
        // or any readable one in an entropy request, and nothing is written.
        add_chain(&vq, 0, &[(0x1000, 64, R), (0x2000, 64, W), (0x3000, 64, R)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 0), (1, 0, 0));
        assert!(!changed(&mem, 0x1000, 64));
        assert!(!changed(&mem, 0x2000, 64));
        assert!(!changed(&mem, 0x3000, 64));
        assert_eq!(counter(&rng, "errors"), 1);
        assert_eq!(counter(&rng, "bytes"), 0);

        add_chain(&vq, 3, &[(0x4000, 64, R)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 1), (2, 3, 0));
        assert!(!changed(&mem, 0x4000, 64));

        add_chain(&vq, 4, &[(0x5000, 64, R), (0x6000, 64, W)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 2), (3, 4, 0));
        assert!(!changed(&mem, 0x6000, 64));
        assert_eq!(counter(&rng, "errors"), 3);
    }

    #[test]
    fn buffers_outside_guest_memory_are_not_written() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        let end = MEM_SIZE as u64;
        add_chain(
            &vq,
            0,
            &[(0x1000, 64, W), (end - 32, 64, W), (0x2000, 64, W)],
        );
        assert!(kick(&mut rng, 0));
        // Stops at the bad buffer, reporting what it wrote before it.
        assert_eq!(used(&vq, 0), (1, 0, 64));
        assert!(!changed(&mem, end - 32, 32), "the part inside memory too");
        assert!(!changed(&mem, 0x2000, 64));
        assert_eq!(counter(&rng, "errors"), 1);

        add_chain(&vq, 3, &[(u64::MAX - 8, 64, W)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 1), (2, 3, 0));
    }

    #[test]
    fn requests_are_capped() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        let cap = MAX_REQUEST_BYTES as u64;
        add_chain(
            &vq,
            0,
            &[(0x1000, 2 * cap as u32, W), (0x1000 + 2 * cap, 64, W)],
        );
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 0), (1, 0, cap as u32));
        assert!(changed(&mem, 0x1000 + cap - 64, 64));
        assert!(!changed(&mem, 0x1000 + cap, cap as usize));
        assert!(!changed(&mem, 0x1000 + 2 * cap, 64));
    }

    #[test]
    fn empty_descriptors_are_skipped() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        add_chain(&vq, 0, &[(0x1000, 0, W), (0x2000, 64, W)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&vq, 0), (1, 0, 64));
        assert!(changed(&mem, 0x2000, 64));
    }

    #[test]
    fn reset_mid_io_then_reactivation_behaves_as_fresh() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, old) = setup(&mem);
        add_chain(&old, 0, &[(0x1000, 64, W)]);
        assert!(kick(&mut rng, 0));
        // Made available, never kicked: pending at the reset.
        add_chain(&old, 1, &[(0x2000, 64, W)]);
        rng.reset();
        assert!(!kick(&mut rng, 0));

        let new = MockSplitQueue::create(&mem, GuestAddress(0x3_0000), 16);
        let queue: Queue = new.create_queue().expect("queue");
        rng.activate(mem.clone(), irq(), vec![queue], VIRTIO_F_VERSION_1)
            .expect("activate again");
        add_chain(&new, 0, &[(0x3_8000, 32, W)]);
        assert!(kick(&mut rng, 0));
        assert_eq!(used(&new, 0), (1, 0, 32));
        assert!(changed(&mem, 0x3_8000, 32));
        // The old queue's buffer was never filled.
        assert_eq!(old.used().idx().load(), 1);
        assert!(!changed(&mem, 0x2000, 64));
        assert_eq!(counter(&rng, "requests"), 2);
    }

    #[test]
    fn inactive_device_or_unknown_queue_does_nothing() {
        let mut rng = Rng::default();
        assert!(!kick(&mut rng, 0));
        assert_eq!(rng.device_type(), 4);
        assert_eq!(rng.queue_max_sizes(), &[QUEUE_SIZE]);
        assert_eq!(rng.device_features(), VIRTIO_F_VERSION_1);
        let mut data = [0xffu8; 4];
        rng.read_config(0, &mut data);
        assert_eq!(data, [0; 4]);
        rng.write_config(0, &[1, 2, 3, 4]);

        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let (mut rng, vq) = setup(&mem);
        add_chain(&vq, 0, &[(0x1000, 64, W)]);
        assert!(!kick(&mut rng, 1));
        rng.reset();
        assert!(!kick(&mut rng, 0));
        assert!(!changed(&mem, 0x1000, 64));
        assert!(matches!(
            rng.activate(mem.clone(), irq(), vec![], 0),
            Err(ActivateError::QueueCount {
                expected: 1,
                got: 0
            })
        ));
    }
}
