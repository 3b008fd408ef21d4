//! `pipefy-sync init`: a first destination file from a pipe's (or a table's) schema and a
//! sample of the table.
//!
//! Columns are matched to fields in passes, surest first, each field taken once:
//!
//! ```text
//!   1 the column is the field's id            email      -> email
//!   2 the column is the field's label         "Sign-up"  -> signup_date ("Sign up")
//!   3 a card attribute by its usual names     stage      -> phase_id, owner_email -> assignee_ids
//!   4 one name ends or starts the other       name       -> customer_name   (a guess)
//! ```
//! Names are compared with accents, case and punctuation ignored (`Situação` is `situacao`).
//! The key is a column whose sampled values are all present and distinct, preferring names
//! like `*_id`, `code` or `key`; it is written to the field it matched, or to a free text
//! field named like an id. Dates and numbers whose sampled text Pipefy would not read get a
//! `parse_date` or `parse_number` transform. Connections and attachments need settings only a
//! person knows (the connected table, the files' bucket), so they are written as comments.
//! Every guess is commented in the file, and what is left over is listed at its end: the
//! columns that match no field and the required fields that no column fills.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::mapping::Schema;
use crate::pipefy::{FieldDef, FieldType};

/// The first rows of the table: its columns, and each row's cells as text (`None`: empty).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Where the rows came from, for the file's header.
    pub file: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Sample {
    fn values(&self, column: usize) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .filter_map(move |r| r.get(column).and_then(|v| v.as_deref()))
            .filter(|v| !v.trim().is_empty())
    }
}

/// What the file says besides the mapping: its name and where the table and token are.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    /// The `source:` block's lines (without the key), e.g. `  bucket: lake`.
    pub source: Vec<String>,
    /// The `token:` value, e.g. `{ env: PIPEFY_TOKEN }`.
    pub token: String,
    /// Written when it is not Pipefy's own.
    pub endpoint: Option<String>,
}

/// One line of the mapping: a target, its column, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field slug or card attribute (`title`, `phase_id`...).
    pub target: String,
    pub column: String,
    /// Transforms as YAML (`{ parse_date: { format: "%d/%m/%Y" } }`).
    pub transforms: Vec<String>,
    pub why: String,
    /// `false`: written as a comment, for a person to finish (connections, attachments).
    pub active: bool,
}

/// The key: its column, the field that holds it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGuess {
    pub column: String,
    pub field: String,
    pub why: String,
}

/// What `init` guessed.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub operation: &'static str,
    pub key: Option<KeyGuess>,
    /// Why there is no key, when there is none.
    pub no_key: Option<String>,
    pub entries: Vec<Entry>,
    pub unmatched_columns: Vec<String>,
    /// Required start-form (or table) fields no column fills: `(slug, label)`.
    pub required_missing: Vec<(String, String)>,
}

/// Lower case, accents dropped, anything but letters and digits a separator: the words of a
/// name.
pub fn words(name: &str) -> Vec<String> {
    let folded: String = name.chars().map(fold).collect::<String>().to_lowercase();
    folded
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// A Latin letter without its accent (Portuguese, Spanish, French, German names).
fn fold(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'Á' | 'À' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'A',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'É' | 'È' | 'Ê' | 'Ë' => 'E',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'Í' | 'Ì' | 'Î' | 'Ï' => 'I',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => 'O',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'Ú' | 'Ù' | 'Û' | 'Ü' => 'U',
        'ç' => 'c',
        'Ç' => 'C',
        'ñ' => 'n',
        'Ñ' => 'N',
        'ý' | 'ÿ' => 'y',
        'Ý' => 'Y',
        other => other,
    }
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (words(a), words(b));
    !a.is_empty() && a == b
}

/// Whether one name's words end or start the other's (`name` / `customer_name`,
/// `renewal` / `renewal_at`).
fn overlaps(a: &[String], b: &[String]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    !short.is_empty()
        && short.len() < long.len()
        && (long.ends_with(short) || long.starts_with(short))
}

