//! `Mapper::new`: the mapping checked against the schema and compiled once per run.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{
    target_of, ConnectConfig, Destination, FieldMapping, ListMode, NullPolicy, Operation,
    RemovalAction, Target, ValueSource,
};
use crate::pipefy::schema::{FieldDef, FieldType};
use crate::value::Value;

use super::convert::{ConnectSpec, Conv};
use super::limits::{LONG_TEXT_MAX_CHARS, SHORT_TEXT_MAX_CHARS, TITLE_MAX_CHARS};
use super::resolve::{preview, MemberIndex, NamedIndex, OptionIndex};
use super::template::{ColumnRef, Template};
use super::transform::Step;
use super::{ConfigIssue, KeySpec, Mapper, Place, Required, Schema, Slot, Source};

/// The parts of the schema the compiler needs, for a pipe or a table alike.
struct View<'s> {
    is_pipe: bool,
    scope: String,
    /// Custom fields by slug; for a pipe start-form fields first (they win on a clash),
    /// `true` marking start-form fields.
    fields: Vec<(&'s FieldDef, bool)>,
    by_slug: HashMap<&'s str, usize>,
    phases: Option<Arc<NamedIndex>>,
    labels: Option<Arc<NamedIndex>>,
    members: Option<Arc<MemberIndex>>,
}

impl<'s> View<'s> {
    fn new(schema: &'s Schema) -> View<'s> {
        let mut fields: Vec<(&FieldDef, bool)> = Vec::new();
        let (is_pipe, scope, phases, labels, members) = match schema {
            Schema::Pipe(p) => {
                let scope = format!("pipe '{}' ({})", p.name, p.id);
                fields.extend(p.start_form_fields.iter().map(|f| (f, true)));
                fields.extend(
                    p.phases
                        .iter()
                        .flat_map(|ph| ph.fields.iter())
                        .map(|f| (f, false)),
                );
                let phases = NamedIndex::new(
                    "phase",
                    scope.clone(),
                    p.phases.iter().map(|ph| (ph.id.as_str(), ph.name.as_str())),
                );
                let labels = NamedIndex::new(
                    "label",
                    scope.clone(),
                    p.labels.iter().map(|l| (l.id.as_str(), l.name.as_str())),
                );
                let members = MemberIndex::new(
                    scope.clone(),
                    p.members
                        .iter()
                        .map(|m| (m.id.as_str(), m.name.as_str(), m.email.as_str())),
                );
                (
                    true,
                    scope,
                    Some(Arc::new(phases)),
                    Some(Arc::new(labels)),
                    Some(Arc::new(members)),
                )
            }
            Schema::Table(t) => {
                fields.extend(t.fields.iter().map(|f| (f, false)));
                (
                    false,
                    format!("table '{}' ({})", t.name, t.id),
                    None,
                    None,
                    None,
                )
            }
        };
        let mut by_slug = HashMap::with_capacity(fields.len());
        for (i, (f, _)) in fields.iter().enumerate() {
            by_slug.entry(f.id.as_str()).or_insert(i);
        }
        View {
            is_pipe,
            scope,
            fields,
            by_slug,
            phases,
            labels,
            members,
        }
    }

    fn field(&self, slug: &str) -> Option<(&'s FieldDef, bool)> {
        self.by_slug
            .get(slug)
            .and_then(|&i| self.fields.get(i))
            .copied()
    }

    fn slugs(&self) -> String {
        preview(self.fields.iter().map(|(f, _)| f.id.as_str()))
    }
}

/// Pipefy's type id, for messages.
fn type_name(t: &FieldType) -> Cow<'static, str> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => Cow::Owned(s),
        _ => Cow::Borrowed("unknown"),
    }
}

fn yaml_value(y: &serde_norway::Value) -> Result<Value, String> {
    Ok(match y {
        serde_norway::Value::Null => Value::Null,
        serde_norway::Value::Bool(b) => Value::Bool(*b),
        serde_norway::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                Value::Decimal(n.to_string())
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_norway::Value::String(s) => Value::Str(s.clone()),
        serde_norway::Value::Sequence(items) => {
            Value::List(items.iter().map(yaml_value).collect::<Result<_, _>>()?)
        }
        serde_norway::Value::Mapping(_) => {
            return Err(
                "a constant must be a string, number, boolean or list, not a mapping".to_string(),
            )
        }
        serde_norway::Value::Tagged(t) => yaml_value(&t.value)?,
    })
}

struct Compiler<'a, 's> {
    dest: &'a Destination,
    view: View<'s>,
    issues: Vec<ConfigIssue>,
}

