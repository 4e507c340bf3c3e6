//! What the PCI targets share: MSI-X routes that record what the function
//! asked for instead of programming KVM, virtio-rng functions to put on a
//! bus, and the access sizes the targets pick from.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use keel_vmm::devices::pci::{MsiMessage, MsiRoutes, PciDevice};
use keel_vmm::devices::virtio::{Interrupt, Rng, VirtioPciDevice};

use vm_memory::GuestMemoryMmap;

use crate::CountingInterrupt;

/// Access sizes an op picks from by a selector byte: mostly the ones a
/// driver uses, sometimes 3 or 8 bytes.
pub const SIZES: [usize; 8] = [1, 2, 4, 8, 4, 4, 2, 3];

/// A size from the selector byte.
pub fn size(selector: u8) -> usize {
    SIZES[usize::from(selector) % SIZES.len()]
}

/// The MSI-X capability id.
const CAP_MSIX: u8 = 0x11;
/// Where the configuration space's capability list starts.
const REG_CAPABILITIES: usize = 0x34;

/// MSI-X routes kept in memory: the route each vector has and how many
/// messages were sent. Checks that the function only names vectors it has
/// and only sends a vector that has a route.
pub struct RecordingRoutes {
    routes: Mutex<Vec<Option<MsiMessage>>>,
    pub sent: AtomicU64,
}

impl RecordingRoutes {
    pub fn new(vectors: u16) -> Self {
        RecordingRoutes {
            routes: Mutex::new(vec![None; usize::from(vectors)]),
            sent: AtomicU64::new(0),
        }
    }
}

impl MsiRoutes for RecordingRoutes {
    fn update(&self, vector: u16, message: Option<MsiMessage>) -> io::Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let count = routes.len();
        let route = routes
            .get_mut(usize::from(vector))
            .unwrap_or_else(|| panic!("route update for vector {vector} of {count}"));
        *route = message;
        Ok(())
    }

    fn trigger(&self, vector: u16) -> io::Result<()> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let route = routes.get(usize::from(vector));
        assert!(
            route.is_some_and(Option::is_some),
            "vector {vector} sent without a route"
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A virtio-rng function over `mem` with its BAR at `bar`, its routes and
/// INTx line.
pub struct RngFunction {
    pub device: VirtioPciDevice,
    pub routes: Arc<RecordingRoutes>,
    pub intx: Arc<CountingInterrupt>,
}

impl RngFunction {
    pub fn new(mem: GuestMemoryMmap, bar: u64, intx_line: u8) -> Self {
        let rng = Box::new(Rng::new());
        let routes = Arc::new(RecordingRoutes::new(VirtioPciDevice::vectors_for(&*rng)));
        let intx = Arc::new(CountingInterrupt::default());
        let line: Arc<dyn Interrupt> = intx.clone();
        let device = VirtioPciDevice::new(rng, mem, bar, routes.clone(), line, intx_line)
            .expect("cannot create the virtio-pci function");
        RngFunction {
            device,
            routes,
            intx,
        }
    }
}

/// The offset of the MSI-X capability, found by walking the list as a
/// driver does.
pub fn msix_cap_offset(device: &mut dyn PciDevice) -> Option<usize> {
    let mut byte = [0u8; 1];
    device.read_config(REG_CAPABILITIES, &mut byte);
    let mut next = usize::from(byte[0]);
    for _ in 0..48 {
        if next == 0 {
            return None;
        }
        let mut head = [0u8; 2];
        device.read_config(next, &mut head);
        if head[0] == CAP_MSIX {
            return Some(next);
        }
        next = usize::from(head[1]);
    }
    None
}
