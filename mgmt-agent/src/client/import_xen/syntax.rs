//! The syntax of a Xen domain config: xl.cfg(5), and the subset of
//! Python that xm configs were written in.
//!
//! A config is `KEY = VALUE` statements, ended by a newline or `;`. A value
//! is a number (decimal, `0x` hex, `0` or `0o` octal), a string in single,
//! double or triple quotes (triple-quoted ones may span lines), Python's
//! `True`, `False` or `None`, or a list `[ ... ]` of values that may span
//! lines, nest, hold comments and end with a comma. `KEY += VALUE` appends
//! to a string or list, as xl allows. `#` starts a comment outside strings.
//! Anything else, such as a Python expression or `import os`, is an error
//! naming its line: the config is data, never run.
//!
//! A key given twice keeps its last value, as both xl and Python do; the
//! earlier one is recorded in [`Config::repeats`] for the report.

use std::fmt;

/// A value of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    /// Python's `True` and `False` (xm).
    Bool(bool),
    /// Python's `None` (xm): the same as leaving the key out.
    None,
    List(Vec<Item>),
}

/// An element of a list, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Value,
    pub line: usize,
}

impl Value {
    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number: an integer, a boolean as 0 or 1, or a string holding a
    /// number (xl reads `memory = "512"` as 512 too).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Str(s) => parse_int(s.trim()).ok(),
            _ => None,
        }
    }

    /// A boolean as xl reads one: a number, true unless 0.
    pub fn as_bool(&self) -> Option<bool> {
        self.as_int().map(|n| n != 0)
    }

    /// The elements of a list; a lone value is a list of one, as xl
    /// takes a string where it wants a list of strings.
    pub fn elements(&self, line: usize) -> Vec<Item> {
        match self {
            Value::List(items) => items.clone(),
            Value::None => Vec::new(),
            other => vec![Item {
                value: other.clone(),
                line,
            }],
        }
    }
}

/// Written back as it would appear in a config, for messages.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", item.value)?;
                }
                f.write_str("]")
            }
        }
    }
}

/// One `KEY = VALUE`: the last one given for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    /// The line the key is on.
    pub line: usize,
}

/// A key given again, replacing the value of an earlier line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub key: String,
    pub line: usize,
    pub replaced: usize,
}

/// A parsed config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// One per key, in the order the keys first appear.
    pub settings: Vec<Setting>,
    pub repeats: Vec<Repeat>,
}

impl Config {
    /// The setting of `key`, if the config gives it a value other than
    /// `None`.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .find(|s| s.key == key && s.value != Value::None)
    }

    fn set(&mut self, key: String, value: Value, line: usize, append: bool) -> Result<(), Error> {
        let Some(old) = self.settings.iter_mut().find(|s| s.key == key) else {
            self.settings.push(Setting { key, value, line });
            return Ok(());
        };
        if !append {
            self.repeats.push(Repeat {
                key,
                line,
                replaced: old.line,
            });
            old.value = value;
            old.line = line;
            return Ok(());
        }
        match (&mut old.value, value) {
            (Value::Str(s), Value::Str(more)) => s.push_str(&more),
            (Value::List(items), Value::List(more)) => items.extend(more),
            (Value::None, value) => old.value = value,
            _ => {
                return Err(Error::new(
                    line,
                    format!(
                        "`{key} +=` adds a string to a string or a list to a list, \
                         like the value given on line {}",
                        old.line
                    ),
                ))
            }
        }
        Ok(())
    }
}

/// A syntax error at a line of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub message: String,
}

impl Error {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Error {
            line,
            message: message.into(),
        }
    }
}

/// Python statements that show a config is a program, not data.
const PYTHON_WORDS: &[&str] = &[
    "import", "from", "def", "class", "if", "elif", "else", "for", "while", "try", "except",
    "finally", "with", "return", "print", "del", "global", "exec", "assert", "pass", "lambda",
    "raise",
];

/// Parses a config's text.
pub fn parse(text: &str) -> Result<Config, Error> {
    let tokens = lex(text)?;
    Parser {
        tokens: &tokens,
        at: 0,
    }
    .config()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Open,
    Close,
    Comma,
    Assign,
    Append,
    Semicolon,
    Newline,
    End,
    /// A character that has no place in a config (`*`, `(`, `\`, ...).
    Other(char),
}