/// Card attributes and the column names that usually carry them.
const ATTRIBUTES: [(&str, &[&str], &str); 5] = [
    (
        "title",
        &["title", "titulo", "name", "nome", "subject", "assunto"],
        "the card's title",
    ),
    (
        "due_date",
        &["due_date", "due", "deadline", "vencimento", "prazo"],
        "the card's due date",
    ),
    (
        "phase_id",
        &["phase", "stage", "fase", "etapa"],
        "the card's phase, by phase name",
    ),
    (
        "assignee_ids",
        &[
            "assignee",
            "assignees",
            "assignee_email",
            "owner",
            "owner_email",
            "responsavel",
        ],
        "the card's assignees, by email",
    ),
    (
        "label_ids",
        &["labels", "label", "etiquetas"],
        "the card's labels, by name",
    ),
];

/// Words that make a column a likely key, best first.
const KEY_WORDS: [&str; 6] = ["id", "key", "code", "uuid", "sku", "email"];

/// Guesses a destination for `schema` from `sample`.
pub fn draft(schema: &Schema, sample: &Sample) -> Draft {
    let (fields, required, is_pipe): (Vec<&FieldDef>, Vec<&FieldDef>, bool) = match schema {
        Schema::Pipe(p) => {
            let mut all: Vec<&FieldDef> = p.start_form_fields.iter().collect();
            all.extend(p.phases.iter().flat_map(|ph| ph.fields.iter()));
            let required = p.start_form_fields.iter().filter(|f| f.required).collect();
            (all, required, true)
        }
        Schema::Table(t) => (
            t.fields.iter().collect(),
            t.fields.iter().filter(|f| f.required).collect(),
            false,
        ),
    };
    let writable = |f: &&FieldDef| {
        !matches!(
            f.field_type,
            FieldType::Statement
                | FieldType::DynamicContent
                | FieldType::Formula
                | FieldType::Id
                | FieldType::Unknown
        )
    };
    let fields: Vec<&FieldDef> = fields.into_iter().filter(writable).collect();

    let mut m = Matching::default();
    // Passes 1 and 2: a field's id, then its label.
    for by_label in [false, true] {
        for (col, name) in sample.columns.iter().enumerate() {
            if m.used_columns.contains(&col) {
                continue;
            }
            let hit = fields.iter().find(|f| {
                !m.taken_fields.contains(&f.id)
                    && if by_label {
                        same(name, &f.label)
                    } else {
                        same(name, &f.id)
                    }
            });
            if let Some(f) = hit {
                let why = if by_label {
                    format!("the column is the field's label \"{}\"", f.label)
                } else {
                    "the column is the field's id".to_string()
                };
                m.claim(sample, col, f, why);
            }
        }
    }
    // Pass 3: card attributes by their usual names (a column may fill a field too: `name`
    // is the title and the customer's name).
    let mut attribute_columns: HashSet<usize> = HashSet::new();
    for (attr, names, what) in ATTRIBUTES {
        if !is_pipe && attr != "title" {
            continue;
        }
        let hit =
            sample.columns.iter().enumerate().find(|(col, c)| {
                !attribute_columns.contains(col) && names.iter().any(|n| same(c, n))
            });
        if let Some((col, name)) = hit {
            if attr != "title" && m.used_columns.contains(&col) {
                continue;
            }
            attribute_columns.insert(col);
            let transforms = match attr {
                "due_date" => date_transform(sample, col, true).into_iter().collect(),
                "assignee_ids" | "label_ids" => list_transform(sample, col).into_iter().collect(),
                _ => Vec::new(),
            };
            m.entries.push((
                col,
                Entry {
                    target: attr.to_string(),
                    column: name.clone(),
                    transforms,
                    why: format!("{what}: the column's name is the usual one"),
                    active: true,
                },
            ));
            if attr != "title" {
                m.used_columns.insert(col);
            }
        }
    }
    // Pass 4: one name ends or starts the other, when exactly one free field fits.
    for (col, name) in sample.columns.iter().enumerate() {
        if m.used_columns.contains(&col) {
            continue;
        }
        let cw = words(name);
        let fits: Vec<&&FieldDef> = fields
            .iter()
            .filter(|f| !m.taken_fields.contains(&f.id))
            .filter(|f| overlaps(&cw, &words(&f.id)) || overlaps(&cw, &words(&f.label)))
            .collect();
        if let [f] = fits.as_slice() {
            let why = format!(
                "a guess: the names '{name}' and '{}' (\"{}\") overlap",
                f.id, f.label
            );
            m.claim(sample, col, f, why);
        }
    }

    // The key.
    let Matching {
        taken_fields,
        mut entries,
        ..
    } = m;
    let (key, no_key) = guess_key(sample, &fields, &mut entries, &taken_fields);
    let operation = match (is_pipe, key.is_some()) {
        (true, true) => "upsert_card",
        (true, false) => "create_card",
        (false, true) => "upsert_record",
        (false, false) => "create_record",
    };
    let key_field = key.as_ref().map(|k| k.field.clone());
    let filled: HashSet<&str> = entries
        .iter()
        .filter(|(_, e)| e.active)
        .map(|(_, e)| e.target.strip_prefix("field:").unwrap_or(&e.target))
        .chain(key_field.as_deref())
        .collect();
    let required_missing = required
        .iter()
        .filter(|f| !filled.contains(f.id.as_str()))
        .map(|f| (f.id.clone(), f.label.clone()))
        .collect();
    let mapped_columns: HashSet<&str> = entries.iter().map(|(_, e)| e.column.as_str()).collect();
    let unmatched_columns = sample
        .columns
        .iter()
        .filter(|c| {
            !mapped_columns.contains(c.as_str()) && key.as_ref().is_none_or(|k| &k.column != *c)
        })
        .cloned()
        .collect();
    entries.sort_by_key(|(col, e)| (!e.active, *col));
    Draft {
        operation,
        key,
        no_key,
        entries: entries.into_iter().map(|(_, e)| e).collect(),
        unmatched_columns,
        required_missing,
    }
}

