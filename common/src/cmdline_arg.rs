//! How keel-vmm hands the loader a setting (`keel.entry=`, `keel.append=`)
//! through the Keel kernel's command line: one word, with every byte
//! outside `[A-Za-z0-9._~/-]` written as `%XX`. Both sides use this module,
//! so the rule is defined once.

/// `keel.entry=`: the boot entry the spec names (absent: the default).
pub const ENTRY_KEY: &str = "keel.entry";
/// `keel.append=`: the spec's `cmdline_append`.
pub const APPEND_KEY: &str = "keel.append";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("\"%\" at byte {at} is not followed by two hex digits")]
    BadEscape { at: usize },
    #[error("the decoded bytes are not UTF-8")]
    NotUtf8,
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'/' | b'-')
}

/// `value` as one command-line word.
pub fn encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The value [`encode`] made `word` from. Plain bytes outside the encoder's
/// set are taken as they are (a hand-written command line may have them).
pub fn decode(word: &str) -> Result<String, DecodeError> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let digits = bytes
                .get(i + 1)
                .and_then(|h| hex(*h))
                .zip(bytes.get(i + 2).and_then(|l| hex(*l)));
            let (high, low) = digits.ok_or(DecodeError::BadEscape { at: i })?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stays_one_plain_word() {
        let values = [
            "",
            "Debian GNU/Linux",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
            "quiet splash=\"a b\" init=/bin/sh 100%",
            "tab\tnewline\nnul\0end",
            "ünïcødé ✓ 日本",
            "%41 is not A",
            "keel.entry=nested",
        ];
        for value in values {
            let word = encode(value);
            assert!(
                word.bytes()
                    .all(|b| is_plain(b) || b == b'%' || b.is_ascii_hexdigit()),
                "{word}"
            );
            assert!(
                !word.contains(|c: char| c.is_whitespace() || c == '='),
                "{word}"
            );
            assert_eq!(decode(&word).as_deref(), Ok(value), "{word}");
        }
        // Every byte value survives.
        let all: String = (0u8..=127).map(char::from).collect();
        assert_eq!(decode(&encode(&all)), Ok(all));
    }

    #[test]
    fn encodes_exactly_the_documented_set() {
        assert_eq!(encode("aZ09._~/-"), "aZ09._~/-");
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("%"), "%25");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("x=y,z"), "x%3Dy%2Cz");
    }

    #[test]
    fn decodes_either_case_and_plain_bytes() {
        assert_eq!(decode("%c3%A9").as_deref(), Ok("é"));
        assert_eq!(decode("a+b:c").as_deref(), Ok("a+b:c"));
    }

    #[test]
    fn malformed_words_are_sentences_not_panics() {
        assert_eq!(decode("abc%"), Err(DecodeError::BadEscape { at: 3 }));
        assert_eq!(decode("%4"), Err(DecodeError::BadEscape { at: 0 }));
        assert_eq!(decode("x%zz"), Err(DecodeError::BadEscape { at: 1 }));
        assert_eq!(decode("%FF%FE"), Err(DecodeError::NotUtf8));
        assert_eq!(
            decode("%").map_err(|e| e.to_string()),
            Err("\"%\" at byte 0 is not followed by two hex digits".to_string())
        );
    }
}
