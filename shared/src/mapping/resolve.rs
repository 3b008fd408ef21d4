//! Name -> id lookups compiled once per run from the schema: select/checklist options, labels,
//! members (assignees) and phases. Per row a lookup is a hash probe; lower-casing allocates
//! only for text that is not already lower-case ASCII.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::failure::FailureCode;

use super::Problem;

/// Lower-cases for case-insensitive lookups without allocating for lower-case ASCII text.
pub(crate) fn lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Quotes a value for an error message, cut to a readable length.
pub(crate) fn quote(s: &str) -> String {
    let max = super::limits::MESSAGE_VALUE_MAX_CHARS;
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("'{}…'", s.get(..cut).unwrap_or(s)),
        None => format!("'{s}'"),
    }
}

/// "a, b, c and 4 more": the choices a person could have meant.
pub(crate) fn preview<'a>(items: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let mut out = String::new();
    let mut rest = 0usize;
    for (i, item) in items.enumerate() {
        if i < SHOWN {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&quote(item));
        } else {
            rest += 1;
        }
    }
    if out.is_empty() {
        out.push_str("(none)");
    }
    if rest > 0 {
        out.push_str(&format!(" and {rest} more"));
    }
    out
}

/// A hint when one cell seems to hold several values.
pub(crate) fn split_hint(text: &str) -> &'static str {
    if text.contains([',', ';', '|']) {
        " (several values in one cell? add a split transform)"
    } else {
        ""
    }
}

/// A text that names no entry, or several.
fn unknown_reference(message: String) -> Problem {
    Problem::new(FailureCode::UnknownReference, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    One(u32),
    /// Several entries share this text ignoring case.
    Many,
}

/// Case-insensitive text -> entry index, remembering when a text is ambiguous.
#[derive(Debug, Default)]
struct CiMap {
    map: HashMap<Box<str>, Hit>,
}

impl CiMap {
    fn insert(&mut self, text: &str, idx: u32) {
        let key: Box<str> = lower(text.trim()).into();
        self.map
            .entry(key)
            .and_modify(|hit| {
                if *hit != Hit::One(idx) {
                    *hit = Hit::Many;
                }
            })
            .or_insert(Hit::One(idx));
    }

    fn get(&self, text: &str) -> Option<Hit> {
        self.map.get(lower(text).as_ref()).copied()
    }
}

/// Select, radio and checklist options of one field.
#[derive(Debug)]
pub(crate) struct OptionIndex {
    options: Vec<String>,
    exact: HashMap<Box<str>, u32>,
    ci: CiMap,
}

impl OptionIndex {
    pub(crate) fn new(options: &[String]) -> Self {
        let mut exact = HashMap::with_capacity(options.len());
        let mut ci = CiMap::default();
        for (i, o) in options.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            exact.entry(o.as_str().into()).or_insert(idx);
            ci.insert(o, idx);
        }
        OptionIndex {
            options: options.to_vec(),
            exact,
            ci,
        }
    }

    /// The option's exact text for `text`: an exact match, or else the only option equal to it
    /// ignoring case and surrounding spaces.
    pub(crate) fn resolve(&self, text: &str) -> Result<&str, Problem> {
        let hit = match self.exact.get(text) {
            Some(&i) => Some(Hit::One(i)),
            None => self.ci.get(text.trim()),
        };
        match hit {
            Some(Hit::One(i)) => self
                .options
                .get(i as usize)
                .map(String::as_str)
                .ok_or_else(|| Problem::internal("option index out of range")),
            Some(Hit::Many) => Err(Problem::new(
                FailureCode::NotAnOption,
                format!(
                    "{} matches several options when case is ignored; write it exactly as one of: {}",
                    quote(text),
                    preview(self.options.iter().map(String::as_str))
                ),
            )),
            None => Err(Problem::new(
                FailureCode::NotAnOption,
                format!(
                    "{} is not one of the field's options: {}{}",
                    quote(text),
                    preview(self.options.iter().map(String::as_str)),
                    split_hint(text)
                ),
            )),
        }
    }
}

