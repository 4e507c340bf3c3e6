//! Stops every virtio device before the kexec. The new kernel finds them
//! as a fresh boot would, and none of them writes into memory that now
//! belongs to it: a NIC keeps its receive buffers posted until its driver
//! resets it, and a packet arriving between the kexec and the new
//! kernel's probe would land in the new kernel's memory. Unbinding a
//! virtio driver resets its device (status 0), which keel-vmm's devices
//! honour by dropping their queues.

use std::path::Path;

/// Where the virtio bus lists its drivers and the devices bound to them.
pub const VIRTIO_DRIVERS: &str = "/sys/bus/virtio/drivers";

/// Unbinds every device under `drivers`; returns how many were let go and
/// the failures, for the console.
pub fn unbind_all(drivers: &Path) -> (usize, Vec<String>) {
    let mut done = 0;
    let mut failures = Vec::new();
    let Ok(entries) = std::fs::read_dir(drivers) else {
        return (0, failures);
    };
    for driver in entries.flatten() {
        let Ok(devices) = std::fs::read_dir(driver.path()) else {
            continue;
        };
        for device in devices.flatten() {
            let name = device.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with("virtio")) else {
                continue;
            };
            match std::fs::write(driver.path().join("unbind"), name) {
                Ok(()) => done += 1,
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    (done, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_virtio_device_is_written_to_its_drivers_unbind() {
        let dir = tempfile::tempdir().unwrap();
        for (driver, devices) in [
            ("virtio_net", &["virtio0"][..]),
            ("virtio_blk", &["virtio1", "virtio2"]),
        ] {
            let d = dir.path().join(driver);
            std::fs::create_dir_all(&d).unwrap();
            for dev in devices {
                std::fs::create_dir_all(d.join(dev)).unwrap();
            }
            // Not devices: the driver's own attributes.
            std::fs::write(d.join("uevent"), "").unwrap();
        }
        let (done, failures) = unbind_all(dir.path());
        assert_eq!((done, failures.len()), (3, 0), "{failures:?}");
        // A fake sysfs keeps only the last write; each driver got one of its own.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("virtio_net/unbind")).unwrap(),
            "virtio0"
        );
        assert!(
            std::fs::read_to_string(dir.path().join("virtio_blk/unbind"))
                .unwrap()
                .starts_with("virtio")
        );
        assert_eq!(unbind_all(&dir.path().join("none")), (0, Vec::new()));
    }
}
