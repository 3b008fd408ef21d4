//! Mapping: a source [`Row`] becomes a [`MappedRow`] of values Pipefy accepts (docs/pipefy-api.md §6),
//! checked against the pipe's or table's schema before anything is sent (preflight).
//! User reference: docs/mapping.md.
//!
//! What the engine relies on:
//! - `Mapper::new(&Destination, &Schema) -> Result<Mapper, Vec<ConfigIssue>>`: compiles the
//!   mapping and checks it against the schema once per run (unknown field ids, unwritable
//!   field types, required start-form fields not mapped for create operations, constant
//!   values outside a select's options, unknown constant phase/label/assignee names).
//! - `Mapper::map(&self, &Row) -> Result<MappedRow, RowFailure>`: one row; every problem is a
//!   `RowFailure` naming the file, line, target field and source column.
//! - `Mapper::check_create(&self, &MappedRow) -> Result<(), RowFailure>`: required start-form
//!   fields present (called by the engine only when the row will be created).
//! - Labels (id or name), assignees (id, email or name) and phases (id or name) resolve from
//!   the schema here. Connections whose `connect.key_field` is set stay as
//!   `ConnectionRef::Key` for the engine to resolve with batched lookups.
//! - When a key is configured, `MappedRow.key` holds it and `MappedRow.fields` carries the
//!   key into `key.field` (added when the mapping does not map that field; when it does, the
//!   mapped value must equal the key), so a created card can be found by its key later.
//! - `MappedRow.fields` is sorted by field id; [`canonical_hash`] hashes every value to be
//!   written (not the provenance) for change detection.
//!
//! Everything that does not depend on the row (column positions, templates, option and name
//! tables, constant values) is compiled in `Mapper::new`; `map` allocates only its output.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{NullPolicy, Operation};
use crate::failure::{FailureCode, RowFailure};
use crate::pipefy::schema::{PipeSchema, TableSchema};
use crate::source::{Provenance, Row};
use crate::value::Value;

pub mod attach;
mod compile;
mod convert;
mod formats;
mod hash;
pub mod limits;
mod resolve;
mod targets;
mod template;
#[cfg(test)]
mod tests;
mod transform;

pub use attach::{AttachSource, FileRef};
pub use hash::canonical_hash;
pub use targets::{Target, TargetPlace};

use convert::{Conv, Converted};
use resolve::NamedIndex;
use template::{ColumnRef, Rendered, Template};
use transform::Step;

/// The schema a destination writes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    Pipe(PipeSchema),
    Table(TableSchema),
}

/// A set value or an explicit clear. `Option<Set<T>>`: `None` leaves Pipefy's value alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Set<T> {
    Value(T),
    Clear,
}

/// A connection to another card or record, by ID or by its key in the connected pipe/table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionRef {
    Id(String),
    Key {
        /// `pipe:<id>` or `table:<id>`.
        repo: String,
        key_field: String,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldValue {
    /// Final value in the form Pipefy's value slot takes (string, number, or array).
    Json(serde_json::Value),
    /// Connector field: card/record ids once resolved.
    Connect(Vec<ConnectionRef>),
    /// Attachment field filled from S3: the files, until the engine has uploaded them and
    /// put their storage paths here as [`FieldValue::Json`].
    Files(Vec<FileRef>),
    Clear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappedField {
    /// Field slug.
    pub field_id: String,
    pub value: FieldValue,
}

/// Everything the engine needs to write one row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MappedRow {
    pub provenance: Option<Provenance>,
    /// Key built from `key.columns` (upserts, keyed creates).
    pub key: Option<String>,
    /// Card/record id from the `id` target (update_card).
    pub id: Option<String>,
    pub title: Option<Set<String>>,
    /// ISO-8601 UTC, e.g. `2024-08-08T16:46:00Z`.
    pub due_date: Option<Set<String>>,
    pub phase_id: Option<String>,
    pub assignee_ids: Option<Set<Vec<String>>>,
    pub label_ids: Option<Set<Vec<String>>>,
    pub parent_ids: Option<Vec<ConnectionRef>>,
    pub fields: Vec<MappedField>,
}

/// A problem with the destination's mapping, found before any row is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigIssue {
    /// Key path in the destination file, e.g. `mapping.plan` or `key.field`.
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why one value could not be converted; becomes a [`RowFailure`] (or a [`ConfigIssue`] for
/// constants) once the target and source are known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub(crate) code: FailureCode,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
        }
    }

    /// A broken invariant of this module; reported, never a panic.
    pub(crate) fn internal(what: &str) -> Self {
        Problem::new(
            FailureCode::InvalidValue,
            format!("internal error in the mapping ({what}); please report it"),
        )
    }
}

