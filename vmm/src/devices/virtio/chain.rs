//! Reading and writing descriptor chains, the same way for every device.
//!
//! # The direction rule
//!
//! A chain is its device-readable part followed by its device-writable
//! part (virtio 1.x, 2.7.4.2). A device-readable descriptor after a
//! device-writable one makes the chain malformed, and so does a part the
//! request has no use for that is not empty (a device-writable descriptor
//! in a transmit chain, a device-readable one in a receive buffer or an
//! entropy request). Nothing of a malformed chain is read or written: it is
//! returned with used length 0, except that virtio-blk still reports
//! `VIRTIO_BLK_S_IOERR` through a usable status byte, so that the request
//! fails instead of hanging.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Why a chain breaks the direction rule.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    #[error("the chain has device-writable descriptors where none belong")]
    UnexpectedWritable,
    #[error("the chain has device-readable descriptors where none belong")]
    UnexpectedReadable,
}

/// A chain split by direction, in chain order within each part.
pub struct Parts {
    pub readable: Vec<Descriptor>,
    pub writable: Vec<Descriptor>,
}

impl Parts {
    /// Splits `chain`, refusing one with a device-readable descriptor
    /// after a device-writable one.
    pub fn split(chain: DescriptorChain<&GuestMemoryMmap>) -> Result<Self, ChainError> {
        let mut readable: Vec<Descriptor> = chain.collect();
        check_order(&readable)?;
        let first_writable = readable.partition_point(|d| !d.is_write_only());
        let writable = readable.split_off(first_writable);
        Ok(Parts { readable, writable })
    }

    /// The readable part of a chain that must have no writable one.
    pub fn only_readable(self) -> Result<Vec<Descriptor>, ChainError> {
        if self.writable.is_empty() {
            Ok(self.readable)
        } else {
            Err(ChainError::UnexpectedWritable)
        }
    }

    /// The writable part of a chain that must have no readable one.
    pub fn only_writable(self) -> Result<Vec<Descriptor>, ChainError> {
        if self.readable.is_empty() {
            Ok(self.writable)
        } else {
            Err(ChainError::UnexpectedReadable)
        }
    }
}

/// Checks the direction rule on a chain's descriptors, in chain order.
pub fn check_order(descs: &[Descriptor]) -> Result<(), ChainError> {
    match descs.iter().position(Descriptor::is_write_only) {
        Some(first) if descs[first..].iter().any(|d| !d.is_write_only()) => {
            Err(ChainError::ReadableAfterWritable)
        }
        _ => Ok(()),
    }
}

/// How copying a chain's readable part into a host buffer ended early.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStop {
    /// The chain holds more than the buffer takes.
    Full,
    /// A descriptor lies outside guest memory.
    BadBuffer,
}

/// Copies the bytes of `descs` into `buf`, in order, as far as it reaches.
/// Returns how many were copied and, if it stopped before the end of the
/// chain, why.
pub fn read_into(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    buf: &mut [u8],
) -> (usize, Option<ReadStop>) {
    let mut got = 0usize;
    for desc in descs {
        let want = desc.len() as usize;
        let room = buf.get_mut(got..).unwrap_or_default();
        let n = want.min(room.len());
        if n > 0 && mem.read_slice(&mut room[..n], desc.addr()).is_err() {
            return (got, Some(ReadStop::BadBuffer));
        }
        got += n;
        if n < want {
            return (got, Some(ReadStop::Full));
        }
    }
    (got, None)
}

/// The writable guest memory of a receive buffer, every range checked
/// when it is taken so that writing it later cannot fail.
pub struct WriteBuffer {
    segments: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

impl WriteBuffer {
    /// Checks `descs` (empty ones are skipped), taking at most `max_bytes`
    /// in at most `max_segments` descriptors; the rest of a longer chain is
    /// left untouched. `None` if a descriptor lies outside guest memory.
    pub fn new(
        mem: &GuestMemoryMmap,
        descs: &[Descriptor],
        max_bytes: usize,
        max_segments: usize,
    ) -> Option<Self> {
        let mut segments = Vec::new();
        let mut capacity = 0usize;
        for desc in descs {
            let len = desc.len() as usize;
            if len == 0 {
                continue;
            }
            if !mem.check_range(desc.addr(), len, Permissions::Write) {
                return None;
            }
            segments.push((desc.addr(), len));
            capacity += len;
            if capacity >= max_bytes || segments.len() == max_segments {
                break;
            }
        }
        Some(WriteBuffer { segments, capacity })
    }

