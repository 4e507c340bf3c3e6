//! The interrupt handle a virtio-pci transport gives its device: the
//! vector the driver assigned to the queue (or to config changes) through
//! MSI-X, or INTx with the ISR status when the driver left MSI-X off.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::devices::pci::{Delivery, MsiRoutes, Msix};
use crate::devices::virtio::{Interrupt, VirtioInterrupt, VirtioInterruptType};

/// "No vector": the driver does not want this kind of interrupt (or the
/// vector it asked for does not exist).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;
/// ISR status bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// Shared between the transport (register accesses) and the device
/// (signals); the MSI-X state has a lock of its own, never held while the
/// transport's is taken.
pub struct PciInterrupt {
    msix: Mutex<Msix>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    isr: AtomicU8,
    config_generation: AtomicU8,
    intx: Arc<dyn Interrupt>,
    intx_disabled: AtomicBool,
    raised: AtomicU64,
}

impl PciInterrupt {
    /// For `queues` queues with one MSI-X vector each plus one for config
    /// changes, delivered through `routes`; `intx` is the INTA# line.
    pub fn new(queues: usize, routes: Arc<dyn MsiRoutes>, intx: Arc<dyn Interrupt>) -> Self {
        let vectors = u16::try_from(queues + 1).unwrap_or(u16::MAX);
        PciInterrupt {
            msix: Mutex::new(Msix::new(vectors, routes)),
            config_vector: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queue_vectors: (0..queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
            isr: AtomicU8::new(0),
            config_generation: AtomicU8::new(0),
            intx,
            intx_disabled: AtomicBool::new(false),
            raised: AtomicU64::new(0),
        }
    }

    /// The MSI-X table, PBA and control.
    pub fn msix(&self) -> MutexGuard<'_, Msix> {
        self.msix.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `vector` if the table has it, else NO_VECTOR: what the driver reads
    /// back after assigning a vector.
    fn checked(&self, vector: u16) -> u16 {
        if vector < self.msix().vectors() {
            vector
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::SeqCst)
    }

    pub fn set_config_vector(&self, vector: u16) {
        self.config_vector
            .store(self.checked(vector), Ordering::SeqCst);
    }

    /// The vector of queue `index`; NO_VECTOR for a queue that does not
    /// exist.
    pub fn queue_vector(&self, index: usize) -> u16 {
        self.queue_vectors
            .get(index)
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::SeqCst))
    }

    pub fn set_queue_vector(&self, index: usize, vector: u16) {
        let vector = self.checked(vector);
        if let Some(v) = self.queue_vectors.get(index) {
            v.store(vector, Ordering::SeqCst);
        }
    }

    /// Reads and clears the ISR status, as the driver's INTx handler does.
    pub fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::SeqCst)
    }

    /// Whether INTx has a cause the driver has not read yet: with a
    /// level-triggered line (a KVM resample irqfd) the line stays up.
    pub fn intx_pending(&self) -> bool {
        self.isr.load(Ordering::SeqCst) != 0
    }

    /// Follows the command register's INTx disable bit.
    pub fn set_intx_disabled(&self, disabled: bool) {
        self.intx_disabled.store(disabled, Ordering::SeqCst);
    }

    pub fn config_generation(&self) -> u8 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// How many interrupts were sent or left pending.
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// Device reset: no vectors assigned, no cause, nothing pending. The
    /// MSI-X table and control belong to the PCI function and stay, as the
    /// driver programmed them before resetting the device.
    pub fn reset(&self) {
        self.config_vector
            .store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
        for v in &self.queue_vectors {
            v.store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
        }
        self.isr.store(0, Ordering::SeqCst);
        self.config_generation.store(0, Ordering::SeqCst);
        self.msix().clear_pending();
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()> {
        let vector = match kind {
            VirtioInterruptType::Config => {
                // The config bit is set whatever the delivery (spec 4.1.4.5),
                // and the generation tells the driver to re-read.
                self.config_generation.fetch_add(1, Ordering::SeqCst);
                self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
                self.config_vector()
            }
            VirtioInterruptType::Queue(index) => self.queue_vector(usize::from(index)),
        };
        let mut msix = self.msix();
        if msix.enabled() {
            if vector == VIRTIO_MSI_NO_VECTOR {
                return Ok(());
            }
            return match msix.trigger(vector)? {
                Delivery::Fired | Delivery::Pending => {
                    self.raised.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Delivery::Disabled | Delivery::NoVector => Ok(()),
            };
        }
        drop(msix);
        if let VirtioInterruptType::Queue(_) = kind {
            self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        }
        // With INTx disabled the cause stays in the ISR for a polling
        // driver, and the line stays quiet.
        if self.intx_disabled.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.raised.fetch_add(1, Ordering::Relaxed);
        self.intx.trigger()
    }
}
