//! Every bound the loader puts on what a guest disk can make it do.

/// The largest boot loader config read (grub.cfg, menu.lst, extlinux.conf).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The largest single BLS entry file.
pub const MAX_BLS_ENTRY_BYTES: u64 = 64 * 1024;
/// GRUB's environment block is exactly this long; a bigger file is not one.
pub const GRUBENV_BYTES: u64 = 1024;
/// Boot entries kept from one config (GRUB counts menu items; so do we).
pub const MAX_ENTRIES: usize = 512;
/// `source`/`configfile`/`INCLUDE` nesting.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Includes followed in all, so `source a` repeated cannot multiply work.
pub const MAX_INCLUDES: usize = 64;
/// Bytes read through includes in all, the main config included.
pub const MAX_TOTAL_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Nesting of `{ }` blocks (submenus, functions) in grub.cfg.
pub const MAX_BLOCK_DEPTH: usize = 16;
/// Bytes grub.cfg's variables may expand to in all (`set a=$a$a` doubles).
pub const MAX_EXPANDED_BYTES: u64 = 16 * 1024 * 1024;
/// Distinct variables a grub.cfg may set.
pub const MAX_VARS: usize = 1024;
/// Symlinks followed while resolving one path (Linux's own limit).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// The longest path accepted from a config or a symlink.
pub const MAX_PATH_BYTES: usize = 4096;
/// Directory entries looked at in one listing.
pub const MAX_DIR_ENTRIES: usize = 4096;
/// x86's COMMAND_LINE_SIZE less the terminating NUL.
pub const MAX_CMDLINE_BYTES: usize = 2047;
