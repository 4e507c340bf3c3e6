//! Virtio block device over a raw disk image (a regular file or a host
//! block device) or a qcow2 image.
//!
//! One queue, requests handled synchronously on the caller's thread. For a
//! raw image, data moves between guest memory and the file with
//! pread/pwrite straight into the guest's buffers (no bounce buffer); a
//! qcow2 image goes through imago and a bounce buffer (`qcow2`). Which
//! one a disk is follows the rule in `format`. Every descriptor is checked
//! against guest memory and every request against the disk size before any
//! byte moves, so a refused request changes neither.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_common::guest::DiskFormat;
use log::{debug, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_ID_BYTES,
};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub mod format;
mod qcow2;
mod request;

pub use self::format::FormatError;
use self::qcow2::Qcow2Image;
pub use self::qcow2::{BackingImage, Qcow2Error};
use self::request::{Backend, Counters, Disk};
use super::{
    read_config_bytes, serve_queue, signal_used, ActivateError, VirtioDevice, VirtioInterrupt,
    TYPE_BLOCK, VIRTIO_F_VERSION_1,
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
    /// The spec's `format`; see the `format` module for the rule.
    pub format: Option<DiskFormat>,
}

/// A disk image, open, with what it may read beneath it.
#[derive(Debug)]
pub struct DiskImage {
    pub file: File,
    /// As the spec names it: for messages, and what a qcow2 header's
    /// relative backing name is read against.
    pub path: PathBuf,
    /// The backing file the spec allows a qcow2 image (none: refused).
    pub backing: Option<BackingImage>,
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
    #[error("disk `{path}`: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error("disk `{path}` is qcow2 but {source}")]
    Qcow2 { path: PathBuf, source: Qcow2Error },
    #[error("disk `{0}` is raw: only a qcow2 image has a backing file")]
    RawBacking(PathBuf),
}

/// What the driver handed over at DRIVER_OK.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
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
        let image = DiskImage {
            file,
            path: path.to_path_buf(),
            backing: None,
        };
        Self::open_image(image, options)
    }

    /// Wraps an open disk image with no backing file.
    pub fn new(file: File, options: BlockOptions) -> Result<Self, BlockError> {
        let image = DiskImage {
            file,
            path: PathBuf::from("(unnamed)"),
            backing: None,
        };
        Self::open_image(image, options)
    }

    /// Wraps an open disk image, raw or qcow2 as `options.format` and its
    /// header say. A raw image's capacity is its current size rounded
    /// down to whole sectors; a qcow2 image's is its virtual size.
    pub fn open_image(image: DiskImage, options: BlockOptions) -> Result<Self, BlockError> {
        let serial = options.serial.as_bytes();
        if serial.len() > ID_BYTES {
            return Err(BlockError::SerialTooLong(serial.len()));
        }
        let mut id = [0u8; ID_BYTES];
        id[..serial.len()].copy_from_slice(serial);

        let DiskImage {
            mut file,
            path,
            backing,
        } = image;
        let format =
            format::resolve(&file, options.format).map_err(|source| BlockError::Format {
                path: path.clone(),
                source,
            })?;
        let (backend, bytes) = match format {
            DiskFormat::Raw => {
                if backing.is_some() {
                    return Err(BlockError::RawBacking(path));
                }
                // Seeking works for host block devices too, where
                // metadata().len() is 0.
                let bytes = file.seek(SeekFrom::End(0)).map_err(BlockError::Size)?;
                (Backend::Raw(file), bytes)
            }
            DiskFormat::Qcow2 => {
                let image = Qcow2Image::open(file, &path, !options.read_only, backing).map_err(
                    |source| BlockError::Qcow2 {
                        path: path.clone(),
                        source,
                    },
                )?;
                let bytes = image.size();
                (Backend::Qcow2(Box::new(image)), bytes)
            }
        };
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
                backend,
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
        interrupt: Arc<dyn VirtioInterrupt>,
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
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if index != 0 {
            return;
        }
        let mem = &active.mem;
        let needed = serve_queue("virtio-blk", &mut active.queue, mem, |chain| {
            self.disk.handle_chain(mem, chain)
        });
        signal_used("virtio-blk", active.interrupt.as_ref(), index, needed);
    }

    fn reset(&mut self) {
        // A qcow2 image's cached metadata goes back to the file; the
        // guest (rebooting, say) may not have flushed.
        if let Err(e) = self.disk.backend.flush() {
            warn!("virtio-blk: flushing the disk at reset failed: {e}");
        }
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

#[cfg(test)]
mod tests;
