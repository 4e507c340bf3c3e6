//! grub.cfg's words: quoting, escapes, `$var`, comments, line continuation.
//! Variables are kept unexpanded so they expand when the command runs.

use crate::entry::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Word {
    pub parts: Vec<Part>,
    /// Any part was quoted: `'{'` is not a brace, `""` is an empty word.
    pub quoted: bool,
}

impl Word {
    /// The word's text if it is a bare literal (keywords, braces).
    pub fn bare(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }

    fn push_char(&mut self, c: char) {
        match self.parts.last_mut() {
            Some(Part::Lit(s)) => s.push(c),
            _ => self.parts.push(Part::Lit(c.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Word(Word, usize),
    /// A newline or ';': the end of a command.
    Sep,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    file: &'a str,
    tokens: Vec<Token>,
}

pub(crate) fn lex(text: &str, file: &str) -> Result<Vec<Token>, ConfigError> {
    let mut lx = Lexer {
        chars: text.chars().peekable(),
        line: 1,
        file,
        tokens: Vec::new(),
    };
    lx.run()?;
    Ok(lx.tokens)
}

impl Lexer<'_> {
    fn run(&mut self) -> Result<(), ConfigError> {
        let mut word: Option<(Word, usize)> = None;
        while let Some(c) = self.chars.next() {
            match c {
                ' ' | '\t' | '\r' => self.end_word(&mut word),
                '\n' | ';' => {
                    self.end_word(&mut word);
                    self.tokens.push(Token::Sep);
                    if c == '\n' {
                        self.line += 1;
                    }
                }
                '#' if word.is_none() => {
                    // A comment runs to the end of the line; the newline stays.
                    while self.chars.peek().is_some_and(|c| *c != '\n') {
                        self.chars.next();
                    }
                }
                '\\' => match self.chars.next() {
                    Some('\n') => self.line += 1,
                    Some(n) => self.word(&mut word).push_char(n),
                    None => {}
                },
                '\'' => {
                    let start = self.line;
                    let w = self.word(&mut word);
                    w.quoted = true;
                    let mut lit = String::new();
                    loop {
                        match self.chars.next() {
                            Some('\'') => break,
                            Some(c) => {
                                if c == '\n' {
                                    self.line += 1;
                                }
                                lit.push(c);
                            }
                            None => {
                                return Err(ConfigError::new(
                                    self.file,
                                    start,
                                    "a single quote is never closed",
                                ))
                            }
                        }
                    }
                    self.word(&mut word).parts.push(Part::Lit(lit));
                }
                '"' => {
                    let start = self.line;
                    self.word(&mut word).quoted = true;
                    loop {
                        match self.chars.next() {
                            Some('"') => break,
                            Some('\\') => match self.chars.next() {
                                Some('\n') => self.line += 1,
                                Some(n @ ('$' | '"' | '\\')) => self.word(&mut word).push_char(n),
                                Some(n) => {
                                    if n == '\n' {
                                        self.line += 1;
                                    }
                                    let w = self.word(&mut word);
                                    w.push_char('\\');
                                    w.push_char(n);
                                }
                                None => break,
                            },
                            Some('$') => self.variable(&mut word)?,
                            Some(c) => {
                                if c == '\n' {
                                    self.line += 1;
                                }
                                self.word(&mut word).push_char(c);
                            }
                            None => {
                                return Err(ConfigError::new(
                                    self.file,
                                    start,
                                    "a double quote is never closed",
                                ))
                            }
                        }
                    }
                    // An opened quote keeps the word even when it is empty.
                    self.word(&mut word);
                }
                '$' => self.variable(&mut word)?,
                c => self.word(&mut word).push_char(c),
            }
        }
        self.end_word(&mut word);
        Ok(())
    }

    fn word<'w>(&self, word: &'w mut Option<(Word, usize)>) -> &'w mut Word {
        &mut word.get_or_insert_with(|| (Word::default(), self.line)).0
    }

    fn end_word(&mut self, word: &mut Option<(Word, usize)>) {
        if let Some((w, line)) = word.take() {
            self.tokens.push(Token::Word(w, line));
        }
    }

    fn variable(&mut self, word: &mut Option<(Word, usize)>) -> Result<(), ConfigError> {
        let mut name = String::new();
        if self.chars.peek() == Some(&'{') {
            self.chars.next();
            loop {
                match self.chars.next() {
                    Some('}') => break,
                    Some('\n') | None => {
                        return Err(ConfigError::new(
                            self.file,
                            self.line,
                            "a \"${\" is never closed",
                        ));
                    }
                    Some(c) => name.push(c),
                }
            }
        } else {
            while let Some(c) = self.chars.peek().copied() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    self.chars.next();
                } else if name.is_empty() && matches!(c, '?' | '#' | '*' | '@') {
                    name.push(c);
                    self.chars.next();
                    break;
                } else {
                    break;
                }
            }
            if name.is_empty() {
                self.word(word).push_char('$');
                return Ok(());
            }
        }
        self.word(word).parts.push(Part::Var(name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        let mut out = vec![vec![]];
        for t in lex(text, "t").unwrap() {
            match t {
                Token::Sep => out.push(vec![]),
                Token::Word(w, _) => {
                    let s = w
                        .parts
                        .iter()
                        .map(|p| match p {
                            Part::Lit(s) => s.clone(),
                            Part::Var(v) => format!("<{v}>"),
                        })
                        .collect();
                    out.last_mut().unwrap().push(s);
                }
            }
        }
        out.retain(|c| !c.is_empty());
        out
    }

    #[test]
    fn quotes_escapes_and_variables() {
        assert_eq!(
            words(r#"menuentry 'Debian, it''s' "a \"b\" \$c $d" x\ y ${e}f $ #c"#),
            [vec![
                "menuentry",
                "Debian, its",
                "a \"b\" $c <d>",
                "x y",
                "<e>f",
                "$"
            ]]
        );
        assert_eq!(
            words("a; b\n# comment; c\nd\\\ne"),
            [vec!["a"], vec!["b"], vec!["de"]]
        );
        assert_eq!(
            words("'it''s a # not comment' x#y"),
            [vec!["its a # not comment", "x#y"]]
        );
        assert_eq!(words("set x=\"\""), [vec!["set", "x="]]);
    }

    #[test]
    fn line_numbers_survive_continuations_and_quotes() {
        let toks = lex("a 'x\ny'\nb \\\nc\nd", "t").unwrap();
        let lines: Vec<usize> = toks
            .iter()
            .filter_map(|t| match t {
                Token::Word(_, l) => Some(*l),
                Token::Sep => None,
            })
            .collect();
        assert_eq!(lines, [1, 1, 3, 4, 5]);
    }

    #[test]
    fn unclosed_quotes_name_their_line() {
        let err = lex("a\nb 'oops\n\n", "/g.cfg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/g.cfg line 2: a single quote is never closed"
        );
        let err = lex("\"x", "/g.cfg").unwrap_err();
        assert!(err.to_string().contains("double quote is never closed"));
        assert!(lex("${x", "/g.cfg").is_err());
    }
}
