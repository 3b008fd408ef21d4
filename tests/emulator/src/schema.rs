//! The GraphQL schema (async-graphql derive API). Wire names follow Pipefy's mix of
//! snake_case and camelCase exactly (docs/pipefy-api.md §4-§5), hence `rename_fields = "snake_case"`
//! with explicit camelCase names where Pipefy uses them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, EmptySubscription, Enum, Error, ErrorExtensions, InputObject, InputValueError,
    InputValueResult, Object, Result, Scalar, ScalarType, Schema, SimpleObject, Union, Value, ID,
};
use serde_json::Value as Json;

use crate::fixture::{FieldDef, LabelDef, OrganizationDef, PhaseDef, PipeDef, TableDef, User};
use crate::server::Inner;
use crate::state::{
    self, ApiError, Card, Catalog, FieldWrite, Node, Op, Page, Record, Rules, Store,
};
use crate::values::FieldType;

pub(crate) type PipefySchema = Schema<Query, Mutation, EmptySubscription>;

/// Who is calling (set per request by the HTTP layer).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub user_id: String,
}

fn gql(e: ApiError) -> Error {
    let code = e.code();
    Error::new(e.to_string()).extend_with(|_, ext| ext.set("code", code))
}

fn env<'a>(ctx: &Context<'a>) -> Result<(&'a Arc<Inner>, &'a Caller)> {
    Ok((ctx.data::<Arc<Inner>>()?, ctx.data::<Caller>()?))
}

fn inner<'a>(ctx: &Context<'a>) -> Result<&'a Arc<Inner>> {
    ctx.data::<Arc<Inner>>()
}

/// Runs a read against the store.
fn read<T>(
    ctx: &Context<'_>,
    f: impl FnOnce(&Catalog, &Rules, &Store, &str) -> Result<T, ApiError>,
) -> Result<T> {
    let (inner, caller) = env(ctx)?;
    inner.count_query(ctx.field().name());
    let store = inner.store();
    f(&inner.cat, &inner.rules, &store, &caller.user_id).map_err(gql)
}

/// Runs a mutation with the per-mutation faults: latency before, "applied but reported
/// failed" after a successful apply.
async fn mutate<T>(
    ctx: &Context<'_>,
    f: impl FnOnce(&Catalog, &Rules, &mut Store, &str) -> Result<T, ApiError>,
) -> Result<T> {
    let (inner, caller) = env(ctx)?;
    inner.count_mutation(ctx.field().name());
    let latency = inner.faults().faults.latency_per_mutation_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let out = {
        let mut store = inner.store();
        f(&inner.cat, &inner.rules, &mut store, &caller.user_id)
    }
    .map_err(gql)?;
    if inner.faults().draw_applied_but_failed() {
        inner.stats().faults.applied_but_failed += 1;
        return Err(gql(ApiError::Internal));
    }
    Ok(out)
}

// ---------------------------------------------------------------- scalars

/// Any JSON value; field values travel as `[UndefinedInput]`.
#[derive(Clone, Debug)]
pub(crate) struct UndefinedInput(pub Json);

