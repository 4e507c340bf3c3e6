//! Time since the kernel started, for the boot banner.

/// Parses `/proc/uptime` ("12.34 56.78") into milliseconds.
pub fn parse_uptime_ms(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    // /proc/uptime has two decimals; pad or cut to milliseconds.
    let mut millis = String::from(frac);
    millis.truncate(3);
    while millis.len() < 3 {
        millis.push('0');
    }
    let millis: u64 = millis.parse().ok()?;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Milliseconds since the kernel started, if `/proc` is mounted.
pub fn uptime_ms() -> Option<u64> {
    parse_uptime_ms(&std::fs::read_to_string("/proc/uptime").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_uptime() {
        assert_eq!(parse_uptime_ms("12.34 56.78\n"), Some(12_340));
        assert_eq!(parse_uptime_ms("0.05 0.00"), Some(50));
        assert_eq!(parse_uptime_ms("7 1"), Some(7_000));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x.y 1"), None);
    }
}