/// What one target gets from one row.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Blank value, `on_null: leave`: the target is not sent.
    Omit,
    /// Blank value, `on_null: clear`.
    Clear,
    Value(Converted),
}

/// Where a target's value goes in the [`MappedRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Id,
    Title,
    DueDate,
    Phase,
    Assignees,
    Labels,
    Parents,
    Field(Box<str>),
}

#[derive(Debug)]
enum Source {
    Column(ColumnRef),
    Template(Template),
    /// Computed once in `Mapper::new`.
    Constant(Outcome),
}

/// One compiled mapping entry.
#[derive(Debug)]
struct Slot {
    /// The mapping key as written (`plan`, `field:title`, `due_date`): what a person looks for.
    name: Box<str>,
    place: Place,
    source: Source,
    steps: Vec<Step>,
    on_null: NullPolicy,
    conv: Conv,
    /// `column 'x'`, `template '{a} {b}'` or `constant`: starts every row message.
    desc: Box<str>,
    /// `RowFailure.column`: the column, or a template's columns joined with `, `.
    column: Option<Box<str>>,
}

static NULL: Value = Value::Null;

fn is_blank(v: &Value) -> bool {
    match v {
        // Most cells start with a visible ASCII character: no trim needed to know.
        Value::Str(s) => match s.as_bytes().first() {
            Some(b) if b.is_ascii_graphic() => false,
            _ => s.trim().is_empty(),
        },
        Value::List(items) => items.iter().all(is_blank),
        other => other.is_blank(),
    }
}

impl Slot {
    fn on_null(&self) -> Outcome {
        match self.on_null {
            NullPolicy::Leave => Outcome::Omit,
            NullPolicy::Clear => Outcome::Clear,
        }
    }

    /// Transforms and converts a value: the part shared by rows and constants.
    fn process(&self, mut v: Cow<'_, Value>) -> Result<Outcome, Problem> {
        if is_blank(&v) {
            return Ok(self.on_null());
        }
        if !self.steps.is_empty() {
            for step in &self.steps {
                v = step.apply(v)?;
            }
            if is_blank(&v) {
                return Ok(self.on_null());
            }
        }
        match self.conv.convert(v)? {
            Converted::List(items) if items.is_empty() => Ok(self.on_null()),
            Converted::Refs(items) if items.is_empty() => Ok(self.on_null()),
            Converted::Files(items) if items.is_empty() => Ok(self.on_null()),
            c => Ok(Outcome::Value(c)),
        }
    }

    fn fail(&self, row: &Row, p: Problem) -> RowFailure {
        RowFailure {
            provenance: row.provenance.clone(),
            code: p.code,
            field: Some(self.name.to_string()),
            column: self.column.as_deref().map(str::to_string),
            message: format!("{}: {}", self.desc, p.message),
        }
    }

    fn eval(&self, row: &Row) -> Result<Outcome, RowFailure> {
        let raw = match &self.source {
            Source::Constant(o) => return Ok(o.clone()),
            Source::Column(c) => Cow::Borrowed(c.find(row).unwrap_or(&NULL)),
            Source::Template(t) => match t.render(row) {
                Ok(Rendered::Text(s)) => Cow::Owned(Value::Str(s)),
                Ok(Rendered::Blank) => return Ok(self.on_null()),
                Err(missing) => {
                    return Err(RowFailure {
                        provenance: row.provenance.clone(),
                        code: FailureCode::InvalidValue,
                        field: Some(self.name.to_string()),
                        column: Some(missing.to_string()),
                        message: format!("{}: the row has no column '{missing}'", self.desc),
                    })
                }
            },
        };
        self.process(raw).map_err(|p| self.fail(row, p))
    }
}

/// The key: `key.columns` joined by `key.separator`, written into `key.field`.
#[derive(Debug)]
struct KeySpec {
    columns: Vec<ColumnRef>,
    separator: Box<str>,
    field: Box<str>,
    /// Index in `Mapper.fields` of the slot that maps `key.field`, if any.
    mapped: Option<usize>,
    /// Where the key field goes in the sorted fields when the mapping does not map it.
    insert_at: usize,
    /// Length limit of the key field's type.
    max_chars: Option<usize>,
}

