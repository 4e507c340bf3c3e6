//! One kernel command-line value carrying arbitrary text: the VMM passes
//! a `from = "disk"` guest's `entry` and `cmdline_append` to the boot
//! loader this way. Bytes outside `[A-Za-z0-9._~/-]` become `%XX`, so the
//! value holds no space, quote or `=` the kernel would split on.

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'/' | b'-')
}

/// `text` as one command-line word.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text [`encode`] made, or `None` when `word` is not such a word
/// (a stray `%`, bad hex, bytes that are not UTF-8).
pub fn decode(word: &str) -> Option<String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = word.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_hold_no_separator() {
        for text in [
            "",
            "Debian GNU/Linux",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-28-amd64",
            "quiet console=tty0 a=\"b c\"",
            "100% ünïcode\ttab\nnewline",
            "1>2",
        ] {
            let word = encode(text);
            assert!(
                word.bytes().all(|b| plain(b) || b == b'%'),
                "{text:?} -> {word:?}"
            );
            assert_eq!(decode(&word).as_deref(), Some(text), "{word}");
        }
        assert_eq!(encode("a b"), "a%20b");
    }

    #[test]
    fn malformed_words_are_refused() {
        for word in ["%", "%4", "%zz", "abc%", "%C3"] {
            assert_eq!(decode(word), None, "{word}");
        }
    }
}
