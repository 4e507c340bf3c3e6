//! Assembles the flat test payloads in `tests/payloads/` with binutils.

use std::path::Path;
use std::process::Command;

/// Where payloads are linked and loaded.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// Assembles `tests/payloads/NAME.S` with `--defsym` values and links it
/// at [`LOAD_ADDR`] as a flat binary; `dir` holds the intermediate files.
pub fn assemble(name: &str, defsyms: &[(&str, u64)], dir: &Path) -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/payloads")
        .join(format!("{name}.S"));
    let object = dir.join(format!("{name}.o"));
    let binary = dir.join(format!("{name}.bin"));
    let mut as_cmd = Command::new("as");
    as_cmd.arg("--32");
    for (symbol, value) in defsyms {
        as_cmd.arg("--defsym").arg(format!("{symbol}={value}"));
    }
    let status = as_cmd
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .expect("run as (binutils)");
    assert!(status.success(), "assembling {} failed", source.display());
    let status = Command::new("ld")
        .args([
            "-m",
            "elf_i386",
            &format!("-Ttext={LOAD_ADDR:#x}"),
            "--oformat=binary",
        ])
        .arg(&object)
        .arg("-o")
        .arg(&binary)
        .status()
        .expect("run ld (binutils)");
    assert!(status.success(), "linking {name} failed");
    std::fs::read(&binary).expect("read payload")
}