#[Scalar(name = "UndefinedInput")]
impl ScalarType for UndefinedInput {
    fn parse(value: Value) -> InputValueResult<Self> {
        value
            .into_json()
            .map(UndefinedInput)
            .map_err(|e| InputValueError::custom(e.to_string()))
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

/// ISO-8601 date time string. The format is checked by the mutation (so a bad date is an
/// error of that alias, not of the whole document).
#[derive(Clone, Debug)]
pub(crate) struct DateTime(pub String);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(DateTime(s)),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

// ---------------------------------------------------------------- small objects

#[derive(SimpleObject, Clone)]
#[graphql(name = "User", rename_fields = "snake_case")]
pub(crate) struct UserObj {
    id: ID,
    uuid: String,
    name: String,
    email: String,
    username: String,
}

impl From<&User> for UserObj {
    fn from(u: &User) -> Self {
        UserObj {
            id: ID(u.id.clone()),
            uuid: pseudo_uuid("user", &u.id),
            name: u.name.clone(),
            email: u.email.clone(),
            username: u.email.split('@').next().unwrap_or_default().to_string(),
        }
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Label", rename_fields = "snake_case")]
pub(crate) struct LabelObj {
    id: ID,
    name: String,
    color: String,
}

impl From<&LabelDef> for LabelObj {
    fn from(l: &LabelDef) -> Self {
        LabelObj {
            id: ID(l.id.clone()),
            name: l.name.clone(),
            color: l.color.clone(),
        }
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Member", rename_fields = "snake_case")]
pub(crate) struct MemberObj {
    user: UserObj,
    role_name: String,
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "PageInfo", rename_fields = "camelCase")]
pub(crate) struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    end_cursor: Option<String>,
    start_cursor: Option<String>,
}

impl PageInfo {
    fn of<T>(p: &Page<T>) -> PageInfo {
        PageInfo {
            has_next_page: p.has_next,
            has_previous_page: p.has_previous,
            end_cursor: p.items.last().map(|(c, _)| c.clone()),
            start_cursor: p.items.first().map(|(c, _)| c.clone()),
        }
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "UserError", rename_fields = "snake_case")]
pub(crate) struct UserErrorObj {
    field: Option<Vec<String>>,
    message: String,
}

/// A stable uuid-looking id for objects that have none in the fixture.
fn pseudo_uuid(kind: &str, id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let d: u64 = id
        .bytes()
        .fold(0, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        d & 0xfff,
        d.wrapping_mul(0x9e37_79b9) & 0xffff_ffff_ffff
    )
}

// ---------------------------------------------------------------- field definitions

macro_rules! field_def_object {
    ($name:ident, $gql:literal) => {
        #[derive(SimpleObject, Clone)]
        #[graphql(name = $gql, rename_fields = "snake_case")]
        pub(crate) struct $name {
            id: ID,
            uuid: String,
            internal_id: ID,
            label: String,
            #[graphql(name = "type")]
            field_type: String,
            required: bool,
            editable: bool,
            unique: bool,
            options: Vec<String>,
            description: Option<String>,
            help: Option<String>,
            is_multiple: bool,
        }

        impl From<&FieldDef> for $name {
            fn from(f: &FieldDef) -> Self {
                $name {
                    id: ID(f.id.clone()),
                    uuid: f.uuid.clone(),
                    internal_id: ID(f.internal_id.clone()),
                    label: f.label.clone(),
                    field_type: f.field_type.as_str().to_string(),
                    required: f.required,
                    editable: f.editable,
                    unique: f.unique,
                    options: f.options.clone(),
                    description: f.description.clone(),
                    help: f.help.clone(),
                    is_multiple: f.field_type.is_list(),
                }
            }
        }
    };
}

field_def_object!(PhaseFieldObj, "PhaseField");
field_def_object!(TableFieldObj, "TableField");
field_def_object!(FieldObj, "Field");

/// One filled field of a card or record, computed while the store is locked.
struct FieldValueData {
    name: String,
    value: String,
    field: FieldObj,
    array_value: Option<Vec<String>>,
    date_value: Option<String>,
    datetime_value: Option<String>,
    float_value: Option<f64>,
    filled_at: Option<String>,
    updated_at: Option<String>,
    label_values: Vec<LabelObj>,
    assignee_values: Vec<UserObj>,
    phase_field: Option<PhaseFieldObj>,
}

macro_rules! field_value_object {
    ($name:ident, $gql:literal) => {
        #[derive(SimpleObject, Clone)]
        #[graphql(name = $gql, rename_fields = "snake_case")]
        pub(crate) struct $name {
            name: String,
            value: String,
            report_value: String,
            field: FieldObj,
            array_value: Option<Vec<String>>,
            date_value: Option<String>,
            datetime_value: Option<String>,
            float_value: Option<f64>,
            filled_at: Option<String>,
            updated_at: Option<String>,
            label_values: Vec<LabelObj>,
            assignee_values: Vec<UserObj>,
            phase_field: Option<PhaseFieldObj>,
        }

        impl From<FieldValueData> for $name {
            fn from(d: FieldValueData) -> Self {
                $name {
                    report_value: d.value.clone(),
                    name: d.name,
                    value: d.value,
                    field: d.field,
                    array_value: d.array_value,
                    date_value: d.date_value,
                    datetime_value: d.datetime_value,
                    float_value: d.float_value,
                    filled_at: d.filled_at,
                    updated_at: d.updated_at,
                    label_values: d.label_values,
                    assignee_values: d.assignee_values,
                    phase_field: d.phase_field,
                }
            }
        }
    };
}

field_value_object!(CardFieldObj, "CardField");
field_value_object!(TableRecordFieldObj, "TableRecordField");

/// Filled fields of a card/record in form order (reads omit empty fields).
fn field_values(
    inner: &Inner,
    store: &Store,
    repo_id: &str,
    fields: &BTreeMap<String, Json>,
    updated_at: &str,
) -> Vec<FieldValueData> {
    let cat = &inner.cat;
    cat.fields_of(repo_id)
        .into_iter()
        .filter_map(|fi| {
            let v = fields.get(&fi.def.id)?;
            let ft = fi.def.field_type;
            let list: Option<Vec<String>> = match v {
                Json::Array(a) => Some(a.iter().map(crate::values::json_text).collect()),
                _ => None,
            };
            let ids = list.clone().unwrap_or_default();
            Some(FieldValueData {
                name: fi.def.label.clone(),
                value: store.display(cat, inner.rules.value_format, &fi.def, v),
                field: FieldObj::from(&fi.def),
                array_value: list,
                date_value: (ft == FieldType::Date).then(|| crate::values::json_text(v)),
                datetime_value: matches!(ft, FieldType::Datetime | FieldType::DueDate)
                    .then(|| crate::values::json_text(v)),
                float_value: matches!(ft, FieldType::Number | FieldType::Currency)
                    .then(|| v.as_f64())
                    .flatten(),
                filled_at: Some(updated_at.to_string()),
                updated_at: Some(updated_at.to_string()),
                label_values: if ft == FieldType::LabelSelect {
                    ids.iter()
                        .filter_map(|i| cat.any_label(i))
                        .map(LabelObj::from)
                        .collect()
                } else {
                    Vec::new()
                },
                assignee_values: if ft == FieldType::AssigneeSelect {
                    ids.iter()
                        .filter_map(|i| cat.user(i))
                        .map(UserObj::from)
                        .collect()
                } else {
                    Vec::new()
                },
                phase_field: fi.phase_id.as_ref().map(|_| PhaseFieldObj::from(&fi.def)),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- pipes, phases, tables

#[derive(Clone)]
pub(crate) struct PhaseObj {
    phase: PhaseDef,
    pipe_id: String,
}

#[Object(name = "Phase", rename_fields = "snake_case")]
impl PhaseObj {
    async fn id(&self) -> ID {
        ID(self.phase.id.clone())
    }
    async fn name(&self) -> &str {
        &self.phase.name
    }
    async fn done(&self) -> bool {
        self.phase.done
    }
    async fn index(&self, ctx: &Context<'_>) -> Result<i32> {
        let inner = inner(ctx)?;
        let i = inner
            .cat
            .pipe(&self.pipe_id)
            .and_then(|p| p.phases.iter().position(|x| x.id == self.phase.id))
            .unwrap_or(0);
        Ok(i32::try_from(i).unwrap_or(i32::MAX))
    }
    async fn cards_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let n = inner(ctx)?.store().cards_count(&self.phase.id);
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
    async fn fields(&self) -> Vec<PhaseFieldObj> {
        self.phase.fields.iter().map(PhaseFieldObj::from).collect()
    }
    /// The phase's cards, paged like `cards` (cap `cards_page_max`).
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn cards(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<CardConnection> {
        let inner = inner(ctx)?;
        let max = inner.page_max.cards;
        let page = inner
            .store()
            .list_phase_cards(&self.phase.id, first, after.as_deref(), max)
            .map_err(gql)?;
        Ok(CardConnection::from(page))
    }
    async fn cards_can_be_moved_to_phases(&self, ctx: &Context<'_>) -> Result<Vec<PhaseObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .phase
            .moves_to
            .iter()
            .filter_map(|id| inner.cat.phase(id))
            .map(|(p, ph)| PhaseObj {
                phase: ph.clone(),
                pipe_id: p.id.clone(),
            })
            .collect())
    }
    async fn pipe(&self, ctx: &Context<'_>) -> Result<Option<PipeObj>> {
        Ok(inner(ctx)?
            .cat
            .pipe(&self.pipe_id)
            .map(|p| PipeObj(p.clone())))
    }
}

#[derive(Clone)]
pub(crate) struct PipeObj(PipeDef);

#[Object(name = "Pipe", rename_fields = "snake_case")]
impl PipeObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn uuid(&self) -> String {
        pseudo_uuid("pipe", &self.0.id)
    }
    /// The organisation holding the pipe (Pipefy's SDK reads it as `pipe { organizationId }`).
    #[graphql(name = "organizationId")]
    async fn organization_id(&self, ctx: &Context<'_>) -> Result<Option<ID>> {
        Ok(inner(ctx)?
            .cat
            .fixture
            .effective_organizations()
            .into_iter()
            .find(|o| o.pipe_ids.contains(&self.0.id))
            .map(|o| ID(o.id)))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    #[graphql(name = "startFormPhaseId")]
    async fn start_form_phase_id(&self) -> Option<ID> {
        self.0.start_phase_id().map(|s| ID(s.to_string()))
    }
    async fn phases(&self) -> Vec<PhaseObj> {
        self.0
            .phases
            .iter()
            .map(|ph| PhaseObj {
                phase: ph.clone(),
                pipe_id: self.0.id.clone(),
            })
            .collect()
    }
    async fn start_form_fields(&self) -> Vec<PhaseFieldObj> {
        self.0
            .start_form_fields
            .iter()
            .map(PhaseFieldObj::from)
            .collect()
    }
    async fn labels(&self) -> Vec<LabelObj> {
        self.0.labels.iter().map(LabelObj::from).collect()
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<MemberObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .members
            .iter()
            .filter_map(|m| {
                inner.cat.user(&m.user_id).map(|u| MemberObj {
                    user: UserObj::from(u),
                    role_name: m.role_name.clone(),
                })
            })
            .collect())
    }
    async fn users(&self, ctx: &Context<'_>) -> Result<Vec<UserObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .members
            .iter()
            .filter_map(|m| inner.cat.user(&m.user_id).map(UserObj::from))
            .collect())
    }
    async fn title_field(&self, ctx: &Context<'_>) -> Result<Option<PhaseFieldObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .title_field_id
            .as_deref()
            .and_then(|s| inner.cat.field(&self.0.id, s))
            .map(|fi| PhaseFieldObj::from(&fi.def)))
    }
    async fn cards_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let store = inner(ctx)?.store();
        let n = store
            .cards
            .values()
            .filter(|c| c.pipe_id == self.0.id)
            .count();
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
}

#[derive(Clone)]
pub(crate) struct TableObj(TableDef);

#[Object(name = "Table", rename_fields = "snake_case")]
impl TableObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn authorization(&self) -> &str {
        "read_write"
    }
    async fn table_fields(&self) -> Vec<TableFieldObj> {
        self.0.fields.iter().map(TableFieldObj::from).collect()
    }
    async fn title_field(&self) -> Option<TableFieldObj> {
        let slug = self.0.title_field_id.as_deref()?;
        self.0
            .fields
            .iter()
            .find(|f| f.id == slug)
            .map(TableFieldObj::from)
    }
    async fn labels(&self) -> Vec<LabelObj> {
        self.0.labels.iter().map(LabelObj::from).collect()
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<MemberObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .members
            .iter()
            .filter_map(|m| {
                inner.cat.user(&m.user_id).map(|u| MemberObj {
                    user: UserObj::from(u),
                    role_name: m.role_name.clone(),
                })
            })
            .collect())
    }
    /// The table's records, paged like `table_records(table_id:)` (the caller already
    /// read the table, so no further permission check).
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn table_records(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TableRecordConnection> {
        let inner = inner(ctx)?;
        let max = inner.page_max.table_records;
        let page = inner
            .store()
            .list_table_records(&self.0.id, first, after.as_deref(), max)
            .map_err(gql)?;
        Ok(TableRecordConnection::from(page))
    }
    async fn table_records_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let store = inner(ctx)?.store();
        let n = store
            .records
            .values()
            .filter(|r| r.table_id == self.0.id)
            .count();
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
}

// ---------------------------------------------------------------- cards and records

#[derive(Clone)]
pub(crate) struct CardObj(pub Card);

/// One attachment of a card or record.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Attachment", rename_fields = "snake_case")]
pub(crate) struct AttachmentObj {
    /// The storage path.
    path: String,
    /// A download URL (the emulator serves the uploaded bytes there).
    url: String,
    #[graphql(name = "createdAt")]
    created_at: String,
    field: Option<FieldObj>,
}

/// The download URL of a storage path.
fn download_url(inner: &Inner, path: &str) -> String {
    let sig = inner.uploads().signature_of(path).unwrap_or_default();
    format!(
        "{}/{}?X-Amz-Expires=300&X-Amz-Signature={sig}&response-content-disposition=attachment",
        inner.base_url(),
        crate::uploads::encode_path(path)
    )
}

fn attachments_of(
    inner: &Inner,
    repo_id: &str,
    own: &[String],
    fields: &BTreeMap<String, Json>,
    created_at: &str,
) -> Vec<AttachmentObj> {
    let mut out: Vec<AttachmentObj> = own
        .iter()
        .map(|p| AttachmentObj {
            path: p.clone(),
            url: download_url(inner, p),
            created_at: created_at.to_string(),
            field: None,
        })
        .collect();
    for fi in inner.cat.fields_of(repo_id) {
        if fi.def.field_type != FieldType::Attachment {
            continue;
        }
        if let Some(Json::Array(items)) = fields.get(&fi.def.id) {
            for p in items.iter().map(crate::values::json_text) {
                out.push(AttachmentObj {
                    url: download_url(inner, &p),
                    path: p,
                    created_at: created_at.to_string(),
                    field: Some(FieldObj::from(&fi.def)),
                });
            }
        }
    }
    out
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "CardRelationship", rename_fields = "snake_case")]
pub(crate) struct RelationObj {
    id: ID,
    name: String,
    pipe: Option<PipeObj>,
    cards: Vec<CardObj>,
}

fn phase_obj(inner: &Inner, phase_id: &str) -> Option<PhaseObj> {
    inner.cat.phase(phase_id).map(|(p, ph)| PhaseObj {
        phase: ph.clone(),
        pipe_id: p.id.clone(),
    })
}

/// Groups related cards by pipe, as Pipefy's relation objects do.
fn relations(inner: &Inner, cards: Vec<Card>) -> Vec<RelationObj> {
    let mut by_pipe: BTreeMap<String, Vec<Card>> = BTreeMap::new();
    for c in cards {
        by_pipe.entry(c.pipe_id.clone()).or_default().push(c);
    }
    by_pipe
        .into_iter()
        .map(|(pipe_id, cards)| {
            let pipe = inner.cat.pipe(&pipe_id).cloned();
            RelationObj {
                id: ID(pipe_id.clone()),
                name: pipe.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                pipe: pipe.map(PipeObj),
                cards: cards.into_iter().map(CardObj).collect(),
            }
        })
        .collect()
}

#[Object(name = "Card", rename_fields = "snake_case")]
impl CardObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn uuid(&self) -> String {
        pseudo_uuid("card", &self.0.id)
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn url(&self) -> String {
        format!("https://app.pipefy.com/open-cards/{}", self.0.id)
    }
    async fn due_date(&self) -> Option<&str> {
        self.0.due_date.as_deref()
    }
    #[graphql(name = "createdAt")]
    async fn created_at_camel(&self) -> &str {
        &self.0.created_at
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    #[graphql(name = "updatedAt")]
    async fn updated_at_camel(&self) -> &str {
        &self.0.updated_at
    }
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
    async fn finished_at(&self) -> Option<&str> {
        self.0.finished_at.as_deref()
    }
    async fn done(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(inner(ctx)?
            .cat
            .phase(&self.0.phase_id)
            .is_some_and(|(_, ph)| ph.done))
    }
    async fn current_phase(&self, ctx: &Context<'_>) -> Result<Option<PhaseObj>> {
        Ok(phase_obj(inner(ctx)?, &self.0.phase_id))
    }
    async fn pipe(&self, ctx: &Context<'_>) -> Result<Option<PipeObj>> {
        Ok(inner(ctx)?
            .cat
            .pipe(&self.0.pipe_id)
            .map(|p| PipeObj(p.clone())))
    }
    async fn labels(&self, ctx: &Context<'_>) -> Result<Vec<LabelObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .labels
            .iter()
            .filter_map(|l| inner.cat.any_label(l))
            .map(LabelObj::from)
            .collect())
    }
    async fn assignees(&self, ctx: &Context<'_>) -> Result<Vec<UserObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .assignees
            .iter()
            .filter_map(|u| inner.cat.user(u))
            .map(UserObj::from)
            .collect())
    }
    async fn fields(&self, ctx: &Context<'_>) -> Result<Vec<CardFieldObj>> {
        let inner = inner(ctx)?;
        let store = inner.store();
        Ok(field_values(
            inner,
            &store,
            &self.0.pipe_id,
            &self.0.fields,
            &self.0.updated_at,
        )
        .into_iter()
        .map(CardFieldObj::from)
        .collect())
    }
    #[graphql(name = "createdBy")]
    async fn created_by(&self, ctx: &Context<'_>) -> Result<Option<UserObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .created_by
            .as_deref()
            .and_then(|u| inner.cat.user(u))
            .map(UserObj::from))
    }
    /// The card's attachments: those given to `createCard(attachments:)`, then the
    /// paths in its attachment fields, each with a download URL on the emulator.
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<AttachmentObj>> {
        let inner = inner(ctx)?;
        Ok(attachments_of(
            inner,
            &self.0.pipe_id,
            &self.0.attachments,
            &self.0.fields,
            &self.0.created_at,
        ))
    }
    async fn parent_relations(&self, ctx: &Context<'_>) -> Result<Vec<RelationObj>> {
        let inner = inner(ctx)?;
        let parents: Vec<Card> = {
            let store = inner.store();
            self.0
                .parent_ids
                .iter()
                .filter_map(|p| store.card(p).cloned())
                .collect()
        };
        Ok(relations(inner, parents))
    }
    async fn child_relations(&self, ctx: &Context<'_>) -> Result<Vec<RelationObj>> {
        let inner = inner(ctx)?;
        let children: Vec<Card> = {
            let store = inner.store();
            store
                .cards
                .values()
                .filter(|c| c.parent_ids.contains(&self.0.id))
                .cloned()
                .collect()
        };
        Ok(relations(inner, children))
    }
}

#[derive(Clone)]
pub(crate) struct TableRecordObj(pub Record);

impl TableRecordObj {
    fn record_fields(&self, ctx: &Context<'_>) -> Result<Vec<TableRecordFieldObj>> {
        let inner = inner(ctx)?;
        let store = inner.store();
        Ok(field_values(
            inner,
            &store,
            &self.0.table_id,
            &self.0.fields,
            &self.0.updated_at,
        )
        .into_iter()
        .map(TableRecordFieldObj::from)
        .collect())
    }
}

#[Object(name = "TableRecord", rename_fields = "snake_case")]
impl TableRecordObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn uuid(&self) -> String {
        pseudo_uuid("record", &self.0.id)
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn url(&self) -> String {
        format!(
            "https://app.pipefy.com/database_v2/tables/{}/records/{}",
            self.0.table_id, self.0.id
        )
    }
    async fn due_date(&self) -> Option<&str> {
        self.0.due_date.as_deref()
    }
    #[graphql(name = "createdAt")]
    async fn created_at_camel(&self) -> &str {
        &self.0.created_at
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    #[graphql(name = "updatedAt")]
    async fn updated_at_camel(&self) -> &str {
        &self.0.updated_at
    }
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
    async fn table(&self, ctx: &Context<'_>) -> Result<Option<TableObj>> {
        Ok(inner(ctx)?
            .cat
            .table(&self.0.table_id)
            .map(|t| TableObj(t.clone())))
    }
    async fn labels(&self, ctx: &Context<'_>) -> Result<Vec<LabelObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .labels
            .iter()
            .filter_map(|l| inner.cat.any_label(l))
            .map(LabelObj::from)
            .collect())
    }
    async fn assignees(&self, ctx: &Context<'_>) -> Result<Vec<UserObj>> {
        let inner = inner(ctx)?;
        Ok(self
            .0
            .assignees
            .iter()
            .filter_map(|u| inner.cat.user(u))
            .map(UserObj::from)
            .collect())
    }
    /// Pipefy's name for the record's field values.
    #[graphql(name = "record_fields")]
    async fn record_fields_gql(&self, ctx: &Context<'_>) -> Result<Vec<TableRecordFieldObj>> {
        self.record_fields(ctx)
    }
    /// Alias of `record_fields` (the shape some clients select on `findRecords` nodes).
    async fn fields(&self, ctx: &Context<'_>) -> Result<Vec<TableRecordFieldObj>> {
        self.record_fields(ctx)
    }
    /// The paths in the record's attachment fields, with download URLs.
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<AttachmentObj>> {
        let inner = inner(ctx)?;
        Ok(attachments_of(
            inner,
            &self.0.table_id,
            &[],
            &self.0.fields,
            &self.0.created_at,
        ))
    }
}

// ---------------------------------------------------------------- organisations

#[derive(Clone)]
pub(crate) struct OrganizationObj(OrganizationDef);

/// The organisations `user` sees: all for an organisation admin, else those holding a
/// pipe or table it can read.
fn visible_organizations(cat: &Catalog, user: &str) -> Vec<OrganizationDef> {
    let admin = cat.user(user).is_some_and(|u| u.org_admin);
    cat.fixture
        .effective_organizations()
        .into_iter()
        .filter(|o| {
            admin
                || o.pipe_ids.iter().any(|id| {
                    cat.pipe(id)
                        .is_some_and(|p| cat.can_read(state::Repo::Pipe(p), user))
                })
                || o.table_ids.iter().any(|id| {
                    cat.table(id)
                        .is_some_and(|t| cat.can_read(state::Repo::Table(t), user))
                })
        })
        .collect()
}

fn org_uuid(o: &OrganizationDef) -> String {
    if o.uuid.is_empty() {
        pseudo_uuid("organization", &o.id)
    } else {
        o.uuid.clone()
    }
}

#[derive(SimpleObject)]
#[graphql(name = "TableEdge")]
pub(crate) struct TableEdge {
    cursor: String,
    node: TableObj,
}

#[derive(SimpleObject)]
#[graphql(name = "TableConnection", rename_fields = "camelCase")]
pub(crate) struct TableConnection {
    edges: Vec<TableEdge>,
    nodes: Vec<TableObj>,
    page_info: PageInfo,
    total_count: i32,
}

#[Object(name = "Organization", rename_fields = "camelCase")]
impl OrganizationObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn uuid(&self) -> String {
        org_uuid(&self.0)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn plan_name(&self) -> &str {
        &self.0.plan_name
    }
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    /// `admin` for an organisation admin, else `member`.
    async fn role(&self, ctx: &Context<'_>) -> Result<String> {
        let (inner, caller) = env(ctx)?;
        let admin = inner.cat.user(&caller.user_id).is_some_and(|u| u.org_admin);
        Ok(if admin { "admin" } else { "member" }.to_string())
    }
    /// Distinct users that are organisation admins or members of one of its pipes/tables.
    async fn members_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let cat = &inner(ctx)?.cat;
        let mut ids: std::collections::BTreeSet<&str> = cat
            .fixture
            .users
            .iter()
            .filter(|u| u.org_admin)
            .map(|u| u.id.as_str())
            .collect();
        for p in self.0.pipe_ids.iter().filter_map(|id| cat.pipe(id)) {
            ids.extend(p.members.iter().map(|m| m.user_id.as_str()));
        }
        for t in self.0.table_ids.iter().filter_map(|id| cat.table(id)) {
            ids.extend(t.members.iter().map(|m| m.user_id.as_str()));
        }
        Ok(i32::try_from(ids.len()).unwrap_or(i32::MAX))
    }
    async fn pipes_count(&self) -> i32 {
        i32::try_from(self.0.pipe_ids.len()).unwrap_or(i32::MAX)
    }
    /// The caller's readable pipes; `name_search` keeps names containing it (any case).
    #[graphql(name = "pipes")]
    async fn pipes(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "name_search")] name_search: Option<String>,
    ) -> Result<Vec<PipeObj>> {
        let (inner, caller) = env(ctx)?;
        let needle = name_search.map(|n| n.to_lowercase());
        Ok(self
            .0
            .pipe_ids
            .iter()
            .filter_map(|id| inner.cat.pipe(id))
            .filter(|p| inner.cat.can_read(state::Repo::Pipe(p), &caller.user_id))
            .filter(|p| {
                needle
                    .as_ref()
                    .is_none_or(|n| p.name.to_lowercase().contains(n.as_str()))
            })
            .map(|p| PipeObj(p.clone()))
            .collect())
    }
    /// The caller's readable tables, paged (cursors are positions).
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn tables(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TableConnection> {
        let (inner, caller) = env(ctx)?;
        let all: Vec<TableDef> = self
            .0
            .table_ids
            .iter()
            .filter_map(|id| inner.cat.table(id))
            .filter(|t| inner.cat.can_read(state::Repo::Table(t), &caller.user_id))
            .cloned()
            .collect();
        let start = match after.as_deref() {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| gql(ApiError::InvalidInput(format!("Invalid cursor: {c:?}"))))?,
        };
        let n = first.map(|f| f.max(0) as usize).unwrap_or(50).min(200);
        let items: Vec<(usize, TableDef)> = all
            .iter()
            .cloned()
            .enumerate()
            .skip(start)
            .take(n)
            .collect();
        let end = items.last().map(|(i, _)| i + 1).unwrap_or(start);
        let page_info = PageInfo {
            has_next_page: end < all.len(),
            has_previous_page: start > 0,
            end_cursor: items.last().map(|(i, _)| (i + 1).to_string()),
            start_cursor: items.first().map(|(i, _)| (i + 1).to_string()),
        };
        Ok(TableConnection {
            nodes: items.iter().map(|(_, t)| TableObj(t.clone())).collect(),
            edges: items
                .into_iter()
                .map(|(i, t)| TableEdge {
                    cursor: (i + 1).to_string(),
                    node: TableObj(t),
                })
                .collect(),
            page_info,
            total_count: i32::try_from(all.len()).unwrap_or(i32::MAX),
        })
    }
}

