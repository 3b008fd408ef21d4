//! In-memory state (cards, records), the immutable catalog built from the fixture
//! (users, pipes, tables, fields), and every read/write operation with Pipefy's rules.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::fixture::{
    self, FieldDef, Fixture, FixtureError, LabelDef, MemberDef, PipeDef, TableDef, User,
};
use crate::values::{self, FieldType, ValueFormat};

/// A card, as stored and as returned by [`crate::EmulatorHandle::snapshot`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Numeric string.
    pub id: String,
    pub pipe_id: String,
    #[serde(default)]
    pub title: String,
    /// Empty in a fixture means the pipe's start phase.
    #[serde(default)]
    pub phase_id: String,
    /// ISO UTC (`2024-08-08T16:46:27Z`).
    #[serde(default)]
    pub due_date: Option<String>,
    /// Label ids.
    #[serde(default)]
    pub labels: Vec<String>,
    /// User ids.
    #[serde(default)]
    pub assignees: Vec<String>,
    /// Parent card ids.
    #[serde(default)]
    pub parent_ids: Vec<String>,
    /// Field slug -> canonical stored value (see [`crate::values`]).
    #[serde(default)]
    pub fields: BTreeMap<String, Json>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    /// Set while the card is in a `done` phase.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// User id of the creator (`Card.createdBy`); none for fixture cards that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Storage paths given to `createCard(attachments:)` (the card's own attachments,
    /// apart from attachment fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

impl Card {
    /// The stored value of a field as text (`None` when empty).
    pub fn field_text(&self, slug: &str) -> Option<String> {
        self.fields.get(slug).map(values::json_text)
    }

    /// Whether field `slug` equals `value` (numbers numerically; lists: contains).
    pub fn field_is(&self, slug: &str, value: &str) -> bool {
        self.fields
            .get(slug)
            .is_some_and(|v| values::json_equals_text(v, value))
    }
}

/// A table record, as stored and as returned by snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Opaque string id.
    pub id: String,
    pub table_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub due_date: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub assignees: Vec<String>,
    #[serde(default)]
    pub status_id: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, Json>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

impl Record {
    /// The stored value of a field as text.
    pub fn field_text(&self, slug: &str) -> Option<String> {
        self.fields.get(slug).map(values::json_text)
    }

    /// Whether field `slug` equals `value`.
    pub fn field_is(&self, slug: &str, value: &str) -> bool {
        self.fields
            .get(slug)
            .is_some_and(|v| values::json_equals_text(v, value))
    }
}

/// A copy of all cards and records (ordered by creation).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StateSnapshot {
    pub cards: Vec<Card>,
    pub records: Vec<Record>,
}

impl StateSnapshot {
    pub fn card(&self, id: &str) -> Option<&Card> {
        self.cards.iter().find(|c| c.id == id)
    }

    pub fn record(&self, id: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.id == id)
    }

    pub fn cards_in_pipe<'a>(&'a self, pipe_id: &'a str) -> impl Iterator<Item = &'a Card> + 'a {
        self.cards.iter().filter(move |c| c.pipe_id == pipe_id)
    }

    pub fn records_in_table<'a>(
        &'a self,
        table_id: &'a str,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.table_id == table_id)
    }

    /// Cards in `pipe_id` whose field `slug` equals `value`.
    pub fn cards_where<'a>(
        &'a self,
        pipe_id: &'a str,
        slug: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Card> + 'a {
        self.cards_in_pipe(pipe_id)
            .filter(move |c| c.field_is(slug, value))
    }

    /// How many cards in `pipe_id` have field `slug` equal to `value`.
    pub fn count_cards_where(&self, pipe_id: &str, slug: &str, value: &str) -> usize {
        self.cards_where(pipe_id, slug, value).count()
    }

    /// Records in `table_id` whose field `slug` equals `value`.
    pub fn records_where<'a>(
        &'a self,
        table_id: &'a str,
        slug: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        self.records_in_table(table_id)
            .filter(move |r| r.field_is(slug, value))
    }

    /// How many records in `table_id` have field `slug` equal to `value`.
    pub fn count_records_where(&self, table_id: &str, slug: &str, value: &str) -> usize {
        self.records_where(table_id, slug, value).count()
    }
}

/// Which error a nonexistent pipe/card/table/record id gives (docs/pipefy-api.md §7 quirk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissingIdCode {
    /// `PERMISSION_DENIED` / "Permission denied", as Pipefy usually answers.
    #[default]
    PermissionDenied,
    /// `RESOURCE_NOT_FOUND` / "Card not found with id: X".
    ResourceNotFound,
}

/// Which phase's required fields block `moveCardToPhase`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveRequiredCheck {
    /// The destination phase's required fields must be filled.
    #[default]
    Destination,
    /// The current phase's required fields must be filled before leaving it.
    Source,
    /// Both.
    Both,
    /// No check.
    None,
}

/// Errors answered to GraphQL operations; the variant is the `extensions.code`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("Permission denied")]
    PermissionDenied,
    #[error("{kind} not found with id: {id}")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    RecordInvalid(String),
    #[error("Something went wrong")]
    Internal,
}

impl ApiError {
    /// The `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::PermissionDenied => "PERMISSION_DENIED",
            ApiError::NotFound { .. } => "RESOURCE_NOT_FOUND",
            ApiError::InvalidInput(_) => "INVALID_INPUT",
            ApiError::RecordInvalid(_) => "RECORD_INVALID",
            ApiError::Internal => "INTERNAL_SERVER_ERROR",
        }
    }
}

impl From<values::ValueError> for ApiError {
    fn from(e: values::ValueError) -> Self {
        ApiError::InvalidInput(e.0)
    }
}

/// Behaviour switches the operations need.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub missing_id_code: MissingIdCode,
    pub value_format: ValueFormat,
    pub move_required_check: MoveRequiredCheck,
    pub write_roles: Vec<String>,
    pub max_field_values: usize,
    pub cards_include_done_default: bool,
}

/// A pipe or a table.
#[derive(Clone, Copy)]
pub(crate) enum Repo<'a> {
    Pipe(&'a PipeDef),
    Table(&'a TableDef),
}

impl<'a> Repo<'a> {
    pub fn id(&self) -> &'a str {
        match self {
            Repo::Pipe(p) => &p.id,
            Repo::Table(t) => &t.id,
        }
    }
    fn members(&self) -> &'a [MemberDef] {
        match self {
            Repo::Pipe(p) => &p.members,
            Repo::Table(t) => &t.members,
        }
    }
    fn labels(&self) -> &'a [LabelDef] {
        match self {
            Repo::Pipe(p) => &p.labels,
            Repo::Table(t) => &t.labels,
        }
    }
    fn title_field_id(&self) -> Option<&'a str> {
        match self {
            Repo::Pipe(p) => p.title_field_id.as_deref(),
            Repo::Table(t) => t.title_field_id.as_deref(),
        }
    }
    fn first_field(&self) -> Option<&'a FieldDef> {
        match self {
            Repo::Pipe(p) => p.start_form_fields.first(),
            Repo::Table(t) => t.fields.first(),
        }
    }
}

/// A field with where it lives.
#[derive(Clone, Debug)]
pub(crate) struct FieldInfo {
    pub def: FieldDef,
    /// `None` for start-form and table fields.
    pub phase_id: Option<String>,
}

/// Immutable indexes over the fixture.
pub(crate) struct Catalog {
    pub fixture: Fixture,
    users: HashMap<String, usize>,
    pipes: HashMap<String, usize>,
    tables: HashMap<String, usize>,
    phases: HashMap<String, (usize, usize)>,
    fields: HashMap<String, HashMap<String, FieldInfo>>,
    field_order: HashMap<String, Vec<String>>,
    uuids: HashMap<String, (String, String)>,
    pub tokens: HashMap<String, String>,
}

