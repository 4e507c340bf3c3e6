//! Several initrds (microcode first, then the distribution's) become one,
//! as a boot loader loads them: each starts 4-byte aligned, the gaps are
//! zeros, which the kernel's initramfs unpacker skips.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The most initrd bytes concatenated (the tmpfs they land in is RAM).
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("the initrds are more than {max} bytes together, the most the loader copies")]
    TooLarge { max: u64 },
    #[error("cannot read initrd {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the combined initrd {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Writes `parts` one after another, each padded to 4 bytes, to `out`;
/// returns the bytes written. Copying stops past `max` in all, whatever
/// the files' sizes said when the plan was made.
pub fn concatenate(parts: &[PathBuf], out: &Path, max: u64) -> Result<u64, InitrdError> {
    let write_err = |source| InitrdError::Write {
        path: out.display().to_string(),
        source,
    };
    let result = (|| {
        let mut target = File::create(out).map_err(write_err)?;
        let mut total = 0u64;
        for part in parts {
            let read_err = |source| InitrdError::Read {
                path: part.display().to_string(),
                source,
            };
            let mut file = File::open(part).map_err(read_err)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                };
                total += n as u64;
                if total > max {
                    return Err(InitrdError::TooLarge { max });
                }
                target.write_all(&buf[..n]).map_err(write_err)?;
            }
            let pad = (4 - total % 4) % 4;
            target
                .write_all(&[0u8; 3][..pad as usize])
                .map_err(write_err)?;
            total += pad;
        }
        target.sync_all().map_err(write_err)?;
        Ok(total)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(contents: &[&[u8]]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = dir.path().join(format!("part{i}"));
                std::fs::write(&p, c).unwrap();
                p
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn joins_in_order_with_four_byte_alignment() {
        let (dir, parts) = files(&[b"micro", b"12345678", b"abc"]);
        let out = dir.path().join("initrd");
        let n = concatenate(&parts, &out, MAX_TOTAL_BYTES).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes, b"micro\x00\x00\x0012345678abc\x00");
        assert_eq!(n, bytes.len() as u64);
    }

    #[test]
    fn too_much_is_refused_and_nothing_is_left() {
        let (dir, parts) = files(&[&[1u8; 600], &[2u8; 600]]);
        let out = dir.path().join("initrd");
        let err = concatenate(&parts, &out, 1000).unwrap_err();
        assert!(matches!(err, InitrdError::TooLarge { max: 1000 }), "{err}");
        assert!(!out.exists());
        // Exactly at the limit is fine.
        assert_eq!(concatenate(&parts, &out, 1200).unwrap(), 1200);
    }

    #[test]
    fn a_missing_part_is_named() {
        let (dir, mut parts) = files(&[b"one"]);
        parts.push(dir.path().join("gone"));
        let out = dir.path().join("initrd");
        let err = concatenate(&parts, &out, MAX_TOTAL_BYTES).unwrap_err();
        assert!(err.to_string().starts_with("cannot read initrd "), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
        assert!(!out.exists());
    }
}