/// A node of `records(...)`: a card of a pipe or a record of a table.
pub(crate) struct RecordNodeObj(Node);

#[Object(name = "Record", rename_fields = "camelCase")]
impl RecordNodeObj {
    async fn id(&self) -> ID {
        match &self.0 {
            Node::Card(c) => ID(c.id.clone()),
            Node::Record(r) => ID(r.id.clone()),
        }
    }
    async fn uuid(&self) -> String {
        match &self.0 {
            Node::Card(c) => pseudo_uuid("card", &c.id),
            Node::Record(r) => pseudo_uuid("record", &r.id),
        }
    }
    async fn title(&self) -> &str {
        match &self.0 {
            Node::Card(c) => &c.title,
            Node::Record(r) => &r.title,
        }
    }
    async fn created_at(&self) -> &str {
        match &self.0 {
            Node::Card(c) => &c.created_at,
            Node::Record(r) => &r.created_at,
        }
    }
    async fn updated_at(&self) -> &str {
        match &self.0 {
            Node::Card(c) => &c.updated_at,
            Node::Record(r) => &r.updated_at,
        }
    }
    async fn finished_at(&self) -> Option<&str> {
        match &self.0 {
            Node::Card(c) => c.finished_at.as_deref(),
            Node::Record(_) => None,
        }
    }
    async fn due_date(&self) -> Option<&str> {
        match &self.0 {
            Node::Card(c) => c.due_date.as_deref(),
            Node::Record(r) => r.due_date.as_deref(),
        }
    }
    async fn current_phase(&self, ctx: &Context<'_>) -> Result<Option<PhaseObj>> {
        match &self.0 {
            Node::Card(c) => Ok(phase_obj(inner(ctx)?, &c.phase_id)),
            Node::Record(_) => Ok(None),
        }
    }
    async fn labels(&self, ctx: &Context<'_>) -> Result<Vec<LabelObj>> {
        let inner = inner(ctx)?;
        let ids = match &self.0 {
            Node::Card(c) => &c.labels,
            Node::Record(r) => &r.labels,
        };
        Ok(ids
            .iter()
            .filter_map(|l| inner.cat.any_label(l))
            .map(LabelObj::from)
            .collect())
    }
    async fn assignees(&self, ctx: &Context<'_>) -> Result<Vec<UserObj>> {
        let inner = inner(ctx)?;
        let ids = match &self.0 {
            Node::Card(c) => &c.assignees,
            Node::Record(r) => &r.assignees,
        };
        Ok(ids
            .iter()
            .filter_map(|u| inner.cat.user(u))
            .map(UserObj::from)
            .collect())
    }
    async fn created_by(&self) -> Option<UserObj> {
        None
    }
    async fn fields(&self, ctx: &Context<'_>) -> Result<Vec<CardFieldObj>> {
        let inner = inner(ctx)?;
        let store = inner.store();
        let (repo, fields, at) = match &self.0 {
            Node::Card(c) => (&c.pipe_id, &c.fields, &c.updated_at),
            Node::Record(r) => (&r.table_id, &r.fields, &r.updated_at),
        };
        Ok(field_values(inner, &store, repo, fields, at)
            .into_iter()
            .map(CardFieldObj::from)
            .collect())
    }
}