impl Catalog {
    pub fn new(fixture: Fixture) -> Result<Catalog, FixtureError> {
        fixture::check_consistency(&fixture)?;
        let mut c = Catalog {
            users: HashMap::new(),
            pipes: HashMap::new(),
            tables: HashMap::new(),
            phases: HashMap::new(),
            fields: HashMap::new(),
            field_order: HashMap::new(),
            uuids: HashMap::new(),
            tokens: HashMap::new(),
            fixture: Fixture::default(),
        };
        for (i, u) in fixture.users.iter().enumerate() {
            c.users.insert(u.id.clone(), i);
        }
        for t in &fixture.tokens {
            c.tokens.insert(t.token.clone(), t.user_id.clone());
        }
        for (pi, p) in fixture.pipes.iter().enumerate() {
            c.pipes.insert(p.id.clone(), pi);
            for (xi, ph) in p.phases.iter().enumerate() {
                c.phases.insert(ph.id.clone(), (pi, xi));
            }
            let mut map = HashMap::new();
            let mut order = Vec::new();
            for f in &p.start_form_fields {
                order.push(f.id.clone());
                map.insert(
                    f.id.clone(),
                    FieldInfo {
                        def: f.clone(),
                        phase_id: None,
                    },
                );
            }
            for ph in &p.phases {
                for f in &ph.fields {
                    order.push(f.id.clone());
                    map.insert(
                        f.id.clone(),
                        FieldInfo {
                            def: f.clone(),
                            phase_id: Some(ph.id.clone()),
                        },
                    );
                }
            }
            for f in p.all_fields() {
                c.uuids.insert(f.uuid.clone(), (p.id.clone(), f.id.clone()));
            }
            c.fields.insert(p.id.clone(), map);
            c.field_order.insert(p.id.clone(), order);
        }
        for (ti, t) in fixture.tables.iter().enumerate() {
            c.tables.insert(t.id.clone(), ti);
            let mut map = HashMap::new();
            for f in &t.fields {
                c.uuids.insert(f.uuid.clone(), (t.id.clone(), f.id.clone()));
                map.insert(
                    f.id.clone(),
                    FieldInfo {
                        def: f.clone(),
                        phase_id: None,
                    },
                );
            }
            c.field_order.insert(
                t.id.clone(),
                t.fields.iter().map(|f| f.id.clone()).collect(),
            );
            c.fields.insert(t.id.clone(), map);
        }
        for p in &fixture.pipes {
            if let Some(tf) = &p.title_field_id {
                if c.field(&p.id, tf).is_none() {
                    return Err(FixtureError::Invalid(format!(
                        "pipe {} title field {tf} does not exist",
                        p.id
                    )));
                }
            }
        }
        for t in &fixture.tables {
            if let Some(tf) = &t.title_field_id {
                if c.field(&t.id, tf).is_none() {
                    return Err(FixtureError::Invalid(format!(
                        "table {} title field {tf} does not exist",
                        t.id
                    )));
                }
            }
        }
        c.fixture = fixture;
        Ok(c)
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id).and_then(|i| self.fixture.users.get(*i))
    }
    pub fn pipe(&self, id: &str) -> Option<&PipeDef> {
        self.pipes.get(id).and_then(|i| self.fixture.pipes.get(*i))
    }
    pub fn table(&self, id: &str) -> Option<&TableDef> {
        self.tables
            .get(id)
            .and_then(|i| self.fixture.tables.get(*i))
    }
    pub fn repo(&self, id: &str) -> Option<Repo<'_>> {
        self.pipe(id)
            .map(Repo::Pipe)
            .or_else(|| self.table(id).map(Repo::Table))
    }
    /// The phase and its pipe.
    pub fn phase(&self, id: &str) -> Option<(&PipeDef, &fixture::PhaseDef)> {
        let (pi, xi) = self.phases.get(id)?;
        let p = self.fixture.pipes.get(*pi)?;
        Some((p, p.phases.get(*xi)?))
    }
    pub fn field(&self, repo_id: &str, slug: &str) -> Option<&FieldInfo> {
        self.fields.get(repo_id)?.get(slug)
    }
    /// Fields of a repo in form order (start form, then phases).
    pub fn fields_of(&self, repo_id: &str) -> Vec<&FieldInfo> {
        let Some(order) = self.field_order.get(repo_id) else {
            return Vec::new();
        };
        order
            .iter()
            .filter_map(|s| self.field(repo_id, s))
            .collect()
    }
    /// `(repo id, slug)` of a field uuid.
    pub fn field_by_uuid(&self, uuid: &str) -> Option<(&str, &str)> {
        self.uuids.get(uuid).map(|(r, s)| (r.as_str(), s.as_str()))
    }
    pub fn label(&self, repo: Repo<'_>, id: &str) -> Option<LabelDef> {
        repo.labels().iter().find(|l| l.id == id).cloned()
    }
    /// Any label in any repo (reads of cards whose labels are shown by name).
    pub fn any_label(&self, id: &str) -> Option<&LabelDef> {
        self.fixture
            .pipes
            .iter()
            .flat_map(|p| p.labels.iter())
            .chain(self.fixture.tables.iter().flat_map(|t| t.labels.iter()))
            .find(|l| l.id == id)
    }

    fn role_in<'r>(&self, repo: Repo<'r>, user_id: &str) -> Option<&'r str> {
        repo.members()
            .iter()
            .find(|m| m.user_id == user_id)
            .map(|m| m.role_name.as_str())
    }

    pub fn can_read(&self, repo: Repo<'_>, user_id: &str) -> bool {
        self.user(user_id).is_some_and(|u| u.org_admin) || self.role_in(repo, user_id).is_some()
    }

    pub fn can_write(&self, repo: Repo<'_>, user_id: &str, rules: &Rules) -> bool {
        self.user(user_id).is_some_and(|u| u.org_admin)
            || self
                .role_in(repo, user_id)
                .is_some_and(|r| rules.write_roles.iter().any(|w| w == r))
    }
}

/// The mutable part: cards and records.
#[derive(Clone)]
pub(crate) struct Store {
    pub cards: BTreeMap<u64, Card>,
    pub records: BTreeMap<u64, Record>,
    record_seq: HashMap<String, u64>,
    next_card_id: u64,
    next_record_seq: u64,
    id_rng: StdRng,
}

/// Seed of the generator of record ids, so ids repeat from run to run.
const RECORD_ID_SEED: u64 = 0x05ee_d1d5;

/// The operation of one `updateFieldsValues` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Replace,
    Add,
    Remove,
}

/// One field write.
#[derive(Clone, Debug)]
pub(crate) struct FieldWrite {
    pub field_id: String,
    /// `None` is GraphQL `null` (clear).
    pub value: Option<Vec<Json>>,
    pub op: Op,
}

/// `createCard` input, decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewCard {
    pub pipe_id: String,
    pub title: Option<String>,
    pub phase_id: Option<String>,
    pub due_date: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
    pub parent_ids: Option<Vec<String>>,
    pub attachments: Option<Vec<String>>,
    pub fields: Vec<FieldWrite>,
}

/// `createTableRecord` input, decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewRecord {
    pub table_id: String,
    pub title: Option<String>,
    pub due_date: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
    pub fields: Vec<FieldWrite>,
}

/// A user error of `updateFieldsValues`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UserErr {
    pub field: Option<Vec<String>>,
    pub message: String,
}

/// A node of `updateFieldsValues`.
pub(crate) enum Node {
    Card(Card),
    Record(Record),
}

/// A borrowed node, turned into a [`Node`] only when it is on the page.
pub(crate) enum NodeRef<'a> {
    Card(&'a Card),
    Record(&'a Record),
}

impl NodeRef<'_> {
    fn into_node(self) -> Node {
        match self {
            NodeRef::Card(c) => Node::Card(c.clone()),
            NodeRef::Record(r) => Node::Record(r.clone()),
        }
    }
}

/// A filter of `records(where:)`, values as text (docs/pipefy-api.md §5).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub field: Option<String>,
    pub attribute: Option<String>,
    pub eq: Option<String>,
    pub neq: Option<String>,
    pub lt: Option<String>,
    pub lte: Option<String>,
    pub gt: Option<String>,
    pub gte: Option<String>,
    pub in_: Option<Vec<String>>,
    pub nin: Option<Vec<String>>,
    /// Every item must be contained (`contains` takes a list).
    pub contains: Option<Vec<String>>,
    /// No item may be contained.
    pub ncontains: Option<Vec<String>>,
    /// `{min, max}`, inclusive.
    pub between: Option<(String, String)>,
    pub nbetween: Option<(String, String)>,
    pub and: Vec<Filter>,
    pub or: Vec<Filter>,
    /// `(slug, type)` of `field`, set by validation.
    pub resolved: Option<(String, FieldType)>,
}