impl Tok {
    /// How a message names the token.
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Int(n) => format!("the number {n}"),
            Tok::Str(_) => "a string".into(),
            Tok::Open => "`[`".into(),
            Tok::Close => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Assign => "`=`".into(),
            Tok::Append => "`+=`".into(),
            Tok::Semicolon => "`;`".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::End => "the end of the file".into(),
            Tok::Other(c) => format!("`{c}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let start = line;
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                Tok::Newline
            }
            ' ' | '\t' | '\r' | '\x0c' => {
                i += 1;
                continue;
            }
            '#' => {
                while chars.get(i).is_some_and(|c| *c != '\n') {
                    i += 1;
                }
                continue;
            }
            '\'' | '"' => {
                let (s, next, lines) = string(&chars, i, start)?;
                i = next;
                line += lines;
                Tok::Str(s)
            }
            '[' | ']' | ',' | '=' | ';' => {
                i += 1;
                match c {
                    '[' => Tok::Open,
                    ']' => Tok::Close,
                    ',' => Tok::Comma,
                    '=' => Tok::Assign,
                    _ => Tok::Semicolon,
                }
            }
            '+' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Append
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let end = (i + 1..chars.len())
                    .find(|&j| {
                        !(chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '.')
                    })
                    .unwrap_or(chars.len());
                let word: String = chars[i..end].iter().collect();
                i = end;
                Tok::Int(parse_int(&word).map_err(|m| Error::new(start, m))?)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = (i..chars.len())
                    .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'))
                    .unwrap_or(chars.len());
                let word: String = chars[i..end].iter().collect();
                i = end;
                Tok::Ident(word)
            }
            other => {
                i += 1;
                Tok::Other(other)
            }
        };
        out.push(Token { tok, line: start });
    }
    out.push(Token {
        tok: Tok::End,
        line,
    });
    Ok(out)
}

/// A number as xl reads one: decimal, `0x` hex, `0` (or Python's `0o`)
/// octal, with an optional minus sign.
fn parse_int(word: &str) -> Result<i64, String> {
    let (negative, digits) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    let lower = digits.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i64::from_str_radix(oct, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse::<i64>()
    };
    match parsed {
        // from_str_radix takes a sign of its own: refuse "0x-1".
        Ok(n) if !lower.contains(['+', '-']) => Ok(if negative { -n } else { n }),
        _ if word.contains('.') => Err(format!("`{word}` is not a whole number")),
        _ => Err(format!("`{word}` is not a number")),
    }
}