// ---------------------------------------------------------------- connections

#[derive(SimpleObject)]
#[graphql(name = "CardEdge")]
pub(crate) struct CardEdge {
    cursor: String,
    node: CardObj,
}

#[derive(SimpleObject)]
#[graphql(name = "CardConnection", rename_fields = "camelCase")]
pub(crate) struct CardConnection {
    edges: Vec<CardEdge>,
    nodes: Vec<CardObj>,
    page_info: PageInfo,
    total_count: i32,
}

impl From<Page<Card>> for CardConnection {
    fn from(p: Page<Card>) -> Self {
        let page_info = PageInfo::of(&p);
        let total_count = i32::try_from(p.total).unwrap_or(i32::MAX);
        let nodes = p.items.iter().map(|(_, c)| CardObj(c.clone())).collect();
        CardConnection {
            edges: p
                .items
                .into_iter()
                .map(|(cursor, c)| CardEdge {
                    cursor,
                    node: CardObj(c),
                })
                .collect(),
            nodes,
            page_info,
            total_count,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "TableRecordEdge")]
pub(crate) struct TableRecordEdge {
    cursor: String,
    node: TableRecordObj,
}

#[derive(SimpleObject)]
#[graphql(name = "TableRecordConnection", rename_fields = "camelCase")]
pub(crate) struct TableRecordConnection {
    edges: Vec<TableRecordEdge>,
    nodes: Vec<TableRecordObj>,
    page_info: PageInfo,
    total_count: i32,
}

impl From<Page<Record>> for TableRecordConnection {
    fn from(p: Page<Record>) -> Self {
        let page_info = PageInfo::of(&p);
        let total_count = i32::try_from(p.total).unwrap_or(i32::MAX);
        let nodes = p
            .items
            .iter()
            .map(|(_, r)| TableRecordObj(r.clone()))
            .collect();
        TableRecordConnection {
            edges: p
                .items
                .into_iter()
                .map(|(cursor, r)| TableRecordEdge {
                    cursor,
                    node: TableRecordObj(r),
                })
                .collect(),
            nodes,
            page_info,
            total_count,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "RecordEdge")]
pub(crate) struct RecordEdge {
    cursor: String,
    node: RecordNodeObj,
}

#[derive(SimpleObject)]
#[graphql(name = "RecordConnection", rename_fields = "camelCase")]
pub(crate) struct RecordConnection {
    total_count: i32,
    page_info: PageInfo,
    edges: Vec<RecordEdge>,
}

// ---------------------------------------------------------------- inputs

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "CardSearch", rename_fields = "snake_case")]
pub(crate) struct CardSearchInput {
    title: Option<String>,
    assignee_ids: Option<Vec<Option<ID>>>,
    label_ids: Option<Vec<Option<ID>>>,
    ignore_ids: Option<Vec<Option<ID>>>,
    include_done: Option<bool>,
    inbox_emails_read: Option<bool>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "FindCards", rename_fields = "camelCase")]
