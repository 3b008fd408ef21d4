//! Column lookups and `"{first_name} {last_name}"` templates, compiled once per run.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::source::Row;
use crate::value::Value;

/// A source column the mapping reads. Rows of one file share their column order, so the
/// position found in the last row is tried first: a lookup is usually one string compare
/// instead of a scan of the row.
#[derive(Debug)]
pub(crate) struct ColumnRef {
    pub(crate) name: Box<str>,
    /// Position in the last row that had the column. Relaxed is enough: it is only a hint,
    /// checked against the name before use.
    hint: AtomicUsize,
}

impl ColumnRef {
    pub(crate) fn new(name: &str) -> Self {
        ColumnRef {
            name: name.into(),
            hint: AtomicUsize::new(0),
        }
    }

    /// The row's value for this column; `None` when the row has no such column.
    pub(crate) fn find<'r>(&self, row: &'r Row) -> Option<&'r Value> {
        let hint = self.hint.load(Ordering::Relaxed);
        if let Some((name, value)) = row.values.get(hint) {
            if name.as_ref() == self.name.as_ref() {
                return Some(value);
            }
        }
        let (pos, (_, value)) = row
            .values
            .iter()
            .enumerate()
            .find(|(_, (name, _))| name.as_ref() == self.name.as_ref())?;
        self.hint.store(pos, Ordering::Relaxed);
        Some(value)
    }
}

#[derive(Debug)]
enum Piece {
    Text(Box<str>),
    Column(ColumnRef),
}

#[derive(Debug)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
    /// Bytes of literal text, to size the output once.
    literal_len: usize,
}

/// What a template made of one row.
pub(crate) enum Rendered {
    Text(String),
    /// Every column the template references is blank: the value is blank (null policy
    /// applies), not the literal text around the columns.
    Blank,
}

impl Template {
    /// `{column}` is replaced by the column's text; `{{` and `}}` are literal braces.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut literal_len = 0usize;
        let mut chars = text.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        match n {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => {
                                return Err(format!(
                                    "'{{' inside the column reference that starts at character {}; write '{{{{' for a literal brace",
                                    at + 1
                                ))
                            }
                            other => name.push(other),
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "the '{{' at character {} is never closed; write '{{{{' for a literal brace",
                            at + 1
                        ));
                    }
                    if name.trim().is_empty() {
                        return Err(format!(
                            "empty column reference '{{}}' at character {}",
                            at + 1
                        ));
                    }
                    if !literal.is_empty() {
                        literal_len += literal.len();
                        pieces.push(Piece::Text(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(Piece::Column(ColumnRef::new(&name)));
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at character {}; write '}}}}' for a literal brace",
                        at + 1
                    ))
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            literal_len += literal.len();
            pieces.push(Piece::Text(literal.into()));
        }
        Ok(Template {
            pieces,
            literal_len,
        })
    }

    pub(crate) fn columns(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Column(c) => Some(c.name.as_ref()),
            Piece::Text(_) => None,
        })
    }

    /// Renders one row. `Err(column)` names a referenced column the row does not have.
    pub(crate) fn render<'t>(&'t self, row: &Row) -> Result<Rendered, &'t str> {
        let mut out = String::with_capacity(self.literal_len + 16);
        let mut any_column = false;
        let mut any_filled = false;
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Column(c) => {
                    any_column = true;
                    let value = c.find(row).ok_or(c.name.as_ref())?;
                    if !value.is_blank() {
                        any_filled = true;
                    }
                    match value {
                        Value::Str(s) => out.push_str(s),
                        Value::Null => {}
                        // Writing to a String cannot fail.
                        other => {
                            let _ = write!(out, "{other}");
                        }
                    }
                }
            }
        }
        if any_column && !any_filled {
            Ok(Rendered::Blank)
        } else {
            Ok(Rendered::Text(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_position() {
        for (text, expected) in [
            ("Hi {name", "never closed"),
            ("Hi {}", "empty column reference"),
            ("a } b", "unmatched '}' at character 3"),
            ("{a{b}}", "'{' inside"),
        ] {
            match Template::parse(text) {
                Ok(_) => panic!("{text}: expected an error"),
                Err(e) => assert!(e.contains(expected), "{text}: {e}"),
            }
        }
        let t = Template::parse("{{{a}}} {b c}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["a", "b c"]);
    }

    #[test]
    fn column_hint_follows_the_row_layout() {
        use crate::source::Provenance;
        use std::sync::Arc;
        let row = |cols: &[&str]| Row {
            provenance: Provenance {
                file: Arc::from("f"),
                line: 1,
            },
            values: cols
                .iter()
                .map(|c| (Arc::<str>::from(*c), Value::Str(format!("v-{c}"))))
                .collect(),
        };
        let c = ColumnRef::new("b");
        assert_eq!(c.find(&row(&["a", "b"])), Some(&Value::Str("v-b".into())));
        // Another file with another column order: found by name, not by the old position.
        assert_eq!(
            c.find(&row(&["b", "x", "a"])),
            Some(&Value::Str("v-b".into()))
        );
        assert_eq!(c.find(&row(&["x"])), None);
        assert_eq!(c.find(&row(&[])), None);
    }
}
