//! GRUB's environment block: "# GRUB Environment Block\n", `name=value`
//! lines with '\' escaping, '#' padding, 1024 bytes in all.

use std::collections::HashMap;

use crate::fs::{BootFs, FsError};
use crate::limits::GRUBENV_BYTES;

const HEADER: &[u8] = b"# GRUB Environment Block\n";
const MAX_VARS: usize = 256;

/// The block's variables, or why it is not one.
pub fn parse(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    if bytes.len() as u64 > GRUBENV_BYTES {
        return Err(format!(
            "it is {} bytes, not the {GRUBENV_BYTES} of an environment block",
            bytes.len()
        ));
    }
    let Some(body) = bytes.strip_prefix(HEADER) else {
        return Err("it does not start with \"# GRUB Environment Block\"".to_string());
    };
    let mut vars = HashMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        // A line ends at an unescaped newline.
        let mut line = Vec::new();
        let mut i = 0;
        while i < rest.len() && rest[i] != b'\n' {
            if rest[i] == b'\\' && i + 1 < rest.len() {
                i += 1;
            }
            line.push(rest[i]);
            i += 1;
        }
        rest = &rest[(i + 1).min(rest.len())..];
        if line.first().is_none_or(|c| *c == b'#') {
            continue;
        }
        let line = String::from_utf8_lossy(&line);
        if let Some((name, value)) = line.split_once('=') {
            if vars.len() >= MAX_VARS {
                return Err(format!("it holds more than {MAX_VARS} variables"));
            }
            vars.insert(name.to_string(), value.to_string());
        }
    }
    Ok(vars)
}

/// The variables of the block at `path`; empty (with a warning) when it is
/// missing or not an environment block, as GRUB's `load_env` carries on.
pub fn load(fs: &dyn BootFs, path: &str) -> HashMap<String, String> {
    match fs.read_file(path, GRUBENV_BYTES) {
        Ok(bytes) => parse(&bytes).unwrap_or_else(|why| {
            log::warn!("{path} is ignored: {why}");
            HashMap::new()
        }),
        Err(FsError::NotFound { .. } | FsError::NotADir { .. }) => HashMap::new(),
        Err(e) => {
            log::warn!("{path} is ignored: {e}");
            HashMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(body: &str) -> Vec<u8> {
        let mut b = HEADER.to_vec();
        b.extend_from_slice(body.as_bytes());
        b.resize(1024, b'#');
        b
    }

    #[test]
    fn reads_a_real_block() {
        let vars = parse(&block("saved_entry=gnulinux-advanced-x>gnulinux-6.1.0-18-amd64-advanced-x\nkernelopts=root=UUID=1 ro\nodd=a\\\nb\\\\c\n")).unwrap();
        assert_eq!(
            vars["saved_entry"],
            "gnulinux-advanced-x>gnulinux-6.1.0-18-amd64-advanced-x"
        );
        assert_eq!(vars["kernelopts"], "root=UUID=1 ro");
        assert_eq!(vars["odd"], "a\nb\\c");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn refuses_what_is_not_a_block() {
        assert!(parse(b"saved_entry=1\n")
            .unwrap_err()
            .contains("does not start"));
        let mut big = block("");
        big.push(b'#');
        assert!(parse(&big).unwrap_err().contains("1025 bytes"));
        assert!(parse(&block("")).unwrap().is_empty());
    }
}
