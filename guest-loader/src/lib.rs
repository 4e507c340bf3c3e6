//! The pure heart of Keel's from-disk guest boot: given the guest's
//! filesystems (already mounted read-only by the caller), find its boot
//! entries and choose the kernel, initrds and command line to kexec.
//!
//! No mounting, no kexec here: everything goes through [`BootFs`], so the
//! parsers and the chooser are tested on hand-made trees.

pub mod bls;
pub mod chooser;
pub mod debian;
pub mod entry;
pub mod extlinux;
pub mod fs;
pub mod grub2;
pub mod grub_legacy;
mod include;
pub mod limits;
pub mod probe;
mod text;
pub mod uki;
pub mod version;
pub mod xen_names;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod testutil;

pub use chooser::{choose, BootFile, BootPlan, ChooseError, Filesystem};
pub use entry::{BootEntry, ConfigError, EntryKind, EntryList, Format, MenuStep, RootHint, Source};
pub use fs::{BootFs, DirFs, FsError};
