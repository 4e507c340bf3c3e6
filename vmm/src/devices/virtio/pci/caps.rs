//! The configuration space of a virtio-pci device (virtio 1.x, section
//! 4.1): its ids and class, one 64-bit memory BAR holding every structure,
//! the vendor-specific capabilities that point into it, and MSI-X.
//!
//! BAR 0 layout, one page per structure so each can be mapped alone:
//!
//! | offset   | structure                                   |
//! |----------|---------------------------------------------|
//! | 0x0000   | common configuration                        |
//! | 0x1000   | ISR status (one byte, read clears)          |
//! | 0x2000   | device-specific configuration               |
//! | 0x3000   | notifications, queue `i` at `i * 4`         |
//! | 0x4000   | MSI-X table                                 |
//! | 0x5000   | MSI-X pending bit array                     |

use crate::devices::pci::{BarKind, ConfigError, MsixCap, PciConfig, PciIds};

/// Red Hat's virtio vendor id; modern device ids are 0x1040 + device type.
const VIRTIO_VENDOR: u16 = 0x1af4;
const VIRTIO_DEVICE_BASE: u16 = 0x1040;
/// Non-transitional devices have revision 1 and a subsystem id of at least
/// 0x40; QEMU's subsystem id, which guests already know.
const VIRTIO_REVISION: u8 = 1;
const VIRTIO_SUBSYSTEM: u16 = 0x1100;

/// The BAR every structure lives in, and its size.
pub const BAR_INDEX: usize = 0;
pub const BAR_SIZE: u64 = 0x8000;
pub const BAR_KIND: BarKind = BarKind::Mem64 {
    prefetchable: false,
};

pub const COMMON_OFFSET: u64 = 0x0000;
pub const COMMON_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const DEVICE_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_LEN: u64 = 0x1000;
/// Queue `i` is notified at `NOTIFY_OFFSET + i * NOTIFY_MULTIPLIER`.
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// One vector per queue plus one for config changes; the table page holds
/// 256 vectors.
pub const MAX_QUEUES: usize = 255;

/// Vendor-specific capability and the virtio structure types.
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// Class codes (base, subclass, interface) guests expect per device type.
fn class_code(device_type: u32) -> u32 {
    use virtio_bindings::virtio_ids::{
        VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, VIRTIO_ID_VSOCK,
    };
    match device_type {
        VIRTIO_ID_NET => 0x02_00_00,
        VIRTIO_ID_BLOCK => 0x01_80_00,
        VIRTIO_ID_CONSOLE | VIRTIO_ID_VSOCK => 0x07_80_00,
        _ => 0xff_00_00,
    }
}

/// A `struct virtio_pci_cap` body (after id and next), with the notify
/// multiplier appended for the notify capability.
fn virtio_cap(cfg_type: u8, offset: u64, len: u64, multiplier: Option<u32>) -> Vec<u8> {
    let cap_len: u8 = if multiplier.is_some() { 20 } else { 16 };
    let mut body = vec![cap_len, cfg_type, BAR_INDEX as u8, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(m) = multiplier {
        body.extend_from_slice(&m.to_le_bytes());
    }
    body
}

/// The configuration space of a device of `device_type` with `vectors`
/// MSI-X vectors, its BAR at `bar_addr`, INTA# on `intx_line`.
pub fn build(
    device_type: u32,
    vectors: u16,
    bar_addr: u64,
    intx_line: u8,
) -> Result<(PciConfig, MsixCap), ConfigError> {
    let ids = PciIds {
        vendor: VIRTIO_VENDOR,
        device: VIRTIO_DEVICE_BASE.wrapping_add(device_type as u16),
        revision: VIRTIO_REVISION,
        class: class_code(device_type),
        subsystem_vendor: VIRTIO_VENDOR,
        subsystem: VIRTIO_SUBSYSTEM,
    };
    let mut config = PciConfig::new(ids, 1, intx_line);
    config.add_bar(BAR_INDEX, bar_addr, BAR_SIZE, BAR_KIND)?;
    for (cfg_type, offset, len, multiplier) in [
        (CFG_COMMON, COMMON_OFFSET, COMMON_LEN, None),
        (
            CFG_NOTIFY,
            NOTIFY_OFFSET,
            NOTIFY_LEN,
            Some(NOTIFY_MULTIPLIER),
        ),
        (CFG_ISR, ISR_OFFSET, 1, None),
        (CFG_DEVICE, DEVICE_OFFSET, DEVICE_LEN, None),
    ] {
        config.add_capability(CAP_VENDOR, &virtio_cap(cfg_type, offset, len, multiplier))?;
    }
    let msix = MsixCap::add_to(
        &mut config,
        vectors,
        BAR_INDEX as u8,
        MSIX_TABLE_OFFSET as u32,
        MSIX_PBA_OFFSET as u32,
    )?;
    Ok((config, msix))
}
