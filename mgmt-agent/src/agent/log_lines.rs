//! A `LogLines` answer that always fits in one frame, however long the
//! lines a guest (or anything else) printed: each line is cut at
//! [`MAX_LINE`] bytes with a marker, and the oldest lines give way when
//! the whole would pass [`BUDGET`], with a note saying how many.

use crate::messages::MAX_CHUNK;

/// The longest line kept whole.
pub const MAX_LINE: usize = 16 * 1024;
/// Bytes of encoded lines in one answer: the frame's room for data, with
/// the message's own prefix and the note about left-out lines spare.
pub const BUDGET: usize = MAX_CHUNK - 1024;
/// What a line costs in postcard beyond its bytes: the length varint.
const PER_LINE: usize = 3;

/// `line`, cut at a character boundary at most [`MAX_LINE`] bytes in,
/// with a marker saying how much was left out.
fn cut(line: String) -> String {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [{} more bytes cut]", &line[..end], line.len() - end)
}

/// The last `tail` of `lines`, each cut to [`MAX_LINE`], as many of the
/// newest as fit in [`BUDGET`].
pub fn fit(lines: Vec<String>, tail: u32) -> Vec<String> {
    let skip = lines.len().saturating_sub(tail as usize);
    let mut newest_first = lines.into_iter().skip(skip).rev();
    let mut kept = Vec::new();
    let mut used = 0;
    let mut left_out = 0;
    while let Some(line) = newest_first.next() {
        let line = cut(line);
        let cost = line.len() + PER_LINE;
        if used + cost > BUDGET {
            left_out = 1 + newest_first.len();
            break;
        }
        used += cost;
        kept.push(line);
    }
    if left_out > 0 {
        kept.push(format!(
            "[{left_out} earlier lines left out: one answer holds {} KiB of log]",
            BUDGET / 1024
        ));
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Response, ServerMessage};
    use crate::session::MAX_PLAINTEXT;

    fn encoded(lines: Vec<String>) -> usize {
        let m = ServerMessage {
            id: u64::MAX,
            response: Response::LogLines(lines),
        };
        postcard::to_stdvec(&m).unwrap().len()
    }

    #[test]
    fn long_lines_are_cut_and_old_ones_give_way() {
        let long = "é".repeat(600_000);
        let lines = vec!["first".to_string(), long, "last".to_string()];
        let out = fit(lines, 10);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], "first");
        assert!(out[1].len() < MAX_LINE + 40, "{}", out[1].len());
        assert!(out[1].ends_with(&format!("[{} more bytes cut]", 1_200_000 - MAX_LINE)));
        assert_eq!(out[2], "last");

        let many: Vec<String> = (0..100)
            .map(|n| format!("{n}{}", "x".repeat(MAX_LINE * 2)))
            .collect();
        let out = fit(many, 1000);
        assert!(encoded(out.clone()) <= MAX_PLAINTEXT);
        assert!(
            out[0].starts_with("[85 earlier lines left out"),
            "{}",
            out[0]
        );
        assert!(out.last().unwrap().starts_with("99x"));
        assert_eq!(fit(vec!["a".into(), "b".into()], 1), ["b"]);
    }
}
