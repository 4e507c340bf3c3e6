//! The host side of a virtio-net device: where the guest's frames go and
//! where the frames for the guest come from.
//!
//! Modelled on libkrun's `NetBackend`: one frame per call, never blocking,
//! each frame preceded by a `virtio_net_hdr_v1`. A tap passes the header
//! through to the kernel (`IFF_VNET_HDR`); a backend that does its own
//! networking (a user-mode TCP/IP stack) reads the header on transmit and
//! writes [`VNET_HDR_LEN`] zero bytes in front of each received frame.

use std::io;
use std::os::unix::io::RawFd;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO,
};

/// Size of `struct virtio_net_hdr_v1`, the header in front of every frame
/// in both directions (virtio 1.x always has `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// Every offload feature the device can offer, when the backend handles it.
///
/// `GUEST_*` bits: the backend may hand the device frames that need them
/// (partial checksums, GSO) once [`NetBackend::set_offload`] enabled them.
/// `HOST_*` bits and `CSUM`: the backend accepts such frames from the guest.
pub const OFFLOAD_FEATURES: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_UFO)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_UFO);

/// Why a backend could not move a frame.
#[derive(Debug, thiserror::Error)]
pub enum NetBackendError {
    /// Nothing to read, or no room to write: try again after the backend's
    /// fd signals readiness. Not a failure.
    #[error("the backend has no frame to read or no room for one right now")]
    WouldBlock,
    #[error("the backend failed: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for NetBackendError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::WouldBlock {
            NetBackendError::WouldBlock
        } else {
            NetBackendError::Io(e)
        }
    }
}

/// Moves Ethernet frames between a virtio-net device and the host.
///
/// Calls come from the thread driving the device; none may block.
pub trait NetBackend: Send {
    /// Reads one frame, `virtio_net_hdr_v1` first, into `buf` and returns
    /// the total length. `buf` holds a maximum-size frame; a longer frame
    /// may be truncated. Returns `WouldBlock` when no frame is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError>;

    /// Sends one frame, `virtio_net_hdr_v1` first. `WouldBlock` means the
    /// frame was not taken; the device drops it, as a full NIC queue would.
    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError>;

    /// The fd the event loop polls (edge-triggered, `EPOLLIN`) to learn that
    /// `read_frame` has something, or `None` if the backend has no fd.
    fn raw_fd(&self) -> Option<RawFd>;

    /// The offload feature bits (a subset of [`OFFLOAD_FEATURES`]) the
    /// backend supports. The default, none, suits a backend that wants
    /// complete frames with complete checksums in both directions.
    fn offload_features(&self) -> u64 {
        0
    }

    /// Called at activation with the features the guest accepted (and with
    /// 0 at reset): from now on the backend may produce the frames the
    /// `GUEST_*` bits allow, and no others.
    fn set_offload(&mut self, acked_features: u64) -> Result<(), NetBackendError> {
        let _ = acked_features;
        Ok(())
    }
}