/// Reads the string starting at `chars[i]` (a quote) on line `line`:
/// returns its text, the index after it and how many newlines it holds.
fn string(chars: &[char], i: usize, line: usize) -> Result<(String, usize, usize), Error> {
    let quote = chars[i];
    let triple = chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote);
    let mut j = if triple { i + 3 } else { i + 1 };
    let mut out = String::new();
    let mut lines = 0;
    let unterminated = || Error::new(line, "unterminated string");
    loop {
        let Some(&c) = chars.get(j) else {
            return Err(unterminated());
        };
        match c {
            c if c == quote && !triple => return Ok((out, j + 1, lines)),
            c if c == quote
                && chars.get(j + 1) == Some(&quote)
                && chars.get(j + 2) == Some(&quote) =>
            {
                return Ok((out, j + 3, lines))
            }
            '\n' if !triple => return Err(unterminated()),
            '\\' => {
                let Some(&next) = chars.get(j + 1) else {
                    return Err(unterminated());
                };
                j += 2;
                match next {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    '\\' | '\'' | '"' => out.push(next),
                    // A backslash before a newline continues the line.
                    '\n' => lines += 1,
                    'x' => {
                        let hex: String = chars.iter().skip(j).take(2).collect();
                        match u8::from_str_radix(&hex, 16) {
                            Ok(b) if hex.len() == 2 => {
                                out.push(char::from(b));
                                j += 2;
                            }
                            _ => {
                                return Err(Error::new(
                                    line + lines,
                                    "`\\x` in a string needs two hex digits",
                                ))
                            }
                        }
                    }
                    '0'..='7' => {
                        let mut value = next.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.get(j).and_then(|c| c.to_digit(8)) {
                                Some(d) => {
                                    value = value * 8 + d;
                                    j += 1;
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(value).unwrap_or('\u{fffd}'));
                    }
                    // Python keeps an unknown escape as it is.
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                continue;
            }
            '\n' => {
                lines += 1;
                out.push(c);
            }
            c => out.push(c),
        }
        j += 1;
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends the tokens with `End`, which is never
        // consumed.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek_second(&self) -> &Tok {
        &self.tokens[(self.at + 1).min(self.tokens.len() - 1)].tok
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.at += 1;
        }
        token
    }

    fn config(mut self) -> Result<Config, Error> {
        let mut config = Config::default();
        loop {
            let Token { tok, line } = self.next();
            let key = match tok {
                Tok::Newline | Tok::Semicolon => continue,
                Tok::End => return Ok(config),
                Tok::Ident(key) => key,
                Tok::Close => return Err(Error::new(line, "`]` without a `[` before it")),
                other => {
                    return Err(Error::new(
                        line,
                        format!(
                            "expected a setting (KEY = VALUE), found {}",
                            other.describe()
                        ),
                    ))
                }
            };
            let op = self.next();
            let append = match op.tok {
                Tok::Assign => false,
                Tok::Append => true,
                _ if PYTHON_WORDS.contains(&key.as_str()) => {
                    return Err(Error::new(
                        line,
                        format!(
                            "`{key}` is Python code, not a setting: only KEY = VALUE \
                             lines are read, and nothing in the config is run"
                        ),
                    ))
                }
                other => {
                    return Err(Error::new(
                        op.line,
                        format!("expected `=` after `{key}`, found {}", other.describe()),
                    ))
                }
            };
            let value = self.value(&key)?;
            let end = self.next();
            match end.tok {
                Tok::Newline | Tok::Semicolon | Tok::End => {}
                other => return Err(Error::new(end.line, trailer(&key, &other))),
            }
            config.set(key, value, line, append)?;
        }
    }

    fn value(&mut self, key: &str) -> Result<Value, Error> {
        let Token { tok, line } = self.next();
        match tok {
            Tok::Int(n) => Ok(Value::Int(n)),
            Tok::Str(s) => Ok(Value::Str(s)),
            Tok::Ident(word) => match word.as_str() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                "None" => Ok(Value::None),
                _ => Err(Error::new(
                    line,
                    format!(
                        "`{word}` is not a value: write a number, a string in quotes or \
                         a list (Python expressions are not read)"
                    ),
                )),
            },
            Tok::Open => self.list(key, line),
            Tok::Newline | Tok::End | Tok::Semicolon => {
                Err(Error::new(line, format!("`{key} =` has no value")))
            }
            other => Err(Error::new(
                line,
                format!(
                    "expected the value of `{key}` (a number, a string or a list), found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// The rest of a list whose `[` is on line `open`.
    fn list(&mut self, key: &str, open: usize) -> Result<Value, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_newlines();
            self.unterminated(key, open)?;
            if self.peek().tok == Tok::Close {
                self.next();
                return Ok(Value::List(items));
            }
            let line = self.peek().line;
            let value = self.value(key)?;
            items.push(Item { value, line });
            self.skip_newlines();
            self.unterminated(key, open)?;
            let Token { tok, line } = self.next();
            match tok {
                Tok::Comma => {}
                Tok::Close => return Ok(Value::List(items)),
                other => {
                    return Err(Error::new(
                        line,
                        format!(
                            "expected `,` or `]` after an element of `{key}`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }

    /// Fails when the list of `key` opened on line `open` runs into the
    /// end of the file or into the next setting.
    fn unterminated(&self, key: &str, open: usize) -> Result<(), Error> {
        let next = self.peek();
        let into = match (&next.tok, self.peek_second()) {
            (Tok::End, _) => "the end of the file".to_string(),
            (Tok::Ident(other), Tok::Assign | Tok::Append) => {
                format!("`{other} =` on line {}", next.line)
            }
            _ => return Ok(()),
        };
        Err(Error::new(
            open,
            format!("unterminated list: the `[` of `{key}` has no `]` before {into}"),
        ))
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.next();
        }
    }
}

/// The message for `tok` found after the value of `key`.
fn trailer(key: &str, tok: &Tok) -> String {
    match tok {
        Tok::Other(_) | Tok::Ident(_) | Tok::Str(_) | Tok::Int(_) | Tok::Open => format!(
            "{} after the value of `{key}`: only KEY = VALUE is read, not a Python \
             expression; write the value itself",
            tok.describe()
        ),
        Tok::Close => format!("`]` after the value of `{key}` closes no list"),
        other => format!("unexpected {} after the value of `{key}`", other.describe()),
    }
}

#[cfg(test)]
mod tests;
