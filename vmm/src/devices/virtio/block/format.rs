//! Which format a disk image is served in: the spec's `format`, checked
//! against the image's first bytes.
//!
//! # The rule, and why
//!
//! A guest writes whatever it likes into a raw disk, including the four
//! bytes of the qcow2 magic (`QFI\xfb`) at sector 0. If a later boot
//! detected the format from the header, that raw disk would become a
//! qcow2 image whose metadata the guest wrote: the guest would decide
//! where its sectors come from (and, were backing files followed, which
//! host files it reads). So detection never turns a disk into qcow2:
//!
//! * `format = "qcow2"`: the image must start with the qcow2 magic, else
//!   it is refused. Only this serves qcow2.
//! * `format = "raw"`: the bytes are served as they are, whatever they
//!   start with (a guest may keep a qcow2 image on its raw disk; it is
//!   its data, never parsed here).
//! * no `format`: raw, unless the image starts with the qcow2 magic; that
//!   is refused, because it may be a raw disk its guest wrote a qcow2
//!   header into, or a qcow2 image the operator forgot to declare. The
//!   error says to declare one or the other.
//!
//! The header is only looked at to refuse; it never chooses the format.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use keel_common::guest::DiskFormat;
use log::warn;

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Why the image's format was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read the image's first bytes: {0}")]
    Read(#[source] io::Error),
    #[error(
        "it is declared qcow2 but holds no qcow2 image (it does not start with the qcow2 magic)"
    )]
    NotQcow2,
    #[error(
        "it holds a qcow2 image but its spec names no format: add format = \"qcow2\" to serve it \
         as qcow2, or format = \"raw\" to give the guest its bytes as they are (a format is never \
         detected, so that a guest cannot turn its raw disk into a qcow2 image)"
    )]
    Undeclared,
}

/// Applies the rule above to `file` declared as `declared`.
pub fn resolve(file: &File, declared: Option<DiskFormat>) -> Result<DiskFormat, FormatError> {
    let magic = starts_with_qcow2_magic(file).map_err(FormatError::Read)?;
    match (declared, magic) {
        (Some(DiskFormat::Qcow2), true) => Ok(DiskFormat::Qcow2),
        (Some(DiskFormat::Qcow2), false) => Err(FormatError::NotQcow2),
        (Some(DiskFormat::Raw), magic) => {
            if magic {
                warn!("virtio-blk: a disk declared raw starts with the qcow2 magic; serving it as raw");
            }
            Ok(DiskFormat::Raw)
        }
        (None, true) => Err(FormatError::Undeclared),
        (None, false) => Ok(DiskFormat::Raw),
    }
}

/// Whether the file's first four bytes are the qcow2 magic; a file
/// shorter than that is not qcow2.
fn starts_with_qcow2_magic(file: &File) -> io::Result<bool> {
    let mut head = [0u8; QCOW2_MAGIC.len()];
    let mut done = 0;
    while done < head.len() {
        match file.read_at(&mut head[done..], done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(head == QCOW2_MAGIC)
}
