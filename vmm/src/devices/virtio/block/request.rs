//! Serving virtio-blk requests against the disk image: parsing and
//! checking each chain, then moving data between guest memory and the
//! image: a raw file with positional I/O straight into guest memory, a
//! qcow2 image through imago.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use log::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestMemory, GuestMemoryError, GuestMemoryMmap, Permissions, ReadVolatile,
    VolatileMemoryError, VolatileSlice, WriteVolatile,
};

use super::qcow2::Qcow2Image;
use super::{HEADER_LEN, ID_BYTES, MAX_DESCRIPTORS, MAX_REQUEST_BYTES, SECTOR_SIZE};
use crate::devices::virtio::chain::{check_order, ChainError};

/// Why one request failed; logged, then reported to the guest as a status.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Malformed(#[from] ChainError),
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
    #[error("the qcow2 image failed: {0}")]
    Image(#[source] io::Error),
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
pub(super) struct Counters {
    pub(super) read_requests: u64,
    pub(super) write_requests: u64,
    pub(super) flush_requests: u64,
    pub(super) read_bytes: u64,
    pub(super) write_bytes: u64,
    pub(super) errors: u64,
}

/// Where the guest's sectors live.
pub(super) enum Backend {
    /// A raw image: sector N is at byte N * 512 of the file.
    Raw(File),
    /// A qcow2 image.
    Qcow2(Box<Qcow2Image>),
}

impl Backend {
    /// Makes what was written durable: the guest's flush.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self {
            Backend::Raw(file) => file.sync_data(),
            Backend::Qcow2(image) => image.flush(),
        }
    }
}

/// The disk image and everything needed to serve requests against it.
pub(super) struct Disk {
    pub(super) backend: Backend,
    pub(super) read_only: bool,
    /// Size in bytes, a whole number of sectors.
    pub(super) size: u64,
    pub(super) id: [u8; ID_BYTES],
    pub(super) counters: Counters,
}

impl Disk {
    /// Serves one chain and returns the used length: the bytes written into
    /// device-writable buffers, status byte included, or 0 when the chain
    /// is dropped because there is nowhere valid to put the status. The
    /// last descriptor is the status byte; the rest must be the header
    /// (device-readable) then data whose direction matches the request.
    pub(super) fn handle_chain(
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

        // The direction rule (see `virtio::chain`): a malformed chain fails
        // with IOERR through the status byte checked above, nothing moved.
        let result = check_order(&descs)
            .map_err(RequestError::from)
            .and_then(|()| self.execute(mem, request));
        let (code, written) = match result {
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
                self.backend.flush().map_err(RequestError::Flush)?;
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

    /// Moves `len` bytes between the disk at `offset` and the checked
    /// buffers `data`: into guest memory when `to_guest`, else out of it.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        len: u64,
        to_guest: bool,
    ) -> Result<(), RequestError> {
        match &mut self.backend {
            Backend::Raw(file) => raw_transfer(file, mem, data, offset, len, to_guest),
            Backend::Qcow2(image) if to_guest => image
                .read(mem, data, offset, len)
                .map_err(RequestError::Image),
            Backend::Qcow2(image) => image
                .write(mem, data, offset, len)
                .map_err(RequestError::Image),
        }
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

/// [`Disk::transfer`] on a raw image, straight between the file and guest
/// memory.
fn raw_transfer(
    file: &File,
    mem: &GuestMemoryMmap,
    data: &[Descriptor],
    offset: u64,
    len: u64,
    to_guest: bool,
) -> Result<(), RequestError> {
    if raw_transfer_vectored(file, mem, data, offset, len, to_guest)? {
        return Ok(());
    }
    // A buffer spans two memory regions: one segment at a time.
    let mut file = FileAt::new(file, offset);
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
fn raw_transfer_vectored(
    file: &File,
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
    let fd = file.as_raw_fd();
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
