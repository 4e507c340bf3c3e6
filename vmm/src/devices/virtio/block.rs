//! Virtio block device over a raw disk image (a regular file or a host
//! block device).
//!
//! One queue, requests handled synchronously on the caller's thread. Data
//! moves between guest memory and the file with pread/pwrite straight into
//! the guest's buffers (no bounce buffer); every descriptor is checked
//! against guest memory and every request against the disk size before any
//! byte moves, so a refused request changes neither.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use log::{debug, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestMemory, GuestMemoryError, GuestMemoryMmap, Permissions, ReadVolatile,
    VolatileMemoryError, VolatileSlice, WriteVolatile,
};

use super::{
    read_config_bytes, serve_queue, ActivateError, VirtioDevice, TYPE_BLOCK, VIRTIO_F_VERSION_1,
};

/// Size of the request queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector: the unit of `capacity` and of request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Most data segments per request (`seg_max`). Header and status take two
/// more descriptors, and a driver without indirect descriptors needs the
/// whole chain to fit in the queue, so this stays below `QUEUE_SIZE - 2`.
pub const SEG_MAX: u32 = 128;
/// Largest data segment (`size_max`).
pub const SEGMENT_SIZE_MAX: u32 = 32 * 1024;
/// Largest request, in data bytes (4 MiB). A driver honouring `seg_max`
/// and `size_max` cannot exceed it; anything bigger is refused so that one
/// request cannot hold the caller's thread for long. Linux's default
/// request limit (1280 KiB) is well inside it.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SEGMENT_SIZE_MAX as u64;

/// Length of the disk identifier returned by `VIRTIO_BLK_T_GET_ID`.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// A chain longer than this is not a request the driver may build; it is
/// returned unprocessed.
const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 2;

/// Size of the request header (`struct virtio_blk_outhdr`).
const HEADER_LEN: u32 = 16;

/// Config space up to and including `blk_size`; the rest reads as zero.
const CONFIG_LEN: usize = 24;

/// How the disk is presented to the guest.
#[derive(Clone, Debug, Default)]
pub struct BlockOptions {
    /// Refuse writes and tell the driver (`VIRTIO_BLK_F_RO`).
    pub read_only: bool,
    /// Disk identifier for `VIRTIO_BLK_T_GET_ID` (Linux shows it as
    /// `/sys/block/vdX/serial`); at most 20 bytes, empty for none.
    pub serial: String,
}

/// Why a block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open the disk image {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot find the size of the disk image: {0}")]
    Size(#[source] io::Error),
    #[error("the disk serial is {0} bytes long but at most 20 fit")]
    SerialTooLong(usize),
}

/// Why one request failed; logged, then reported to the guest as a status.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("the chain has no header descriptor")]
    MissingHeader,
    #[error("the header descriptor is device-writable")]
    WritableHeader,
    #[error("the header descriptor holds {0} bytes, fewer than 16")]
    ShortHeader(u32),
    #[error("cannot read the request header: {0}")]
    Header(#[source] GuestMemoryError),
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("a data descriptor points the wrong way for this request")]
    Direction,
    #[error("a data descriptor is empty")]
    EmptyDescriptor,
    #[error("the request carries {0} bytes or more, over the limit")]
    TooLarge(u64),
    #[error("the data length {0} is not a whole number of sectors")]
    Unaligned(u64),
    #[error("{len} bytes at sector {sector} do not fit on the disk")]
    OutOfRange { sector: u64, len: u64 },
    #[error("a data buffer lies outside guest memory")]
    BadBuffer,
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("flushing the disk failed: {0}")]
    Flush(#[source] io::Error),
    #[error("moving data between the disk and guest memory failed: {0}")]
    Transfer(#[source] GuestMemoryError),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

#[derive(Default)]
struct Counters {
    read_requests: u64,
    write_requests: u64,
    flush_requests: u64,
    read_bytes: u64,
    write_bytes: u64,
    errors: u64,
}

/// The backing file and everything needed to serve requests against it.
struct Disk {
    file: File,
    read_only: bool,
    /// Size in bytes, a whole number of sectors.
    size: u64,
    id: [u8; ID_BYTES],
    counters: Counters,
}

/// What the driver handed over at DRIVER_OK.
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
}

/// A virtio-blk device.
pub struct Block {
    disk: Disk,
    config: [u8; CONFIG_LEN],
    features: u64,
    acked_features: u64,
    active: Option<Active>,
}

impl Block {
    /// Opens `path` (read-write unless `options.read_only`) and wraps it.
    pub fn open(path: &Path, options: BlockOptions) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Self::new(file, options)
    }

    /// Wraps an open disk image. The capacity is its current size rounded
    /// down to whole sectors.
    pub fn new(mut file: File, options: BlockOptions) -> Result<Self, BlockError> {
        let serial = options.serial.as_bytes();
        if serial.len() > ID_BYTES {
            return Err(BlockError::SerialTooLong(serial.len()));
        }
        let mut id = [0u8; ID_BYTES];
        id[..serial.len()].copy_from_slice(serial);

        // Seeking works for host block devices too, where metadata().len() is 0.
        let bytes = file.seek(SeekFrom::End(0)).map_err(BlockError::Size)?;
        if bytes % SECTOR_SIZE != 0 {
            warn!(
                "virtio-blk: disk size {bytes} is not a whole number of sectors; the last {} bytes are unreachable",
                bytes % SECTOR_SIZE
            );
        }
        let capacity = bytes / SECTOR_SIZE;

        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[8..12].copy_from_slice(&SEGMENT_SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        // 16..20 is the geometry, which we do not offer.
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());

        let mut features = VIRTIO_F_VERSION_1
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if options.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }

        Ok(Block {
            disk: Disk {
                file,
                read_only: options.read_only,
                size: capacity * SECTOR_SIZE,
                id,
                counters: Counters::default(),
            },
            config,
            features,
            acked_features: 0,
            active: None,
        })
    }

    /// The disk size in sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size / SECTOR_SIZE
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field we expose is read-only.
        debug!(
            "virtio-blk: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len(),
            });
        }
        let Some(queue) = queues.pop() else {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: 0,
            });
        };
        self.acked_features = acked_features & self.features;
        self.active = Some(Active { mem, queue });
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        if index != 0 {
            return false;
        }
        let mem = &active.mem;
        serve_queue("virtio-blk", &mut active.queue, mem, |chain| {
            self.disk.handle_chain(mem, chain)
        })
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.disk.counters;
        vec![
            ("read_requests", c.read_requests),
            ("write_requests", c.write_requests),
            ("flush_requests", c.flush_requests),
            ("read_bytes", c.read_bytes),
            ("write_bytes", c.write_bytes),
            ("errors", c.errors),
        ]
    }
}

