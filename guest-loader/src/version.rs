//! Version ordering for kernel versions and entry names, in the spirit of
//! rpm's and systemd's: digit runs compare as numbers, letter runs as text,
//! a digit run sorts after a letter run, and '~' sorts before everything.

use std::cmp::Ordering;

pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        // '~' before anything, even the end.
        match (a.first() == Some(&b'~'), b.first() == Some(&b'~')) {
            (true, true) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        a = skip_separators(a);
        b = skip_separators(b);
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => {
                return if b[0] == b'~' {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, true) => {
                return if a[0] == b'~' {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, false) => {}
        }
        if a[0] == b'~' || b[0] == b'~' {
            continue;
        }
        let (a_digit, b_digit) = (a[0].is_ascii_digit(), b[0].is_ascii_digit());
        if a_digit != b_digit {
            return if a_digit {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if a_digit {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (ra, rb) = (run(a), run(b));
        let (sa, sb) = (&a[..ra], &b[..rb]);
        let ord = if a_digit {
            let (za, zb) = (trim_zeros(sa), trim_zeros(sb));
            za.len().cmp(&zb.len()).then_with(|| za.cmp(zb))
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[ra..];
        b = &b[rb..];
    }
}

fn skip_separators(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|c| !c.is_ascii_alphanumeric() && **c != b'~')
        .count();
    &s[n..]
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn kernel_versions_order_as_people_expect() {
        let cases = [
            ("6.1.0-18-amd64", "6.1.0-9-amd64", Greater),
            ("6.10.0", "6.9.12", Greater),
            ("5.14.0-362.el9.x86_64", "5.14.0-362.el9.x86_64", Equal),
            ("6.5.6-300.fc39.x86_64", "6.5.12-300.fc39.x86_64", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0~rc1", Greater),
            ("1.0a", "1.0", Greater),
            ("1.01", "1.1", Equal),
            ("2.6.18-398.el5xen", "2.6.18-8.el5xen", Greater),
            ("1a", "11", Less),
            ("", "0", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
