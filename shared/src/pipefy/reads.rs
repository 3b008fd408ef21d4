//! Queries: schema fetch, key lookups for upsert, card listing and single cards
//! (docs/pipefy-api.md §5). Every payload is read leniently: missing optional parts become
//! defaults, a missing id is an invalid response, never a panic.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::batch::{BatchOp, Vars};
use super::error::Failure;
use super::schema::{FieldDef, FieldType, LabelDef, MemberDef, PhaseDef, PipeSchema, TableSchema};

/// Largest page Pipefy serves for card listings (docs/pipefy-api.md §5); table record
/// listings ask for the same (their cap is not documented by Pipefy).
pub const CARDS_PAGE_SIZE: u32 = 50;

/// Lookups ask for two matches: enough to tell "one" from "duplicates".
const LOOKUP_LIMIT: u32 = 2;

/// Internal code of a payload this client cannot read.
pub(crate) const INVALID_RESPONSE: &str = "INVALID_RESPONSE";

fn invalid(message: impl Into<String>) -> Failure {
    Failure::permanent(Some(INVALID_RESPONSE.to_string()), message)
}

/// A phase as seen from a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRef {
    pub id: String,
    pub name: String,
}

/// A user as seen from a card (fields Pipefy did not return are empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// A card field's value as Pipefy returns it: always text (docs/pipefy-api.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardField {
    /// The field's slug.
    pub field_id: String,
    /// The field's label.
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub id: String,
    pub title: Option<String>,
    pub done: bool,
    /// Card attribute `due_date`, ISO-8601 UTC.
    pub due_date: Option<String>,
    pub current_phase: Option<PhaseRef>,
    pub labels: Vec<LabelDef>,
    pub assignees: Vec<UserRef>,
    pub fields: Vec<CardField>,
}

impl Card {
    /// A field's value by slug.
    pub fn field(&self, field_id: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.field_id == field_id)
            .and_then(|f| f.value.as_deref())
    }
}

/// One page of a card listing. Pass `end_cursor` as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardPage {
    pub cards: Vec<Card>,
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

const FIELD_SELECTION: &str = "id internal_id uuid label type required options";
const CARD_SELECTION: &str = "id title done due_date current_phase { id name } labels { id name } assignees { id name email } fields { name value field { id } }";

// ---------- lenient readers ----------