/// The fields and columns matched so far, and the entries they make (with their column's
/// place, to keep the table's order).
#[derive(Default)]
struct Matching {
    taken_fields: HashSet<String>,
    used_columns: HashSet<usize>,
    entries: Vec<(usize, Entry)>,
}

impl Matching {
    /// `col` fills `field`: neither is matched again.
    fn claim(&mut self, sample: &Sample, col: usize, field: &FieldDef, why: String) {
        self.taken_fields.insert(field.id.clone());
        self.used_columns.insert(col);
        self.entries
            .push((col, field_entry(sample, col, field, why)));
    }
}

/// The entry that writes `col` into `field`, with what its sampled values need.
fn field_entry(sample: &Sample, col: usize, field: &FieldDef, why: String) -> Entry {
    let column = sample.columns[col].clone();
    let mut transforms = Vec::new();
    let mut active = true;
    let mut why = why;
    match field.field_type {
        FieldType::Date => transforms.extend(date_transform(sample, col, false)),
        FieldType::Datetime | FieldType::DueDate => {
            transforms.extend(date_transform(sample, col, true))
        }
        FieldType::Number | FieldType::Currency => transforms.extend(number_transform(sample, col)),
        FieldType::ChecklistHorizontal
        | FieldType::ChecklistVertical
        | FieldType::LabelSelect
        | FieldType::AssigneeSelect => transforms.extend(list_transform(sample, col)),
        FieldType::Connector => {
            active = false;
            why = format!(
                "{why}; a connection: say where the values are looked up, e.g. connect: {{ table_id: <the connected table>, key_field: <its key field> }} (without it the values must be Pipefy ids)"
            );
        }
        FieldType::Attachment => {
            active = false;
            why = format!(
                "{why}; attachments: say where the files are, e.g. attach: {{ bucket: <bucket>, prefix: <folder> }}"
            );
        }
        _ => {}
    }
    // A field whose slug is also a card attribute's name is addressed as `field:<slug>`.
    let target = if crate::config::ATTRIBUTE_TARGETS.contains(&field.id.as_str()) {
        format!("field:{}", field.id)
    } else {
        field.id.clone()
    };
    Entry {
        target,
        column,
        transforms,
        why,
        active,
    }
}