/// A required field checked by `check_create`.
#[derive(Debug)]
struct Required {
    slug: Box<str>,
    label: Box<str>,
    /// Mapping key and its source, for the message. (`key.field` is never listed: the key
    /// that fills it is never blank.)
    target: Box<str>,
    desc: Box<str>,
    column: Option<Box<str>>,
}

/// A compiled mapping for one destination and one schema. `Sync`: one mapper can serve
/// several threads.
#[derive(Debug)]
pub struct Mapper {
    operation: Operation,
    /// `pipe 'Sales' (301)` / `table 'Customers' (Xa1)`, for messages.
    scope: String,
    key: Option<KeySpec>,
    /// Attribute targets, in a fixed order.
    attrs: Vec<Slot>,
    /// Custom fields, sorted by field id.
    fields: Vec<Slot>,
    /// The targets of `attrs` and `fields`, for field-level change detection.
    targets: Vec<Target>,
    required: Vec<Required>,
    phases: Option<Arc<NamedIndex>>,
    columns: Vec<String>,
}

fn unknown_provenance() -> Provenance {
    Provenance {
        file: Arc::from(""),
        line: 0,
    }
}

impl Mapper {
    /// The attach locations of the mapping's attachment fields that upload from S3: the run
    /// lists each before its rows are mapped.
    pub fn attach_sources(&self) -> Vec<Arc<AttachSource>> {
        self.fields
            .iter()
            .filter_map(|s| match &s.conv {
                convert::Conv::Files(source) => Some(source.clone()),
                _ => None,
            })
            .collect()
    }

