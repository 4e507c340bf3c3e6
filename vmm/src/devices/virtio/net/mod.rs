//! Virtio network device and the host backends behind it.
//!
//! - [`backend`]: the [`NetBackend`] trait, one frame in or out per call.
//! - [`tap`]: a tap device as backend, with checksum and segmentation
//!   offloads passed through.
//! - [`device`]: the virtio-net device itself ([`Net`]).
//!
//! Wiring a device up (in addition to what every virtio device needs, see
//! the parent module):
//!
//! ```text
//! let tap = Tap::open("tap0")?; // or Tap::from_fd(owned_fd_from_supervisor)?
//! let mut net = Net::new(Box::new(tap), MacAddr([0x02, 0, 0, 0, 0, 1]))?;
//! net.register_events(events)?; // the backend fd, as BACKEND_EVENT
//! // Two queues: one ioeventfd per queue, RX_QUEUE (0) and TX_QUEUE (1).
//! ```
//!
//! The backend fd is registered edge-triggered: when the guest has no
//! receive buffers the device leaves frames in the backend, and a
//! level-triggered fd would then wake the loop forever. Nothing is lost:
//! the guest kicks the receive queue when it adds buffers, and that kick
//! resumes reading. Events before the driver is up are ignored, which is
//! fine for the same reason.
//!
//! The guest needs `CONFIG_VIRTIO_NET` in its kernel and a way to find the
//! device (PCI, ACPI, or `virtio_mmio.device=4K@base:irq`).

pub mod backend;
pub mod device;
pub mod tap;
pub mod user;

pub use backend::{NetBackend, NetBackendError, OFFLOAD_FEATURES, VNET_HDR_LEN};
pub use device::{Net, NetError};
pub use tap::{Tap, TapError};
pub use user::{HostFwd, UserNet, UserNetConfig, UserNetError};

/// Virtio device id of a network device.
pub const TYPE_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;

/// Size of each queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (device to guest).
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue (guest to device).
pub const TX_QUEUE: u16 = 1;

/// The id the backend fd is registered with (`VirtioDevice::handle_event`).
pub const BACKEND_EVENT: u32 = 0;

/// Largest Ethernet frame moved in either direction: a 64 KiB GSO packet
/// plus an Ethernet header with one VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_536 + 18;
/// Largest frame with its virtio-net header in front.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
