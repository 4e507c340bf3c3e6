//! A failure: printed on the console, sent to keel-vmm, then power-off.

use keel_common::guest_ports::LOADER_REPORT_MAX;

use crate::{console, port};

/// The report keel-vmm is sent: printable ASCII only (the message names
/// files of a hostile disk), line breaks and tabs as spaces, other control
/// and non-ASCII bytes dropped, at most [`LOADER_REPORT_MAX`] bytes.
pub fn sanitize(message: &str) -> Vec<u8> {
    message
        .bytes()
        .filter_map(|b| match b {
            b'\n' | b'\r' | b'\t' => Some(b' '),
            0x20..=0x7e => Some(b),
            _ => None,
        })
        .take(LOADER_REPORT_MAX)
        .collect()
}

/// Reports `message` and powers the machine off.
pub fn fail(message: &str) -> ! {
    console::say(format_args!("error: {message}"));
    if let Err(e) = port::send(&sanitize(message)) {
        console::say(format_args!("cannot report the error to keel-vmm: {e}"));
    }
    keel_guest_rt::power_off()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_common::guest_ports::LOADER_REPORT_END;

    #[test]
    fn keeps_printable_ascii_only() {
        assert_eq!(
            sanitize("no entry in /boot/grub/grub.cfg: \"x\""),
            b"no entry in /boot/grub/grub.cfg: \"x\""
        );
        assert_eq!(
            sanitize("entries are:\n  a\tb\r\n"),
            b"entries are:   a b  "
        );
        assert_eq!(
            sanitize("d\u{e9}j\u{e0} \u{1b}[31mred\0\x7f!"),
            b"dj [31mred!"
        );
        assert!(!sanitize("a\0b").contains(&LOADER_REPORT_END));
    }

    #[test]
    fn cuts_at_the_maximum() {
        let long = "x".repeat(LOADER_REPORT_MAX * 3);
        assert_eq!(sanitize(&long).len(), LOADER_REPORT_MAX);
        // Dropped bytes do not count.
        let mixed = format!(
            "{}{}",
            "\u{e9}".repeat(1000),
            "y".repeat(LOADER_REPORT_MAX + 5)
        );
        assert_eq!(sanitize(&mixed), vec![b'y'; LOADER_REPORT_MAX]);
        assert_eq!(sanitize(""), b"");
    }
}
