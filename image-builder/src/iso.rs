//! The hybrid ISO: ISO 9660 for virtual CD drives, with the ESP appended as
//! a GPT partition and named in the El Torito catalogue, so the same file
//! boots from a BMC's virtual media and when written to a USB stick.

use std::path::Path;
use std::process::Command;

use crate::ImageError;

/// Runs xorriso to build `out` from the files under `root` and `esp_image`.
pub fn build(out: &Path, root: &Path, esp_image: &Path, epoch: u64) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(out);
    let (year, month, day, hour, min, sec) = crate::reproducible::civil_from_unix(epoch);
    let stamp = format!("{year:04}{month:02}{day:02}{hour:02}{min:02}{sec:02}00");
    let mut cmd = Command::new("xorriso");
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-report_about", "SORRY", "-as", "mkisofs"])
        .args([
            "-iso-level",
            "3",
            "-full-iso9660-filenames",
            "-joliet",
            "-rational-rock",
        ])
        .args(["-volid", "KEEL", "-publisher", "Keel"])
        .arg(format!("--modification-date={stamp}"))
        .arg("--set_all_file_dates")
        .arg(&stamp)
        .args(["-append_partition", "2", crate::disk::ESP_TYPE])
        .arg(esp_image)
        .args([
            "-appended_part_as_gpt",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
        ])
        .arg("-o")
        .arg(out)
        .arg(root);
    crate::run_tool(&mut cmd)
}
