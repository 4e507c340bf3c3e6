//! Uploads do not silently replace a file a defined guest uses: init,
//! which holds the specs, says which guests name it. Replacing such a
//! file takes an admin who asks for it, while those guests are stopped.

use std::path::Path;

use super::UploadError;
use crate::agent::init_client::InitClient;
use crate::messages::{ErrorCode, GuestState};
use crate::{Peer, Role};

/// Checks that the upload to `rel` (checked, relative to the upload
/// root) may go ahead. Only a file that exists can be replaced; one a
/// spec names but that is not there yet is simply provided.
pub fn check_replace(
    init: &InitClient,
    root: &Path,
    rel: &Path,
    peer: &Peer,
    replace: bool,
) -> Result<(), UploadError> {
    if std::fs::symlink_metadata(root.join(rel)).is_err() {
        return Ok(());
    }
    let shown = rel.display();
    let users = init.file_users(rel)?;
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = users.iter().map(|g| g.name.as_str()).collect();
    let names = names.join(", ");
    if !replace {
        return Err((
            ErrorCode::Conflict,
            format!(
                "{shown} is used by guest {names}; an admin may replace it with `keelctl upload --replace` while the guest is stopped."
            ),
        ));
    }
    if peer.role < Role::Admin {
        return Err((
            ErrorCode::Unauthorized,
            format!("{shown} is used by guest {names}; only an admin may replace it."),
        ));
    }
    let running: Vec<&str> = users
        .iter()
        .filter(|g| g.state.is_active() || g.state == GuestState::Restarting)
        .map(|g| g.name.as_str())
        .collect();
    if !running.is_empty() {
        return Err((
            ErrorCode::Conflict,
            format!(
                "{shown} is used by guest {}, which is running; stop it before replacing the file.",
                running.join(", ")
            ),
        ));
    }
    Ok(())
}