/// Labels or phases: by id, or by name ignoring case.
#[derive(Debug)]
pub(crate) struct NamedIndex {
    /// "label" / "phase", for messages.
    what: &'static str,
    /// "pipe 'Sales' (301)", for messages.
    scope: String,
    entries: Vec<(String, String)>,
    ids: HashMap<Box<str>, u32>,
    /// Names as written, tried first: no lower-casing for the usual exact spelling.
    exact_names: HashMap<Box<str>, u32>,
    names: CiMap,
}

impl NamedIndex {
    pub(crate) fn new<'a>(
        what: &'static str,
        scope: String,
        entries: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let entries: Vec<(String, String)> = entries
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect();
        let mut ids = HashMap::with_capacity(entries.len());
        let mut names = CiMap::default();
        for (i, (id, name)) in entries.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            ids.entry(id.as_str().into()).or_insert(idx);
            names.insert(name, idx);
        }
        // Only names no other entry shares ignoring case: an ambiguous name must fail even
        // when spelled exactly like one of them.
        let mut exact_names = HashMap::with_capacity(entries.len());
        for (i, (_, name)) in entries.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            if names.get(name.trim()) == Some(Hit::One(idx)) {
                exact_names.insert(name.trim().into(), idx);
            }
        }
        NamedIndex {
            what,
            scope,
            entries,
            ids,
            exact_names,
            names,
        }
    }

    fn id_at(&self, i: u32) -> Result<&str, Problem> {
        self.entries
            .get(i as usize)
            .map(|(id, _)| id.as_str())
            .ok_or_else(|| Problem::internal("entry index out of range"))
    }

    /// The id for an id or a name (case-insensitive).
    pub(crate) fn resolve(&self, text: &str) -> Result<&str, Problem> {
        let text = text.trim();
        if let Some(&i) = self.ids.get(text).or_else(|| self.exact_names.get(text)) {
            return self.id_at(i);
        }
        match self.names.get(text) {
            Some(Hit::One(i)) => self.id_at(i),
            Some(Hit::Many) => Err(unknown_reference(format!(
                "several {}s of {} are named {} (ignoring case): use the id instead",
                self.what,
                self.scope,
                quote(text)
            ))),
            None => Err(unknown_reference(format!(
                "no {} with the id or name {} in {}; {}s: {}{}",
                self.what,
                quote(text),
                self.scope,
                self.what,
                preview(self.entries.iter().map(|(_, n)| n.as_str())),
                split_hint(text)
            ))),
        }
    }
}

/// Pipe members, the users a card can be assigned to: by id, email or name (ignoring case).
#[derive(Debug)]
pub(crate) struct MemberIndex {
    scope: String,
    ids: Vec<String>,
    by_id: HashMap<Box<str>, u32>,
    emails: CiMap,
    names: CiMap,
}

impl MemberIndex {
    pub(crate) fn new<'a>(
        scope: String,
        members: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Self {
        let mut ids = Vec::new();
        let mut by_id = HashMap::new();
        let mut emails = CiMap::default();
        let mut names = CiMap::default();
        for (i, (id, name, email)) in members.enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            ids.push(id.to_string());
            by_id.entry(id.into()).or_insert(idx);
            if !email.trim().is_empty() {
                emails.insert(email, idx);
            }
            if !name.trim().is_empty() {
                names.insert(name, idx);
            }
        }
        MemberIndex {
            scope,
            ids,
            by_id,
            emails,
            names,
        }
    }

    fn id_at(&self, i: u32) -> Result<&str, Problem> {
        self.ids
            .get(i as usize)
            .map(String::as_str)
            .ok_or_else(|| Problem::internal("member index out of range"))
    }

    pub(crate) fn resolve(&self, text: &str) -> Result<&str, Problem> {
        let text = text.trim();
        if let Some(&i) = self.by_id.get(text) {
            return self.id_at(i);
        }
        let (hit, by) = if text.contains('@') {
            (self.emails.get(text), "email")
        } else {
            (self.names.get(text), "name")
        };
        match hit {
            Some(Hit::One(i)) => self.id_at(i),
            Some(Hit::Many) => Err(unknown_reference(format!(
                "several members of {} have the {by} {}: use their email or user id",
                self.scope,
                quote(text)
            ))),
            None => Err(unknown_reference(format!(
                "no member of {} has the user id, email or name {} (assignees must be members of the pipe){}",
                self.scope,
                quote(text),
                split_hint(text)
            ))),
        }
    }
}
