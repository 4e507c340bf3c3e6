//! Virtio network device and the host backends behind it.
//!
//! - [`backend`]: the [`NetBackend`] trait, one frame in or out per call.
//! - [`tap`]: a tap device as backend, with checksum and segmentation
//!   offloads passed through.
//! - [`device`]: the virtio-net device itself ([`Net`]).
//!
//! Wiring a device up (in addition to what every virtio-mmio device needs,
//! see the parent module):
//!
//! ```text
//! let tap = Tap::open("tap0")?; // or Tap::from_fd(owned_fd_from_supervisor)?
//! let net = Net::new(Box::new(tap), MacAddr([0x02, 0, 0, 0, 0, 1]))?;
//! let backend_fd = net.backend_fd(); // before the device disappears into the transport
//! let transport = Arc::new(Mutex::new(MmioTransport::new(Box::new(net), mem.clone(), irq)?));
//! // Two queues: one ioeventfd per queue at base + QUEUE_NOTIFY_OFFSET with
//! // datamatch RX_QUEUE (0) and TX_QUEUE (1), each calling
//! // transport.queue_notify(index).
//! // The backend fd: epoll EPOLLIN | EPOLLET, and on each event
//! // transport.lock().queue_notify(RX_QUEUE as u32).
//! ```
//!
//! The backend fd must be registered edge-triggered: when the guest has no
//! receive buffers the device leaves frames in the backend, and a
//! level-triggered fd would then wake the loop forever. Nothing is lost:
//! the guest kicks the receive queue when it adds buffers, and that kick
//! resumes reading. Going through `queue_notify(RX_QUEUE)` is what makes
//! the transport set its interrupt status before raising the interrupt;
//! [`Net::process_backend`] does the same work for callers that hold the
//! device itself. Notifications before the driver is up are ignored, which
//! is fine for the same reason.
//!
//! The guest needs nothing beyond the usual `virtio_mmio.device=4K@base:irq`
//! on its command line and `CONFIG_VIRTIO_NET` in its kernel.

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
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (guest to device).
pub const TX_QUEUE: usize = 1;

/// Largest Ethernet frame moved in either direction: a 64 KiB GSO packet
/// plus an Ethernet header with one VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_536 + 18;
/// Largest frame with its virtio-net header in front.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
