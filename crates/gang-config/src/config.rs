//! The parsed configuration: settings in first-seen order, typed accessors.
//!
//! Invariants: a key appears at most once (the last assignment wins, `+=`
//! appends); each setting remembers the file and line of the assignment that
//! last changed it; accessors never fail, they record a [`Warning`] and
//! return `None` for a value of the wrong type, as `xl` does.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Warning};
use crate::parse::parse_into;
use crate::value::Value;

/// The file name used for command-line overrides.
pub const COMMAND_LINE: &str = "command line";

/// One `KEY = VALUE` setting after all assignments have been applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// The key, matching `[a-z][._0-9a-z]*`.
    pub key: String,
    /// The value after all assignments.
    pub value: Value,
    /// File of the last assignment (`command line` for an override).
    pub file: String,
    /// Line of the last assignment.
    pub line: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Set,
    Append,
}

/// A parsed xl.cfg file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    file: String,
    settings: Vec<Setting>,
    warnings: RefCell<Vec<Warning>>,
}

/// Emulates C `strtol(s, &end, 0)` with the whole string consumed.
/// `Err(true)` on overflow, `Err(false)` when not a number.
fn strtol(s: &str) -> Result<i64, bool> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(false);
    }
    let magnitude = i128::from_str_radix(digits, radix).map_err(|_| true)?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).map_err(|_| true)
}

impl Config {
    /// Parses `text`, read from `file` (used in messages).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_overrides::<&str>(file, text, &[])
    }

    /// Parses `text`, then each override (`KEY=VALUE` in config syntax, e.g.
    /// `name="x"`) as if appended after the file, so overrides win. Errors in
    /// override N are reported as `command line:N`.
    pub fn parse_with_overrides<S: AsRef<str>>(
        file: &str,
        text: &str,
        overrides: &[S],
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            file: file.to_owned(),
            ..Config::default()
        };
        parse_into(&mut cfg, file, text, 1)?;
        for (i, o) in overrides.iter().enumerate() {
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            parse_into(&mut cfg, COMMAND_LINE, o.as_ref(), line)?;
        }
        Ok(cfg)
    }

    /// Applies one assignment; `Err` carries the message for a syntax error.
    pub(crate) fn store(
        &mut self,
        file: &str,
        line: u32,
        key: &str,
        op: Op,
        value: Value,
    ) -> Result<(), &'static str> {
        let existing = self.settings.iter_mut().find(|s| s.key == key);
        if op == Op::Append && matches!(value, Value::Num(_)) {
            return Err("can't use += with numbers");
        }
        let Some(set) = existing else {
            self.settings.push(Setting {
                key: key.to_owned(),
                value,
                file: file.to_owned(),
                line,
            });
            return Ok(());
        };
        match (op, &mut set.value, value) {
            (Op::Set, old, new) => *old = new,
            (Op::Append, Value::Str(a), Value::Str(b)) => a.push_str(&b),
            (Op::Append, Value::List(a), Value::List(b)) => a.extend(b),
            (Op::Append, Value::Num(_), _) => return Err("can't use += with numbers"),
            (Op::Append, _, _) => return Err("can't use += to mix a list and a single value"),
        }
        set.file = file.to_owned();
        set.line = line;
        Ok(())
    }

    /// The file name given to the parser.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The settings, in the order their keys were first seen.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The setting of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// The raw value of `key`, if any.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.get(key).map(|s| &s.value)
    }

    /// Records a warning about the setting `set`.
    pub fn warn(&self, set: &Setting, message: String) {
        self.warnings.borrow_mut().push(Warning {
            file: set.file.clone(),
            line: set.line,
            message,
        });
    }

    /// Warnings recorded so far by the accessors, oldest first.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.borrow().clone()
    }

    /// Removes and returns the warnings recorded so far.
    pub fn take_warnings(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }

    /// A single value as text (a number in decimal). `None` if absent, or
    /// (with a warning) if a list.
    pub fn get_str(&self, key: &str) -> Option<String> {
        let set = self.get(key)?;
        match set.value.to_text() {
            Some(t) => Some(t),
            None => {
                self.warn(
                    set,
                    format!("parameter `{key}' is a list but should be a single value"),
                );
                None
            }
        }
    }

    /// A number; a string is read like C `strtol(.., 0)`. `None` if absent,
    /// or (with a warning) if a list or not a valid number.
    pub fn get_num(&self, key: &str) -> Option<i64> {
        let set = self.get(key)?;
        match &set.value {
            Value::Num(n) => Some(*n),
            Value::Str(s) => match strtol(s) {
                Ok(n) => Some(n),
                Err(true) => {
                    self.warn(
                        set,
                        format!(
                            "parameter `{key}' could not be parsed as a number: \
                             Numerical result out of range"
                        ),
                    );
                    None
                }
                Err(false) => {
                    self.warn(set, format!("parameter `{key}' is not a valid number"));
                    None
                }
            },
            Value::List(_) => {
                self.warn(
                    set,
                    format!("parameter `{key}' is a list but should be a single value"),
                );
                None
            }
        }
    }

    /// A list. `None` if absent, or (with a warning) if a single value.
    pub fn get_list(&self, key: &str) -> Option<&[Value]> {
        let set = self.get(key)?;
        match &set.value {
            Value::List(l) => Some(l),
            _ => {
                self.warn(
                    set,
                    format!("parameter `{key}' is a single value but should be a list"),
                );
                None
            }
        }
    }

    /// A list with each item as text (numbers in decimal).
    pub fn get_string_list(&self, key: &str) -> Option<Vec<String>> {
        self.get_list(key)
            .map(|l| l.iter().filter_map(Value::to_text).collect())
    }

    /// Records `unknown parameter X, ignored` for every key not in `known`.
    pub fn warn_unknown(&self, known: &[&str]) {
        for set in &self.settings {
            if !known.contains(&set.key.as_str()) {
                self.warn(set, format!("unknown parameter `{}', ignored", set.key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strtol;

    #[test]
    fn strtol_like_c() {
        assert_eq!(strtol("512"), Ok(512));
        assert_eq!(strtol(" -0x10"), Ok(-16));
        assert_eq!(strtol("010"), Ok(8));
        assert_eq!(strtol("+7"), Ok(7));
        assert_eq!(strtol("12M"), Err(false));
        assert_eq!(strtol(""), Err(false));
        assert_eq!(strtol("99999999999999999999"), Err(true));
        assert_eq!(strtol("-9223372036854775808"), Ok(i64::MIN));
    }
}
