//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, 44 bytes,
//! little endian) and moving packets in and out of descriptor chains.

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::chain::{read_into, ChainError, Parts, ReadStop, WriteBuffer};

/// Size of the packet header.
pub const HDR_LEN: usize = 44;
/// Largest payload a packet may carry in either direction. Linux never
/// builds larger ones (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The only socket type supported: connection-oriented streams.
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Most descriptors of one receive chain that are used; the cap bounds
/// what a hostile guest can make us hold per packet.
const MAX_RX_SEGMENTS: usize = 64;

/// A decoded packet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl PacketHeader {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |o: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        PacketHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a transmit chain holds no usable packet.
#[derive(Debug, thiserror::Error)]
pub enum TxPacketError {
    #[error(transparent)]
    Malformed(#[from] ChainError),
    #[error("the chain holds {0} bytes, fewer than a packet header")]
    Truncated(usize),
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    #[error("the header announces {0} payload bytes, more than the {MAX_PAYLOAD}-byte limit")]
    TooLong(u32),
    #[error("the header announces {len} payload bytes but the chain holds {got}")]
    MissingPayload { len: u32, got: usize },
}

/// Copies a transmit chain (device-readable only, see the direction rule
/// in [`crate::devices::virtio::chain`]) into `buf` (which holds
/// `HDR_LEN + MAX_PAYLOAD`) and decodes the header. Returns it with the
/// payload length (`header.len`). A chain with a valid header but a bad
/// payload yields `Err((Some(header), error))`, so that the connection
/// can be reset; nothing of a malformed chain is read.
pub fn read_tx_packet(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
) -> Result<(PacketHeader, usize), (Option<PacketHeader>, TxPacketError)> {
    let descs = Parts::split(chain)
        .and_then(Parts::only_readable)
        .map_err(|e| (None, TxPacketError::Malformed(e)))?;
    let (got, stop) = read_into(mem, &descs, buf);
    let bad_buffer = stop == Some(ReadStop::BadBuffer);
    let Some(raw) = buf.get(..HDR_LEN).filter(|_| got >= HDR_LEN) else {
        let err = if bad_buffer {
            TxPacketError::BadBuffer
        } else {
            TxPacketError::Truncated(got)
        };
        return Err((None, err));
    };
    let mut bytes = [0u8; HDR_LEN];
    bytes.copy_from_slice(raw);
    let header = PacketHeader::from_bytes(&bytes);
    if header.len as usize > MAX_PAYLOAD {
        return Err((Some(header), TxPacketError::TooLong(header.len)));
    }
    if bad_buffer {
        return Err((Some(header), TxPacketError::BadBuffer));
    }
    let payload = got - HDR_LEN;
    if payload < header.len as usize {
        return Err((
            Some(header),
            TxPacketError::MissingPayload {
                len: header.len,
                got: payload,
            },
        ));
    }
    Ok((header, header.len as usize))
}

/// A receive chain's writable guest memory, every range checked.
pub struct RxBuffer(WriteBuffer);

impl RxBuffer {
    /// Checks a receive chain: `None` if it is malformed or has a
    /// device-readable descriptor (the direction rule) or memory outside
    /// the guest.
    pub fn new(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Option<Self> {
        let descs = Parts::split(chain).and_then(Parts::only_writable).ok()?;
        WriteBuffer::new(mem, &descs, HDR_LEN + MAX_PAYLOAD, MAX_RX_SEGMENTS).map(RxBuffer)
    }

    /// Bytes the chain can take, header included.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Writes `header` then `payload` across the chain; returns the bytes
    /// written. The caller keeps the total within `capacity()`.
    pub fn write(&self, mem: &GuestMemoryMmap, header: &PacketHeader, payload: &[u8]) -> usize {
        self.0.write(mem, &[&header.to_bytes(), payload])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 80,
            len: 5,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: SHUTDOWN_BOTH,
            buf_alloc: 0x4_0000,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[16..20], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(&b[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(PacketHeader::from_bytes(&b), h);
    }
}