impl Compiler<'_, '_> {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue::new(path, message));
    }

    /// `connect:` of a connector field or `parent_ids`. `Ok(None)`: values are ids.
    fn connect_spec(
        &mut self,
        path: &str,
        connect: Option<&ConnectConfig>,
        cards_only: bool,
    ) -> Option<ConnectSpec> {
        let c = connect?;
        let key_field = c.key_field.as_ref()?;
        let repo = match (&c.pipe_id, &c.table_id) {
            (Some(p), None) => format!("pipe:{p}"),
            (None, Some(t)) if !cards_only => format!("table:{t}"),
            (None, Some(_)) => {
                self.issue(
                    format!("{path}.connect.table_id"),
                    "parent_ids connects parent cards: give the parent pipe as connect.pipe_id",
                );
                return None;
            }
            _ => {
                self.issue(
                    format!("{path}.connect"),
                    "give exactly one of pipe_id or table_id: where the key_field is looked up",
                );
                return None;
            }
        };
        if key_field.trim().is_empty() {
            self.issue(
                format!("{path}.connect.key_field"),
                "must name the field that holds the key in the connected pipe or table",
            );
            return None;
        }
        Some(ConnectSpec {
            repo,
            key_field: key_field.clone(),
        })
    }

    fn field_conv(&mut self, path: &str, f: &FieldDef, fm: &FieldMapping) -> Option<Conv> {
        let conv = match f.field_type {
            FieldType::ShortText | FieldType::Cpf | FieldType::Cnpj => Conv::Text {
                max: SHORT_TEXT_MAX_CHARS,
            },
            FieldType::LongText => Conv::Text {
                max: LONG_TEXT_MAX_CHARS,
            },
            FieldType::Email => Conv::Email,
            FieldType::Phone => Conv::Phone,
            FieldType::Number => Conv::Number,
            FieldType::Currency => Conv::Currency,
            FieldType::Date => Conv::Date,
            FieldType::Datetime | FieldType::DueDate => Conv::DateTime,
            FieldType::Time => Conv::Time,
            FieldType::Select
            | FieldType::RadioHorizontal
            | FieldType::RadioVertical
            | FieldType::ChecklistHorizontal
            | FieldType::ChecklistVertical => {
                if f.options.is_empty() {
                    self.issue(
                        path,
                        format!(
                            "field '{}' ({}) has no options in {}, so no value can be written",
                            f.id,
                            type_name(&f.field_type),
                            self.view.scope
                        ),
                    );
                    return None;
                }
                let ix = OptionIndex::new(&f.options);
                if matches!(
                    f.field_type,
                    FieldType::ChecklistHorizontal | FieldType::ChecklistVertical
                ) {
                    Conv::Checklist(ix)
                } else {
                    Conv::Select(ix)
                }
            }
            FieldType::LabelSelect => Conv::Labels(self.view.labels.clone()),
            FieldType::AssigneeSelect => Conv::Assignees(self.view.members.clone()),
            FieldType::Connector => {
                Conv::Connect(self.connect_spec(path, fm.connect.as_ref(), false))
            }
            FieldType::Attachment => match &fm.attach {
                Some(attach) => Conv::Files(std::sync::Arc::new(super::AttachSource::new(
                    attach,
                    self.dest.source.bucket.as_deref(),
                ))),
                None => Conv::Attachment,
            },
            FieldType::Statement
            | FieldType::DynamicContent
            | FieldType::Formula
            | FieldType::Id
            | FieldType::Unknown => {
                self.issue(
                    path,
                    format!(
                        "field '{}' ('{}') is of type {}, which Pipefy computes or only displays: it cannot be written",
                        f.id,
                        f.label,
                        type_name(&f.field_type)
                    ),
                );
                return None;
            }
        };
        if fm.attach.is_some() && f.field_type != FieldType::Attachment {
            self.issue(
                format!("{path}.attach"),
                format!(
                    "field '{}' is of type {}; attach applies only to attachment fields",
                    f.id,
                    type_name(&f.field_type)
                ),
            );
        }
        if fm.connect.is_some() && f.field_type != FieldType::Connector {
            self.issue(
                format!("{path}.connect"),
                format!(
                    "field '{}' is of type {}; connect applies only to connector fields and parent_ids",
                    f.id,
                    type_name(&f.field_type)
                ),
            );
        }
        Some(conv)
    }

    /// The target's place and conversion; `None` after recording an issue.
    fn target(&mut self, name: &str, fm: &FieldMapping) -> Option<(Place, Conv)> {
        let path = format!("mapping.{name}");
        let op = self.dest.operation;
        let pipe_only = |c: &mut Self, what: &str| {
            if c.view.is_pipe {
                true
            } else {
                c.issue(
                    &path,
                    format!("{what}; {} is a database table", c.view.scope),
                );
                false
            }
        };
        let attr_connect = |c: &mut Self, attr: &str| {
            if fm.connect.is_some() {
                c.issue(
                    format!("{path}.connect"),
                    format!("{attr} is not a connection; connect applies only to connector fields and parent_ids"),
                );
            }
        };
        let no_clear = |c: &mut Self, what: &str| {
            if fm.on_null == NullPolicy::Clear {
                c.issue(
                    format!("{path}.on_null"),
                    format!("{what} cannot be cleared; use on_null: leave"),
                );
            }
        };
        match target_of(name) {
            Target::Attribute("id") => {
                attr_connect(self, "id");
                no_clear(self, "the card id");
                if op != Operation::UpdateCard {
                    self.issue(
                        &path,
                        format!(
                            "the id target is used only by update_card; {} finds cards and records by key (key.columns)",
                            op.as_str()
                        ),
                    );
                    return None;
                }
                Some((Place::Id, Conv::CardId))
            }
            Target::Attribute("title") => {
                attr_connect(self, "title");
                Some((
                    Place::Title,
                    Conv::Text {
                        max: TITLE_MAX_CHARS,
                    },
                ))
            }
            Target::Attribute("due_date") => {
                attr_connect(self, "due_date");
                Some((Place::DueDate, Conv::DateTimeUtc))
            }
            Target::Attribute("phase_id") => {
                attr_connect(self, "phase_id");
                no_clear(self, "a card's phase");
                if !pipe_only(self, "phase_id places cards in a phase") {
                    return None;
                }
                let phases = self.view.phases.clone()?;
                Some((Place::Phase, Conv::Phase(phases)))
            }
            Target::Attribute("assignee_ids") => {
                attr_connect(self, "assignee_ids");
                Some((Place::Assignees, Conv::Assignees(self.view.members.clone())))
            }
            Target::Attribute("label_ids") => {
                attr_connect(self, "label_ids");
                Some((Place::Labels, Conv::Labels(self.view.labels.clone())))
            }
            Target::Attribute("parent_ids") => {
                no_clear(self, "parent_ids");
                if !pipe_only(self, "parent_ids connects a new card to parent cards") {
                    return None;
                }
                let spec = self.connect_spec(&path, fm.connect.as_ref(), true);
                Some((Place::Parents, Conv::Connect(spec)))
            }
            Target::Attribute(other) => {
                self.issue(
                    &path,
                    format!("'{other}' is not a card attribute this version writes"),
                );
                None
            }
            Target::Field(slug) => match self.view.field(slug) {
                Some((f, _)) => {
                    let conv = self.field_conv(&path, f, fm)?;
                    Some((Place::Field(slug.into()), conv))
                }
                None => {
                    let msg = format!(
                        "no field '{slug}' in {}; field ids there: {}",
                        self.view.scope,
                        self.view.slugs()
                    );
                    self.issue(&path, msg);
                    None
                }
            },
        }
    }

    fn slot(&mut self, name: &str, fm: &FieldMapping) -> Option<Slot> {
        let path = format!("mapping.{name}");
        let mut steps = Vec::with_capacity(fm.transforms.len());
        let mut steps_ok = true;
        for (i, t) in fm.transforms.iter().enumerate() {
            match Step::compile(t) {
                Ok(s) => steps.push(s),
                Err(m) => {
                    self.issue(format!("{path}.transforms[{i}]"), m);
                    steps_ok = false;
                }
            }
        }
        let (source, desc, column, constant) = match &fm.value {
            ValueSource::Column(c) => {
                if c.trim().is_empty() {
                    self.issue(format!("{path}.column"), "the column name is empty");
                    return None;
                }
                (
                    Source::Column(ColumnRef::new(c)),
                    format!("column '{c}'"),
                    Some(c.as_str().into()),
                    None,
                )
            }
            ValueSource::Template(t) => match Template::parse(t) {
                Ok(tpl) => {
                    let cols: Vec<&str> = tpl.columns().collect();
                    let column = (!cols.is_empty()).then(|| cols.join(", ").into());
                    (
                        Source::Template(tpl),
                        format!("template '{t}'"),
                        column,
                        None,
                    )
                }
                Err(m) => {
                    self.issue(format!("{path}.template"), m);
                    return None;
                }
            },
            ValueSource::Constant(y) => match yaml_value(y) {
                Ok(v) => (
                    Source::Constant(super::Outcome::Omit),
                    "constant".to_string(),
                    None,
                    Some(v),
                ),
                Err(m) => {
                    self.issue(format!("{path}.constant"), m);
                    return None;
                }
            },
        };
        let (place, conv) = self.target(name, fm)?;
        if fm.mode == ListMode::Add && !conv.is_list() {
            self.issue(
                format!("{path}.mode"),
                "`mode: add` applies to list targets (labels, assignees, parents, checklist, connector, label and assignee fields); this target holds one value",
            );
            return None;
        }
        if !steps_ok {
            return None;
        }
        let mut slot = Slot {
            name: name.into(),
            place,
            source,
            steps,
            on_null: fm.on_null,
            conv,
            desc: desc.into(),
            column,
        };
        if let Some(v) = constant {
            match slot.process(Cow::Owned(v)) {
                Ok(outcome) => slot.source = Source::Constant(outcome),
                Err(p) => {
                    self.issue(format!("{path}.constant"), p.message);
                    return None;
                }
            }
        }
        Some(slot)
    }

    fn key(&mut self, fields: &[Slot]) -> Option<KeySpec> {
        let op = self.dest.operation;
        let Some(k) = &self.dest.key else {
            if matches!(op, Operation::UpsertCard | Operation::UpsertRecord) {
                self.issue(
                    "key",
                    format!(
                        "{} needs a key: the columns that identify a row and the field that holds them in Pipefy",
                        op.as_str()
                    ),
                );
            }
            return None;
        };
        let mut ok = true;
        if k.columns.is_empty() {
            self.issue("key.columns", "list at least one source column");
            ok = false;
        }
        for (i, c) in k.columns.iter().enumerate() {
            if c.trim().is_empty() {
                self.issue(format!("key.columns[{i}]"), "the column name is empty");
                ok = false;
            }
        }
        if k.columns.len() > 1 && k.separator.is_empty() {
            self.issue(
                "key.separator",
                "must not be empty when the key has several columns",
            );
            ok = false;
        }
        let max_chars = match self.view.field(&k.field) {
            None => {
                let msg = format!(
                    "no field '{}' in {}; field ids there: {}",
                    k.field,
                    self.view.scope,
                    self.view.slugs()
                );
                self.issue("key.field", msg);
                return None;
            }
            Some((f, _)) => match f.field_type {
                FieldType::ShortText
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Cpf
                | FieldType::Cnpj => Some(SHORT_TEXT_MAX_CHARS),
                FieldType::LongText => Some(LONG_TEXT_MAX_CHARS),
                FieldType::Number => None,
                _ => {
                    self.issue(
                        "key.field",
                        format!(
                            "field '{}' is of type {}; the key must live in a text field (short_text recommended) or a number field",
                            f.id,
                            type_name(&f.field_type)
                        ),
                    );
                    return None;
                }
            },
        };
        if !ok {
            return None;
        }
        let mapped = fields
            .iter()
            .position(|s| matches!(&s.place, Place::Field(slug) if slug.as_ref() == k.field));
        let insert_at = fields.partition_point(
            |s| matches!(&s.place, Place::Field(slug) if slug.as_ref() < k.field.as_str()),
        );
        Some(KeySpec {
            columns: k.columns.iter().map(|c| ColumnRef::new(c)).collect(),
            separator: k.separator.as_str().into(),
            field: k.field.as_str().into(),
            mapped,
            insert_at,
            max_chars,
        })
    }

    fn required(&mut self, fields: &[Slot], key: Option<&KeySpec>) -> Vec<Required> {
        let op = self.dest.operation;
        let upsert = matches!(op, Operation::UpsertCard | Operation::UpsertRecord);
        // Operations that never create need no field a create needs.
        if matches!(op, Operation::UpdateCard) || (upsert && !self.dest.upsert.create) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let candidates: Vec<&FieldDef> = self
            .view
            .fields
            .iter()
            .filter(|(f, start_form)| {
                f.required && f.field_type.is_writable() && (*start_form || !self.view.is_pipe)
            })
            .map(|(f, _)| *f)
            .collect();
        for f in candidates {
            let slot = fields
                .iter()
                .find(|s| matches!(&s.place, Place::Field(slug) if slug.as_ref() == f.id));
            if let Some(s) = slot {
                out.push(Required {
                    slug: f.id.as_str().into(),
                    label: f.label.as_str().into(),
                    target: s.name.clone(),
                    desc: s.desc.clone(),
                    column: s.column.clone(),
                });
            } else if key.is_some_and(|k| k.field.as_ref() == f.id) {
                // Always filled with the key, which is never blank.
            } else {
                let where_ = if self.view.is_pipe {
                    "required start-form field"
                } else {
                    "required field"
                };
                let msg = format!(
                    "the {where_} '{}' ('{}') of {} is not mapped; {} cannot create {} without it: add `{}: <column>`",
                    f.id,
                    f.label,
                    self.view.scope,
                    op.as_str(),
                    if self.view.is_pipe { "a card" } else { "a record" },
                    f.id
                );
                self.issue("mapping", msg);
            }
        }
        out
    }
}