impl Disk {
    /// Serves one chain and returns the used length: the bytes written into
    /// device-writable buffers, status byte included, or 0 when the chain
    /// is dropped because there is nowhere valid to put the status.
    fn handle_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        // The chain iterator already stops at loops and at queue-size many
        // descriptors; this bounds what we hold in memory further.
        let descs: Vec<Descriptor> = chain.take(MAX_DESCRIPTORS + 1).collect();
        if descs.len() > MAX_DESCRIPTORS {
            debug!("virtio-blk: dropping a chain of more than {MAX_DESCRIPTORS} descriptors");
            self.counters.errors += 1;
            return 0;
        }
        let Some((status, request)) = descs.split_last() else {
            debug!("virtio-blk: dropping an empty chain");
            self.counters.errors += 1;
            return 0;
        };
        if !status.is_write_only()
            || status.len() == 0
            || !mem.check_range(status.addr(), 1, Permissions::Write)
        {
            debug!("virtio-blk: dropping a chain without a usable status descriptor");
            self.counters.errors += 1;
            return 0;
        }

        let (code, written) = match self.execute(mem, request) {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
            Err(e) => {
                debug!("virtio-blk: request failed: {e}");
                self.counters.errors += 1;
                (e.status(), 0)
            }
        };
        if let Err(e) = mem.write_obj(code, status.addr()) {
            debug!("virtio-blk: cannot write the status byte: {e}");
            self.counters.errors += 1;
            return 0;
        }
        written.saturating_add(1)
    }

    /// Runs the request made of `descs` (header, then data) and returns how
    /// many bytes it wrote into guest buffers.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Descriptor],
    ) -> Result<u32, RequestError> {
        let (header, data) = descs.split_first().ok_or(RequestError::MissingHeader)?;
        if header.is_write_only() {
            return Err(RequestError::WritableHeader);
        }
        if header.len() < HEADER_LEN {
            return Err(RequestError::ShortHeader(header.len()));
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        mem.read_slice(&mut raw, header.addr())
            .map_err(RequestError::Header)?;
        let request_type = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sector = u64::from_le_bytes([
            raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15],
        ]);

        match request_type {
            VIRTIO_BLK_T_IN => {
                let len = self.check_transfer(mem, data, true, sector)?;
                self.transfer(mem, data, sector * SECTOR_SIZE, len, true)?;
                self.counters.read_requests += 1;
                self.counters.read_bytes += len;
                // len <= MAX_REQUEST_BYTES, far below u32::MAX.
                Ok(len as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let len = self.check_transfer(mem, data, false, sector)?;
                self.transfer(mem, data, sector * SECTOR_SIZE, len, false)?;
                self.counters.write_requests += 1;
                self.counters.write_bytes += len;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                // Data descriptors and the sector field mean nothing here.
                self.file.sync_data().map_err(RequestError::Flush)?;
                self.counters.flush_requests += 1;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                check_buffers(mem, data, true)?;
                let mut written = 0;
                for d in data {
                    let Some(rest) = self.id.get(written..).filter(|r| !r.is_empty()) else {
                        break;
                    };
                    let n = rest.len().min(d.len() as usize);
                    mem.write_slice(&rest[..n], d.addr())
                        .map_err(RequestError::Transfer)?;
                    written += n;
                }
                // written <= ID_BYTES.
                Ok(written as u32)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Moves `len` bytes between the file at `offset` and the checked
    /// buffers `data`: into guest memory when `to_guest`, else out of it.
    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        len: u64,
        to_guest: bool,
    ) -> Result<(), RequestError> {
        if self.transfer_vectored(mem, data, offset, len, to_guest)? {
            return Ok(());
        }
        // A buffer spans two memory regions: one segment at a time.
        let mut file = FileAt::new(&self.file, offset);
        for d in data {
            let result = if to_guest {
                mem.read_exact_volatile_from(d.addr(), &mut file, d.len() as usize)
            } else {
                mem.write_all_volatile_to(d.addr(), &mut file, d.len() as usize)
            };
            result.map_err(RequestError::Transfer)?;
        }
        Ok(())
    }

    /// Moves a whole request with one preadv/pwritev, as the host would do
    /// it, instead of one syscall per segment. Returns false (nothing done)
    /// when a buffer spans two memory regions; the caller then copies
    /// segment by segment. The buffers were checked by `check_transfer`.
    fn transfer_vectored(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        len: u64,
        to_guest: bool,
    ) -> Result<bool, RequestError> {
        let mut slices = Vec::with_capacity(data.len());
        for d in data {
            match vm_memory::GuestMemoryBackend::get_slice(mem, d.addr(), d.len() as usize) {
                Ok(slice) => slices.push(slice),
                Err(_) => return Ok(false),
            }
        }
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let mut iovecs: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        let fd = self.file.as_raw_fd();
        let (mut done, mut first) = (0u64, 0usize);
        while done < len {
            let iov = &iovecs[first..];
            let (base, count) = (
                iov.as_ptr(),
                iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int,
            );
            let at = (offset + done) as libc::off_t;
            let n = if to_guest {
                // SAFETY: every iovec points into mapped guest memory that the
                // guards keep valid for the call, within bounds checked above.
                unsafe { libc::preadv(fd, base, count, at) }
            } else {
                // SAFETY: as above; the kernel only reads these buffers.
                unsafe { libc::pwritev(fd, base, count, at) }
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RequestError::Transfer(
                    vm_memory::GuestMemoryError::IOError(err),
                ));
            }
            if n == 0 {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "the disk file ended early");
                return Err(RequestError::Transfer(
                    vm_memory::GuestMemoryError::IOError(eof),
                ));
            }
            // Skip what a short transfer finished and trim the next iovec.
            let mut left = n as usize;
            done += left as u64;
            while first < iovecs.len() && left >= iovecs[first].iov_len {
                left -= iovecs[first].iov_len;
                first += 1;
            }
            if let Some(iov) = iovecs.get_mut(first) {
                // SAFETY: `left` is less than this iovec's length, so the
                // advanced pointer stays inside the same buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left) }.cast();
                iov.iov_len -= left;
            }
        }
        Ok(true)
    }

    /// Checks a read (`to_guest`) or write of `data` at `sector`: buffers
    /// valid and pointing the right way, whole sectors, inside the disk.
    /// Returns the data length.
    fn check_transfer(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        to_guest: bool,
        sector: u64,
    ) -> Result<u64, RequestError> {
        let len = check_buffers(mem, data, to_guest)?;
        if len % SECTOR_SIZE != 0 {
            return Err(RequestError::Unaligned(len));
        }
        let end = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(len));
        match end {
            Some(end) if end <= self.size => Ok(len),
            _ => Err(RequestError::OutOfRange { sector, len }),
        }
    }
}