/// `parse_date` with the one format every sampled value has, when that is not ISO 8601
/// (which Pipefy's fields take as it is).
fn date_transform(sample: &Sample, col: usize, with_time: bool) -> Option<String> {
    const DATES: [&str; 3] = ["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y"];
    const TIMES: [&str; 4] = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%d/%m/%Y %H:%M",
        "%d/%m/%Y %H:%M:%S",
    ];
    let values: Vec<&str> = sample.values(col).map(str::trim).collect();
    if values.is_empty() || values.iter().all(|v| is_iso(v)) {
        return None;
    }
    let formats: &[&str] = if with_time { &TIMES } else { &DATES };
    let parses = |f: &str, v: &str| {
        chrono::NaiveDateTime::parse_from_str(v, f).is_ok()
            || chrono::NaiveDate::parse_from_str(v, f).is_ok()
    };
    // The format most values have, if most do: a few bad dates are the table's to fix (they
    // fail their rows), not a reason to guess no format.
    let (format, parsed) = formats
        .iter()
        .chain(if with_time { DATES.iter() } else { [].iter() })
        .map(|f| (f, values.iter().filter(|v| parses(f, v)).count()))
        .max_by_key(|(_, n)| *n)?;
    (parsed * 5 >= values.len() * 4)
        .then(|| format!("{{ parse_date: {{ format: \"{format}\" }} }}"))
}

fn is_iso(v: &str) -> bool {
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
        || chrono::DateTime::parse_from_rfc3339(v).is_ok()
}

/// `parse_number` with a decimal comma, when the sampled numbers are written with one
/// (`2481,50`, `1.234,56`).
fn number_transform(sample: &Sample, col: usize) -> Option<String> {
    let mut comma = false;
    for v in sample.values(col).map(str::trim) {
        let digits_and_marks = v
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',' || c == '-');
        if !digits_and_marks {
            return None;
        }
        if let Some((_, decimals)) = v.rsplit_once(',') {
            if !decimals.is_empty() && decimals.len() != 3 {
                comma = true;
            }
        }
    }
    comma.then(|| "{ parse_number: { decimal_separator: \",\" } }".to_string())
}

/// `split` on the separator that sampled lists use (`;` or `,`), when the values are lists.
fn list_transform(sample: &Sample, col: usize) -> Option<String> {
    [";", ","]
        .into_iter()
        .find(|sep| sample.values(col).any(|v| v.contains(sep)))
        .map(|sep| format!("{{ split: {{ separator: \"{sep}\" }} }}"))
}

