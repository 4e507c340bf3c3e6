//! Free space on the upload root is checked before an upload starts, so
//! that an upload cannot fill the data partition the host and every
//! guest's disk live on.

use std::path::Path;

use nix::sys::statvfs::statvfs;

use super::UploadError;
use crate::messages::ErrorCode;

/// The least the host keeps free: logs, specs, guests' sparse disks and
/// the agent's state need room to grow.
pub const MIN_RESERVE: u64 = 256 * 1024 * 1024;
/// The share of the file system kept free, when it is more than
/// [`MIN_RESERVE`] (5%, as ext4 keeps for root by default).
pub const RESERVE_PERCENT: u64 = 5;

/// Refuses an upload of `size` bytes into `dir` that would leave less
/// than the reserve free: `reserve`, or by default the larger of
/// [`MIN_RESERVE`] and [`RESERVE_PERCENT`] of the file system.
pub fn check_free_space(dir: &Path, size: u64, reserve: Option<u64>) -> Result<(), UploadError> {
    let st = statvfs(dir).map_err(|e| {
        (
            ErrorCode::Internal,
            format!("Cannot read the free space of {}: {e}.", dir.display()),
        )
    })?;
    let block = st.fragment_size() as u64;
    let available = (st.blocks_available() as u64).saturating_mul(block);
    let total = (st.blocks() as u64).saturating_mul(block);
    let reserve = reserve.unwrap_or_else(|| MIN_RESERVE.max(total / 100 * RESERVE_PERCENT));
    let needed = size.saturating_add(reserve);
    if needed > available {
        return Err((
            ErrorCode::Conflict,
            format!(
                "Not enough free space on the host: the upload needs {size} bytes plus {reserve} kept free for the host ({needed} in all), and {available} bytes are available."
            ),
        ));
    }
    Ok(())
}