/// Checks that every data descriptor is non-empty, device-writable exactly
/// when `to_guest`, and inside guest memory, and that together they stay
/// under `MAX_REQUEST_BYTES`. Returns their total length.
fn check_buffers(
    mem: &GuestMemoryMmap,
    data: &[Descriptor],
    to_guest: bool,
) -> Result<u64, RequestError> {
    let mut total: u64 = 0;
    for d in data {
        if d.is_write_only() != to_guest {
            return Err(RequestError::Direction);
        }
        if d.len() == 0 {
            return Err(RequestError::EmptyDescriptor);
        }
        total += u64::from(d.len());
        if total > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge(total));
        }
    }
    let access = if to_guest {
        Permissions::Write
    } else {
        Permissions::Read
    };
    if data
        .iter()
        .any(|d| !mem.check_range(d.addr(), d.len() as usize, access))
    {
        return Err(RequestError::BadBuffer);
    }
    Ok(total)
}

/// The disk file at a cursor, so vm-memory can move data straight between
/// guest memory and the file with pread/pwrite. Using positional I/O keeps
/// the file's own offset out of the picture.
struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> FileAt<'a> {
    fn new(file: &'a File, offset: u64) -> Self {
        FileAt { file, offset }
    }

    fn offset(&self, done: usize) -> Result<libc::off_t, VolatileMemoryError> {
        self.offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| VolatileMemoryError::IOError(io::ErrorKind::InvalidInput.into()))
    }
}

