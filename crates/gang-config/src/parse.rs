//! Lexer and parser for the xl.cfg syntax.
//!
//! Grammar (newlines are significant except inside a list):
//!
//! ```text
//! file  := (stmt? (NEWLINE | ';'))* stmt? EOF
//! stmt  := KEY ('=' | '+=') value
//! value := atom | '[' NL* (atom NL* (',' NL* atom NL*)* (',' NL*)?)? ']'
//! atom  := STRING | NUMBER
//! ```
//!
//! Invariants: the parser never panics, whatever the input; every error is a
//! [`ConfigError::Syntax`] naming the line of the offending token; lists only
//! ever hold atoms (no nested lists).

use crate::config::{Config, Op};
use crate::error::ConfigError;
use crate::value::Value;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Key(String),
    Num(i64),
    Str(String),
    Eq,
    PlusEq,
    LBrack,
    RBrack,
    Comma,
    Semi,
    Newline,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// The source text of the token (`None` at the end of the input).
    text: Option<String>,
    line: u32,
}

struct Lexer<'a> {
    file: &'a str,
    src: &'a str,
    pos: usize,
    line: u32,
}

/// Is `s` a valid key: `[a-z][._0-9a-z]*`?
pub(crate) fn is_valid_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_'))
}

/// Parses a number literal: decimal, leading-`0` octal or `0x` hex.
fn parse_number(s: &str) -> Option<i64> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    i64::from_str_radix(digits, radix).ok()
}

impl<'a> Lexer<'a> {
    fn new(file: &'a str, src: &'a str, first_line: u32) -> Self {
        Lexer {
            file,
            src,
            pos: 0,
            line: first_line,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, line: u32, token: Option<String>, message: &str) -> ConfigError {
        ConfigError::Syntax {
            file: self.file.to_owned(),
            line,
            token,
            message: message.to_owned(),
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.src[start..self.pos]
    }

    fn next_token(&mut self) -> Result<Token, ConfigError> {
        // Blanks and comments.
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r') => {
                    self.pos += 1;
                }
                Some('#') => {
                    self.take_while(|c| c != '\n');
                }
                _ => break,
            }
        }
        let line = self.line;
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Token {
                tok: Tok::Eof,
                text: None,
                line,
            });
        };
        let tok = match c {
            '\n' => {
                self.line = self.line.saturating_add(1);
                Tok::Newline
            }
            '=' => Tok::Eq,
            '+' if self.peek() == Some('=') => {
                self.pos += 1;
                Tok::PlusEq
            }
            '[' => Tok::LBrack,
            ']' => Tok::RBrack,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            '"' | '\'' => Tok::Str(self.string(c, start, line)?),
            '0'..='9' => {
                self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
                let text = &self.src[start..self.pos];
                match parse_number(text) {
                    Some(n) => Tok::Num(n),
                    None => return Err(self.error(line, Some(text.to_owned()), "invalid number")),
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                self.take_while(|c| c.is_alphanumeric() || c == '_' || c == '.');
                let text = &self.src[start..self.pos];
                if !is_valid_key(text) {
                    return Err(self.error(
                        line,
                        Some(text.to_owned()),
                        "invalid parameter name (names match [a-z][._0-9a-z]*)",
                    ));
                }
                Tok::Key(text.to_owned())
            }
            other => {
                return Err(self.error(line, Some(other.to_string()), "invalid character"));
            }
        };
        Ok(Token {
            tok,
            text: Some(self.src[start..self.pos].to_owned()),
            line,
        })
    }

    /// Lexes the rest of a string opened by `quote` at byte `start`.
    fn string(&mut self, quote: char, start: usize, line: u32) -> Result<String, ConfigError> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                let text = self.src[start..self.pos].to_owned();
                return Err(self.error(line, Some(text), "unterminated string"));
            };
            match c {
                '\n' => {
                    let text = self.src[start..self.pos - 1].to_owned();
                    return Err(self.error(line, Some(text), "unterminated string"));
                }
                c if c == quote => break,
                '\\' => {
                    let esc_start = self.pos - 1;
                    let byte = self.escape().ok_or_else(|| {
                        let end = self.pos;
                        self.error(
                            line,
                            Some(self.src[esc_start..end].to_owned()),
                            "invalid escape sequence",
                        )
                    })?;
                    match byte {
                        Escaped::Byte(b) => out.push(b),
                        Escaped::Char(c) => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        let text = &self.src[start..self.pos];
        if out.contains(&0) {
            return Err(self.error(line, Some(text.to_owned()), "NUL character in string"));
        }
        String::from_utf8(out)
            .map_err(|_| self.error(line, Some(text.to_owned()), "string is not valid UTF-8"))
    }

    /// Reads one escape after a backslash; `None` for an invalid one.
    fn escape(&mut self) -> Option<Escaped> {
        let c = self.peek()?;
        if c == '\n' {
            return None;
        }
        self.pos += c.len_utf8();
        let b = match c {
            'n' => b'\n',
            't' => b'\t',
            'r' => b'\r',
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'v' => 0x0b,
            'e' => 0x1b,
            'x' => {
                let digits = self.take_while_max(2, |c| c.is_ascii_hexdigit());
                return u8::from_str_radix(digits, 16).ok().map(Escaped::Byte);
            }
            '0'..='7' => {
                self.pos -= 1;
                let digits = self.take_while_max(3, |c| matches!(c, '0'..='7'));
                return u8::from_str_radix(digits, 8).ok().map(Escaped::Byte);
            }
            // C escapes of punctuation (\\ \" \' \? ...) stand for themselves;
            // an unknown letter or digit is an error.
            c if c.is_alphanumeric() => return None,
            c => return Some(Escaped::Char(c)),
        };
        Some(Escaped::Byte(b))
    }

    fn take_while_max(&mut self, max: usize, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        let mut n = 0;
        while let Some(c) = self.peek() {
            if n == max || !f(c) {
                break;
            }
            self.pos += c.len_utf8();
            n += 1;
        }
        &self.src[start..self.pos]
    }
}

enum Escaped {
    Byte(u8),
    Char(char),
}

struct Parser<'a> {
    lexer: Lexer<'a>,
}