/// A column whose sampled values are all present and distinct, named like a key, and the
/// field that can hold it.
fn guess_key(
    sample: &Sample,
    fields: &[&FieldDef],
    entries: &mut Vec<(usize, Entry)>,
    taken: &HashSet<String>,
) -> (Option<KeyGuess>, Option<String>) {
    if sample.rows.is_empty() {
        return (None, Some("the sample has no rows to find a key in".into()));
    }
    // Distinct present values over rows: 1.0 for a perfect key. A few empty or repeated
    // cells still make a key (those rows fail as MISSING_REQUIRED or DUPLICATE_KEY).
    let share = |col: usize| {
        let distinct: HashSet<&str> = sample.values(col).map(str::trim).collect();
        distinct.len() as f64 / sample.rows.len() as f64
    };
    let score = |name: &str| {
        let w = words(name);
        KEY_WORDS
            .iter()
            .position(|k| w.last().is_some_and(|l| l == k))
            .map_or(KEY_WORDS.len(), |p| p)
    };
    let mut candidates: Vec<(usize, f64)> = (0..sample.columns.len())
        .map(|c| (c, share(c)))
        .filter(|(_, s)| *s >= 0.9)
        .collect();
    candidates.sort_by(|a, b| {
        score(&sample.columns[a.0])
            .cmp(&score(&sample.columns[b.0]))
            .then(b.1.total_cmp(&a.1))
            .then(a.0.cmp(&b.0))
    });
    let Some(&(col, col_share)) = candidates.first() else {
        return (
            None,
            Some("no column has a distinct value in (nearly) every sampled row".into()),
        );
    };
    let column = sample.columns[col].clone();
    let distinct = if col_share >= 1.0 {
        format!("every sampled row has a distinct '{column}'")
    } else {
        format!(
            "'{column}' is distinct in {:.0}% of the sampled rows (the others will fail as MISSING_REQUIRED or DUPLICATE_KEY)",
            col_share * 100.0
        )
    };
    let text_field = |f: &FieldDef| {
        matches!(
            f.field_type,
            FieldType::ShortText | FieldType::Email | FieldType::Number
        )
    };
    // The field the key column already matched holds it; its mapping entry goes (the key
    // writes it).
    if let Some(pos) = entries.iter().position(|(c, e)| {
        *c == col
            && e.active
            && fields.iter().any(|f| {
                e.target.strip_prefix("field:").unwrap_or(&e.target) == f.id && text_field(f)
            })
    }) {
        let (_, entry) = entries.remove(pos);
        let why = format!(
            "{distinct}, and {}: the key is written there",
            entry.why.replace("the column is", "it is")
        );
        return (
            Some(KeyGuess {
                column,
                field: entry
                    .target
                    .strip_prefix("field:")
                    .unwrap_or(&entry.target)
                    .to_string(),
                why,
            }),
            None,
        );
    }
    let free = fields
        .iter()
        .filter(|f| !taken.contains(&f.id) && f.field_type == FieldType::ShortText)
        .filter(|f| {
            words(&f.id).iter().chain(words(&f.label).iter()).any(|w| {
                matches!(
                    w.as_str(),
                    "id" | "key" | "code" | "external" | "ref" | "reference"
                )
            })
        })
        .min_by_key(|f| !f.required);
    match free {
        Some(f) => (
            Some(KeyGuess {
                column: column.clone(),
                field: f.id.clone(),
                why: format!(
                    "{distinct}; a guess: '{}' (\"{}\") is a free text field named like an id, so it holds the key",
                    f.id, f.label
                ),
            }),
            None,
        ),
        None => (
            None,
            Some(format!(
                "'{column}' could be the key, but no free short-text field can hold it: add one (an \"External ID\") and set key: {{ columns: [{column}], field: <its id> }} with operation upsert_*"
            )),
        ),
    }
}

/// The destination file: YAML with every guess commented.
pub fn render(draft: &Draft, schema: &Schema, sample: &Sample, setting: &Setting) -> String {
    let mut out = String::new();
    let (what, id_line) = match schema {
        Schema::Pipe(p) => (
            format!("pipe {} (\"{}\")", p.id, p.name),
            format!("pipe_id: \"{}\"", p.id),
        ),
        Schema::Table(t) => (
            format!("table {} (\"{}\")", t.id, t.name),
            format!("table_id: \"{}\"", t.id),
        ),
    };
    let _ = writeln!(
        out,
        "# Written by `pipefy-sync init` from {what} and {} sampled rows of {}.",
        sample.rows.len(),
        sample.file
    );
    out.push_str("# Each guess says why. Check them, then run `pipefy-sync check` and `pipefy-sync plan` on\n# this file.\n");
    let _ = writeln!(out, "name: {}", setting.name);
    let _ = writeln!(out, "{id_line}");
    match (&draft.key, &draft.no_key) {
        (Some(k), _) => {
            let _ = writeln!(out, "# The key: {}.", k.why);
            let _ = writeln!(out, "operation: {}", draft.operation);
            let _ = writeln!(
                out,
                "key: {{ columns: [{}], field: {} }}",
                yaml_word(&k.column),
                k.field
            );
        }
        (None, why) => {
            let _ = writeln!(
                out,
                "# No key: {}. Without one every run creates a card or record for each new or changed row.",
                why.as_deref().unwrap_or("none found")
            );
            let _ = writeln!(out, "operation: {}", draft.operation);
        }
    }
    out.push_str("source:\n");
    for line in &setting.source {
        let _ = writeln!(out, "{line}");
    }
    out.push_str("mapping:\n");
    for e in &draft.entries {
        let _ = writeln!(out, "  # {}", e.why);
        let value = if e.transforms.is_empty() {
            yaml_word(&e.column)
        } else {
            format!(
                "{{ column: {}, transforms: [{}] }}",
                yaml_word(&e.column),
                e.transforms.join(", ")
            )
        };
        let prefix = if e.active { "" } else { "# " };
        let _ = writeln!(out, "  {prefix}{}: {value}", yaml_word(&e.target));
    }
    if draft.entries.iter().all(|e| !e.active) {
        out.push_str("  {}\n");
    }
    out.push_str("partial_success: true\n");
    let _ = writeln!(out, "token: {}", setting.token);
    if let Some(endpoint) = &setting.endpoint {
        let _ = writeln!(out, "endpoint: {endpoint}");
    }
    if !draft.unmatched_columns.is_empty() {
        out.push_str("\n# Columns that match no field (map them by hand, or leave them out):\n");
        for c in &draft.unmatched_columns {
            let _ = writeln!(out, "#   - {c}");
        }
    }
    if !draft.required_missing.is_empty() {
        out.push_str("\n# REQUIRED fields that no column fills: a create needs them, so `check` refuses this\n# file until each is mapped:\n");
        for (id, label) in &draft.required_missing {
            let _ = writeln!(out, "#   - {id} (\"{label}\")");
        }
    }
    out
}