pub(super) fn compile(dest: &Destination, schema: &Schema) -> Result<Mapper, Vec<ConfigIssue>> {
    let op = dest.operation;
    let view = View::new(schema);
    if op.is_card() != view.is_pipe {
        return Err(vec![ConfigIssue::new(
            "operation",
            format!(
                "{} writes {}, but the schema fetched is the {}",
                op.as_str(),
                if op.is_card() {
                    "cards to a pipe"
                } else {
                    "records to a database table"
                },
                view.scope
            ),
        )]);
    }
    let mut c = Compiler {
        dest,
        view,
        issues: Vec::new(),
    };
    let schema_id = match schema {
        Schema::Pipe(p) => &p.id,
        Schema::Table(t) => &t.id,
    };
    let (dest_id, id_path) = if op.is_card() {
        (&dest.pipe_id, "pipe_id")
    } else {
        (&dest.table_id, "table_id")
    };
    if let Some(id) = dest_id {
        if id != schema_id {
            let msg = format!("is '{id}' but the schema fetched is the {}", c.view.scope);
            c.issue(id_path, msg);
        }
    }

    let mut attrs = Vec::new();
    let mut fields: Vec<Slot> = Vec::new();
    for (name, fm) in &dest.mapping {
        let Some(slot) = c.slot(name, fm) else {
            continue;
        };
        match &slot.place {
            Place::Field(slug) => {
                if let Some(prev) = fields
                    .iter()
                    .find(|s| matches!(&s.place, Place::Field(p) if p == slug))
                {
                    let msg = format!("field '{slug}' is already mapped by '{}'", prev.name);
                    c.issue(format!("mapping.{name}"), msg);
                    continue;
                }
                fields.push(slot);
            }
            _ => attrs.push(slot),
        }
    }
    // A fixed order for attributes and fields: the output (and its hash) does not depend on
    // the order of the mapping in the file.
    attrs.sort_by_key(|s| attr_rank(&s.place));
    fields.sort_by(|a, b| match (&a.place, &b.place) {
        (Place::Field(x), Place::Field(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });

    if op == Operation::UpdateCard && !attrs.iter().any(|s| s.place == Place::Id) {
        c.issue(
            "mapping",
            "update_card needs the id target: `id: <column holding the card id>`",
        );
    }

    let targets = attrs
        .iter()
        .chain(fields.iter())
        .filter_map(|s| {
            let fm = dest.mapping.get(&*s.name)?;
            super::Target::of(&s.name, &s.place, fm, &dest.sync)
        })
        .collect();
    let key = c.key(&fields);
    let required = c.required(&fields, key.as_ref());

    if let RemovalAction::MoveToPhase { phase } = &dest.sync.removed_rows.action {
        match &c.view.phases {
            Some(phases) => {
                if let Err(p) = phases.resolve(phase) {
                    c.issue("sync.removed_rows.phase", p.message);
                }
            }
            None => c.issue(
                "sync.removed_rows",
                "move_to_phase applies to cards; database records have no phases",
            ),
        }
    }

    if !c.issues.is_empty() {
        return Err(c.issues);
    }

    let mut columns: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !columns.iter().any(|c| c == name) {
            columns.push(name.to_string());
        }
    };
    if let Some(k) = &key {
        k.columns.iter().for_each(|c| add(&c.name));
    }
    for s in attrs.iter().chain(fields.iter()) {
        match &s.source {
            Source::Column(col) => add(&col.name),
            Source::Template(t) => t.columns().for_each(&mut add),
            Source::Constant(_) => {}
        }
    }

    Ok(Mapper {
        operation: op,
        scope: c.view.scope,
        key,
        attrs,
        fields,
        targets,
        required,
        phases: c.view.phases,
        columns,
    })
}

fn attr_rank(p: &Place) -> u8 {
    match p {
        Place::Id => 0,
        Place::Title => 1,
        Place::DueDate => 2,
        Place::Phase => 3,
        Place::Assignees => 4,
        Place::Labels => 5,
        Place::Parents => 6,
        Place::Field(_) => 7,
    }
}
