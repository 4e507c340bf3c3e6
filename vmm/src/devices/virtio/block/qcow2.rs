//! qcow2 images through the `imago` crate, built with its `sync` feature:
//! plain blocking calls on the caller's thread (a vCPU or the event
//! loop), no tokio runtime, no threads of its own, no io_uring. Its file
//! driver uses pread/pwrite(v), fsync, fallocate and ftruncate (see the
//! seccomp filters).
//!
//! Data moves through a bounce buffer: imago maps each guest range to its
//! clusters, reads zeroes for unallocated ones and allocates on write.
//!
//! What the image's header names beyond itself goes through
//! [`BackingGate`]: an external data file never opens, and a backing file
//! only when the spec allows exactly that one, beneath `images/`. The
//! gate opens nothing by path: it hands out the file keel-vmm already
//! opened read-only beneath `images/`, so the header's name only has to
//! match, it never reaches the file system.
//!
//! imago checks what it reads, but a hostile image could still trip one
//! of its assertions: every call into it is made under `catch_unwind`, and
//! a disk whose driver panicked fails every later request.

use std::fs::File;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::format::gate::ImplicitOpenGate;
use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use log::error;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestMemoryMmap};

/// The one backing file a qcow2 disk may use, opened read-only beneath
/// the data partition's `images/` before the VM is built.
#[derive(Debug)]
pub struct BackingImage {
    pub file: File,
    /// As the spec names it (`images/base.qcow2`).
    pub path: PathBuf,
    /// Its absolute path on the host, for headers that name it so.
    pub host_path: PathBuf,
}

/// Why a qcow2 image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("cannot open it as qcow2: {0}")]
    Open(#[source] io::Error),
    #[error("the qcow2 driver failed on its header (a malformed image)")]
    Panicked,
    #[error(
        "its spec names the backing file `{0}`, but the image has none: remove `backing` \
         from the spec"
    )]
    BackingUnused(PathBuf),
}

/// An open qcow2 image serving requests.
pub struct Qcow2Image {
    image: FormatAccess<ImagoFile>,
    /// Guest data on its way to or from the image; at most one request's
    /// worth (`MAX_REQUEST_BYTES`), kept between requests.
    bounce: Vec<u8>,
    /// Set once imago panicked: its state is not to be trusted any more.
    failed: bool,
}

impl Qcow2Image {
    /// Opens the qcow2 image in `file` (named `name`, relative to which
    /// the header's relative backing name is read), writable when
    /// `writable`, with at most the backing file `backing`.
    pub fn open(
        file: File,
        name: &Path,
        writable: bool,
        backing: Option<BackingImage>,
    ) -> Result<Self, Qcow2Error> {
        let opened = catch_unwind(AssertUnwindSafe(|| {
            let options = StorageOpenOptions::new().write(writable).filename(name);
            let storage = ImagoFile::from_open_file(file, options).map_err(Qcow2Error::Open)?;
            let mut gate = BackingGate::new(backing);
            let qcow2 = Qcow2::<ImagoFile>::builder(storage)
                .write(writable)
                .open(&mut gate)
                .map_err(Qcow2Error::Open)?;
            if let Some(unused) = gate.unused() {
                return Err(Qcow2Error::BackingUnused(unused));
            }
            Ok(FormatAccess::new(qcow2))
        }));
        let image = opened.map_err(|_| Qcow2Error::Panicked)??;
        Ok(Qcow2Image {
            image,
            bounce: Vec::new(),
            failed: false,
        })
    }

    /// Whether imago panicked on this image (tests tell a clean error from
    /// a caught panic).
    #[cfg(test)]
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.image.size()
    }

    /// Reads `len` bytes at `offset` into the (checked) buffers `data`.
    pub fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.bounce.resize(len, 0);
        let (image, bounce) = (&self.image, &mut self.bounce[..]);
        guarded(&mut self.failed, || image.read(&mut *bounce, offset))?;
        let mut done = 0;
        for d in data {
            let n = d.len() as usize;
            mem.write_slice(&self.bounce[done..done + n], d.addr())
                .map_err(io::Error::other)?;
            done += n;
        }
        Ok(())
    }

    /// Writes the `len` bytes of the (checked) buffers `data` at `offset`,
    /// allocating clusters as needed.
    pub fn write(
        &mut self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.bounce.resize(len, 0);
        let mut done = 0;
        for d in data {
            let n = d.len() as usize;
            mem.read_slice(&mut self.bounce[done..done + n], d.addr())
                .map_err(io::Error::other)?;
            done += n;
        }
        let (image, bounce) = (&self.image, &self.bounce[..]);
        guarded(&mut self.failed, || image.write(bounce, offset))
    }

    /// Writes imago's cached metadata back and syncs the file: what the
    /// guest wrote before survives a host crash.
    pub fn flush(&mut self) -> io::Result<()> {
        let image = &self.image;
        guarded(&mut self.failed, || {
            image.flush()?;
            image.sync()
        })
    }
}