impl ReadVolatile for FileAt<'_> {
    /// Fills `buf` as far as the file allows: vm-memory calls this once per
    /// guest memory region, so a short read would leave a hole.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        let mut done = 0;
        while done < buf.len() {
            let offset = self.offset(done)?;
            let dst = guard.as_ptr().wrapping_add(done).cast::<libc::c_void>();
            // SAFETY: `dst` points `done` bytes into the `buf.len()` bytes of
            // mapped guest memory that `guard` keeps valid, and pread writes
            // at most the `buf.len() - done` bytes left there. The fd stays
            // open because `self.file` borrows the File.
            let n = unsafe { libc::pread(self.file.as_raw_fd(), dst, buf.len() - done, offset) };
            match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Part of the buffer may have been written.
                    buf.bitmap().mark_dirty(0, buf.len());
                    return Err(VolatileMemoryError::IOError(err));
                }
            }
        }
        buf.bitmap().mark_dirty(0, done);
        self.offset += done as u64;
        Ok(done)
    }
}

impl WriteVolatile for FileAt<'_> {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let offset = self.offset(0)?;
        let guard = buf.ptr_guard();
        // SAFETY: `guard` keeps the `buf.len()` bytes of mapped guest memory
        // at its pointer valid, and pwrite reads at most that many. The fd
        // stays open because `self.file` borrows the File.
        let n = unsafe {
            libc::pwrite(
                self.file.as_raw_fd(),
                guard.as_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            )
        };
        // Negative means failure; vm-memory retries on EINTR.
        let n = usize::try_from(n)
            .map_err(|_| VolatileMemoryError::IOError(io::Error::last_os_error()))?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{add_chain, guest_mem, used, TempFile, NEXT, R, W};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::GuestAddress;

    const MEM_SIZE: usize = 0x10_0000;
    const HDR: u64 = 0x1000;
    const STATUS: u64 = 0x1100;
    const DATA: u64 = 0x2000;
    const DISK_SECTORS: u64 = 16;
    /// Status value no request produces, to see whether it was written.
    const UNTOUCHED: u8 = 0xee;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    struct Fixture {
        disk: TempFile,
        mem: GuestMemoryMmap,
        block: Block,
    }

    fn fixture(tag: &str, read_only: bool) -> Fixture {
        let disk = TempFile::new(tag, &pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 0));
        let options = BlockOptions {
            read_only,
            serial: "keel-disk-0".into(),
        };
        let block = Block::new(disk.open(!read_only), options).expect("block");
        Fixture {
            disk,
            mem: guest_mem(&[(0, MEM_SIZE)]),
            block,
        }
    }

    fn activate(block: &mut Block, mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) {
        let queue: Queue = vq.create_queue().expect("queue");
        let features = block.device_features();
        block
            .activate(mem.clone(), vec![queue], features)
            .expect("activate");
    }

    fn write_header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) {
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&request_type.to_le_bytes());
        raw[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(HDR)).expect("header");
        mem.write_obj(UNTOUCHED, GuestAddress(STATUS))
            .expect("status");
    }

    fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).expect("read");
        buf
    }

    /// Guest memory outside the queue area, with the status byte blanked.
    fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
        let mut all = read_mem(mem, 0x1000, MEM_SIZE - 0x1000);
        all[(STATUS - 0x1000) as usize] = 0;
        all
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).expect("status")
    }

    /// Submits one chain and returns the used length reported for it.
    fn submit(
        block: &mut Block,
        vq: &MockSplitQueue<GuestMemoryMmap>,
        descs: &[(u64, u32, u16)],
    ) -> u32 {
        let before = vq.used().idx().load();
        add_chain(vq, 0, descs);
        assert!(block.process_queue(0), "the guest should be interrupted");
        let (idx, id, len) = used(vq, usize::from(before % 16));
        assert_eq!(idx, before.wrapping_add(1), "exactly one chain returned");
        assert_eq!(id, 0);
        len
    }

    fn counter(block: &Block, name: &str) -> u64 {
        block
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .expect("counter")
    }

    /// Runs a request that must fail with `expect_status` and checks that
    /// neither guest memory (besides the status byte) nor the disk changed.
    fn expect_refused(
        tag: &str,
        read_only: bool,
        request_type: u32,
        sector: u64,
        data: &[(u64, u32, u16)],
        expect_status: u32,
    ) {
        let mut f = fixture(tag, read_only);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, request_type, sector);
        let disk_before = f.disk.contents();
        let mem_before = snapshot(&f.mem);

        let mut descs = vec![(HDR, 16, R)];
        descs.extend_from_slice(data);
        descs.push((STATUS, 1, W));
        let len = submit(&mut f.block, &vq, &descs);

        assert_eq!(status(&f.mem), expect_status as u8);
        assert_eq!(len, 1, "only the status byte was written");
        assert_eq!(snapshot(&f.mem), mem_before);
        assert_eq!(f.disk.contents(), disk_before);
        assert_eq!(counter(&f.block, "errors"), 1);
        assert_eq!(
            counter(&f.block, "read_bytes") + counter(&f.block, "write_bytes"),
            0
        );
    }

    /// Runs a chain that must be returned unprocessed (used length 0) and
    /// checks that nothing at all changed.
    fn expect_dropped(tag: &str, descs: &[(u64, u32, u16)]) {
        let mut f = fixture(tag, false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_OUT, 0);
        let disk_before = f.disk.contents();
        let mem_before = read_mem(&f.mem, 0x1000, MEM_SIZE - 0x1000);

        assert_eq!(submit(&mut f.block, &vq, descs), 0);
        assert_eq!(read_mem(&f.mem, 0x1000, MEM_SIZE - 0x1000), mem_before);
        assert_eq!(f.disk.contents(), disk_before);
        assert_eq!(counter(&f.block, "errors"), 1);
    }

    #[test]
    fn write_read_flush_get_id_round_trip() {
        let mut f = fixture("roundtrip", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);

        // Write two sectors at sector 3 from two buffers.
        let payload = pattern(1024, 0x5a);
        f.mem
            .write_slice(&payload[..512], GuestAddress(DATA))
            .expect("data");
        f.mem
            .write_slice(&payload[512..], GuestAddress(DATA + 0x1000))
            .expect("data");
        write_header(&f.mem, VIRTIO_BLK_T_OUT, 3);
        let len = submit(
            &mut f.block,
            &vq,
            &[
                (HDR, 16, R),
                (DATA, 512, R),
                (DATA + 0x1000, 512, R),
                (STATUS, 1, W),
            ],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(len, 1);
        let mut expected = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 0);
        expected[3 * 512..5 * 512].copy_from_slice(&payload);
        assert_eq!(f.disk.contents(), expected);

        // Read sectors 2..6 back into one buffer.
        write_header(&f.mem, VIRTIO_BLK_T_IN, 2);
        let len = submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, R), (0x8000, 2048, W), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(len, 2048 + 1);
        assert_eq!(read_mem(&f.mem, 0x8000, 2048), expected[2 * 512..6 * 512]);
        assert_eq!(
            read_mem(&f.mem, 0x8000 + 2048, 16),
            vec![0; 16],
            "nothing past the buffer"
        );

        write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            submit(&mut f.block, &vq, &[(HDR, 16, R), (STATUS, 1, W)]),
            1
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);

        write_header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
        let len = submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, R), (0x9000, 20, W), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(len, 21);
        let mut id = b"keel-disk-0".to_vec();
        id.resize(20, 0);
        assert_eq!(read_mem(&f.mem, 0x9000, 20), id);

        assert_eq!(
            f.block.counters(),
            vec![
                ("read_requests", 1),
                ("write_requests", 1),
                ("flush_requests", 1),
                ("read_bytes", 2048),
                ("write_bytes", 1024),
                ("errors", 0),
            ]
        );
    }

    #[test]
    fn get_id_fills_only_the_buffer_given() {
        let mut f = fixture("shortid", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
        f.mem
            .write_slice(&[0xaa; 16], GuestAddress(0x9000))
            .expect("fill");
        let len = submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, R), (0x9000, 8, W), (STATUS, 1, W)],
        );
        assert_eq!(len, 9);
        assert_eq!(
            read_mem(&f.mem, 0x9000, 16),
            [b"keel-dis".as_slice(), &[0xaa; 8]].concat()
        );
    }

    #[test]
    fn request_reaching_the_last_sector_is_served() {
        let mut f = fixture("lastsector", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
        submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn header_too_short_is_an_io_error() {
        let mut f = fixture("shorthdr", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_OUT, 0);
        let disk_before = f.disk.contents();
        submit(
            &mut f.block,
            &vq,
            &[(HDR, 8, R), (DATA, 512, R), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(f.disk.contents(), disk_before);
    }

    #[test]
    fn writable_header_is_an_io_error() {
        let mut f = fixture("wrhdr", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
        let mem_before = snapshot(&f.mem);
        submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, W), (DATA, 512, W), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(snapshot(&f.mem), mem_before);
    }

    #[test]
    fn header_outside_guest_memory_is_an_io_error() {
        let mut f = fixture("oomhdr", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
        submit(
            &mut f.block,
            &vq,
            &[(MEM_SIZE as u64 - 8, 16, R), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
    }

    #[test]
    fn chain_without_status_descriptor_is_dropped() {
        expect_dropped("nostatus", &[(HDR, 16, R)]);
        expect_dropped("nostatus2", &[(HDR, 16, R), (DATA, 512, R)]);
    }

    #[test]
    fn read_only_status_descriptor_is_dropped() {
        expect_dropped("rostatus", &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, R)]);
    }

    #[test]
    fn empty_status_descriptor_is_dropped() {
        expect_dropped(
            "emptystatus",
            &[(HDR, 16, R), (DATA, 512, R), (STATUS, 0, W)],
        );
    }

    #[test]
    fn status_outside_guest_memory_is_dropped() {
        expect_dropped(
            "oomstatus",
            &[(HDR, 16, R), (DATA, 512, R), (MEM_SIZE as u64, 1, W)],
        );
        expect_dropped(
            "oomstatus2",
            &[(HDR, 16, R), (DATA, 512, R), (u64::MAX, 1, W)],
        );
    }

    #[test]
    fn sector_past_the_end_is_an_io_error() {
        expect_refused(
            "pastend",
            false,
            VIRTIO_BLK_T_IN,
            DISK_SECTORS,
            &[(DATA, 512, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "pastend2",
            false,
            VIRTIO_BLK_T_OUT,
            DISK_SECTORS,
            &[(DATA, 512, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn request_straddling_the_end_is_an_io_error() {
        expect_refused(
            "straddle",
            false,
            VIRTIO_BLK_T_OUT,
            DISK_SECTORS - 1,
            &[(DATA, 1024, R)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "straddle2",
            false,
            VIRTIO_BLK_T_IN,
            DISK_SECTORS - 1,
            &[(DATA, 1024, W)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn overflowing_sector_is_an_io_error() {
        expect_refused(
            "overflow",
            false,
            VIRTIO_BLK_T_IN,
            u64::MAX,
            &[(DATA, 512, W)],
            VIRTIO_BLK_S_IOERR,
        );
        // sector * 512 fits, adding the length does not.
        expect_refused(
            "overflow2",
            false,
            VIRTIO_BLK_T_OUT,
            u64::MAX / 512,
            &[(DATA, 1024, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn partial_sector_is_an_io_error() {
        expect_refused(
            "partial",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, 100, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "partial2",
            false,
            VIRTIO_BLK_T_OUT,
            0,
            &[(DATA, 512, R), (DATA + 0x1000, 1, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn write_to_read_only_disk_is_an_io_error() {
        expect_refused(
            "rodisk",
            true,
            VIRTIO_BLK_T_OUT,
            0,
            &[(DATA, 512, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn read_only_disk_offers_ro_and_still_reads() {
        let mut f = fixture("roread", true);
        assert_ne!(f.block.device_features() & (1 << VIRTIO_BLK_F_RO), 0);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, 1);
        submit(
            &mut f.block,
            &vq,
            &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
        );
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(read_mem(&f.mem, DATA, 512), f.disk.contents()[512..1024]);
    }

    #[test]
    fn data_in_the_wrong_direction_is_an_io_error() {
        expect_refused(
            "dir",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, 512, R)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "dir2",
            false,
            VIRTIO_BLK_T_OUT,
            0,
            &[(DATA, 512, R), (DATA + 0x1000, 512, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "dir3",
            false,
            VIRTIO_BLK_T_GET_ID,
            0,
            &[(DATA, 20, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn zero_length_data_descriptor_is_an_io_error() {
        expect_refused(
            "zerolen",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, 512, W), (DATA + 0x1000, 0, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "zerolen2",
            false,
            VIRTIO_BLK_T_OUT,
            0,
            &[(DATA, 0, R)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn data_outside_guest_memory_is_an_io_error() {
        let end = MEM_SIZE as u64;
        expect_refused(
            "oomdata",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(end, 512, W)],
            VIRTIO_BLK_S_IOERR,
        );
        // Straddling the end: the part inside must not be written either.
        expect_refused(
            "oomdata2",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, 512, W), (end - 512, 1024, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "oomdata3",
            false,
            VIRTIO_BLK_T_OUT,
            0,
            &[(end - 512, 1024, R)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "oomdata4",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(u64::MAX - 511, 512, W)],
            VIRTIO_BLK_S_IOERR,
        );
        expect_refused(
            "oomdata5",
            false,
            VIRTIO_BLK_T_GET_ID,
            0,
            &[(end - 4, 20, W)],
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn data_across_a_hole_in_guest_memory_is_an_io_error() {
        let disk = TempFile::new("hole", &pattern(8192, 0));
        let mut block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
        // Two regions with a hole between 0x10000 and 0x20000.
        let mem = guest_mem(&[(0, 0x1_0000), (0x2_0000, 0x1_0000)]);
        let vq = MockSplitQueue::new(&mem, 16);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, R), (0x1_0000 - 512, 1024, W), (STATUS, 1, W)],
        );
        assert!(block.process_queue(0));
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(read_mem(&mem, 0x1_0000 - 512, 512), vec![0; 512]);

        // Adjacent regions are fine: one buffer may span both.
        let mem = guest_mem(&[(0, 0x1_0000), (0x1_0000, 0x1_0000)]);
        let vq = MockSplitQueue::new(&mem, 16);
        block.reset();
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, R), (0x1_0000 - 512, 1024, W), (STATUS, 1, W)],
        );
        assert!(block.process_queue(0));
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(read_mem(&mem, 0x1_0000 - 512, 1024), pattern(1024, 0));
    }

    #[test]
    fn oversized_request_is_an_io_error() {
        let len = (MAX_REQUEST_BYTES + 512) as u32;
        expect_refused(
            "huge",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, len, W)],
            VIRTIO_BLK_S_IOERR,
        );
        // Descriptors each under the limit but together over it.
        let two_mib = 2 << 20;
        let many = [(DATA, two_mib, W), (DATA, two_mib, W), (DATA, two_mib, W)];
        expect_refused(
            "huge2",
            false,
            VIRTIO_BLK_T_IN,
            0,
            &many,
            VIRTIO_BLK_S_IOERR,
        );
        // Past 4 GiB in total the chain iterator itself stops, leaving a
        // chain without status: dropped.
        expect_dropped(
            "huge3",
            &[(HDR, 16, R), (DATA, u32::MAX, W), (STATUS, 1, W)],
        );
    }

    #[test]
    fn request_at_the_size_limit_is_served() {
        let disk = TempFile::new("limit", &[]);
        let file = disk.open(true);
        file.set_len(MAX_REQUEST_BYTES).expect("grow disk");
        let mut block = Block::new(file, BlockOptions::default()).expect("block");
        let mem = guest_mem(&[(0, 2 * MAX_REQUEST_BYTES as usize)]);
        let vq = MockSplitQueue::new(&mem, 16);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0x77; 4096], GuestAddress(MAX_REQUEST_BYTES - 4096))
            .expect("fill");
        write_header(&mem, VIRTIO_BLK_T_OUT, 0);
        add_chain(
            &vq,
            0,
            &[
                (HDR, 16, R),
                (0x10000, MAX_REQUEST_BYTES as u32 - 0x10000, R),
                (0, 0x10000, R),
                (STATUS, 1, W),
            ],
        );
        assert!(block.process_queue(0));
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(counter(&block, "write_bytes"), MAX_REQUEST_BYTES);
        let contents = disk.contents();
        let tail = (MAX_REQUEST_BYTES - 0x10000 - 4096) as usize;
        assert_eq!(contents[tail..tail + 4096], [0x77; 4096]);
    }

    #[test]
    fn unsupported_request_type_is_reported() {
        expect_refused(
            "unsupp",
            false,
            11,
            0,
            &[(DATA, 512, R)],
            VIRTIO_BLK_S_UNSUPP,
        );
        expect_refused("unsupp2", false, u32::MAX, 0, &[], VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn descriptor_loop_is_bounded_by_the_queue_size() {
        let mut f = fixture("loop", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
        // 0 -> 1 -> 0 -> ...: the chain iterator stops after 16 descriptors.
        let looped = [
            RawDescriptor::from(SplitDescriptor::new(HDR, 16, NEXT, 1)),
            RawDescriptor::from(SplitDescriptor::new(STATUS, 1, W | NEXT, 0)),
        ];
        vq.add_desc_chains(&looped, 0).expect("chain");
        let queue: Queue = vq.create_queue().expect("queue");
        let mut probe = queue;
        let chain = probe.pop_descriptor_chain(&f.mem).expect("chain");
        assert_eq!(chain.count(), 16);

        let mem_before = snapshot(&f.mem);
        assert!(f.block.process_queue(0));
        let (idx, id, len) = used(&vq, 0);
        assert_eq!((idx, id, len), (1, 0, 1));
        // The chain ends on the writable descriptor, but the header repeats
        // among the data: refused.
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(snapshot(&f.mem), mem_before);
    }

    #[test]
    fn chain_longer_than_the_request_limit_is_dropped() {
        let disk = TempFile::new("longchain", &pattern(512, 0));
        let mut block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
        let mem = guest_mem(&[(0, MEM_SIZE)]);
        let vq = MockSplitQueue::new(&mem, 256);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_OUT, 0);
        let mut descs = vec![(HDR, 16, R)];
        descs.extend((0..MAX_DESCRIPTORS as u64).map(|i| (0x4000 + i * 0x1000, 512, R)));
        descs.push((STATUS, 1, W));
        add_chain(&vq, 0, &descs);
        assert!(block.process_queue(0));
        assert_eq!(used(&vq, 0), (1, 0, 0));
        assert_eq!(status(&mem), UNTOUCHED);
        assert_eq!(disk.contents(), pattern(512, 0));
    }

    #[test]
    fn several_chains_are_served_in_one_notify() {
        let mut f = fixture("several", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_IN, 0);
        add_chain(&vq, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        add_chain(
            &vq,
            3,
            &[(HDR, 16, R), (DATA + 0x1000, 512, W), (STATUS + 1, 1, W)],
        );
        assert!(f.block.process_queue(0));
        assert_eq!(used(&vq, 0), (2, 0, 513));
        assert_eq!(used(&vq, 1), (2, 3, 513));
        assert_eq!(counter(&f.block, "read_requests"), 2);
        assert!(!f.block.process_queue(0), "nothing new: no interrupt");
    }

    #[test]
    fn avail_index_far_ahead_is_ignored() {
        let mut f = fixture("availidx", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        vq.avail().idx().store(100);
        assert!(!f.block.process_queue(0));
        assert_eq!(vq.used().idx().load(), 0);
    }

    #[test]
    fn head_index_outside_the_table_is_dropped() {
        let mut f = fixture("badhead", false);
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        vq.avail().ring().ref_at(0).expect("ring").store(40);
        vq.avail().idx().store(1);
        // Nothing can be returned for a head the used ring cannot name.
        assert!(!f.block.process_queue(0));
        assert_eq!(counter(&f.block, "errors"), 1);
        // The queue keeps working afterwards.
        write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        add_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
        assert!(f.block.process_queue(0));
        assert_eq!(status(&f.mem), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn inactive_device_or_unknown_queue_does_nothing() {
        let mut f = fixture("inactive", false);
        assert!(!f.block.process_queue(0));
        let vq = MockSplitQueue::new(&f.mem, 16);
        activate(&mut f.block, &f.mem, &vq);
        write_header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
        add_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
        assert!(!f.block.process_queue(1));
        assert!(!f.block.process_queue(usize::MAX));
        f.block.reset();
        assert!(!f.block.process_queue(0));
        assert_eq!(status(&f.mem), UNTOUCHED);
    }

    #[test]
    fn activation_checks_queue_count_and_state() {
        let mut f = fixture("activate", false);
        let mem = f.mem.clone();
        assert!(matches!(
            f.block.activate(mem.clone(), vec![], 0),
            Err(ActivateError::QueueCount {
                expected: 1,
                got: 0
            })
        ));
        let two = vec![
            Queue::new(16).expect("queue"),
            Queue::new(16).expect("queue"),
        ];
        assert!(matches!(
            f.block.activate(mem.clone(), two, 0),
            Err(ActivateError::QueueCount {
                expected: 1,
                got: 2
            })
        ));
        f.block
            .activate(mem.clone(), vec![Queue::new(16).expect("queue")], 0)
            .expect("activate");
        assert!(matches!(
            f.block
                .activate(mem.clone(), vec![Queue::new(16).expect("queue")], 0),
            Err(ActivateError::AlreadyActive)
        ));
        f.block.reset();
        f.block
            .activate(mem, vec![Queue::new(16).expect("queue")], 0)
            .expect("activate after reset");
    }

    #[test]
    fn config_space_describes_the_disk() {
        let mut f = fixture("config", false);
        assert_eq!(f.block.device_type(), 2);
        assert_eq!(f.block.queue_max_sizes(), &[QUEUE_SIZE]);
        assert_eq!(f.block.capacity(), DISK_SECTORS);
        let features = f.block.device_features();
        for bit in [
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
        ] {
            assert_ne!(features & (1 << bit), 0, "feature {bit}");
        }
        assert_eq!(features & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(features & VIRTIO_F_VERSION_1, 0);

        let mut b8 = [0u8; 8];
        f.block.read_config(0, &mut b8);
        assert_eq!(u64::from_le_bytes(b8), DISK_SECTORS);
        let mut b4 = [0u8; 4];
        f.block.read_config(8, &mut b4);
        assert_eq!(u32::from_le_bytes(b4), SEGMENT_SIZE_MAX);
        f.block.read_config(12, &mut b4);
        assert_eq!(u32::from_le_bytes(b4), SEG_MAX);
        f.block.read_config(20, &mut b4);
        assert_eq!(u32::from_le_bytes(b4), 512);
        f.block.read_config(22, &mut b4);
        assert_eq!(b4, [0, 0, 0, 0], "past the end reads as zero");
        f.block.read_config(0xf00, &mut b8);
        assert_eq!(b8, [0; 8]);

        f.block.write_config(0, &[0xff; 8]);
        f.block.read_config(0, &mut b8);
        assert_eq!(
            u64::from_le_bytes(b8),
            DISK_SECTORS,
            "capacity is read-only"
        );
    }

    #[test]
    fn partial_trailing_sector_is_not_exposed() {
        let disk = TempFile::new("ragged", &pattern(1000, 0));
        let block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
        assert_eq!(block.capacity(), 1);
    }

    #[test]
    fn serial_longer_than_20_bytes_is_refused() {
        let disk = TempFile::new("serial", &pattern(512, 0));
        let options = BlockOptions {
            read_only: false,
            serial: "x".repeat(21),
        };
        assert!(matches!(
            Block::new(disk.open(true), options),
            Err(BlockError::SerialTooLong(21))
        ));
        let options = BlockOptions {
            read_only: false,
            serial: "y".repeat(20),
        };
        Block::new(disk.open(true), options).expect("20 bytes fit");
    }

    #[test]
    fn open_reports_missing_files() {
        let path =
            std::env::temp_dir().join(format!("keel-vmm-test-{}-missing.img", std::process::id()));
        assert!(matches!(
            Block::open(&path, BlockOptions::default()),
            Err(BlockError::Open { .. })
        ));
    }
}