    /// Bytes the buffer can take.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes `parts` one after the other across the buffer, as far as it
    /// reaches; returns the bytes written.
    pub fn write(&self, mem: &GuestMemoryMmap, parts: &[&[u8]]) -> usize {
        let mut parts = parts.iter().copied();
        let mut part: &[u8] = &[];
        let mut written = 0;
        for &(addr, len) in &self.segments {
            let mut at = 0;
            while at < len {
                while part.is_empty() {
                    match parts.next() {
                        Some(p) => part = p,
                        None => return written,
                    }
                }
                let n = part.len().min(len - at);
                // The range was checked when the buffer was taken (at is
                // below len, so the add stays inside it).
                let dst = GuestAddress(addr.0 + at as u64);
                if let Err(e) = mem.write_slice(&part[..n], dst) {
                    log::warn!("virtio: cannot write a checked receive buffer: {e}");
                    return written;
                }
                part = &part[n..];
                at += n;
                written += n;
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{add_chain, guest_mem, R, W};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};

    const MEM_SIZE: usize = 0x10_0000;

    /// Splits the one chain `descs` published on a fresh queue.
    fn split(descs: &[(u64, u32, u16)]) -> Result<(usize, usize), ChainError> {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let vq = MockSplitQueue::new(&mem, 16);
        add_chain(&vq, 0, descs);
        let mut queue: Queue = vq.create_queue().expect("queue");
        let chain = queue.pop_descriptor_chain(&mem).expect("chain");
        Parts::split(chain).map(|p| (p.readable.len(), p.writable.len()))
    }

    #[test]
    fn readable_then_writable_splits_in_order() {
        assert_eq!(
            split(&[(0x1000, 16, R), (0x2000, 8, R), (0x3000, 1, W)]),
            Ok((2, 1))
        );
        assert_eq!(split(&[(0x1000, 16, R)]), Ok((1, 0)));
        assert_eq!(split(&[(0x1000, 16, W), (0x2000, 16, W)]), Ok((0, 2)));
    }

    #[test]
    fn readable_after_writable_is_malformed() {
        for descs in [
            &[(0x1000, 16, W), (0x2000, 16, R)][..],
            &[(0x1000, 16, R), (0x2000, 16, W), (0x3000, 16, R)][..],
            &[
                (0x1000, 16, R),
                (0x2000, 16, W),
                (0x3000, 16, R),
                (0x4000, 1, W),
            ][..],
        ] {
            assert_eq!(
                split(descs),
                Err(ChainError::ReadableAfterWritable),
                "{descs:?}"
            );
        }
    }

    #[test]
    fn parts_a_request_has_no_use_for_must_be_empty() {
        let parts = |r: usize, w: usize| Parts {
            readable: vec![Descriptor::new(0x1000, 16, 0, 0); r],
            writable: vec![Descriptor::new(0x2000, 16, 2, 0); w],
        };
        assert_eq!(parts(2, 0).only_readable().map(|d| d.len()), Ok(2));
        assert_eq!(parts(0, 2).only_writable().map(|d| d.len()), Ok(2));
        assert_eq!(parts(0, 0).only_writable().map(|d| d.len()), Ok(0));
        assert_eq!(
            parts(1, 1).only_readable().err(),
            Some(ChainError::UnexpectedWritable)
        );
        assert_eq!(
            parts(1, 1).only_writable().err(),
            Some(ChainError::UnexpectedReadable)
        );
    }

    #[test]
    fn reads_stop_at_the_buffer_end_and_at_bad_memory() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        mem.write_slice(&[7u8; 32], GuestAddress(0x1000))
            .expect("fill");
        let d = |addr, len| Descriptor::new(addr, len, 0, 0);
        let mut buf = [0u8; 24];
        assert_eq!(read_into(&mem, &[d(0x1000, 16)], &mut buf), (16, None));
        assert_eq!(
            read_into(&mem, &[d(0x1000, 16), d(0x1010, 16)], &mut buf),
            (24, Some(ReadStop::Full))
        );
        assert_eq!(
            read_into(&mem, &[d(0x1000, 8), d(MEM_SIZE as u64 - 4, 8)], &mut buf),
            (8, Some(ReadStop::BadBuffer))
        );
        assert_eq!(&buf[..8], &[7; 8]);
    }

    #[test]
    fn write_buffers_are_checked_capped_and_filled_in_order() {
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let d = |addr, len| Descriptor::new(addr, len, 2, 0);
        assert!(WriteBuffer::new(&mem, &[d(MEM_SIZE as u64 - 4, 8)], 100, 4).is_none());
        let b = WriteBuffer::new(&mem, &[d(0x1000, 4), d(0x2000, 0), d(0x3000, 8)], 100, 4)
            .expect("buffer");
        assert_eq!(b.capacity(), 12);
        assert_eq!(b.write(&mem, &[b"ab", b"cdefgh", b"ijklmnop"]), 12);
        let mut got = [0u8; 8];
        mem.read_slice(&mut got[..4], GuestAddress(0x1000))
            .expect("read");
        mem.read_slice(&mut got[4..], GuestAddress(0x3000))
            .expect("read");
        assert_eq!(&got, b"abcdefgh");
        let capped = WriteBuffer::new(&mem, &[d(0x1000, 4), d(0x3000, 8)], 100, 1).expect("buffer");
        assert_eq!(capped.capacity(), 4);
        let capped = WriteBuffer::new(&mem, &[d(0x1000, 4), d(0x3000, 8)], 3, 4).expect("buffer");
        assert_eq!(capped.capacity(), 4);
    }
}