/// Runs one call into imago; a panic fails the disk for good.
fn guarded<T>(failed: &mut bool, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    if *failed {
        return Err(io::Error::other(
            "the qcow2 driver failed earlier on this image",
        ));
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => {
            error!("virtio-blk: the qcow2 driver panicked; failing every further request");
            *failed = true;
            Err(io::Error::other("the qcow2 driver failed on this image"))
        }
    }
}

/// imago's gate for what an image's header names: refuses everything but
/// the spec's backing file, which it hands out once, read-only, and opens
/// with no dependencies of its own (one level of backing file).
struct BackingGate {
    backing: Option<BackingImage>,
    /// The spec's backing path, kept for messages once handed out.
    allowed: Option<PathBuf>,
    /// The backing file was handed out and its format may now be opened.
    storage_given: bool,
    format_opened: bool,
}

impl BackingGate {
    fn new(backing: Option<BackingImage>) -> Self {
        BackingGate {
            allowed: backing.as_ref().map(|b| b.path.clone()),
            backing,
            storage_given: false,
            format_opened: false,
        }
    }

    /// The allowed backing file when the image never asked for it.
    fn unused(&self) -> Option<PathBuf> {
        match (&self.allowed, self.format_opened) {
            (Some(path), false) => Some(path.clone()),
            _ => None,
        }
    }

    fn refuse(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, message)
    }
}

impl ImplicitOpenGate<ImagoFile> for &mut BackingGate {
    fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        // Only ever the file open_storage handed out, and only once.
        if !self.storage_given || self.format_opened {
            return Err(BackingGate::refuse(
                "the image names another image to open, which keel-vmm refuses".to_string(),
            ));
        }
        self.format_opened = true;
        let path = self.allowed.clone().unwrap_or_default();
        let inner = builder
            .write(false)
            .open(DenyImplicitOpenGate::default())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the backing file `{}` cannot be opened ({e}); it must be a raw or qcow2 \
                         image with no backing file of its own",
                        path.display()
                    ),
                )
            })?;
        Ok(FormatAccess::new(inner))
    }

    fn open_storage(&mut self, options: StorageOpenOptions) -> io::Result<ImagoFile> {
        let name = options
            .get_filename()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let shown = name.display();
        // A writable file named by the header is an external data file.
        if options.get_writable() {
            return Err(BackingGate::refuse(format!(
                "the image needs the external data file `{shown}`, which keel-vmm never opens"
            )));
        }
        let Some(backing) = self.backing.take() else {
            return Err(BackingGate::refuse(match &self.allowed {
                Some(allowed) => format!(
                    "the image asks for `{shown}` besides its backing file `{}`",
                    allowed.display()
                ),
                None => format!(
                    "the image names the backing file `{shown}`; backing files are refused \
                     unless the disk's spec allows one beneath images/ (backing = \
                     \"images/NAME\")"
                ),
            }));
        };
        let wanted = normalize(&name);
        if wanted != normalize(&backing.path) && wanted != normalize(&backing.host_path) {
            let message = format!(
                "the image names the backing file `{shown}`, but its spec allows only `{}` \
                 (point the image at it with `qemu-img rebase -u -b`)",
                backing.path.display()
            );
            self.backing = Some(backing);
            return Err(BackingGate::refuse(message));
        }
        self.storage_given = true;
        let options = StorageOpenOptions::new()
            .write(false)
            .filename(&backing.path);
        ImagoFile::from_open_file(backing.file, options)
    }
}

/// `path` with `.` dropped and `..` taken back lexically. Only compares
/// names: the backing file itself was opened beneath `images/` already.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
