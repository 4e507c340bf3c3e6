//! Free space on the upload root is checked before an upload starts, so
//! that an upload cannot fill the data partition the host and every
//! guest's disk live on.
//!
//! What counts is what the upload will allocate: the data bytes the
//! client announced, in whole [`UPLOAD_BLOCK`]s, not the file's length;
//! the holes of a sparse file take no space. (A 20 GiB image holding
//! 2 GiB needs 2 GiB plus the reserve.) The upload itself refuses chunks
//! that would touch more blocks than that, so the announcement binds.
//! File system metadata for the extents is left to the reserve.

use std::path::Path;

use nix::sys::statvfs::statvfs;

use super::UploadError;
use crate::messages::{ErrorCode, UPLOAD_BLOCK};

/// The share of the file system the host keeps free for logs, specs,
/// guests' sparse disks and the agent's state (5%, as ext4 keeps for
/// root by default) ...
pub const RESERVE_PERCENT: u64 = 5;
/// ... but at least this much, so that a small data partition (a USB
/// stick, the test image) still has room to grow ...
pub const MIN_RESERVE: u64 = 16 * 1024 * 1024;
/// ... and at most this much, so that a large disk is not kept idle.
pub const MAX_RESERVE: u64 = 2 * 1024 * 1024 * 1024;

/// The reserve kept free on a file system of `total` bytes.
pub fn default_reserve(total: u64) -> u64 {
    (total / 100 * RESERVE_PERCENT).clamp(MIN_RESERVE, MAX_RESERVE)
}

/// Refuses an upload of `data` bytes into `dir` that would leave less
/// than the reserve free: `reserve`, or by default [`default_reserve`].
pub fn check_free_space(dir: &Path, data: u64, reserve: Option<u64>) -> Result<(), UploadError> {
    let size = data.div_ceil(UPLOAD_BLOCK).saturating_mul(UPLOAD_BLOCK);
    let st = statvfs(dir).map_err(|e| {
        (
            ErrorCode::Internal,
            format!("Cannot read the free space of {}: {e}.", dir.display()),
        )
    })?;
    let block = st.fragment_size() as u64;
    let available = (st.blocks_available() as u64).saturating_mul(block);
    let total = (st.blocks() as u64).saturating_mul(block);
    let reserve = reserve.unwrap_or_else(|| default_reserve(total));
    let needed = size.saturating_add(reserve);
    if needed > available {
        return Err((
            ErrorCode::Conflict,
            format!(
                "Not enough free space on the host: the upload needs {size} bytes of data (holes take none) plus {reserve} kept free for the host ({needed} in all), and {available} bytes are available."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_scales_within_bounds() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(default_reserve(100 * MIB), MIN_RESERVE);
        assert_eq!(default_reserve(10_000 * MIB), 500 * MIB);
        assert_eq!(default_reserve(4_000_000 * MIB), MAX_RESERVE);
    }
}
