//! Virtio socket device, in Firecracker's hybrid model: guest streams end
//! in host Unix sockets.
//!
//! - Guest to host: the guest (CID from the config space, 3 or more)
//!   connects to host CID 2, port P; the device connects to the Unix
//!   socket `{uds_path}_P`, which a host service must be listening on.
//! - Host to guest: a host client connects to `uds_path` and writes
//!   `CONNECT <port>\n`; the device opens a stream to that guest port and,
//!   once the guest accepts, answers `OK <host port>\n`. From then on the
//!   socket is the stream. A refused or malformed request just closes it.
//!
//! Files: [`packet`] (the 44-byte header, chains), [`connection`] (one
//! stream and its credit accounting), [`muxer`] (the listener and the
//! connection table), [`device`] (the queues).
//!
//! Wiring (besides what every virtio device needs, see the parent module):
//! `register_events` puts the listener in the event loop's epoll set, and
//! the muxer adds and removes each connection's socket as it opens and
//! closes, all edge-triggered, with the descriptor number as id. That may
//! happen while the transmit queue is served, on a vCPU thread for a
//! QueueNotify write. Three queues: one ioeventfd each for RX_QUEUE,
//! TX_QUEUE and EVENT_QUEUE.
//!
//! The guest needs `CONFIG_VIRTIO_VSOCKETS` and the usual
//! `virtio_mmio.device=4K@base:irq` on its command line.

pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;

pub use device::{Vsock, VsockError};
pub use muxer::MAX_CONNECTIONS;

/// Virtio device id of a socket device.
pub const TYPE_VSOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

/// The host's CID, as seen from the guest.
pub const HOST_CID: u64 = 2;

/// Size of each queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (host to guest).
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue (guest to host).
pub const TX_QUEUE: u16 = 1;
/// Index of the event queue (transport events; unused).
pub const EVENT_QUEUE: u16 = 2;