/// A string or a number as text (ids are `ID`, which some servers send as numbers).
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// Options come as a JSON array of strings, or as one string holding such an array.
fn options(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| text(Some(x))).collect(),
        Some(Value::String(s)) => serde_json::from_str::<Vec<Value>>(s)
            .map(|a| a.iter().filter_map(|x| text(Some(x))).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn field_def(v: &Value) -> Option<FieldDef> {
    let id = text(v.get("id"))?;
    let field_type = v
        .get("type")
        .cloned()
        .and_then(|t| serde_json::from_value::<FieldType>(t).ok())
        .unwrap_or(FieldType::Unknown);
    Some(FieldDef {
        label: text(v.get("label")).unwrap_or_else(|| id.clone()),
        id,
        uuid: text(v.get("uuid")).filter(|s| !s.is_empty()),
        internal_id: text(v.get("internal_id")),
        field_type,
        required: v.get("required").and_then(Value::as_bool).unwrap_or(false),
        options: options(v.get("options")),
    })
}

fn fields(v: Option<&Value>) -> Vec<FieldDef> {
    list(v).filter_map(field_def).collect()
}

fn label(v: &Value) -> Option<LabelDef> {
    Some(LabelDef {
        id: text(v.get("id"))?,
        name: text(v.get("name")).unwrap_or_default(),
    })
}

fn user(v: &Value) -> Option<UserRef> {
    Some(UserRef {
        id: text(v.get("id"))?,
        name: text(v.get("name")).unwrap_or_default(),
        email: text(v.get("email")).unwrap_or_default(),
    })
}

pub(crate) fn parse_pipe_schema(p: &Value) -> Result<PipeSchema, Failure> {
    let id = text(p.get("id")).ok_or_else(|| invalid("pipe has no id"))?;
    let phases = list(p.get("phases"))
        .filter_map(|ph| {
            Some(PhaseDef {
                id: text(ph.get("id"))?,
                name: text(ph.get("name")).unwrap_or_default(),
                done: ph.get("done").and_then(Value::as_bool).unwrap_or(false),
                fields: fields(ph.get("fields")),
                cards_can_be_moved_to_phases: list(ph.get("cards_can_be_moved_to_phases"))
                    .filter_map(|t| text(t.get("id")))
                    .collect(),
            })
        })
        .collect();
    let members = list(p.get("members"))
        .filter_map(|m| {
            let u = user(m.get("user").unwrap_or(m))?;
            Some(MemberDef {
                id: u.id,
                name: u.name,
                email: u.email,
            })
        })
        .collect();
    Ok(PipeSchema {
        id,
        name: text(p.get("name")).unwrap_or_default(),
        start_form_phase_id: text(p.get("startFormPhaseId")),
        organization_id: text(p.get("organizationId")),
        phases,
        start_form_fields: fields(p.get("start_form_fields")),
        labels: list(p.get("labels")).filter_map(label).collect(),
        members,
    })
}

pub(crate) fn parse_table_schema(t: &Value) -> Result<TableSchema, Failure> {
    let id = text(t.get("id")).ok_or_else(|| invalid("table has no id"))?;
    Ok(TableSchema {
        id,
        name: text(t.get("name")).unwrap_or_default(),
        fields: fields(t.get("table_fields")),
    })
}

pub(crate) fn parse_card(c: &Value) -> Result<Card, Failure> {
    let id = text(c.get("id")).ok_or_else(|| invalid("card has no id"))?;
    let current_phase = c.get("current_phase").and_then(|p| {
        Some(PhaseRef {
            id: text(p.get("id"))?,
            name: text(p.get("name")).unwrap_or_default(),
        })
    });
    let fields = list(c.get("fields"))
        .filter_map(|f| {
            let field_id = f
                .get("field")
                .and_then(|x| text(x.get("id")))
                .or_else(|| text(f.get("field_id")))?;
            Some(CardField {
                field_id,
                name: text(f.get("name")).unwrap_or_default(),
                value: text(f.get("value")),
            })
        })
        .collect();
    Ok(Card {
        id,
        title: text(c.get("title")),
        done: c.get("done").and_then(Value::as_bool).unwrap_or(false),
        due_date: text(c.get("due_date")),
        current_phase,
        labels: list(c.get("labels")).filter_map(label).collect(),
        assignees: list(c.get("assignees")).filter_map(user).collect(),
        fields,
    })
}

/// `edges[].node.id` of a connection.
fn edge_ids(conn: &Value) -> Result<Vec<String>, Failure> {
    let edges = conn
        .get("edges")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("connection has no edges"))?;
    edges
        .iter()
        .map(|e| {
            e.get("node")
                .and_then(|n| text(n.get("id")))
                .ok_or_else(|| invalid("connection edge has no node id"))
        })
        .collect()
}

// ---------- batch operations ----------

pub(crate) struct PipeSchemaQuery<'a>(pub &'a str);

impl BatchOp for PipeSchemaQuery<'_> {
    type Output = PipeSchema;
    fn render(&self, vars: &mut Vars) -> String {
        let id = vars.add("ID!", json!(self.0));
        format!(
            "pipe(id: {id}) {{ id name startFormPhaseId organizationId \
             start_form_fields {{ {FIELD_SELECTION} }} \
             phases {{ id name done fields {{ {FIELD_SELECTION} }} cards_can_be_moved_to_phases {{ id }} }} \
             labels {{ id name }} members {{ user {{ id name email }} }} }}"
        )
    }
    fn parse(&self, payload: &Value) -> Result<PipeSchema, Failure> {
        parse_pipe_schema(payload)
    }
}

pub(crate) struct TableSchemaQuery<'a>(pub &'a str);