/// What a filter or an ordering looks at in one card or record.
pub(crate) struct NodeView<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub phase: Option<&'a str>,
    pub fields: &'a BTreeMap<String, Json>,
    pub labels: &'a [String],
    pub assignees: &'a [String],
    pub created_at: &'a str,
    pub updated_at: &'a str,
    pub due_date: Option<&'a str>,
}

impl<'a> NodeRef<'a> {
    fn view(&self) -> NodeView<'a> {
        match *self {
            NodeRef::Card(c) => NodeView {
                id: &c.id,
                title: &c.title,
                phase: Some(&c.phase_id),
                fields: &c.fields,
                labels: &c.labels,
                assignees: &c.assignees,
                created_at: &c.created_at,
                updated_at: &c.updated_at,
                due_date: c.due_date.as_deref(),
            },
            NodeRef::Record(r) => NodeView {
                id: &r.id,
                title: &r.title,
                phase: None,
                fields: &r.fields,
                labels: &r.labels,
                assignees: &r.assignees,
                created_at: &r.created_at,
                updated_at: &r.updated_at,
                due_date: r.due_date.as_deref(),
            },
        }
    }
}

/// One key of `records(orderBy:)`: a resolved field slug or an attribute name.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub field: Option<String>,
    pub attribute: Option<String>,
    pub descending: bool,
}

/// A page of a connection.
pub(crate) struct Page<T> {
    pub items: Vec<(String, T)>,
    pub has_next: bool,
    pub has_previous: bool,
    pub total: usize,
}

pub(crate) fn cursor_of(key: u64) -> String {
    format!("c{key:x}")
}

fn parse_cursor(c: &str) -> Result<u64, ApiError> {
    c.strip_prefix('c')
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| ApiError::InvalidInput(format!("Invalid cursor: {c:?}")))
}

/// One page of `all` (key order); only the page's items are converted (cloned).
fn page<R, T>(
    all: Vec<(u64, R)>,
    first: Option<i32>,
    after: Option<&str>,
    max: usize,
    conv: impl Fn(R) -> T,
) -> Result<Page<T>, ApiError> {
    let total = all.len();
    let after_key = after.map(parse_cursor).transpose()?;
    let n = first.map(|f| f.max(0) as usize).unwrap_or(max).min(max);
    let mut rest = all
        .into_iter()
        .filter(|(k, _)| after_key.is_none_or(|a| *k > a))
        .peekable();
    let mut items = Vec::new();
    while items.len() < n {
        match rest.next() {
            Some((k, t)) => items.push((cursor_of(k), conv(t))),
            None => break,
        }
    }
    Ok(Page {
        items,
        has_next: rest.peek().is_some(),
        has_previous: after_key.is_some(),
        total,
    })
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_empty_json(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    }
}

impl Store {
    /// Builds the store from the fixture's cards and records, validating their values.
    pub fn load(cat: &Catalog, rules: &Rules) -> Result<Store, FixtureError> {
        let mut s = Store {
            cards: BTreeMap::new(),
            records: BTreeMap::new(),
            record_seq: HashMap::new(),
            next_card_id: 1,
            next_record_seq: 1,
            id_rng: StdRng::seed_from_u64(RECORD_ID_SEED),
        };
        let stamp = "2024-01-01T00:00:00Z".to_string();
        for r in &cat.fixture.records {
            if cat.table(&r.table_id).is_none() {
                return Err(FixtureError::Invalid(format!(
                    "record {} in unknown table {}",
                    r.id, r.table_id
                )));
            }
            if s.record_seq.contains_key(&r.id) {
                return Err(FixtureError::Invalid(format!(
                    "record id {} repeated",
                    r.id
                )));
            }
            let mut r = r.clone();
            if let Some(d) = &r.due_date {
                r.due_date = Some(values::normalize_due_date(d).ok_or_else(|| {
                    FixtureError::Invalid(format!(
                        "record {} due_date {d:?} is not a date time",
                        r.id
                    ))
                })?);
            }
            if r.created_at.is_empty() {
                r.created_at = stamp.clone();
            }
            if r.updated_at.is_empty() {
                r.updated_at = r.created_at.clone();
            }
            let seq = s.next_record_seq;
            s.next_record_seq += 1;
            s.record_seq.insert(r.id.clone(), seq);
            s.records.insert(seq, r);
        }
        for c in &cat.fixture.cards {
            let id: u64 = c
                .id
                .parse()
                .map_err(|_| FixtureError::Invalid(format!("card id {:?} is not numeric", c.id)))?;
            let pipe = cat.pipe(&c.pipe_id).ok_or_else(|| {
                FixtureError::Invalid(format!("card {} in unknown pipe {}", c.id, c.pipe_id))
            })?;
            let mut c = c.clone();
            if c.phase_id.is_empty() {
                c.phase_id = pipe.start_phase_id().unwrap_or_default().to_string();
            }
            match cat.phase(&c.phase_id) {
                Some((p, ph)) if p.id == pipe.id => {
                    if ph.done && c.finished_at.is_none() {
                        c.finished_at = Some(stamp.clone());
                    }
                }
                _ => {
                    return Err(FixtureError::Invalid(format!(
                        "card {} phase {} is not in pipe {}",
                        c.id, c.phase_id, pipe.id
                    )))
                }
            }
            if let Some(d) = &c.due_date {
                c.due_date = Some(values::normalize_due_date(d).ok_or_else(|| {
                    FixtureError::Invalid(format!(
                        "card {} due_date {d:?} is not a date time",
                        c.id
                    ))
                })?);
            }
            if c.created_at.is_empty() {
                c.created_at = stamp.clone();
            }
            if c.updated_at.is_empty() {
                c.updated_at = c.created_at.clone();
            }
            if s.cards.insert(id, c).is_some() {
                return Err(FixtureError::Invalid(format!("card id {id} repeated")));
            }
            s.next_card_id = s.next_card_id.max(id + 1);
        }
        // Second pass: fixture values are written like client input; normalise them now
        // that every card and record exists (connectors may point at each other).
        let mut card_values = Vec::new();
        for (k, c) in &s.cards {
            let repo = cat
                .repo(&c.pipe_id)
                .ok_or_else(|| FixtureError::Invalid(format!("no pipe {}", c.pipe_id)))?;
            let fields = s
                .normalize_fixture_fields(cat, rules, repo, &c.fields)
                .map_err(|e| FixtureError::Invalid(format!("card {}: {e}", c.id)))?;
            card_values.push((*k, fields));
        }
        for (k, f) in card_values {
            if let Some(c) = s.cards.get_mut(&k) {
                c.fields = f;
            }
        }
        let mut record_values = Vec::new();
        for (k, r) in &s.records {
            let repo = cat
                .repo(&r.table_id)
                .ok_or_else(|| FixtureError::Invalid(format!("no table {}", r.table_id)))?;
            let fields = s
                .normalize_fixture_fields(cat, rules, repo, &r.fields)
                .map_err(|e| FixtureError::Invalid(format!("record {}: {e}", r.id)))?;
            record_values.push((*k, fields));
        }
        for (k, f) in record_values {
            if let Some(r) = s.records.get_mut(&k) {
                r.fields = f;
            }
        }
        Ok(s)
    }

