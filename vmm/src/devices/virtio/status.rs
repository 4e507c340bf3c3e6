//! The device status state machine and feature negotiation (virtio 1.x,
//! 3.1.1), shared by both transports so that a driver meets the same
//! rules over MMIO and PCI.

use log::debug;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
};

use super::VIRTIO_F_VERSION_1;

/// What a status write (other than 0, which resets) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusChange {
    /// The status after the write.
    pub status: u32,
    /// The write added DRIVER_OK: the transport activates the device.
    pub activate: bool,
}

/// Moves `status` forward by the driver's write of `value`. The driver may
/// only add bits, in the order ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK
/// (several at once are taken one by one); FEATURES_OK needs
/// VIRTIO_F_VERSION_1 among `acked_features` (this is a modern-only VMM);
/// FAILED is always accepted. Anything else is ignored, which the driver
/// notices when it reads the status back. `transport` names the caller in
/// debug logs.
pub(crate) fn next_status(
    transport: &str,
    status: u32,
    value: u32,
    acked_features: u64,
) -> StatusChange {
    let mut change = StatusChange {
        status,
        activate: false,
    };
    if value & status != status {
        debug!("{transport}: ignoring status {value:#x} which clears bits of {status:#x}");
        return change;
    }
    let added = value & !status;
    for (bit, prerequisite) in [
        (ACKNOWLEDGE, 0),
        (DRIVER, ACKNOWLEDGE),
        (FEATURES_OK, ACKNOWLEDGE | DRIVER),
        (DRIVER_OK, ACKNOWLEDGE | DRIVER | FEATURES_OK),
    ] {
        if added & bit == 0 {
            continue;
        }
        // After FAILED or NEEDS_RESET only a reset gets the device going.
        if change.status != prerequisite {
            debug!(
                "{transport}: ignoring status bit {bit:#x} in status {:#x}",
                change.status
            );
            break;
        }
        if bit == FEATURES_OK && acked_features & VIRTIO_F_VERSION_1 == 0 {
            debug!("{transport}: refusing FEATURES_OK without VIRTIO_F_VERSION_1");
            break;
        }
        change.status |= bit;
        change.activate |= bit == DRIVER_OK;
    }
    if added & FAILED != 0 {
        change.status |= FAILED;
    }
    change
}

/// The driver's features after it writes `value` into half `select` (0
/// low, 1 high) of them, keeping only what the device `offered`; `None`
/// when the write is ignored: outside DRIVER..FEATURES_OK, or a select
/// beyond the two halves.
pub(crate) fn driver_features(
    transport: &str,
    status: u32,
    acked: u64,
    select: u32,
    value: u32,
    offered: u64,
) -> Option<u64> {
    if status & (DRIVER | FEATURES_OK) != DRIVER {
        debug!("{transport}: ignoring driver features written in status {status:#x}");
        return None;
    }
    let features = match select {
        0 => (acked & !0xffff_ffff) | u64::from(value),
        1 => (acked & 0xffff_ffff) | u64::from(value) << 32,
        _ => return None,
    };
    Some(features & offered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

    #[test]
    fn status_moves_forward_in_order_only() {
        let step = |status, value| next_status("t", status, value, VIRTIO_F_VERSION_1);
        assert_eq!(
            step(0, ALL),
            StatusChange {
                status: ALL,
                activate: true
            }
        );
        // Skipping DRIVER stops at ACKNOWLEDGE.
        assert_eq!(step(0, ACKNOWLEDGE | FEATURES_OK).status, ACKNOWLEDGE);
        // Clearing a bit is ignored.
        assert_eq!(
            step(ACKNOWLEDGE | DRIVER, ACKNOWLEDGE).status,
            ACKNOWLEDGE | DRIVER
        );
        // FAILED sticks, and then nothing but a reset helps.
        let failed = step(ACKNOWLEDGE, ACKNOWLEDGE | FAILED).status;
        assert_eq!(failed, ACKNOWLEDGE | FAILED);
        assert_eq!(step(failed, failed | DRIVER).status, failed);
    }

    #[test]
    fn features_ok_needs_version_1() {
        let change = next_status("t", ACKNOWLEDGE | DRIVER, ALL, 0);
        assert_eq!(change.status, ACKNOWLEDGE | DRIVER);
        assert!(!change.activate);
    }

    #[test]
    fn driver_features_are_taken_only_while_negotiating() {
        let offered = VIRTIO_F_VERSION_1 | 0b101;
        let status = ACKNOWLEDGE | DRIVER;
        assert_eq!(
            driver_features("t", status, 0, 0, 0b111, offered),
            Some(0b101)
        );
        assert_eq!(
            driver_features("t", status, 0b101, 1, 1, offered),
            Some(VIRTIO_F_VERSION_1 | 0b101)
        );
        assert_eq!(driver_features("t", status, 0, 2, 1, offered), None);
        assert_eq!(
            driver_features("t", status | FEATURES_OK, 0, 0, 1, offered),
            None
        );
        assert_eq!(driver_features("t", ACKNOWLEDGE, 0, 0, 1, offered), None);
    }
}