impl BatchOp for TableSchemaQuery<'_> {
    type Output = TableSchema;
    fn render(&self, vars: &mut Vars) -> String {
        let id = vars.add("ID!", json!(self.0));
        // Table fields have no uuid in the observed selections (docs/pipefy-api.md §5).
        format!("table(id: {id}) {{ id name table_fields {{ id internal_id label type required options }} }}")
    }
    fn parse(&self, payload: &Value) -> Result<TableSchema, Failure> {
        parse_table_schema(payload)
    }
}

/// Whether `s` is a uuid in the canonical form the `records` filter needs (lower-case hex,
/// hyphens at 8-4-4-4-12). Anything else gets Pipefy's generic internal error
/// (docs/pipefy-api.md §5), so the client does not send it.
pub(crate) fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

/// One key lookup (docs/pipefy-api.md §5).
pub(crate) enum Lookup<'a> {
    /// `records(repoId, where: {field: uuid, eq: value})`: exact, server-side.
    Records {
        pipe_id: &'a str,
        uuid: &'a str,
        value: &'a str,
    },
    /// `findCards(pipeId, search: {fieldId: slug, fieldValue})`, for fields without a uuid.
    FindCards {
        pipe_id: &'a str,
        field_id: &'a str,
        value: &'a str,
    },
    /// `findRecords(tableId, search: {fieldId: slug, fieldValue})`.
    FindRecords {
        table_id: &'a str,
        field_id: &'a str,
        value: &'a str,
    },
}

impl BatchOp for Lookup<'_> {
    type Output = Vec<String>;
    fn render(&self, vars: &mut Vars) -> String {
        let sel = "{ edges { node { id } } }";
        match self {
            Lookup::Records {
                pipe_id,
                uuid,
                value,
            } => {
                let repo = vars.add("ID!", json!(pipe_id));
                let filter = vars.add("FilterSet!", json!({"field": uuid, "eq": value}));
                format!("records(repoId: {repo}, where: {filter}, first: {LOOKUP_LIMIT}) {sel}")
            }
            Lookup::FindCards {
                pipe_id,
                field_id,
                value,
            } => {
                // Pipefy's SDK passes the whole search object as `FindCards!`
                // (docs/pipefy-api.md §5); its member types are then Pipefy's business.
                let pipe = vars.add("ID!", json!(pipe_id));
                let search = vars.add(
                    "FindCards!",
                    json!({"fieldId": field_id, "fieldValue": value}),
                );
                format!("findCards(pipeId: {pipe}, search: {search}, first: {LOOKUP_LIMIT}) {sel}")
            }
            Lookup::FindRecords {
                table_id,
                field_id,
                value,
            } => {
                let table = vars.add("String!", json!(table_id));
                let f = vars.add("String!", json!(field_id));
                let v = vars.add("String!", json!(value));
                format!("findRecords(tableId: {table}, search: {{fieldId: {f}, fieldValue: {v}}}, first: {LOOKUP_LIMIT}) {sel}")
            }
        }
    }
    fn parse(&self, payload: &Value) -> Result<Vec<String>, Failure> {
        edge_ids(payload)
    }
}

/// What a listing pages through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// A pipe's cards, done ones included.
    Pipe(String),
    /// One phase's cards (a pipe read phase by phase, several phases at a time).
    Phase(String),
    /// A table's records, read into the card shape.
    Table(String),
}

/// One page of a listing.
pub(crate) struct ListQuery<'a> {
    pub of: &'a Listing,
    pub after: Option<&'a str>,
}