    fn normalize_fixture_fields(
        &self,
        cat: &Catalog,
        rules: &Rules,
        repo: Repo<'_>,
        fields: &BTreeMap<String, Json>,
    ) -> Result<BTreeMap<String, Json>, ApiError> {
        let mut out = BTreeMap::new();
        for (slug, v) in fields {
            let fi = cat
                .field(repo.id(), slug)
                .ok_or_else(|| ApiError::NotFound {
                    kind: "Field",
                    id: slug.clone(),
                })?;
            let raw = match v {
                Json::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            if let Some(n) =
                self.normalize(cat, rules, repo, &fi.def, Some(&raw), None, Op::Replace)?
            {
                out.insert(slug.clone(), n);
            }
        }
        Ok(out)
    }

    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            cards: self.cards.values().cloned().collect(),
            records: self.records.values().cloned().collect(),
        }
    }

    pub fn card(&self, id: &str) -> Option<&Card> {
        id.parse::<u64>().ok().and_then(|k| self.cards.get(&k))
    }

    pub fn record(&self, id: &str) -> Option<&Record> {
        self.record_seq.get(id).and_then(|k| self.records.get(k))
    }

    fn record_mut(&mut self, id: &str) -> Option<&mut Record> {
        let k = *self.record_seq.get(id)?;
        self.records.get_mut(&k)
    }

    /// Title of a card or record by id (connector display).
    pub fn title_of(&self, id: &str) -> Option<String> {
        self.card(id)
            .map(|c| c.title.clone())
            .or_else(|| self.record(id).map(|r| r.title.clone()))
    }

    /// Display name of a list item of field type `ft`.
    pub fn name_of(&self, cat: &Catalog, ft: FieldType, id: &str) -> String {
        match ft {
            FieldType::LabelSelect => cat.any_label(id).map(|l| l.name.clone()),
            FieldType::AssigneeSelect => cat.user(id).map(|u| u.name.clone()),
            FieldType::Connector => self.title_of(id),
            _ => None,
        }
        .unwrap_or_else(|| id.to_string())
    }

    /// Read-side text of a stored value.
    pub fn display(&self, cat: &Catalog, fmt: ValueFormat, fd: &FieldDef, v: &Json) -> String {
        values::display(fd.field_type, v, fmt, &|id| {
            self.name_of(cat, fd.field_type, id)
        })
    }

    fn missing(rules: &Rules, kind: &'static str, id: &str) -> ApiError {
        match rules.missing_id_code {
            MissingIdCode::PermissionDenied => ApiError::PermissionDenied,
            MissingIdCode::ResourceNotFound => ApiError::NotFound {
                kind,
                id: id.to_string(),
            },
        }
    }

    /// Validates and normalises one field write against the current value.
    #[allow(clippy::too_many_arguments)]
    fn normalize(
        &self,
        cat: &Catalog,
        rules: &Rules,
        repo: Repo<'_>,
        fd: &FieldDef,
        raw: Option<&[Json]>,
        current: Option<&Json>,
        op: Op,
    ) -> Result<Option<Json>, ApiError> {
        let _ = rules;
        let ft = fd.field_type;
        if !ft.is_writable() {
            return Err(ApiError::InvalidInput(format!(
                "Field \"{}\" is not editable",
                fd.label
            )));
        }
        let raw = raw.unwrap_or(&[]);
        if !ft.is_list() {
            if op != Op::Replace {
                return Err(ApiError::InvalidInput(format!(
                    "Field \"{}\" of type {} does not support the {} operation",
                    fd.label,
                    ft.as_str(),
                    if op == Op::Add { "ADD" } else { "REMOVE" }
                )));
            }
            return Ok(values::normalize_scalar(ft, &fd.label, &fd.options, raw)?);
        }
        let items = values::flatten_list_input(raw);
        values::check_list_items(ft, &fd.label, &fd.options, &items)?;
        for id in &items {
            let ok = match ft {
                FieldType::LabelSelect => cat.label(repo, id).is_some(),
                FieldType::AssigneeSelect => {
                    cat.user(id).is_some() && cat.role_in(repo, id).is_some()
                }
                FieldType::Connector => match fd.connected_repo_id.as_deref() {
                    Some(target) => {
                        self.card(id).is_some_and(|c| c.pipe_id == target)
                            || self.record(id).is_some_and(|r| r.table_id == target)
                    }
                    None => self.card(id).is_some() || self.record(id).is_some(),
                },
                _ => true,
            };
            if !ok {
                let what = match ft {
                    FieldType::LabelSelect => "label",
                    FieldType::AssigneeSelect => "user",
                    _ => "connected card or record",
                };
                return Err(ApiError::InvalidInput(format!(
                    "Field \"{}\": {what} not found with id: {id}",
                    fd.label
                )));
            }
        }
        let current: Vec<String> = match current {
            Some(Json::Array(a)) => a.iter().map(values::json_text).collect(),
            _ => Vec::new(),
        };
        let result = match op {
            Op::Replace => values::dedup(items),
            Op::Add => values::dedup(current.into_iter().chain(items).collect()),
            Op::Remove => current.into_iter().filter(|c| !items.contains(c)).collect(),
        };
        if result.is_empty() {
            return Ok(None);
        }
        Ok(Some(Json::Array(
            result.into_iter().map(Json::String).collect(),
        )))
    }

    fn derive_title(
        &self,
        cat: &Catalog,
        rules: &Rules,
        repo: Repo<'_>,
        given: Option<&str>,
        fields: &BTreeMap<String, Json>,
        current: &str,
    ) -> String {
        let field_title = |slug: &str| -> Option<String> {
            let fi = cat.field(repo.id(), slug)?;
            let v = fields.get(slug)?;
            Some(self.display(cat, rules.value_format, &fi.def, v))
        };
        if let Some(t) = repo.title_field_id().and_then(field_title) {
            return t;
        }
        if let Some(t) = given.filter(|t| !t.trim().is_empty()) {
            return t.to_string();
        }
        if !current.is_empty() {
            return current.to_string();
        }
        repo.first_field()
            .and_then(|f| field_title(&f.id))
            .unwrap_or_default()
    }

    fn check_access(
        cat: &Catalog,
        rules: &Rules,
        repo: Repo<'_>,
        user: &str,
        write: bool,
    ) -> Result<(), ApiError> {
        let ok = if write {
            cat.can_write(repo, user, rules)
        } else {
            cat.can_read(repo, user)
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied)
        }
    }

    fn pipe_access<'c>(
        cat: &'c Catalog,
        rules: &Rules,
        id: &str,
        user: &str,
        write: bool,
    ) -> Result<&'c PipeDef, ApiError> {
        let p = cat
            .pipe(id)
            .ok_or_else(|| Self::missing(rules, "Pipe", id))?;
        Self::check_access(cat, rules, Repo::Pipe(p), user, write)?;
        Ok(p)
    }

    fn table_access<'c>(
        cat: &'c Catalog,
        rules: &Rules,
        id: &str,
        user: &str,
        write: bool,
    ) -> Result<&'c TableDef, ApiError> {
        let t = cat
            .table(id)
            .ok_or_else(|| Self::missing(rules, "Table", id))?;
        Self::check_access(cat, rules, Repo::Table(t), user, write)?;
        Ok(t)
    }

    fn card_access<'c>(
        &self,
        cat: &'c Catalog,
        rules: &Rules,
        id: &str,
        user: &str,
        write: bool,
    ) -> Result<(u64, &'c PipeDef), ApiError> {
        let card = self
            .card(id)
            .ok_or_else(|| Self::missing(rules, "Card", id))?;
        let pipe = cat.pipe(&card.pipe_id).ok_or(ApiError::Internal)?;
        Self::check_access(cat, rules, Repo::Pipe(pipe), user, write)?;
        id.parse::<u64>()
            .map(|k| (k, pipe))
            .map_err(|_| ApiError::Internal)
    }

    fn record_access<'c>(
        &self,
        cat: &'c Catalog,
        rules: &Rules,
        id: &str,
        user: &str,
        write: bool,
    ) -> Result<(u64, &'c TableDef), ApiError> {
        let k = *self
            .record_seq
            .get(id)
            .ok_or_else(|| Self::missing(rules, "Record", id))?;
        let r = self.records.get(&k).ok_or(ApiError::Internal)?;
        let t = cat.table(&r.table_id).ok_or(ApiError::Internal)?;
        Self::check_access(cat, rules, Repo::Table(t), user, write)?;
        Ok((k, t))
    }

    fn check_users(cat: &Catalog, repo: Repo<'_>, ids: &[String]) -> Result<(), ApiError> {
        for id in ids {
            if cat.user(id).is_none() || cat.role_in(repo, id).is_none() {
                return Err(ApiError::NotFound {
                    kind: "User",
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_labels(cat: &Catalog, repo: Repo<'_>, ids: &[String]) -> Result<(), ApiError> {
        for id in ids {
            if cat.label(repo, id).is_none() {
                return Err(ApiError::NotFound {
                    kind: "Label",
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    fn due(s: Option<&str>) -> Result<Option<String>, ApiError> {
        match s.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => values::normalize_due_date(s).map(Some).ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "Invalid due_date: {s:?} (expected an ISO-8601 date time)"
                ))
            }),
        }
    }

    /// Applies writes to a field map, field by field (the first failure stops).
    fn apply_writes(
        &self,
        cat: &Catalog,
        rules: &Rules,
        repo: Repo<'_>,
        fields: &mut BTreeMap<String, Json>,
        writes: &[FieldWrite],
    ) -> Result<(), ApiError> {
        for w in writes {
            let fi = cat
                .field(repo.id(), &w.field_id)
                .ok_or_else(|| ApiError::NotFound {
                    kind: "Field",
                    id: w.field_id.clone(),
                })?;
            let new = self.normalize(
                cat,
                rules,
                repo,
                &fi.def,
                w.value.as_deref(),
                fields.get(&w.field_id),
                w.op,
            )?;
            match new {
                Some(v) => fields.insert(w.field_id.clone(), v),
                None => fields.remove(&w.field_id),
            };
        }
        Ok(())
    }

    fn check_unique(
        &self,
        table: &TableDef,
        own_id: Option<&str>,
        fields: &BTreeMap<String, Json>,
    ) -> Result<(), ApiError> {
        for fd in table.fields.iter().filter(|f| f.unique) {
            let Some(v) = fields.get(&fd.id) else {
                continue;
            };
            let taken = self.records.values().any(|r| {
                r.table_id == table.id
                    && Some(r.id.as_str()) != own_id
                    && r.fields.get(&fd.id) == Some(v)
            });
            if taken {
                return Err(ApiError::RecordInvalid(format!(
                    "Field \"{}\" has already been taken",
                    fd.label
                )));
            }
        }
        Ok(())
    }

    fn required_missing<'f>(
        fields: &BTreeMap<String, Json>,
        defs: impl Iterator<Item = &'f FieldDef>,
    ) -> Option<&'f FieldDef> {
        defs.filter(|f| f.required)
            .find(|f| fields.get(&f.id).is_none_or(is_empty_json))
    }

    // ----- card mutations -----

    pub fn create_card(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        input: NewCard,
    ) -> Result<Card, ApiError> {
        let pipe = Self::pipe_access(cat, rules, &input.pipe_id, user, true)?;
        let repo = Repo::Pipe(pipe);
        let phase_id = match input.phase_id.as_deref() {
            Some(ph) => match cat.phase(ph) {
                Some((p, _)) if p.id == pipe.id => ph.to_string(),
                Some(_) => {
                    return Err(ApiError::NotFound {
                        kind: "Phase",
                        id: ph.to_string(),
                    })
                }
                None => return Err(Self::missing(rules, "Phase", ph)),
            },
            None => pipe.start_phase_id().ok_or(ApiError::Internal)?.to_string(),
        };
        let due_date = Self::due(input.due_date.as_deref())?;
        let assignees = values::dedup(input.assignee_ids.unwrap_or_default());
        Self::check_users(cat, repo, &assignees)?;
        let labels = values::dedup(input.label_ids.unwrap_or_default());
        Self::check_labels(cat, repo, &labels)?;
        let parents = values::dedup(input.parent_ids.unwrap_or_default());
        for p in &parents {
            self.card_access(cat, rules, p, user, false)?;
        }
        let attachments = values::dedup(input.attachments.unwrap_or_default());
        for a in &attachments {
            values::check_attachment_path(a).map_err(ApiError::InvalidInput)?;
        }
        let mut fields = BTreeMap::new();
        self.apply_writes(cat, rules, repo, &mut fields, &input.fields)?;
        if let Some(f) = Self::required_missing(&fields, pipe.start_form_fields.iter()) {
            return Err(ApiError::RecordInvalid(format!(
                "Field \"{}\" is required",
                f.label
            )));
        }
        let title = self.derive_title(cat, rules, repo, input.title.as_deref(), &fields, "");
        let done = cat.phase(&phase_id).is_some_and(|(_, ph)| ph.done);
        let id = self.next_card_id;
        self.next_card_id += 1;
        let ts = now();
        let card = Card {
            id: id.to_string(),
            pipe_id: pipe.id.clone(),
            title,
            phase_id,
            due_date,
            labels,
            assignees,
            parent_ids: parents,
            fields,
            created_at: ts.clone(),
            updated_at: ts.clone(),
            finished_at: done.then_some(ts),
            created_by: Some(user.to_string()),
            attachments,
        };
        self.cards.insert(id, card.clone());
        Ok(card)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn update_card(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
        title: Option<String>,
        due_date: Option<String>,
        assignee_ids: Option<Vec<String>>,
        label_ids: Option<Vec<String>>,
    ) -> Result<Card, ApiError> {
        let (k, pipe) = self.card_access(cat, rules, id, user, true)?;
        let repo = Repo::Pipe(pipe);
        let due = match due_date {
            Some(d) => Some(Self::due(Some(&d))?),
            None => None,
        };
        let assignees = assignee_ids.map(values::dedup);
        if let Some(a) = &assignees {
            Self::check_users(cat, repo, a)?;
        }
        let labels = label_ids.map(values::dedup);
        if let Some(l) = &labels {
            Self::check_labels(cat, repo, l)?;
        }
        let card = self.cards.get_mut(&k).ok_or(ApiError::Internal)?;
        if let Some(t) = title.filter(|t| !t.trim().is_empty()) {
            card.title = t;
        }
        if let Some(d) = due {
            card.due_date = d;
        }
        if let Some(a) = assignees {
            card.assignees = a;
        }
        if let Some(l) = labels {
            card.labels = l;
        }
        card.updated_at = now();
        Ok(card.clone())
    }

    fn write_card_fields(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        k: u64,
        pipe: &PipeDef,
        writes: &[FieldWrite],
    ) -> Result<Card, ApiError> {
        let repo = Repo::Pipe(pipe);
        let card = self.cards.get(&k).ok_or(ApiError::Internal)?;
        let mut fields = card.fields.clone();
        let old_title = card.title.clone();
        self.apply_writes(cat, rules, repo, &mut fields, writes)?;
        let title = match repo.title_field_id() {
            Some(_) => self.derive_title(cat, rules, repo, None, &fields, &old_title),
            None => old_title,
        };
        let card = self.cards.get_mut(&k).ok_or(ApiError::Internal)?;
        card.fields = fields;
        card.title = title;
        card.updated_at = now();
        Ok(card.clone())
    }

    pub fn update_card_field(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        card_id: &str,
        field_id: &str,
        value: Option<Vec<Json>>,
    ) -> Result<Card, ApiError> {
        let (k, pipe) = self.card_access(cat, rules, card_id, user, true)?;
        self.write_card_fields(
            cat,
            rules,
            k,
            pipe,
            &[FieldWrite {
                field_id: field_id.to_string(),
                value,
                op: Op::Replace,
            }],
        )
    }

    pub fn delete_card(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let (k, _) = self.card_access(cat, rules, id, user, true)?;
        self.cards.remove(&k);
        self.forget_connections(id);
        Ok(())
    }

    /// Drops a deleted card/record from parent lists and connector values.
    fn forget_connections(&mut self, id: &str) {
        let strip = |fields: &mut BTreeMap<String, Json>| {
            fields.retain(|_, v| {
                if let Json::Array(a) = v {
                    a.retain(|x| values::json_text(x) != id);
                    !a.is_empty()
                } else {
                    true
                }
            });
        };
        for c in self.cards.values_mut() {
            c.parent_ids.retain(|p| p != id);
            strip(&mut c.fields);
        }
        for r in self.records.values_mut() {
            strip(&mut r.fields);
        }
    }

    pub fn move_card(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        card_id: &str,
        dest: &str,
    ) -> Result<Card, ApiError> {
        let (k, pipe) = self.card_access(cat, rules, card_id, user, true)?;
        let card = self.cards.get(&k).ok_or(ApiError::Internal)?;
        let (dest_pipe, dest_phase) = cat
            .phase(dest)
            .ok_or_else(|| Self::missing(rules, "Phase", dest))?;
        if dest_pipe.id != pipe.id {
            return Err(ApiError::InvalidInput(format!(
                "Card could not be moved to phase: phase {dest} is not in pipe {}",
                pipe.id
            )));
        }
        if card.phase_id == dest {
            return Ok(card.clone());
        }
        let (_, src_phase) = cat.phase(&card.phase_id).ok_or(ApiError::Internal)?;
        if !src_phase.moves_to.iter().any(|m| m == dest) {
            return Err(ApiError::InvalidInput(format!(
                "Card could not be moved to phase \"{}\": moves from \"{}\" to \"{}\" are not allowed",
                dest_phase.name, src_phase.name, dest_phase.name
            )));
        }
        let check: Vec<&FieldDef> = match rules.move_required_check {
            MoveRequiredCheck::Destination => dest_phase.fields.iter().collect(),
            MoveRequiredCheck::Source => src_phase.fields.iter().collect(),
            MoveRequiredCheck::Both => src_phase
                .fields
                .iter()
                .chain(dest_phase.fields.iter())
                .collect(),
            MoveRequiredCheck::None => Vec::new(),
        };
        if let Some(f) = Self::required_missing(&card.fields, check.into_iter()) {
            return Err(ApiError::RecordInvalid(format!(
                "Field \"{}\" is required",
                f.label
            )));
        }
        let done = dest_phase.done;
        let card = self.cards.get_mut(&k).ok_or(ApiError::Internal)?;
        let ts = now();
        card.phase_id = dest.to_string();
        card.finished_at = if done {
            Some(card.finished_at.clone().unwrap_or_else(|| ts.clone()))
        } else {
            None
        };
        card.updated_at = ts;
        Ok(card.clone())
    }

    // ----- updateFieldsValues -----

    pub fn update_fields_values(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        node_id: &str,
        writes: Vec<FieldWrite>,
    ) -> Result<(Vec<UserErr>, Option<Node>), ApiError> {
        enum Target<'c> {
            Card(u64, &'c PipeDef),
            Record(u64, &'c TableDef),
        }
        let target = if self.card(node_id).is_some() {
            let (k, p) = self.card_access(cat, rules, node_id, user, true)?;
            Target::Card(k, p)
        } else if self.record(node_id).is_some() {
            let (k, t) = self.record_access(cat, rules, node_id, user, true)?;
            Target::Record(k, t)
        } else {
            return Err(Self::missing(rules, "Card", node_id));
        };
        if writes.len() > rules.max_field_values {
            return Ok((
                vec![UserErr {
                    field: None,
                    message: "You exceeded the maximum number of fields".into(),
                }],
                None,
            ));
        }
        let (repo, current) = match &target {
            Target::Card(k, p) => (Repo::Pipe(p), self.cards.get(k).map(|c| c.fields.clone())),
            Target::Record(k, t) => (
                Repo::Table(t),
                self.records.get(k).map(|r| r.fields.clone()),
            ),
        };
        let mut fields = current.ok_or(ApiError::Internal)?;
        let mut errors = Vec::new();
        // All values are validated before anything is written: one bad value leaves the
        // node untouched (success: false with userErrors).
        for w in &writes {
            let Some(fi) = cat.field(repo.id(), &w.field_id) else {
                errors.push(UserErr {
                    field: Some(vec![w.field_id.clone()]),
                    message: "Field not found".into(),
                });
                continue;
            };
            match self.normalize(
                cat,
                rules,
                repo,
                &fi.def,
                w.value.as_deref(),
                fields.get(&w.field_id),
                w.op,
            ) {
                Ok(Some(v)) => {
                    fields.insert(w.field_id.clone(), v);
                }
                Ok(None) => {
                    fields.remove(&w.field_id);
                }
                Err(e) => errors.push(UserErr {
                    field: Some(vec![w.field_id.clone()]),
                    message: e.to_string(),
                }),
            }
        }
        if let (Target::Record(_, t), true) = (&target, errors.is_empty()) {
            if let Err(e) = self.check_unique(t, Some(node_id), &fields) {
                errors.push(UserErr {
                    field: None,
                    message: e.to_string(),
                });
            }
        }
        if !errors.is_empty() {
            return Ok((errors, None));
        }
        let ts = now();
        match target {
            Target::Card(k, p) => {
                let repo = Repo::Pipe(p);
                let old = self
                    .cards
                    .get(&k)
                    .map(|c| c.title.clone())
                    .unwrap_or_default();
                let title = match repo.title_field_id() {
                    Some(_) => self.derive_title(cat, rules, repo, None, &fields, &old),
                    None => old,
                };
                let c = self.cards.get_mut(&k).ok_or(ApiError::Internal)?;
                c.fields = fields;
                c.title = title;
                c.updated_at = ts;
                Ok((Vec::new(), Some(Node::Card(c.clone()))))
            }
            Target::Record(k, t) => {
                let repo = Repo::Table(t);
                let old = self
                    .records
                    .get(&k)
                    .map(|r| r.title.clone())
                    .unwrap_or_default();
                let title = match repo.title_field_id() {
                    Some(_) => self.derive_title(cat, rules, repo, None, &fields, &old),
                    None => old,
                };
                let r = self.records.get_mut(&k).ok_or(ApiError::Internal)?;
                r.fields = fields;
                r.title = title;
                r.updated_at = ts;
                Ok((Vec::new(), Some(Node::Record(r.clone()))))
            }
        }
    }

    // ----- table records -----

    fn new_record_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let id: String = (0..8)
                .map(|_| {
                    let i = self.id_rng.gen_range(0..ALPHABET.len());
                    ALPHABET.get(i).copied().map(char::from).unwrap_or('x')
                })
                .collect();
            if !self.record_seq.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn create_record(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        input: NewRecord,
    ) -> Result<Record, ApiError> {
        let table = Self::table_access(cat, rules, &input.table_id, user, true)?;
        let repo = Repo::Table(table);
        let due_date = Self::due(input.due_date.as_deref())?;
        let assignees = values::dedup(input.assignee_ids.unwrap_or_default());
        Self::check_users(cat, repo, &assignees)?;
        let labels = values::dedup(input.label_ids.unwrap_or_default());
        Self::check_labels(cat, repo, &labels)?;
        let mut fields = BTreeMap::new();
        self.apply_writes(cat, rules, repo, &mut fields, &input.fields)?;
        if let Some(f) = Self::required_missing(&fields, table.fields.iter()) {
            return Err(ApiError::RecordInvalid(format!(
                "Field \"{}\" is required",
                f.label
            )));
        }
        self.check_unique(table, None, &fields)?;
        let title = self.derive_title(cat, rules, repo, input.title.as_deref(), &fields, "");
        let id = self.new_record_id();
        let ts = now();
        let rec = Record {
            id: id.clone(),
            table_id: table.id.clone(),
            title,
            due_date,
            labels,
            assignees,
            status_id: None,
            fields,
            created_at: ts.clone(),
            updated_at: ts,
        };
        let seq = self.next_record_seq;
        self.next_record_seq += 1;
        self.record_seq.insert(id, seq);
        self.records.insert(seq, rec.clone());
        Ok(rec)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn update_record(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
        title: Option<String>,
        due_date: Option<String>,
        status_id: Option<String>,
    ) -> Result<Record, ApiError> {
        self.record_access(cat, rules, id, user, true)?;
        let due = match due_date {
            Some(d) => Some(Self::due(Some(&d))?),
            None => None,
        };
        let r = self.record_mut(id).ok_or(ApiError::Internal)?;
        if let Some(t) = title.filter(|t| !t.trim().is_empty()) {
            r.title = t;
        }
        if let Some(d) = due {
            r.due_date = d;
        }
        if let Some(s) = status_id {
            r.status_id = Some(s);
        }
        r.updated_at = now();
        Ok(r.clone())
    }

    pub fn set_record_field(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
        field_id: &str,
        value: Option<Vec<Json>>,
    ) -> Result<Record, ApiError> {
        let (k, table) = self.record_access(cat, rules, id, user, true)?;
        let repo = Repo::Table(table);
        let r = self.records.get(&k).ok_or(ApiError::Internal)?;
        let mut fields = r.fields.clone();
        let old_title = r.title.clone();
        self.apply_writes(
            cat,
            rules,
            repo,
            &mut fields,
            &[FieldWrite {
                field_id: field_id.to_string(),
                value,
                op: Op::Replace,
            }],
        )?;
        self.check_unique(table, Some(id), &fields)?;
        let title = match repo.title_field_id() {
            Some(_) => self.derive_title(cat, rules, repo, None, &fields, &old_title),
            None => old_title,
        };
        let r = self.records.get_mut(&k).ok_or(ApiError::Internal)?;
        r.fields = fields;
        r.title = title;
        r.updated_at = now();
        Ok(r.clone())
    }

    pub fn delete_record(
        &mut self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let (k, _) = self.record_access(cat, rules, id, user, true)?;
        self.records.remove(&k);
        self.record_seq.remove(id);
        self.forget_connections(id);
        Ok(())
    }

    // ----- reads -----

    pub fn read_card(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<Card, ApiError> {
        let (k, _) = self.card_access(cat, rules, id, user, false)?;
        self.cards.get(&k).cloned().ok_or(ApiError::Internal)
    }

    pub fn read_record(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<Record, ApiError> {
        let (k, _) = self.record_access(cat, rules, id, user, false)?;
        self.records.get(&k).cloned().ok_or(ApiError::Internal)
    }

    pub fn read_pipe<'c>(
        &self,
        cat: &'c Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<&'c PipeDef, ApiError> {
        Self::pipe_access(cat, rules, id, user, false)
    }

    pub fn read_table<'c>(
        &self,
        cat: &'c Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<&'c TableDef, ApiError> {
        Self::table_access(cat, rules, id, user, false)
    }

    pub fn read_phase<'c>(
        &self,
        cat: &'c Catalog,
        rules: &Rules,
        user: &str,
        id: &str,
    ) -> Result<(&'c PipeDef, &'c fixture::PhaseDef), ApiError> {
        let (p, ph) = cat
            .phase(id)
            .ok_or_else(|| Self::missing(rules, "Phase", id))?;
        Self::check_access(cat, rules, Repo::Pipe(p), user, false)?;
        Ok((p, ph))
    }

    pub fn cards_count(&self, phase_id: &str) -> usize {
        self.cards
            .values()
            .filter(|c| c.phase_id == phase_id)
            .count()
    }

    /// `Phase.cards(first, after)`: the phase's cards in creation order.
    pub fn list_phase_cards(
        &self,
        phase_id: &str,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Card>, ApiError> {
        let all = self
            .cards
            .iter()
            .filter(|(_, c)| c.phase_id == phase_id)
            .map(|(k, c)| (*k, c))
            .collect();
        page(all, first, after, max, Card::clone)
    }

    /// `Table.table_records(first, after)`: the table's records in creation order.
    pub fn list_table_records(
        &self,
        table_id: &str,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Record>, ApiError> {
        let all = self
            .records
            .iter()
            .filter(|(_, r)| r.table_id == table_id)
            .map(|(k, r)| (*k, r))
            .collect();
        page(all, first, after, max, Record::clone)
    }

    /// `cards(pipe_id, search, first, after)`.
    #[allow(clippy::too_many_arguments)]
    pub fn list_cards(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        pipe_id: &str,
        search: &CardSearch,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Card>, ApiError> {
        Self::pipe_access(cat, rules, pipe_id, user, false)?;
        let include_done = search
            .include_done
            .unwrap_or(rules.cards_include_done_default);
        let title = search.title.as_ref().map(|t| t.to_lowercase());
        let all = self
            .cards
            .iter()
            .filter(|(_, c)| c.pipe_id == pipe_id)
            .filter(|(_, c)| include_done || !cat.phase(&c.phase_id).is_some_and(|(_, ph)| ph.done))
            .filter(|(_, c)| {
                title
                    .as_ref()
                    .is_none_or(|t| c.title.to_lowercase().contains(t.as_str()))
            })
            .filter(|(_, c)| {
                search
                    .assignee_ids
                    .as_ref()
                    .is_none_or(|a| a.is_empty() || a.iter().any(|x| c.assignees.contains(x)))
            })
            .filter(|(_, c)| {
                search
                    .label_ids
                    .as_ref()
                    .is_none_or(|l| l.is_empty() || l.iter().any(|x| c.labels.contains(x)))
            })
            .filter(|(_, c)| {
                search
                    .ignore_ids
                    .as_ref()
                    .is_none_or(|i| !i.contains(&c.id))
            })
            .map(|(k, c)| (*k, c))
            .collect();
        page(all, first, after, max, Card::clone)
    }

    /// `findCards(pipeId, search: {fieldId, fieldValue})`.
    #[allow(clippy::too_many_arguments)]
    pub fn find_cards(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        pipe_id: &str,
        field_id: &str,
        value: &str,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Card>, ApiError> {
        Self::pipe_access(cat, rules, pipe_id, user, false)?;
        let fi = cat
            .field(pipe_id, field_id)
            .ok_or_else(|| ApiError::NotFound {
                kind: "Field",
                id: field_id.to_string(),
            })?;
        let ft = fi.def.field_type;
        let all = self
            .cards
            .iter()
            .filter(|(_, c)| c.pipe_id == pipe_id)
            .filter(|(_, c)| {
                c.fields
                    .get(field_id)
                    .is_some_and(|v| values::matches(ft, v, value))
            })
            .map(|(k, c)| (*k, c))
            .collect();
        page(all, first, after, max, Card::clone)
    }

    /// `findRecords(tableId, search: {fieldId, fieldValue})`.
    #[allow(clippy::too_many_arguments)]
    pub fn find_records(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        table_id: &str,
        field_id: &str,
        value: &str,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Record>, ApiError> {
        Self::table_access(cat, rules, table_id, user, false)?;
        let fi = cat
            .field(table_id, field_id)
            .ok_or_else(|| ApiError::NotFound {
                kind: "Field",
                id: field_id.to_string(),
            })?;
        let ft = fi.def.field_type;
        let all = self
            .records
            .iter()
            .filter(|(_, r)| r.table_id == table_id)
            .filter(|(_, r)| {
                r.fields
                    .get(field_id)
                    .is_some_and(|v| values::matches(ft, v, value))
            })
            .map(|(k, r)| (*k, r))
            .collect();
        page(all, first, after, max, Record::clone)
    }

    /// `table_records(table_id, first, after)`.
    #[allow(clippy::too_many_arguments)]
    pub fn list_records(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        table_id: &str,
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Record>, ApiError> {
        Self::table_access(cat, rules, table_id, user, false)?;
        let all = self
            .records
            .iter()
            .filter(|(_, r)| r.table_id == table_id)
            .map(|(k, r)| (*k, r))
            .collect();
        page(all, first, after, max, Record::clone)
    }

    /// `records(repoId, phaseId, searchTerm, where, orderBy, first, after)` over a pipe or
    /// table. With `orderBy`, cursors are positions in the ordered list.
    #[allow(clippy::too_many_arguments)]
    pub fn search_records(
        &self,
        cat: &Catalog,
        rules: &Rules,
        user: &str,
        repo_id: &str,
        phase_id: Option<&str>,
        term: Option<&str>,
        filter: Option<&Filter>,
        order: &[Order],
        first: Option<i32>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<Node>, ApiError> {
        let repo = cat
            .repo(repo_id)
            .ok_or_else(|| Self::missing(rules, "Pipe", repo_id))?;
        Self::check_access(cat, rules, repo, user, false)?;
        let mut filter = filter.cloned();
        if let Some(f) = filter.as_mut() {
            Self::check_filter(cat, repo_id, f)?;
        }
        let mut order = order.to_vec();
        for o in &mut order {
            if let Some(field) = o.field.clone() {
                o.field = Some(Self::resolve_filter_field(cat, repo_id, &field)?.0);
            }
        }
        let term = term.map(str::to_lowercase).filter(|t| !t.is_empty());
        let matches_node = |n: &NodeView<'_>| -> bool {
            if phase_id.is_some_and(|p| n.phase != Some(p)) {
                return false;
            }
            if let Some(t) = &term {
                let hit = n.title.to_lowercase().contains(t.as_str())
                    || n.fields
                        .values()
                        .any(|v| values::json_text(v).to_lowercase().contains(t.as_str()));
                if !hit {
                    return false;
                }
            }
            filter.as_ref().is_none_or(|f| eval_filter(f, n))
        };
        let mut all: Vec<(u64, NodeRef<'_>)> = match repo {
            Repo::Pipe(_) => self
                .cards
                .iter()
                .filter(|(_, c)| c.pipe_id == repo_id)
                .map(|(k, c)| (*k, NodeRef::Card(c)))
                .filter(|(_, n)| matches_node(&n.view()))
                .collect(),
            Repo::Table(_) => self
                .records
                .iter()
                .filter(|(_, r)| r.table_id == repo_id)
                .map(|(k, r)| (*k, NodeRef::Record(r)))
                .filter(|(_, n)| matches_node(&n.view()))
                .collect(),
        };
        if !order.is_empty() {
            all.sort_by(|(ka, a), (kb, b)| {
                let (va, vb) = (a.view(), b.view());
                order
                    .iter()
                    .map(|o| {
                        let c = compare_text(&order_key(o, &va), &order_key(o, &vb));
                        if o.descending {
                            c.reverse()
                        } else {
                            c
                        }
                    })
                    .find(|c| c.is_ne())
                    .unwrap_or_else(|| ka.cmp(kb))
            });
            all = all
                .into_iter()
                .enumerate()
                .map(|(i, (_, n))| (i as u64 + 1, n))
                .collect();
        }
        page(all, first, after, max, NodeRef::into_node)
    }

    /// A filter's `field` to `(slug, type)`. Pipefy wants the field's uuid: a slug or a
    /// non-canonical uuid gets its generic internal error (docs/pipefy-api.md §5).
    fn resolve_filter_field(
        cat: &Catalog,
        repo_id: &str,
        field: &str,
    ) -> Result<(String, FieldType), ApiError> {
        if !values::is_canonical_uuid(field) {
            return Err(ApiError::Internal);
        }
        match cat.field_by_uuid(field) {
            Some((r, slug)) if r == repo_id => {
                let ft = cat
                    .field(r, slug)
                    .map(|fi| fi.def.field_type)
                    .ok_or(ApiError::Internal)?;
                Ok((slug.to_string(), ft))
            }
            _ => Err(ApiError::InvalidInput(format!(
                "Field not found with uuid: {field}"
            ))),
        }
    }

    /// Validates a filter and resolves its field uuid to `(slug, type)` once.
    fn check_filter(cat: &Catalog, repo_id: &str, f: &mut Filter) -> Result<(), ApiError> {
        if let Some(field) = &f.field {
            f.resolved = Some(Self::resolve_filter_field(cat, repo_id, field)?);
        }
        if let Some(a) = &f.attribute {
            if matches!(
                a.as_str(),
                "CREATOR" | "CREATOR_EMAIL" | "INDEX" | "EMAIL_READ"
            ) {
                return Err(ApiError::InvalidInput(format!(
                    "The emulator does not implement filtering on attribute {a}"
                )));
            }
        }
        for sub in f.and.iter_mut().chain(f.or.iter_mut()) {
            Self::check_filter(cat, repo_id, sub)?;
        }
        Ok(())
    }
}

/// The texts an attribute stands for in one node (lists for labels and assignees).
fn attribute_values(a: &str, n: &NodeView<'_>) -> Vec<String> {
    match a {
        "ID" => vec![n.id.to_string()],
        "TITLE" => vec![n.title.to_string()],
        "CURRENT_PHASE" => n.phase.map(str::to_string).into_iter().collect(),
        "LABELS" => n.labels.to_vec(),
        "ASSIGNEES" => n.assignees.to_vec(),
        "CREATED_AT" => vec![n.created_at.to_string()],
        "UPDATED_AT" => vec![n.updated_at.to_string()],
        "DUE_DATE" => n.due_date.map(str::to_string).into_iter().collect(),
        // FINISHED_AT: the emulator has no finished records in `records`' terms.
        _ => Vec::new(),
    }
}

fn order_key(o: &Order, n: &NodeView<'_>) -> String {
    if let Some(slug) = &o.field {
        return n
            .fields
            .get(slug)
            .map(values::json_text)
            .unwrap_or_default();
    }
    o.attribute
        .as_deref()
        .map(|a| attribute_values(a, n).join(","))
        .unwrap_or_default()
}

/// Numbers compare as numbers, everything else (ISO dates included) as text.
fn compare_text(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

fn eval_filter(f: &Filter, n: &NodeView<'_>) -> bool {
    // The texts being compared: a field's stored value (list items one by one), or an
    // attribute's values.
    let texts: Vec<String> = if let Some((slug, _)) = &f.resolved {
        match n.fields.get(slug) {
            Some(Json::Array(a)) => a.iter().map(values::json_text).collect(),
            Some(v) => vec![values::json_text(v)],
            None => Vec::new(),
        }
    } else if let Some(a) = &f.attribute {
        attribute_values(a, n)
    } else {
        Vec::new()
    };
    // Equality: typed comparison on fields (dates, numbers, lists), text on attributes.
    let equals = |want: &str| -> bool {
        match &f.resolved {
            Some((slug, ft)) => n
                .fields
                .get(slug)
                .is_some_and(|v| values::matches(*ft, v, want)),
            None => texts.iter().any(|x| x == want),
        }
    };
    let contains = |want: &str| -> bool {
        let want = want.to_lowercase();
        texts.iter().any(|x| x.to_lowercase().contains(&want))
    };
    let cmp_any = |want: &str, ok: &dyn Fn(std::cmp::Ordering) -> bool| -> bool {
        texts.iter().any(|x| ok(compare_text(x, want)))
    };
    let mut ok = true;
    if f.resolved.is_some() || f.attribute.is_some() {
        if let Some(v) = &f.eq {
            ok &= equals(v);
        }
        if let Some(v) = &f.neq {
            ok &= !equals(v);
        }
        if let Some(v) = &f.lt {
            ok &= cmp_any(v, &|c| c.is_lt());
        }
        if let Some(v) = &f.lte {
            ok &= cmp_any(v, &|c| c.is_le());
        }
        if let Some(v) = &f.gt {
            ok &= cmp_any(v, &|c| c.is_gt());
        }
        if let Some(v) = &f.gte {
            ok &= cmp_any(v, &|c| c.is_ge());
        }
        if let Some((lo, hi)) = &f.between {
            ok &= texts
                .iter()
                .any(|x| compare_text(x, lo).is_ge() && compare_text(x, hi).is_le());
        }
        if let Some((lo, hi)) = &f.nbetween {
            ok &= !texts
                .iter()
                .any(|x| compare_text(x, lo).is_ge() && compare_text(x, hi).is_le());
        }
        // `in` matches any of the values, `contains` all of them.
        if let Some(vs) = &f.in_ {
            ok &= vs.iter().any(|v| equals(v));
        }
        if let Some(vs) = &f.nin {
            ok &= !vs.iter().any(|v| equals(v));
        }
        if let Some(vs) = &f.contains {
            ok &= vs.iter().all(|v| contains(v));
        }
        if let Some(vs) = &f.ncontains {
            ok &= !vs.iter().any(|v| contains(v));
        }
    }
    if !f.and.is_empty() {
        ok &= f.and.iter().all(|s| eval_filter(s, n));
    }
    if !f.or.is_empty() {
        ok &= f.or.iter().any(|s| eval_filter(s, n));
    }
    ok
}

/// `CardSearch`, decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct CardSearch {
    pub title: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
    pub ignore_ids: Option<Vec<String>>,
    pub include_done: Option<bool>,
}
