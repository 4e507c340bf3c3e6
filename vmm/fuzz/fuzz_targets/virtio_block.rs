//! virtio-blk request handling against a hostile driver.
//!
//! Input: a control byte (bit 0: read-only disk), the driver's setup
//! header and ops (see the crate docs); no device-specific ops. The disk
//! is a 1 MiB scratch file, unlinked at once, shared by every run.
#![no_main]

use std::fs::File;
use std::sync::OnceLock;

use keel_vmm::devices::virtio::{Block, BlockOptions, VirtioDevice};
use keel_vmm_fuzz::{Driver, Input, Step};
use libfuzzer_sys::fuzz_target;

const DISK_LEN: u64 = 1 << 20;

fn disk() -> &'static File {
    static DISK: OnceLock<File> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("keel-vmm-fuzz-{}.img", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("cannot create the scratch disk");
        std::fs::remove_file(&path).expect("cannot unlink the scratch disk");
        file.set_len(DISK_LEN)
            .expect("cannot size the scratch disk");
        file
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ctl = input.u8();
    let options = BlockOptions {
        read_only: ctl & 1 != 0,
        serial: "fuzz".into(),
        format: None,
    };
    let file = disk().try_clone().expect("cannot duplicate the disk fd");
    let mut block = Block::new(file, options).expect("cannot create the block device");
    let mut driver = Driver::new(&mut input, 1, block.device_features());
    driver.activate(&mut block);
    while !matches!(driver.step(&mut input, Some(&mut block)), Step::End) {}
    driver.reset(&mut block);
});