impl Parser<'_> {
    fn error(&self, tok: &Token, message: &str) -> ConfigError {
        self.lexer.error(tok.line, tok.text.clone(), message)
    }

    fn next_skipping_newlines(&mut self) -> Result<Token, ConfigError> {
        loop {
            let t = self.lexer.next_token()?;
            if t.tok != Tok::Newline {
                return Ok(t);
            }
        }
    }

    fn atom(&self, t: Token) -> Result<Value, ConfigError> {
        match t.tok {
            Tok::Num(n) => Ok(Value::Num(n)),
            Tok::Str(s) => Ok(Value::Str(s)),
            _ => Err(self.error(&t, "expected a value (a string or a number)")),
        }
    }

    fn value(&mut self) -> Result<Value, ConfigError> {
        let t = self.lexer.next_token()?;
        if t.tok != Tok::LBrack {
            return self.atom(t);
        }
        let mut items = Vec::new();
        let t = self.next_skipping_newlines()?;
        if t.tok == Tok::RBrack {
            return Ok(Value::List(items));
        }
        items.push(self.atom(t)?);
        loop {
            let t = self.next_skipping_newlines()?;
            match t.tok {
                Tok::RBrack => return Ok(Value::List(items)),
                Tok::Comma => {
                    let t = self.next_skipping_newlines()?;
                    if t.tok == Tok::RBrack {
                        return Ok(Value::List(items));
                    }
                    items.push(self.atom(t)?);
                }
                _ => return Err(self.error(&t, "expected `,' or `]'")),
            }
        }
    }

    fn file(&mut self, cfg: &mut Config) -> Result<(), ConfigError> {
        loop {
            let t = self.lexer.next_token()?;
            let key = match t.tok {
                Tok::Newline | Tok::Semi => continue,
                Tok::Eof => return Ok(()),
                Tok::Key(ref k) => k.clone(),
                _ => return Err(self.error(&t, "expected a parameter name")),
            };
            let op_tok = self.lexer.next_token()?;
            let op = match op_tok.tok {
                Tok::Eq => Op::Set,
                Tok::PlusEq => Op::Append,
                _ => return Err(self.error(&op_tok, "expected `=' or `+='")),
            };
            let value = self.value()?;
            cfg.store(self.lexer.file, t.line, &key, op, value)
                .map_err(|message| self.error(&t, message))?;
            let end = self.lexer.next_token()?;
            match end.tok {
                Tok::Newline | Tok::Semi => {}
                Tok::Eof => return Ok(()),
                _ => return Err(self.error(&end, "expected a newline or `;'")),
            }
        }
    }
}

/// Parses `text` (from `file`, whose first line is numbered `first_line`)
/// into `cfg`, on top of what `cfg` already holds.
pub(crate) fn parse_into(
    cfg: &mut Config,
    file: &str,
    text: &str,
    first_line: u32,
) -> Result<(), ConfigError> {
    let mut parser = Parser {
        lexer: Lexer::new(file, text, first_line),
    };
    parser.file(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("010"), Some(8));
        assert_eq!(parse_number("0x1F"), Some(31));
        assert_eq!(parse_number("0X10"), Some(16));
        assert_eq!(parse_number("09"), None);
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("12ab"), None);
        assert_eq!(parse_number("99999999999999999999"), None);
    }

    #[test]
    fn keys() {
        assert!(is_valid_key("on_poweroff"));
        assert!(is_valid_key("a.b_9"));
        assert!(!is_valid_key("Name"));
        assert!(!is_valid_key("_x"));
        assert!(!is_valid_key(""));
    }
}