pub(crate) struct FindCardsInput {
    field_id: String,
    field_value: String,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "FindRecords", rename_fields = "camelCase")]
pub(crate) struct FindRecordsInput {
    field_id: String,
    field_value: String,
}

/// Attributes of `records(where: {attribute: ...})`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "RecordAttribute", rename_items = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RecordAttribute {
    Id,
    Title,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
    DueDate,
    CurrentPhase,
    Labels,
    Assignees,
    Creator,
    CreatorEmail,
    Index,
    EmailRead,
}

impl RecordAttribute {
    fn name(self) -> &'static str {
        match self {
            RecordAttribute::Id => "ID",
            RecordAttribute::Title => "TITLE",
            RecordAttribute::CreatedAt => "CREATED_AT",
            RecordAttribute::UpdatedAt => "UPDATED_AT",
            RecordAttribute::FinishedAt => "FINISHED_AT",
            RecordAttribute::DueDate => "DUE_DATE",
            RecordAttribute::CurrentPhase => "CURRENT_PHASE",
            RecordAttribute::Labels => "LABELS",
            RecordAttribute::Assignees => "ASSIGNEES",
            RecordAttribute::Creator => "CREATOR",
            RecordAttribute::CreatorEmail => "CREATOR_EMAIL",
            RecordAttribute::Index => "INDEX",
            RecordAttribute::EmailRead => "EMAIL_READ",
        }
    }
}

/// `{min, max}` of `between`/`nbetween` (Pipefy's SDK types it so; the GraphQL type name
/// is the emulator's, docs/pipefy-api.md Unverified).
#[derive(InputObject, Clone, Debug)]
#[graphql(name = "FilterRange")]
pub(crate) struct FilterRangeInput {
    min: Option<UndefinedInput>,
    max: Option<UndefinedInput>,
}

type FilterList = Option<Vec<Option<UndefinedInput>>>;

/// `records(where:)`: `eq`..`gte` and the `like`s take any scalar, `in`/`nin`/`contains`/
/// `ncontains` a list, `between`/`nbetween` a range (docs/pipefy-api.md §5).
#[derive(InputObject, Clone, Debug)]
#[graphql(name = "FilterSet", rename_fields = "camelCase")]
pub(crate) struct FilterSetInput {
    field: Option<String>,
    attribute: Option<RecordAttribute>,
    eq: Option<UndefinedInput>,
    neq: Option<UndefinedInput>,
    lt: Option<UndefinedInput>,
    gt: Option<UndefinedInput>,
    lte: Option<UndefinedInput>,
    gte: Option<UndefinedInput>,
    #[graphql(name = "in")]
    in_: FilterList,
    nin: FilterList,
    contains: FilterList,
    ncontains: FilterList,
    between: Option<FilterRangeInput>,
    nbetween: Option<FilterRangeInput>,
    like: Option<UndefinedInput>,
    nlike: Option<UndefinedInput>,
    ilike: Option<UndefinedInput>,
    nilike: Option<UndefinedInput>,
    and: Option<Vec<FilterSetInput>>,
    or: Option<Vec<FilterSetInput>>,
}

fn scalar_text(v: Option<UndefinedInput>) -> Option<String> {
    v.map(|u| crate::values::json_text(&u.0))
}

fn list_text(v: FilterList) -> Option<Vec<String>> {
    v.map(|items| {
        items
            .into_iter()
            .flatten()
            .map(|u| crate::values::json_text(&u.0))
            .collect()
    })
}