    /// Compiles `dest.mapping` against `schema`; every problem found is returned at once.
    pub fn new(
        dest: &crate::config::Destination,
        schema: &Schema,
    ) -> Result<Mapper, Vec<ConfigIssue>> {
        compile::compile(dest, schema)
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Source columns the mapping reads (key columns first), so a reader can check a file's
    /// header once instead of failing every row. A missing column reads as null for
    /// `column:` sources and fails the row for templates and the key.
    pub fn source_columns(&self) -> &[String] {
        &self.columns
    }

    /// Maps one row. Nothing is sent for a row that fails.
    pub fn map(&self, row: &Row) -> Result<MappedRow, RowFailure> {
        let key = self.key(row)?;
        self.map_with_key(row, key)
    }

    /// The row's key from `key.columns` (`None` when the destination has no key): known
    /// even when another column of the row does not map, so the row still counts as present.
    pub fn key(&self, row: &Row) -> Result<Option<String>, RowFailure> {
        self.key
            .as_ref()
            .map(|k| self.build_key(k, row))
            .transpose()
    }

    /// Maps one row whose key [`Mapper::key`] already built.
    pub fn map_with_key(&self, row: &Row, key: Option<String>) -> Result<MappedRow, RowFailure> {
        let mut out = MappedRow {
            provenance: Some(row.provenance.clone()),
            fields: Vec::with_capacity(self.fields.len() + 1),
            key,
            ..MappedRow::default()
        };
        for slot in &self.attrs {
            let outcome = slot.eval(row)?;
            place_attribute(slot, outcome, &mut out).map_err(|p| slot.fail(row, p))?;
        }
        let key_field = self.key.as_ref().zip(out.key.as_deref());
        for (i, slot) in self.fields.iter().enumerate() {
            if let Some((k, key)) = key_field {
                if k.mapped.is_none() && k.insert_at == i {
                    out.fields.push(key_value(k, key));
                }
            }
            let outcome = slot.eval(row)?;
            let is_key_field = key_field.is_some_and(|(k, _)| k.mapped == Some(i));
            if let (true, Some((k, key))) = (is_key_field, key_field) {
                match &outcome {
                    Outcome::Value(c) if !same_as_key(c, key) => {
                        return Err(RowFailure {
                            provenance: row.provenance.clone(),
                            code: FailureCode::InvalidValue,
                            field: Some(slot.name.to_string()),
                            column: slot.column.as_deref().map(str::to_string),
                            message: format!(
                                "{}: this field holds the key (key.field), so its value must equal the key {} built from key.columns; the mapping gives {}",
                                slot.desc,
                                resolve::quote(key),
                                resolve::quote(&converted_text(c))
                            ),
                        });
                    }
                    Outcome::Value(_) => {}
                    Outcome::Omit | Outcome::Clear => {
                        out.fields.push(key_value(k, key));
                        continue;
                    }
                }
            }
            if let Some(field) = field_value(slot, outcome).map_err(|p| slot.fail(row, p))? {
                out.fields.push(field);
            }
        }
        if let Some((k, key)) = key_field {
            if k.mapped.is_none() && k.insert_at >= self.fields.len() {
                out.fields.push(key_value(k, key));
            }
        }
        Ok(out)
    }

    fn build_key(&self, k: &KeySpec, row: &Row) -> Result<String, RowFailure> {
        let fail = |code, column: &str, message: String| RowFailure {
            provenance: row.provenance.clone(),
            code,
            field: Some(k.field.to_string()),
            column: Some(column.to_string()),
            message,
        };
        let mut key = String::with_capacity(32);
        for (i, col) in k.columns.iter().enumerate() {
            let name = col.name.as_ref();
            let value = col.find(row).ok_or_else(|| {
                fail(
                    FailureCode::MissingRequired,
                    name,
                    format!(
                        "the row has no column '{name}', which is part of the key (key.columns)"
                    ),
                )
            })?;
            if value.is_blank() {
                return Err(fail(
                    FailureCode::MissingRequired,
                    name,
                    format!("column '{name}' is blank; it is part of the key (key.columns), so the row cannot be matched to a card or record"),
                ));
            }
            let text = match value {
                Value::Str(s) => Cow::Borrowed(s.trim()),
                other => Cow::Owned(other.to_string()),
            };
            if k.columns.len() > 1 && text.contains(k.separator.as_ref()) {
                return Err(fail(
                    FailureCode::InvalidValue,
                    name,
                    format!(
                        "column '{name}' value {} contains the key separator '{}', which would make keys ambiguous; choose another key.separator",
                        resolve::quote(&text),
                        k.separator
                    ),
                ));
            }
            if i > 0 {
                key.push_str(&k.separator);
            }
            key.push_str(&text);
        }
        if let Some(max) = k.max_chars {
            let n = key.chars().count();
            if n > max {
                let columns = k
                    .columns
                    .iter()
                    .map(|c| c.name.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RowFailure {
                    provenance: row.provenance.clone(),
                    code: FailureCode::TooLarge,
                    field: Some(k.field.to_string()),
                    message: format!(
                        "the key built from column(s) {columns} is {n} characters long; its field '{}' takes at most {max} (key starts with {})",
                        k.field,
                        resolve::quote(&key)
                    ),
                    column: Some(columns),
                });
            }
        }
        Ok(key)
    }

    /// Required fields (start-form fields of a pipe, required fields of a table) have a
    /// value. The engine calls it for rows that will be created.
    pub fn check_create(&self, row: &MappedRow) -> Result<(), RowFailure> {
        for req in &self.required {
            let present = row
                .fields
                .iter()
                .find(|f| f.field_id.as_str() == req.slug.as_ref())
                .is_some_and(|f| has_value(&f.value));
            if !present {
                let what = if self.operation.is_card() {
                    "a required start-form field"
                } else {
                    "a required field"
                };
                let thing = if self.operation.is_card() {
                    "card"
                } else {
                    "record"
                };
                return Err(RowFailure {
                    provenance: row.provenance.clone().unwrap_or_else(unknown_provenance),
                    code: FailureCode::MissingRequired,
                    field: Some(req.target.to_string()),
                    column: req.column.as_deref().map(str::to_string),
                    message: format!(
                        "{} is blank, but '{}' ({}) is {what} of {}: Pipefy does not create a {thing} without it",
                        req.desc, req.label, req.slug, self.scope
                    ),
                });
            }
        }
        Ok(())
    }

    /// The source column(s) behind a target (a field slug or an attribute such as
    /// `parent_ids`), for messages about a value found wrong after mapping.
    pub fn column_of(&self, target: &str) -> Option<&str> {
        self.attrs
            .iter()
            .chain(self.fields.iter())
            .find(|s| {
                let name = s.name.as_ref();
                name == target || name.strip_prefix("field:") == Some(target)
            })
            .and_then(|s| s.column.as_deref())
    }

    /// A phase id from a phase id or name (case-insensitive); `None` for an unknown phase or
    /// a table.
    pub fn phase_id_by_name(&self, name_or_id: &str) -> Option<String> {
        self.phases
            .as_ref()?
            .resolve(name_or_id)
            .ok()
            .map(str::to_string)
    }
}

fn has_value(v: &FieldValue) -> bool {
    match v {
        FieldValue::Clear => false,
        FieldValue::Connect(refs) => !refs.is_empty(),
        FieldValue::Files(files) => !files.is_empty(),
        FieldValue::Json(serde_json::Value::Null) => false,
        FieldValue::Json(serde_json::Value::String(s)) => !s.trim().is_empty(),
        FieldValue::Json(serde_json::Value::Array(a)) => !a.is_empty(),
        FieldValue::Json(_) => true,
    }
}

fn key_value(k: &KeySpec, key: &str) -> MappedField {
    MappedField {
        field_id: k.field.to_string(),
        value: FieldValue::Json(serde_json::Value::String(key.to_string())),
    }
}

fn converted_text(c: &Converted) -> String {
    match c {
        Converted::Text(s) => s.clone(),
        Converted::Json(serde_json::Value::String(s)) => s.clone(),
        Converted::Json(j) => j.to_string(),
        Converted::List(items) => items.join(", "),
        Converted::Refs(refs) => format!("{} connections", refs.len()),
        Converted::Files(files) => files
            .iter()
            .map(FileRef::location)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn same_as_key(c: &Converted, key: &str) -> bool {
    match c {
        Converted::Text(s) => s == key,
        Converted::Json(serde_json::Value::String(s)) => s == key,
        Converted::Json(serde_json::Value::Number(n)) => n.to_string() == key,
        _ => false,
    }
}

fn place_attribute(slot: &Slot, outcome: Outcome, out: &mut MappedRow) -> Result<(), Problem> {
    let mismatch = || Problem::internal("attribute value of the wrong shape");
    match (&slot.place, outcome) {
        (Place::Id, Outcome::Value(Converted::Text(s))) => out.id = Some(s),
        (Place::Id, _) => {
            return Err(Problem::new(
                FailureCode::MissingRequired,
                "the card id is blank; update_card needs the id of the card to update",
            ))
        }
        (_, Outcome::Omit) => {}
        (Place::Title, Outcome::Value(Converted::Text(s))) => out.title = Some(Set::Value(s)),
        (Place::Title, Outcome::Clear) => out.title = Some(Set::Clear),
        (Place::DueDate, Outcome::Value(Converted::Text(s))) => out.due_date = Some(Set::Value(s)),
        (Place::DueDate, Outcome::Clear) => out.due_date = Some(Set::Clear),
        (Place::Phase, Outcome::Value(Converted::Text(s))) => out.phase_id = Some(s),
        (Place::Assignees, Outcome::Value(Converted::List(v))) => {
            out.assignee_ids = Some(Set::Value(v))
        }
        (Place::Assignees, Outcome::Clear) => out.assignee_ids = Some(Set::Clear),
        (Place::Labels, Outcome::Value(Converted::List(v))) => out.label_ids = Some(Set::Value(v)),
        (Place::Labels, Outcome::Clear) => out.label_ids = Some(Set::Clear),
        (Place::Parents, Outcome::Value(Converted::Refs(v))) => out.parent_ids = Some(v),
        // `on_null: clear` is refused for phase_id and parent_ids by `Mapper::new`.
        (Place::Phase | Place::Parents, Outcome::Clear) => {}
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn field_value(slot: &Slot, outcome: Outcome) -> Result<Option<MappedField>, Problem> {
    let Place::Field(slug) = &slot.place else {
        return Err(Problem::internal("field slot without a field"));
    };
    let value = match outcome {
        Outcome::Omit => return Ok(None),
        Outcome::Clear => FieldValue::Clear,
        Outcome::Value(Converted::Text(s)) => FieldValue::Json(serde_json::Value::String(s)),
        Outcome::Value(Converted::Json(j)) => FieldValue::Json(j),
        Outcome::Value(Converted::List(items)) => FieldValue::Json(serde_json::Value::Array(
            items.into_iter().map(serde_json::Value::String).collect(),
        )),
        Outcome::Value(Converted::Refs(refs)) => FieldValue::Connect(refs),
        Outcome::Value(Converted::Files(files)) => FieldValue::Files(files),
    };
    Ok(Some(MappedField {
        field_id: slug.to_string(),
        value,
    }))
}
