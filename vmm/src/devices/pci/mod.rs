//! PCI on bus 0: configuration spaces, the root complex that reaches them
//! through CF8/CFC and ECAM, MSI-X, and the resource allocator for BARs and
//! MSI GSIs.
//!
//! Wiring (done by the VM builder):
//!
//! ```text
//! let mut resources = PciResources::new(mem_bytes)?;
//! let root = Arc::new(Mutex::new(PciRoot::new()));
//! // Per device: its slot and INTx line, then its BARs and MSI GSIs:
//! let slot = root.lock()?.next_slot()?;
//! let intx = intx_gsi(slot, 0);                             // INTA#, as the _PRT says
//! // ... build the device with them, then
//! root.lock()?.add_device(device.clone())?;                 // Arc<Mutex<dyn PciDevice>>, == slot
//! mmio.insert(bar.addr, bar.len, device.clone())?;          // each BarRegion, as BusDevice
//! pio.insert(PCI_CONFIG_PORT, CONFIG_IO_LEN, Arc::new(Mutex::new(PciConfigIo::new(root.clone()))))?;
//! mmio.insert(PCI_ECAM_START, PCI_ECAM_SIZE, Arc::new(Mutex::new(PciEcam::new(root.clone()))))?;
//! root.lock()?.set_relocation(Box::new(handler));          // BAR moves
//! ```

pub mod config;
pub mod msix;
pub mod resources;
pub mod root;

pub use config::{BarKind, BarMove, BarRegion, ConfigError, PciConfig, PciIds};
pub use msix::{Delivery, MsiMessage, MsiRoutes, Msix, MsixCap};
pub use resources::{intx_gsi, PciResources, ResourceError};
pub use root::{BarRelocation, PciConfigIo, PciEcam, PciRoot, RootError, CONFIG_IO_LEN};

/// A PCI function on bus 0, as the root complex sees it.
///
/// Accesses are already checked: `offset` lies in the 4 KiB space, `data`
/// is 1, 2 or 4 bytes long and naturally aligned.
pub trait PciDevice: Send {
    /// Reads configuration space.
    fn read_config(&mut self, offset: usize, data: &mut [u8]);

    /// Writes configuration space; returns the BAR move the write made, so
    /// the VMM can follow it with the bus mapping.
    fn write_config(&mut self, offset: usize, data: &[u8]) -> Option<BarMove>;
}

/// A bare function that only has its configuration space, like the host
/// bridge.
impl PciDevice for PciConfig {
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
        self.write(offset, data)
    }
}