fn range_text(v: Option<FilterRangeInput>) -> Option<(String, String)> {
    v.map(|r| {
        (
            scalar_text(r.min).unwrap_or_default(),
            scalar_text(r.max).unwrap_or_default(),
        )
    })
}

impl FilterSetInput {
    fn decode(self) -> state::Filter {
        // like/ilike are case-insensitive word matches in Pipefy; modelled as contains.
        let word = |a: Option<UndefinedInput>, b: Option<UndefinedInput>| {
            scalar_text(a.or(b)).map(|w| vec![w])
        };
        let like = word(self.like, self.ilike);
        let nlike = word(self.nlike, self.nilike);
        let join = |a: Option<Vec<String>>, b: Option<Vec<String>>| match (a, b) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        state::Filter {
            field: self.field,
            attribute: self.attribute.map(|a| a.name().to_string()),
            eq: scalar_text(self.eq),
            neq: scalar_text(self.neq),
            lt: scalar_text(self.lt),
            lte: scalar_text(self.lte),
            gt: scalar_text(self.gt),
            gte: scalar_text(self.gte),
            in_: list_text(self.in_),
            nin: list_text(self.nin),
            contains: join(list_text(self.contains), like),
            ncontains: join(list_text(self.ncontains), nlike),
            between: range_text(self.between),
            nbetween: range_text(self.nbetween),
            and: self
                .and
                .unwrap_or_default()
                .into_iter()
                .map(FilterSetInput::decode)
                .collect(),
            or: self
                .or
                .unwrap_or_default()
                .into_iter()
                .map(FilterSetInput::decode)
                .collect(),
            resolved: None,
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "OrderDirection")]
pub(crate) enum OrderDirection {
    Asc,
    Desc,
}

/// One key of `records(orderBy:)`: a field uuid or an attribute, ascending by default.
#[derive(InputObject, Clone, Debug)]
#[graphql(name = "OrderBy", rename_fields = "camelCase")]
pub(crate) struct OrderByInput {
    field: Option<String>,
    attribute: Option<RecordAttribute>,
    direction: Option<OrderDirection>,
}

impl OrderByInput {
    fn decode(self) -> state::Order {
        state::Order {
            field: self.field,
            attribute: self.attribute.map(|a| a.name().to_string()),
            descending: self.direction == Some(OrderDirection::Desc),
        }
    }
}

type ValueList = Option<Vec<Option<UndefinedInput>>>;

fn value_list(v: ValueList) -> Option<Vec<Json>> {
    v.map(|items| {
        items
            .into_iter()
            .map(|i| i.map(|u| u.0).unwrap_or(Json::Null))
            .collect()
    })
}

fn id_list(v: Option<Vec<Option<ID>>>) -> Option<Vec<String>> {
    v.map(|items| items.into_iter().flatten().map(|i| i.0).collect())
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "FieldValueInput", rename_fields = "snake_case")]
pub(crate) struct FieldValueInput {
    field_id: ID,
    field_value: ValueList,
    generated_by_ai: Option<bool>,
}

fn field_writes(v: Option<Vec<Option<FieldValueInput>>>) -> Vec<FieldWrite> {
    v.unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|f| FieldWrite {
            field_id: f.field_id.0,
            value: value_list(f.field_value),
            op: Op::Replace,
        })
        .collect()
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "CreateCardInput", rename_fields = "snake_case")]
pub(crate) struct CreateCardInput {
    pipe_id: ID,
    title: Option<String>,
    phase_id: Option<ID>,
    due_date: Option<DateTime>,
    assignee_ids: Option<Vec<Option<ID>>>,
    label_ids: Option<Vec<Option<ID>>>,
    attachments: Option<Vec<Option<String>>>,
    parent_ids: Option<Vec<Option<ID>>>,
    fields_attributes: Option<Vec<Option<FieldValueInput>>>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "UpdateCardInput", rename_fields = "snake_case")]
pub(crate) struct UpdateCardInput {
    id: ID,
    title: Option<String>,
    due_date: Option<DateTime>,
    assignee_ids: Option<Vec<Option<ID>>>,
    label_ids: Option<Vec<Option<ID>>>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "UpdateCardFieldInput", rename_fields = "snake_case")]
pub(crate) struct UpdateCardFieldInput {
    card_id: ID,
    field_id: ID,
    new_value: ValueList,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "FieldValueOperation")]
pub(crate) enum FieldValueOperation {
    Add,
    Remove,
    Replace,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "NodeFieldValueInput", rename_fields = "camelCase")]
pub(crate) struct NodeFieldValueInput {
    field_id: ID,
    value: ValueList,
    operation: Option<FieldValueOperation>,
    generated_by_ai: Option<bool>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "UpdateFieldsValuesInput", rename_fields = "camelCase")]
pub(crate) struct UpdateFieldsValuesInput {
    node_id: ID,
    values: Vec<NodeFieldValueInput>,
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "DeleteCardInput", rename_fields = "snake_case")]
pub(crate) struct DeleteCardInput {
    id: ID,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "MoveCardToPhaseInput", rename_fields = "snake_case")]
pub(crate) struct MoveCardToPhaseInput {
    card_id: ID,
    destination_phase_id: ID,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "CreateTableRecordInput", rename_fields = "snake_case")]
pub(crate) struct CreateTableRecordInput {
    table_id: ID,
    title: Option<String>,
    due_date: Option<DateTime>,
    assignee_ids: Option<Vec<Option<ID>>>,
    label_ids: Option<Vec<Option<ID>>>,
    fields_attributes: Option<Vec<Option<FieldValueInput>>>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "UpdateTableRecordInput", rename_fields = "snake_case")]
pub(crate) struct UpdateTableRecordInput {
    id: ID,
    title: Option<String>,
    due_date: Option<DateTime>,
    #[graphql(name = "statusId")]
    status_id: Option<ID>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "SetTableRecordFieldValueInput", rename_fields = "snake_case")]
pub(crate) struct SetTableRecordFieldValueInput {
    table_record_id: ID,
    field_id: ID,
    value: ValueList,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "DeleteTableRecordInput", rename_fields = "snake_case")]
pub(crate) struct DeleteTableRecordInput {
    id: ID,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

// ---------------------------------------------------------------- payloads

#[derive(SimpleObject)]
#[graphql(name = "CreateCardPayload", rename_fields = "snake_case")]
pub(crate) struct CreateCardPayload {
    card: Option<CardObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "UpdateCardPayload", rename_fields = "snake_case")]
pub(crate) struct UpdateCardPayload {
    card: Option<CardObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "UpdateCardFieldPayload", rename_fields = "snake_case")]
pub(crate) struct UpdateCardFieldPayload {
    card: Option<CardObj>,
    success: Option<bool>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(Union)]
#[graphql(name = "UpdatedNode")]
pub(crate) enum UpdatedNode {
    Card(CardObj),
    TableRecord(TableRecordObj),
}

#[derive(SimpleObject)]
#[graphql(name = "UpdateFieldsValuesPayload", rename_fields = "camelCase")]
pub(crate) struct UpdateFieldsValuesPayload {
    success: bool,
    user_errors: Option<Vec<UserErrorObj>>,
    updated_node: Option<UpdatedNode>,
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "DeleteCardPayload", rename_fields = "snake_case")]
pub(crate) struct DeleteCardPayload {
    success: Option<bool>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "MoveCardToPhasePayload", rename_fields = "snake_case")]
pub(crate) struct MoveCardToPhasePayload {
    card: Option<CardObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "CreateTableRecordPayload", rename_fields = "snake_case")]
pub(crate) struct CreateTableRecordPayload {
    table_record: Option<TableRecordObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "UpdateTableRecordPayload", rename_fields = "snake_case")]
pub(crate) struct UpdateTableRecordPayload {
    table_record: Option<TableRecordObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "SetTableRecordFieldValuePayload", rename_fields = "snake_case")]
pub(crate) struct SetTableRecordFieldValuePayload {
    table_record: Option<TableRecordObj>,
    table_record_field: Option<TableRecordFieldObj>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "DeleteTableRecordPayload", rename_fields = "snake_case")]
