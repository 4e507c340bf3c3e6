//! keel-image: assembles Keel's boot artefacts from the kernel, the release
//! binaries and `rootfs/`, byte for byte reproducibly.
//!
//! Pipeline: initramfs (newc cpio + zstd) -> unified kernel image (systemd
//! EFI stub + kernel + initramfs + command line) -> ESP (FAT) -> `keel.img`
//! (GPT: ESP + KEEL-DATA ext4) and `keel.iso` (hybrid ISO with the ESP as
//! its El Torito EFI image).

pub mod data;
pub mod disk;
pub mod esp;
pub mod guests;
pub mod initramfs;
pub mod iso;
pub mod pipeline;
pub mod reproducible;
pub mod uki;

use std::path::{Path, PathBuf};
use std::process::Command;

/// An image build failure.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("FAT file system: {0}")]
    Fat(String),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
}

impl ImageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs an external tool, turning failure into an error carrying its stderr.
pub fn run_tool(cmd: &mut Command) -> Result<(), ImageError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().map_err(|e| ImageError::Tool {
        tool: tool.clone(),
        status: "not started".into(),
        stderr: format!("{e} (is it installed? run `make deps`)"),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ImageError::Tool {
            tool,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