/// A column name as a YAML scalar: plain when it is a plain word, quoted otherwise.
fn yaml_word(s: &str) -> String {
    // A name that starts like a number would read as one (`2024`, `1e5`).
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipefy::{PhaseDef, PipeSchema, TableSchema};

    fn field(id: &str, label: &str, ty: FieldType, required: bool) -> FieldDef {
        FieldDef {
            id: id.into(),
            uuid: None,
            internal_id: None,
            label: label.into(),
            field_type: ty,
            required,
            options: vec!["A".into()],
        }
    }

    fn pipe(fields: Vec<FieldDef>) -> Schema {
        Schema::Pipe(PipeSchema {
            id: "1".into(),
            name: "P".into(),
            start_form_phase_id: None,
            organization_id: None,
            phases: vec![PhaseDef {
                id: "9".into(),
                name: "Doing".into(),
                done: false,
                fields: vec![],
                cards_can_be_moved_to_phases: vec![],
            }],
            start_form_fields: fields,
            labels: vec![],
            members: vec![],
        })
    }

    fn sample(columns: &[&str], rows: &[&[&str]]) -> Sample {
        Sample {
            file: "t.csv".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| (!v.is_empty()).then(|| v.to_string()))
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn names_compare_without_accents_case_or_punctuation() {
        assert_eq!(words("Situação do Cliente"), ["situacao", "do", "cliente"]);
        assert!(same("DATA_DE_ADESÃO", "Data de adesão"));
        assert!(!same("", ""));
        assert!(overlaps(&words("name"), &words("customer_name")));
        assert!(overlaps(&words("renewal"), &words("renewal_at")));
        assert!(!overlaps(&words("plan"), &words("plan")));
        assert!(!overlaps(&words("name"), &words("surname_x")));
    }

    #[test]
    fn columns_match_by_id_then_label_then_a_commented_guess() {
        let schema = pipe(vec![
            field("external_id", "External ID", FieldType::ShortText, true),
            field("customer_name", "Customer name", FieldType::ShortText, true),
            field("email", "Email", FieldType::Email, false),
            field("signup_date", "Data de adesão", FieldType::Date, false),
            field("mrr", "MRR", FieldType::Currency, false),
            field("account", "Account", FieldType::Connector, false),
            field("phone", "Phone", FieldType::Phone, true),
        ]);
        let s = sample(
            &[
                "customer_id",
                "name",
                "EMAIL",
                "Data de Adesão",
                "mrr",
                "account_code",
                "stage",
                "notes",
            ],
            &[
                &[
                    "C1",
                    "Ana",
                    "a@x.com",
                    "21/01/2025",
                    "2481,50",
                    "ACME",
                    "Doing",
                    "x",
                ],
                &[
                    "C2",
                    "Bia",
                    "b@x.com",
                    "02/02/2025",
                    "10,00",
                    "INI",
                    "Doing",
                    "y",
                ],
            ],
        );
        let d = draft(&schema, &s);
        assert_eq!(d.operation, "upsert_card");
        let key = d.key.clone().unwrap();
        assert_eq!(
            (key.column.as_str(), key.field.as_str()),
            ("customer_id", "external_id")
        );
        let target_of = |col: &str| {
            d.entries
                .iter()
                .filter(|e| e.column == col)
                .map(|e| (e.target.as_str(), e.active))
                .collect::<Vec<_>>()
        };
        assert_eq!(target_of("EMAIL"), [("email", true)]);
        assert_eq!(target_of("Data de Adesão"), [("signup_date", true)]);
        assert_eq!(
            target_of("name"),
            [("title", true), ("customer_name", true)]
        );
        assert_eq!(target_of("stage"), [("phase_id", true)]);
        assert_eq!(
            target_of("account_code"),
            [("account", false)],
            "a connection is for a person to finish"
        );
        let signup = d
            .entries
            .iter()
            .find(|e| e.target == "signup_date")
            .unwrap();
        assert_eq!(
            signup.transforms,
            ["{ parse_date: { format: \"%d/%m/%Y\" } }"]
        );
        let mrr = d.entries.iter().find(|e| e.target == "mrr").unwrap();
        assert_eq!(
            mrr.transforms,
            ["{ parse_number: { decimal_separator: \",\" } }"]
        );
        assert!(d
            .entries
            .iter()
            .find(|e| e.target == "customer_name")
            .unwrap()
            .why
            .starts_with("a guess"));
        assert_eq!(d.unmatched_columns, ["notes"]);
        assert_eq!(
            d.required_missing,
            [("phone".to_string(), "Phone".to_string())]
        );

        let file = render(
            &d,
            &schema,
            &s,
            &Setting {
                name: "customers".into(),
                source: vec![
                    "  path: data".into(),
                    "  layer: refined".into(),
                    "  table: customers".into(),
                ],
                token: "{ env: PIPEFY_TOKEN }".into(),
                endpoint: None,
            },
        );
        assert!(
            file.contains("key: { columns: [customer_id], field: external_id }"),
            "{file}"
        );
        assert!(
            file.contains("  \"Data de Adesão\": ")
                || file.contains("  signup_date: { column: \"Data de Adesão\""),
            "{file}"
        );
        assert!(file.contains("  # account: account_code"), "{file}");
        assert!(file.contains("#   - notes"), "{file}");
        assert!(file.contains("#   - phone (\"Phone\")"), "{file}");
    }

    #[test]
    fn a_field_named_like_an_attribute_and_a_numeric_column_are_written_so_they_read_back() {
        let schema = pipe(vec![
            field("title", "Title", FieldType::ShortText, false),
            field("code", "Code", FieldType::ShortText, false),
            field("n2024", "2024", FieldType::Number, false),
        ]);
        let s = sample(
            &["code", "title", "2024"],
            &[&["a", "T1", "1"], &["b", "T2", "2"]],
        );
        let d = draft(&schema, &s);
        let targets: Vec<&str> = d.entries.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["field:title", "title", "n2024"], "{d:#?}");
        let file = render(
            &d,
            &schema,
            &s,
            &Setting {
                name: "n".into(),
                source: vec!["  path: d".into(), "  layer: l".into(), "  table: t".into()],
                token: "{ env: T }".into(),
                endpoint: None,
            },
        );
        let dest = crate::config::parse_destination("init.yaml", &file).expect(&file);
        assert!(dest.mapping.contains_key("field:title"), "{file}");
        assert!(dest.mapping.contains_key("title"), "{file}");
        assert!(file.contains("n2024: \"2024\""), "{file}");
    }

    #[test]
    fn without_a_distinct_column_or_a_field_to_hold_it_there_is_no_key_and_it_says_why() {
        let schema = Schema::Table(TableSchema {
            id: "t".into(),
            name: "T".into(),
            fields: vec![field("name", "Name", FieldType::ShortText, false)],
        });
        let dup = sample(&["name"], &[&["a"], &["a"]]);
        let d = draft(&schema, &dup);
        assert_eq!(d.operation, "create_record");
        assert!(d.no_key.unwrap().contains("distinct"));
        let distinct = sample(&["code", "name"], &[&["1", "a"], &["2", "a"]]);
        let d = draft(&schema, &distinct);
        assert_eq!(d.operation, "create_record");
        assert!(d.no_key.unwrap().contains("'code' could be the key"));
    }
}