pub(crate) struct DeleteTableRecordPayload {
    success: Option<bool>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

// ---------------------------------------------------------------- roots

pub(crate) struct Query;

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl Query {
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<UserObj>> {
        let (inner, caller) = env(ctx)?;
        inner.count_query(ctx.field().name());
        Ok(inner.cat.user(&caller.user_id).map(UserObj::from))
    }

    /// An organisation the caller sees (else PERMISSION_DENIED, as for other ids).
    async fn organization(&self, ctx: &Context<'_>, id: ID) -> Result<Option<OrganizationObj>> {
        read(ctx, |cat, _rules, _store, user| {
            visible_organizations(cat, user)
                .into_iter()
                .find(|o| o.id == id.0)
                .map(|o| Some(OrganizationObj(o)))
                .ok_or(ApiError::PermissionDenied)
        })
    }

    /// The organisations the caller sees (an admin: all).
    async fn organizations(&self, ctx: &Context<'_>) -> Result<Vec<OrganizationObj>> {
        read(ctx, |cat, _rules, _store, user| {
            Ok(visible_organizations(cat, user)
                .into_iter()
                .map(OrganizationObj)
                .collect())
        })
    }

    async fn card(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CardObj>> {
        read(ctx, |cat, rules, store, user| {
            store.read_card(cat, rules, user, &id)
        })
        .map(|c| Some(CardObj(c)))
    }

    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn cards(
        &self,
        ctx: &Context<'_>,
        pipe_id: ID,
        search: Option<CardSearchInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<CardConnection>> {
        let max = inner(ctx)?.page_max.cards;
        let s = search.map(|s| state::CardSearch {
            title: s.title,
            assignee_ids: id_list(s.assignee_ids),
            label_ids: id_list(s.label_ids),
            ignore_ids: id_list(s.ignore_ids),
            include_done: s.include_done,
        });
        read(ctx, |cat, rules, store, user| {
            store.list_cards(
                cat,
                rules,
                user,
                &pipe_id,
                &s.unwrap_or_default(),
                first,
                after.as_deref(),
                max,
            )
        })
        .map(|p| Some(CardConnection::from(p)))
    }

    #[graphql(
        name = "findCards",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1"
    )]
    async fn find_cards(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "pipeId")] pipe_id: ID,
        search: FindCardsInput,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<CardConnection>> {
        let max = inner(ctx)?.page_max.cards;
        read(ctx, |cat, rules, store, user| {
            store.find_cards(
                cat,
                rules,
                user,
                &pipe_id,
                &search.field_id,
                &search.field_value,
                first,
                after.as_deref(),
                max,
            )
        })
        .map(|p| Some(CardConnection::from(p)))
    }

    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn records(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "repoId")] repo_id: ID,
        #[graphql(name = "phaseId")] phase_id: Option<ID>,
        #[graphql(name = "searchTerm")] search_term: Option<String>,
        #[graphql(name = "where")] filter: Option<FilterSetInput>,
        #[graphql(name = "orderBy")] order_by: Option<Vec<OrderByInput>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<RecordConnection>> {
        let max = inner(ctx)?.page_max.records;
        let filter = filter.map(FilterSetInput::decode);
        let order: Vec<state::Order> = order_by
            .unwrap_or_default()
            .into_iter()
            .map(OrderByInput::decode)
            .collect();
        let p = read(ctx, |cat, rules, store, user| {
            store.search_records(
                cat,
                rules,
                user,
                &repo_id,
                phase_id.as_ref().map(|p| p.as_str()),
                search_term.as_deref(),
                filter.as_ref(),
                &order,
                first,
                after.as_deref(),
                max,
            )
        })?;
        let page_info = PageInfo::of(&p);
        Ok(Some(RecordConnection {
            total_count: i32::try_from(p.total).unwrap_or(i32::MAX),
            page_info,
            edges: p
                .items
                .into_iter()
                .map(|(cursor, n)| RecordEdge {
                    cursor,
                    node: RecordNodeObj(n),
                })
                .collect(),
        }))
    }

    async fn pipe(&self, ctx: &Context<'_>, id: ID) -> Result<Option<PipeObj>> {
        read(ctx, |cat, rules, store, user| {
            store.read_pipe(cat, rules, user, &id).cloned()
        })
        .map(|p| Some(PipeObj(p)))
    }

    async fn pipes(
        &self,
        ctx: &Context<'_>,
        ids: Vec<Option<ID>>,
    ) -> Result<Option<Vec<Option<PipeObj>>>> {
        read(ctx, |cat, rules, store, user| {
            ids.iter()
                .flatten()
                .map(|id| {
                    store
                        .read_pipe(cat, rules, user, id)
                        .map(|p| Some(PipeObj(p.clone())))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map(Some)
    }

    async fn phase(&self, ctx: &Context<'_>, id: ID) -> Result<Option<PhaseObj>> {
        read(ctx, |cat, rules, store, user| {
            store
                .read_phase(cat, rules, user, &id)
                .map(|(p, ph)| PhaseObj {
                    phase: ph.clone(),
                    pipe_id: p.id.clone(),
                })
        })
        .map(Some)
    }

    async fn table(&self, ctx: &Context<'_>, id: ID) -> Result<Option<TableObj>> {
        read(ctx, |cat, rules, store, user| {
            store.read_table(cat, rules, user, &id).cloned()
        })
        .map(|t| Some(TableObj(t)))
    }

    async fn tables(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> Result<Option<Vec<Option<TableObj>>>> {
        read(ctx, |cat, rules, store, user| {
            ids.iter()
                .map(|id| {
                    store
                        .read_table(cat, rules, user, id)
                        .map(|t| Some(TableObj(t.clone())))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map(Some)
    }

    async fn table_record(&self, ctx: &Context<'_>, id: ID) -> Result<Option<TableRecordObj>> {
        read(ctx, |cat, rules, store, user| {
            store.read_record(cat, rules, user, &id)
        })
        .map(|r| Some(TableRecordObj(r)))
    }

    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1")]
    async fn table_records(
        &self,
        ctx: &Context<'_>,
        table_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<TableRecordConnection>> {
        let max = inner(ctx)?.page_max.table_records;
        read(ctx, |cat, rules, store, user| {
            store.list_records(cat, rules, user, &table_id, first, after.as_deref(), max)
        })
        .map(|p| Some(TableRecordConnection::from(p)))
    }

    #[graphql(
        name = "findRecords",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity + 1"
    )]
    async fn find_records(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "tableId")] table_id: String,
        search: FindRecordsInput,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<TableRecordConnection>> {
        let max = inner(ctx)?.page_max.table_records;
        read(ctx, |cat, rules, store, user| {
            store.find_records(
                cat,
                rules,
                user,
                &table_id,
                &search.field_id,
                &search.field_value,
                first,
                after.as_deref(),
                max,
            )
        })
        .map(|p| Some(TableRecordConnection::from(p)))
    }
}

pub(crate) struct Mutation;

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "CreatePresignedUrlInput")]
pub(crate) struct CreatePresignedUrlInput {
    #[graphql(name = "organizationId")]
    organization_id: ID,
    #[graphql(name = "fileName")]
    file_name: String,
    #[graphql(name = "contentType")]
    content_type: Option<String>,
    #[graphql(name = "contentLength")]
    content_length: Option<i32>,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "CreatePresignedUrlPayload")]
pub(crate) struct CreatePresignedUrlPayload {
    /// PUT the bytes here before it expires.
    url: String,
    #[graphql(name = "downloadUrl")]
    download_url: String,
    #[graphql(name = "clientMutationId")]
    client_mutation_id: Option<String>,
}

#[Object]
impl Mutation {
    /// Mints a presigned upload URL on the emulator (`PUT <url>`); the storage path to put
    /// in an attachment field is the URL's path without the leading `/`.
    #[graphql(name = "createPresignedUrl")]
    async fn create_presigned_url(
        &self,
        ctx: &Context<'_>,
        input: CreatePresignedUrlInput,
    ) -> Result<Option<CreatePresignedUrlPayload>> {
        let inner = inner(ctx)?;
        let org = mutate(ctx, |cat, _rules, _store, user| {
            visible_organizations(cat, user)
                .into_iter()
                .find(|o| o.id == input.organization_id.0)
                .ok_or(ApiError::PermissionDenied)
        })
        .await?;
        let (path, sig, ttl) = {
            let mut up = inner.uploads();
            let ttl = up.ttl.as_secs();
            let (path, sig) = up
                .mint(
                    &org.id,
                    &org_uuid(&org),
                    &input.file_name,
                    input.content_type.clone(),
                    input.content_length.map(i64::from),
                )
                .map_err(|m| gql(ApiError::InvalidInput(m)))?;
            (path, sig, ttl)
        };
        let base = format!(
            "{}/{}",
            inner.base_url(),
            crate::uploads::encode_path(&path)
        );
        Ok(Some(CreatePresignedUrlPayload {
            url: format!(
                "{base}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires={ttl}&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&X-Amz-Signature={sig}"
            ),
            download_url: format!(
                "{base}?X-Amz-Expires={ttl}&X-Amz-Signature={sig}&response-content-disposition=attachment"
            ),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn create_card(
        &self,
        ctx: &Context<'_>,
        input: CreateCardInput,
    ) -> Result<Option<CreateCardPayload>> {
        let new = state::NewCard {
            pipe_id: input.pipe_id.0,
            title: input.title,
            phase_id: input.phase_id.map(|p| p.0),
            due_date: input.due_date.map(|d| d.0),
            assignee_ids: id_list(input.assignee_ids),
            label_ids: id_list(input.label_ids),
            parent_ids: id_list(input.parent_ids),
            attachments: input.attachments.map(|a| a.into_iter().flatten().collect()),
            fields: field_writes(input.fields_attributes),
        };
        let card = mutate(ctx, |cat, rules, store, user| {
            store.create_card(cat, rules, user, new)
        })
        .await?;
        Ok(Some(CreateCardPayload {
            card: Some(CardObj(card)),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn update_card(
        &self,
        ctx: &Context<'_>,
        input: UpdateCardInput,
    ) -> Result<Option<UpdateCardPayload>> {
        let id = input.id.0;
        let (title, due) = (input.title, input.due_date.map(|d| d.0));
        let (assignees, labels) = (id_list(input.assignee_ids), id_list(input.label_ids));
        let card = mutate(ctx, |cat, rules, store, user| {
            store.update_card(cat, rules, user, &id, title, due, assignees, labels)
        })
        .await?;
        Ok(Some(UpdateCardPayload {
            card: Some(CardObj(card)),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn update_card_field(
        &self,
        ctx: &Context<'_>,
        input: UpdateCardFieldInput,
    ) -> Result<Option<UpdateCardFieldPayload>> {
        let value = value_list(input.new_value);
        let (card_id, field_id) = (input.card_id.0, input.field_id.0);
        let card = mutate(ctx, |cat, rules, store, user| {
            store.update_card_field(cat, rules, user, &card_id, &field_id, value)
        })
        .await?;
        Ok(Some(UpdateCardFieldPayload {
            card: Some(CardObj(card)),
            success: Some(true),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn update_fields_values(
        &self,
        ctx: &Context<'_>,
        input: UpdateFieldsValuesInput,
    ) -> Result<Option<UpdateFieldsValuesPayload>> {
        let writes: Vec<FieldWrite> = input
            .values
            .into_iter()
            .map(|v| FieldWrite {
                field_id: v.field_id.0,
                value: value_list(v.value),
                op: match v.operation {
                    Some(FieldValueOperation::Add) => Op::Add,
                    Some(FieldValueOperation::Remove) => Op::Remove,
                    _ => Op::Replace,
                },
            })
            .collect();
        let node_id = input.node_id.0;
        let values = writes.len() as u64;
        let (errors, node) = mutate(ctx, |cat, rules, store, user| {
            store.update_fields_values(cat, rules, user, &node_id, writes)
        })
        .await?;
        env(ctx)?.0.stats().field_values_updated += values;
        Ok(Some(UpdateFieldsValuesPayload {
            success: errors.is_empty(),
            user_errors: Some(
                errors
                    .into_iter()
                    .map(|e| UserErrorObj {
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
            ),
            updated_node: node.map(|n| match n {
                Node::Card(c) => UpdatedNode::Card(CardObj(c)),
                Node::Record(r) => UpdatedNode::TableRecord(TableRecordObj(r)),
            }),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn delete_card(
        &self,
        ctx: &Context<'_>,
        input: DeleteCardInput,
    ) -> Result<Option<DeleteCardPayload>> {
        let id = input.id.0;
        mutate(ctx, |cat, rules, store, user| {
            store.delete_card(cat, rules, user, &id)
        })
        .await?;
        Ok(Some(DeleteCardPayload {
            success: Some(true),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn move_card_to_phase(
        &self,
        ctx: &Context<'_>,
        input: MoveCardToPhaseInput,
    ) -> Result<Option<MoveCardToPhasePayload>> {
        let (card_id, dest) = (input.card_id.0, input.destination_phase_id.0);
        let card = mutate(ctx, |cat, rules, store, user| {
            store.move_card(cat, rules, user, &card_id, &dest)
        })
        .await?;
        Ok(Some(MoveCardToPhasePayload {
            card: Some(CardObj(card)),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn create_table_record(
        &self,
        ctx: &Context<'_>,
        input: CreateTableRecordInput,
    ) -> Result<Option<CreateTableRecordPayload>> {
        let new = state::NewRecord {
            table_id: input.table_id.0,
            title: input.title,
            due_date: input.due_date.map(|d| d.0),
            assignee_ids: id_list(input.assignee_ids),
            label_ids: id_list(input.label_ids),
            fields: field_writes(input.fields_attributes),
        };
        let rec = mutate(ctx, |cat, rules, store, user| {
            store.create_record(cat, rules, user, new)
        })
        .await?;
        Ok(Some(CreateTableRecordPayload {
            table_record: Some(TableRecordObj(rec)),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn update_table_record(
        &self,
        ctx: &Context<'_>,
        input: UpdateTableRecordInput,
    ) -> Result<Option<UpdateTableRecordPayload>> {
        let id = input.id.0;
        let (title, due, status) = (
            input.title,
            input.due_date.map(|d| d.0),
            input.status_id.map(|s| s.0),
        );
        let rec = mutate(ctx, |cat, rules, store, user| {
            store.update_record(cat, rules, user, &id, title, due, status)
        })
        .await?;
        Ok(Some(UpdateTableRecordPayload {
            table_record: Some(TableRecordObj(rec)),
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn set_table_record_field_value(
        &self,
        ctx: &Context<'_>,
        input: SetTableRecordFieldValueInput,
    ) -> Result<Option<SetTableRecordFieldValuePayload>> {
        let value = value_list(input.value);
        let (id, field_id) = (input.table_record_id.0, input.field_id.0);
        let fid = field_id.clone();
        let rec = mutate(ctx, |cat, rules, store, user| {
            store.set_record_field(cat, rules, user, &id, &fid, value)
        })
        .await?;
        let field = {
            let inner = inner(ctx)?;
            let store = inner.store();
            let mut one = BTreeMap::new();
            if let Some(v) = rec.fields.get(&field_id) {
                one.insert(field_id.clone(), v.clone());
            }
            field_values(inner, &store, &rec.table_id, &one, &rec.updated_at)
                .into_iter()
                .next()
                .map(TableRecordFieldObj::from)
        };
        Ok(Some(SetTableRecordFieldValuePayload {
            table_record: Some(TableRecordObj(rec)),
            table_record_field: field,
            client_mutation_id: input.client_mutation_id,
        }))
    }

    async fn delete_table_record(
        &self,
        ctx: &Context<'_>,
        input: DeleteTableRecordInput,
    ) -> Result<Option<DeleteTableRecordPayload>> {
        let id = input.id.0;
        mutate(ctx, |cat, rules, store, user| {
            store.delete_record(cat, rules, user, &id)
        })
        .await?;
        Ok(Some(DeleteTableRecordPayload {
            success: Some(true),
            client_mutation_id: input.client_mutation_id,
        }))
    }
}