impl BatchOp for ListQuery<'_> {
    type Output = CardPage;
    fn render(&self, vars: &mut Vars) -> String {
        let first = vars.add("Int", json!(CARDS_PAGE_SIZE));
        let after = vars.add("String", json!(self.after));
        let connection = |selection: &str| {
            format!("pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {selection} }} }}")
        };
        match self.of {
            Listing::Pipe(pipe_id) => {
                let pipe = vars.add("ID!", json!(pipe_id));
                format!(
                    // `cards` leaves cards in done phases out unless asked (docs/pipefy-api.md §5).
                    "cards(pipe_id: {pipe}, first: {first}, after: {after}, search: {{include_done: true}}) {{ {} }}",
                    connection(CARD_SELECTION)
                )
            }
            Listing::Phase(phase_id) => {
                let phase = vars.add("ID!", json!(phase_id));
                format!(
                    "phase(id: {phase}) {{ cards(first: {first}, after: {after}) {{ {} }} }}",
                    connection(CARD_SELECTION)
                )
            }
            Listing::Table(table_id) => {
                let table = vars.add("ID!", json!(table_id));
                format!(
                    "table_records(table_id: {table}, first: {first}, after: {after}) {{ {} }}",
                    connection(RECORD_SELECTION)
                )
            }
        }
    }
    fn parse(&self, payload: &Value) -> Result<CardPage, Failure> {
        let payload = match self.of {
            Listing::Phase(_) => payload.get("cards").unwrap_or(&Value::Null),
            Listing::Pipe(_) | Listing::Table(_) => payload,
        };
        let edges = payload
            .get("edges")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("card listing has no edges"))?;
        let cards = edges
            .iter()
            .map(|e| parse_card(e.get("node").unwrap_or(&Value::Null)))
            .collect::<Result<Vec<_>, _>>()?;
        let info = payload.get("pageInfo");
        let has_next_page = info
            .and_then(|i| i.get("hasNextPage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let end_cursor = info
            .and_then(|i| text(i.get("endCursor")))
            .filter(|c| !c.is_empty());
        if has_next_page && end_cursor.is_none() {
            return Err(invalid(
                "card listing says there is a next page but gives no cursor",
            ));
        }
        Ok(CardPage {
            cards,
            has_next_page,
            end_cursor,
        })
    }
}

/// A card, or a table record read into the same shape (`record: true`).
pub(crate) struct CardQuery<'a> {
    pub id: &'a str,
    pub record: bool,
}

/// A record's fields under the card's names: `record_fields` aliased `fields`.
const RECORD_SELECTION: &str = "id title due_date labels { id name } assignees { id name email } fields: record_fields { name value field { id } }";

