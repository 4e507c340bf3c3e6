//! The keel-vmm control protocol: postcard messages in length-prefixed
//! frames over the VMM's Unix socket (`--api-socket`), one message per
//! frame as [`crate::frame`] reads and writes them (at most
//! [`crate::frame::LOCAL_MAX_FRAME`] bytes). After `ConsoleAttach`, the VMM sends `Console` frames with
//! guest output on that connection as it appears, and the client may send
//! `ConsoleInput` frames.

use serde::{Deserialize, Serialize};

/// The protocol's framing under the names its users call it by.
pub use crate::frame::{read_message as read_frame, write_message as write_frame, FrameError};

/// A request to the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmRequest {
    Info,
    Stats,
    Pause,
    Resume,
    /// Ctrl-alt-del to the guest: a clean shutdown or reboot, as the guest decides.
    Shutdown,
    /// Ends the VMM at once.
    Kill,
    /// Turns this connection into a console stream.
    ConsoleAttach,
    ConsoleInput(Vec<u8>),
}

/// Whether the vCPUs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Running,
    Paused,
}

/// Answer to `Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub uptime_ms: u64,
    /// When the guest hit the boot timer port, in ms since the VMM started.
    pub boot_marker_ms: Option<u64>,
}

/// Counters of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStats {
    pub name: String,
    pub counters: Vec<(String, u64)>,
}

/// Answer to `Stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStats {
    pub devices: Vec<DeviceStats>,
    /// vCPU exits to the VMM by reason.
    pub exits: Vec<(String, u64)>,
}

/// A response from the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmResponse {
    Ok,
    Info(VmInfo),
    Stats(VmStats),
    Console(Vec<u8>),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &VmmRequest::ConsoleInput(b"ls\n".to_vec())).expect("write");
        write_frame(&mut buf, &VmmRequest::Info).expect("write");
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame::<_, VmmRequest>(&mut r).expect("read"),
            VmmRequest::ConsoleInput(b"ls\n".to_vec())
        );
        assert_eq!(
            read_frame::<_, VmmRequest>(&mut r).expect("read"),
            VmmRequest::Info
        );
        assert!(r.is_empty());
    }

    #[test]
    fn oversized_truncated_and_garbage_frames_fail_cleanly() {
        use crate::frame::LOCAL_MAX_FRAME;
        let huge = (LOCAL_MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            read_frame::<_, VmmRequest>(&mut huge.as_slice()),
            Err(FrameError::TooLarge {
                len,
                max: LOCAL_MAX_FRAME
            }) if len == LOCAL_MAX_FRAME + 1
        ));
        let truncated = [0u8, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_frame::<_, VmmRequest>(&mut truncated.as_slice()),
            Err(FrameError::Truncated {
                expected: 9,
                got: 2
            })
        ));
        let garbage = [0u8, 0, 0, 1, 0xff];
        assert!(matches!(
            read_frame::<_, VmmRequest>(&mut garbage.as_slice()),
            Err(FrameError::Decode(_))
        ));
    }
}