impl BatchOp for CardQuery<'_> {
    type Output = Option<Card>;
    fn render(&self, vars: &mut Vars) -> String {
        let id = vars.add("ID!", json!(self.id));
        if self.record {
            format!("table_record(id: {id}) {{ {RECORD_SELECTION} }}")
        } else {
            format!("card(id: {id}) {{ {CARD_SELECTION} }}")
        }
    }
    fn parse(&self, payload: &Value) -> Result<Option<Card>, Failure> {
        parse_card(payload).map(Some)
    }
    fn on_null(&self) -> Option<Option<Card>> {
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pipe_schema_leniently() {
        let p = json!({
            "id": 301, "name": "Demo", "startFormPhaseId": "10",
            "start_form_fields": [
                {"id": "email", "internal_id": 77, "uuid": "u-1", "label": "E-mail", "type": "email", "required": true, "options": []},
                {"id": "kind", "label": "Kind", "type": "select", "required": null, "options": "[\"a\", \"b\"]"},
                {"label": "no id: skipped", "type": "short_text"},
                {"id": "new", "label": "New", "type": "hologram"}
            ],
            "phases": [
                {"id": "10", "name": "Inbox", "done": false, "fields": [], "cards_can_be_moved_to_phases": [{"id": "11"}]},
                {"id": "11", "name": "Done", "done": true, "fields": [{"id": "note", "label": "Note", "type": "long_text"}]}
            ],
            "labels": [{"id": "l1", "name": "Hot"}],
            "members": [{"user": {"id": "u1", "name": "Ann", "email": "a@x"}, "role_name": "admin"}]
        });
        let s = parse_pipe_schema(&p).unwrap();
        assert_eq!(s.id, "301");
        assert_eq!(s.start_form_phase_id.as_deref(), Some("10"));
        assert_eq!(s.start_form_fields.len(), 3);
        let email = &s.start_form_fields[0];
        assert_eq!(email.uuid.as_deref(), Some("u-1"));
        assert_eq!(email.internal_id.as_deref(), Some("77"));
        assert!(email.required);
        assert_eq!(email.field_type, FieldType::Email);
        assert_eq!(s.start_form_fields[1].options, vec!["a", "b"]);
        assert!(!s.start_form_fields[1].required);
        assert_eq!(s.start_form_fields[2].field_type, FieldType::Unknown);
        assert_eq!(s.phases[0].cards_can_be_moved_to_phases, vec!["11"]);
        assert!(s.phases[1].done);
        assert_eq!(s.field("note").unwrap().label, "Note");
        assert_eq!(s.labels[0].name, "Hot");
        assert_eq!(s.members[0].email, "a@x");
        assert!(parse_pipe_schema(&json!({"name": "x"})).is_err());
    }

    #[test]
    fn parses_cards_and_pages() {
        let pipe = Listing::Pipe("1".into());
        let q = ListQuery {
            of: &pipe,
            after: None,
        };
        let page = q
            .parse(&json!({
                "pageInfo": {"hasNextPage": true, "endCursor": "abc"},
                "edges": [{"node": {"id": "5", "title": "T", "done": false,
                    "current_phase": {"id": "10", "name": "Inbox"},
                    "labels": [{"id": "l1", "name": "Hot"}],
                    "assignees": [{"id": "u1", "name": "Ann"}],
                    "fields": [{"name": "E-mail", "value": "a@b.c", "field": {"id": "email"}},
                               {"name": "Broken", "value": "x"}]}}]
            }))
            .unwrap();
        assert!(page.has_next_page);
        assert_eq!(page.end_cursor.as_deref(), Some("abc"));
        let c = &page.cards[0];
        assert_eq!(c.field("email"), Some("a@b.c"));
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.current_phase.as_ref().unwrap().id, "10");
        assert_eq!(c.assignees[0].email, "");
        assert!(q
            .parse(&json!({"pageInfo": {"hasNextPage": true}, "edges": []}))
            .is_err());
        assert!(q.parse(&json!({"edges": [{"node": null}]})).is_err());
    }

    #[test]
    fn lookups_render_values_as_variables() {
        use crate::pipefy::batch::{build_document, DocKind};
        let ops = [
            Lookup::Records {
                pipe_id: "301",
                uuid: "uu",
                value: "k\"1",
            },
            Lookup::FindCards {
                pipe_id: "301",
                field_id: "code",
                value: "k2",
            },
            Lookup::FindRecords {
                table_id: "tbl",
                field_id: "code",
                value: "k3",
            },
        ];
        let refs: Vec<(usize, &Lookup)> = ops.iter().enumerate().collect();
        let doc = build_document(DocKind::Query, &refs);
        let q = doc["query"].as_str().unwrap();
        assert!(q.starts_with("query Batch($v0: ID!, $v1: FilterSet!, $v2: ID!, $v3: FindCards!, $v4: String!, $v5: String!, $v6: String!)"), "{q}");
        assert!(q.contains("op0: records(repoId: $v0, where: $v1, first: 2)"));
        assert!(q.contains("op1: findCards(pipeId: $v2, search: $v3, first: 2)"));
        assert_eq!(
            doc["variables"]["v3"],
            json!({"fieldId": "code", "fieldValue": "k2"})
        );
        assert!(q.contains(
            "op2: findRecords(tableId: $v4, search: {fieldId: $v5, fieldValue: $v6}, first: 2)"
        ));
        assert!(!q.contains("k\\\"1") && !q.contains("k2"));
        assert_eq!(doc["variables"]["v1"], json!({"field": "uu", "eq": "k\"1"}));
        assert_eq!(
            ops[0].parse(&json!({"edges": [{"node": {"id": "1"}}, {"node": {"id": 2}}]})),
            Ok(vec!["1".to_string(), "2".to_string()])
        );
        assert!(ops[0].parse(&json!({"nodes": []})).is_err());
    }
}
