//! Typed mutations (docs/pipefy-api.md §4) and how each is written and read back.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::batch::{BatchOp, Vars};
use super::error::Failure;
use super::error::OpSuccess;

/// Pipefy's limit of values in one `updateFieldsValues` call (docs/pipefy-api.md §4).
pub const MAX_VALUES_PER_UPDATE: usize = 30;

/// `{field_id, field_value}` of `fields_attributes`. `field_id` is the field's slug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValueInput {
    pub field_id: String,
    pub field_value: Value,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateCardInput {
    pub pipe_id: String,
    pub title: Option<String>,
    /// Create directly in this phase instead of the start phase.
    pub phase_id: Option<String>,
    pub due_date: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
    /// Parent cards to connect on create.
    pub parent_ids: Option<Vec<String>>,
    #[serde(default)]
    pub fields_attributes: Vec<FieldValueInput>,
}

/// Card attributes only; `updateCard` cannot set custom fields (docs/pipefy-api.md §4).
/// `assignee_ids` and `label_ids` replace the whole list. `None` leaves a value alone.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateCardInput {
    pub id: String,
    pub title: Option<String>,
    pub due_date: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateTableRecordInput {
    pub table_id: String,
    pub title: Option<String>,
    pub due_date: Option<String>,
    pub assignee_ids: Option<Vec<String>>,
    pub label_ids: Option<Vec<String>>,
    #[serde(default)]
    pub fields_attributes: Vec<FieldValueInput>,
}

/// Record attributes only; custom fields go through `setTableRecordFieldValue` or
/// `updateFieldsValues` (docs/pipefy-api.md §4).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateTableRecordInput {
    pub id: String,
    pub title: Option<String>,
    pub due_date: Option<String>,
    #[serde(rename = "statusId")]
    pub status_id: Option<String>,
}

/// How `updateFieldsValues` applies a value (docs/pipefy-api.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldOperation {
    /// Append to a list field (connector, label, assignee, checklist).
    Add,
    /// Remove from a list field.
    Remove,
    #[default]
    Replace,
}

/// One value of `updateFieldsValues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFieldValue {
    #[serde(rename = "fieldId")]
    pub field_id: String,
    pub value: Value,
    #[serde(default)]
    pub operation: FieldOperation,
}

/// Every write the engine sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    CreateCard(CreateCardInput),
    UpdateCard(UpdateCardInput),
    /// Replaces one field's whole value (`new_value`).
    UpdateCardField {
        card_id: String,
        field_id: String,
        value: Value,
    },
    /// Up to [`MAX_VALUES_PER_UPDATE`] values of one card or table record.
    UpdateFieldsValues {
        node_id: String,
        values: Vec<NodeFieldValue>,
    },
    DeleteCard {
        id: String,
    },
    MoveCardToPhase {
        card_id: String,
        phase_id: String,
    },
    CreateTableRecord(CreateTableRecordInput),
    UpdateTableRecord(UpdateTableRecordInput),
    SetTableRecordFieldValue {
        record_id: String,
        field_id: String,
        value: Value,
    },
    DeleteTableRecord {
        id: String,
    },
}

impl Mutation {
    /// The GraphQL root field name.
    pub fn name(&self) -> &'static str {
        match self {
            Mutation::CreateCard(_) => "createCard",
            Mutation::UpdateCard(_) => "updateCard",
            Mutation::UpdateCardField { .. } => "updateCardField",
            Mutation::UpdateFieldsValues { .. } => "updateFieldsValues",
            Mutation::DeleteCard { .. } => "deleteCard",
            Mutation::MoveCardToPhase { .. } => "moveCardToPhase",
            Mutation::CreateTableRecord(_) => "createTableRecord",
            Mutation::UpdateTableRecord(_) => "updateTableRecord",
            Mutation::SetTableRecordFieldValue { .. } => "setTableRecordFieldValue",
            Mutation::DeleteTableRecord { .. } => "deleteTableRecord",
        }
    }

    /// Creates are the only non-idempotent operations: an unknown outcome is ambiguous.
    pub fn is_create(&self) -> bool {
        matches!(
            self,
            Mutation::CreateCard(_) | Mutation::CreateTableRecord(_)
        )
    }

    /// Whether the normal rendering sends members no Pipefy-owned source shows:
    /// `label_ids`/`due_date` of `CreateTableRecordInput` (docs/pipefy-api.md, Unverified).
    pub(crate) fn uses_guessed_shape(&self) -> bool {
        matches!(self, Mutation::CreateTableRecord(i) if i.label_ids.is_some() || i.due_date.is_some())
    }

    /// The input object, its GraphQL type, and the payload selection. With
    /// `documented_only`, only members Pipefy's own material shows are sent.
    fn input_and_selection(&self, documented_only: bool) -> (Value, &'static str, &'static str) {
        match self {
            Mutation::CreateTableRecord(i) if documented_only => {
                // The due date follows through `updateTableRecord`; labels have no
                // documented way in (the client warns) (docs/pipefy-api.md §4).
                let documented = CreateTableRecordInput {
                    due_date: None,
                    label_ids: None,
                    ..i.clone()
                };
                (
                    to_json(&documented),
                    "CreateTableRecordInput!",
                    "{ table_record { id } }",
                )
            }
            Mutation::CreateCard(i) => (to_json(i), "CreateCardInput!", "{ card { id } }"),
            Mutation::UpdateCard(i) => (to_json(i), "UpdateCardInput!", "{ card { id } }"),
            Mutation::UpdateCardField {
                card_id,
                field_id,
                value,
            } => (
                json!({ "card_id": card_id, "field_id": field_id, "new_value": value }),
                "UpdateCardFieldInput!",
                "{ success card { id } }",
            ),
            Mutation::UpdateFieldsValues { node_id, values } => (
                json!({ "nodeId": node_id, "values": values }),
                "UpdateFieldsValuesInput!",
                // updatedNode is a union: a plain `{ id }` fails validation. Pipefy's own
                // documents select `... on Card` only; for a record the payload's
                // `success userErrors` are what counts (docs/pipefy-api.md §4).
                "{ success userErrors { field message } updatedNode { ... on Card { id } } }",
            ),
            Mutation::DeleteCard { id } => (json!({ "id": id }), "DeleteCardInput!", "{ success }"),
            Mutation::MoveCardToPhase { card_id, phase_id } => (
                json!({ "card_id": card_id, "destination_phase_id": phase_id }),
                "MoveCardToPhaseInput!",
                "{ card { id current_phase { id } } }",
            ),
            Mutation::CreateTableRecord(i) => (
                to_json(i),
                "CreateTableRecordInput!",
                "{ table_record { id } }",
            ),
            Mutation::UpdateTableRecord(i) => (
                to_json(i),
                "UpdateTableRecordInput!",
                "{ table_record { id } }",
            ),
            Mutation::SetTableRecordFieldValue {
                record_id,
                field_id,
                value,
            } => (
                json!({
                    "table_record_id": record_id,
                    "field_id": field_id,
                    // The value slot is a list; single values go wrapped (docs/pipefy-api.md §4).
                    "value": match value {
                        Value::Array(_) | Value::Null => value.clone(),
                        other => Value::Array(vec![other.clone()]),
                    },
                }),
                "SetTableRecordFieldValueInput!",
                "{ table_record { id } }",
            ),
            Mutation::DeleteTableRecord { id } => (
                json!({ "id": id }),
                "DeleteTableRecordInput!",
                "{ success }",
            ),
        }
    }

    /// The id this operation acts on, returned when Pipefy's payload does not repeat it.
    fn target_id(&self) -> Option<&str> {
        match self {
            Mutation::CreateCard(_) | Mutation::CreateTableRecord(_) => None,
            Mutation::UpdateCard(i) => Some(&i.id),
            Mutation::UpdateCardField { card_id, .. } => Some(card_id),
            Mutation::UpdateFieldsValues { node_id, .. } => Some(node_id),
            Mutation::DeleteCard { id } | Mutation::DeleteTableRecord { id } => Some(id),
            Mutation::MoveCardToPhase { card_id, .. } => Some(card_id),
            Mutation::UpdateTableRecord(i) => Some(&i.id),
            Mutation::SetTableRecordFieldValue { record_id, .. } => Some(record_id),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    // Serializing these plain structs cannot fail; Null would be rejected by Pipefy as an
    // invalid input, which is reported, not a crash.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn id_at(payload: &Value, path: &[&str]) -> Option<String> {
    let mut v = payload;
    for key in path {
        v = v.get(*key)?;
    }
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `success: false` with the userErrors' messages, if the payload says so.
fn unsuccessful(payload: &Value) -> Option<Failure> {
    if payload.get("success") != Some(&Value::Bool(false)) {
        return None;
    }
    let messages: Vec<String> = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(|e| {
                    let msg = e.get("message").and_then(Value::as_str)?;
                    let field = e
                        .get("field")
                        .and_then(Value::as_array)
                        .map(|f| {
                            f.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .filter(|f| !f.is_empty());
                    Some(match field {
                        Some(f) => format!("{f}: {msg}"),
                        None => msg.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let message = if messages.is_empty() {
        "Pipefy reported success: false".to_string()
    } else {
        messages.join("; ")
    };
    Some(Failure::permanent(Some("USER_ERROR".to_string()), message))
}

impl BatchOp for Mutation {
    type Output = OpSuccess;

    fn render(&self, vars: &mut Vars) -> String {
        let (input, ty, selection) = self.input_and_selection(vars.documented_only);
        let var = vars.add(ty, input);
        format!("{}(input: {var}) {selection}", self.name())
    }

    fn is_create(&self) -> bool {
        Mutation::is_create(self)
    }

    fn uses_guessed_shape(&self) -> bool {
        Mutation::uses_guessed_shape(self)
    }

    fn precheck(&self) -> Option<Failure> {
        if let Mutation::UpdateFieldsValues { values, .. } = self {
            if values.is_empty() {
                return Some(Failure::permanent(
                    Some("INVALID_INPUT".to_string()),
                    "updateFieldsValues needs at least one value",
                ));
            }
            if values.len() > MAX_VALUES_PER_UPDATE {
                return Some(Failure::permanent(
                    Some("INVALID_INPUT".to_string()),
                    format!(
                        "updateFieldsValues takes at most {MAX_VALUES_PER_UPDATE} values, got {}",
                        values.len()
                    ),
                ));
            }
        }
        None
    }

    fn parse(&self, payload: &Value) -> Result<OpSuccess, Failure> {
        if !payload.is_object() {
            return Err(Failure::uncertain(format!(
                "unexpected {} payload: {payload}",
                self.name()
            )));
        }
        if let Some(f) = unsuccessful(payload) {
            return Err(f);
        }
        let id = match self {
            Mutation::CreateCard(_) => {
                // Without the new id the card may or may not exist: the caller must look it up.
                return id_at(payload, &["card", "id"])
                    .map(|id| OpSuccess { id: Some(id) })
                    .ok_or_else(|| Failure::uncertain("createCard returned no card id"));
            }
            Mutation::CreateTableRecord(_) => {
                return id_at(payload, &["table_record", "id"])
                    .map(|id| OpSuccess { id: Some(id) })
                    .ok_or_else(|| Failure::uncertain("createTableRecord returned no record id"));
            }
            Mutation::UpdateCard(_)
            | Mutation::UpdateCardField { .. }
            | Mutation::MoveCardToPhase { .. } => id_at(payload, &["card", "id"]),
            Mutation::UpdateFieldsValues { .. } => id_at(payload, &["updatedNode", "id"]),
            Mutation::UpdateTableRecord(_) | Mutation::SetTableRecordFieldValue { .. } => {
                id_at(payload, &["table_record", "id"])
            }
            Mutation::DeleteCard { .. } | Mutation::DeleteTableRecord { .. } => None,
        };
        Ok(OpSuccess {
            id: id.or_else(|| self.target_id().map(str::to_string)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipefy::batch::{build_document, interpret, DocKind};

    fn all_ops() -> Vec<Mutation> {
        vec![
            Mutation::CreateCard(CreateCardInput {
                pipe_id: "301".into(),
                title: Some("T".into()),
                phase_id: Some("9".into()),
                due_date: Some("2024-01-02T03:04:05Z".into()),
                assignee_ids: Some(vec!["u1".into()]),
                label_ids: Some(vec!["l1".into()]),
                parent_ids: Some(vec!["p1".into()]),
                fields_attributes: vec![FieldValueInput {
                    field_id: "email".into(),
                    field_value: json!("a@b.c"),
                }],
            }),
            Mutation::UpdateCard(UpdateCardInput {
                id: "c1".into(),
                title: Some("New".into()),
                ..Default::default()
            }),
            Mutation::UpdateCardField {
                card_id: "c1".into(),
                field_id: "f".into(),
                value: json!(["x"]),
            },
            Mutation::UpdateFieldsValues {
                node_id: "c1".into(),
                values: vec![NodeFieldValue {
                    field_id: "conn".into(),
                    value: json!(["c9"]),
                    operation: FieldOperation::Add,
                }],
            },
            Mutation::DeleteCard { id: "c2".into() },
            Mutation::MoveCardToPhase {
                card_id: "c1".into(),
                phase_id: "p2".into(),
            },
            Mutation::CreateTableRecord(CreateTableRecordInput {
                table_id: "tbl".into(),
                title: Some("R".into()),
                ..Default::default()
            }),
            Mutation::UpdateTableRecord(UpdateTableRecordInput {
                id: "r1".into(),
                status_id: Some("s".into()),
                ..Default::default()
            }),
            Mutation::SetTableRecordFieldValue {
                record_id: "r1".into(),
                field_id: "f".into(),
                value: json!("single"),
            },
            Mutation::DeleteTableRecord { id: "r2".into() },
        ]
    }

    #[test]
    fn every_op_renders_with_its_input_type_and_variables() {
        let ops = all_ops();
        let refs: Vec<(usize, &Mutation)> = ops.iter().enumerate().collect();
        let doc = build_document(DocKind::Mutation, &refs);
        let q = doc["query"].as_str().unwrap();
        for (i, op) in ops.iter().enumerate() {
            assert!(
                q.contains(&format!("op{i}: {}(input: $v{i})", op.name())),
                "{q}"
            );
        }
        for ty in [
            "$v0: CreateCardInput!",
            "$v1: UpdateCardInput!",
            "$v2: UpdateCardFieldInput!",
            "$v3: UpdateFieldsValuesInput!",
            "$v4: DeleteCardInput!",
            "$v5: MoveCardToPhaseInput!",
            "$v6: CreateTableRecordInput!",
            "$v7: UpdateTableRecordInput!",
            "$v8: SetTableRecordFieldValueInput!",
            "$v9: DeleteTableRecordInput!",
        ] {
            assert!(q.contains(ty), "{ty} missing in {q}");
        }
        assert!(q.contains("updatedNode { ... on Card { id } } }"));
        assert!(!q.contains("TableRecord {"));
        let v = &doc["variables"];
        assert_eq!(v["v0"]["pipe_id"], "301");
        assert_eq!(v["v0"]["parent_ids"], json!(["p1"]));
        assert_eq!(
            v["v0"]["fields_attributes"],
            json!([{"field_id": "email", "field_value": "a@b.c"}])
        );
        assert_eq!(v["v1"], json!({"id": "c1", "title": "New"}));
        assert_eq!(
            v["v2"],
            json!({"card_id": "c1", "field_id": "f", "new_value": ["x"]})
        );
        assert_eq!(
            v["v3"],
            json!({"nodeId": "c1", "values": [{"fieldId": "conn", "value": ["c9"], "operation": "ADD"}]})
        );
        assert_eq!(
            v["v5"],
            json!({"card_id": "c1", "destination_phase_id": "p2"})
        );
        assert_eq!(v["v7"], json!({"id": "r1", "statusId": "s"}));
        assert_eq!(v["v8"]["value"], json!(["single"]));
        assert_eq!(v["v8"]["table_record_id"], "r1");
    }

    #[test]
    fn payloads_parse_to_ids() {
        let ops = all_ops();
        let refs: Vec<(usize, &Mutation)> = ops.iter().enumerate().collect();
        let body = json!({"data": {
            "op0": {"card": {"id": "100"}},
            "op1": {"card": {"id": "c1"}},
            "op2": {"success": true, "card": {"id": "c1"}},
            "op3": {"success": true, "userErrors": [], "updatedNode": {"id": "c1"}},
            "op4": {"success": true},
            "op5": {"card": {"id": "c1", "current_phase": {"id": "p2"}}},
            "op6": {"table_record": {"id": "r9"}},
            "op7": {"table_record": {"id": "r1"}},
            "op8": {"table_record": {"id": "r1"}},
            "op9": {"success": true}
        }});
        let r = interpret(&body, &refs);
        let ids: Vec<Option<String>> = r.into_iter().map(|x| x.unwrap().id).collect();
        assert_eq!(
            ids,
            vec![
                Some("100".into()),
                Some("c1".into()),
                Some("c1".into()),
                Some("c1".into()),
                Some("c2".into()),
                Some("c1".into()),
                Some("r9".into()),
                Some("r1".into()),
                Some("r1".into()),
                Some("r2".into()),
            ]
        );
    }

    #[test]
    fn success_false_is_permanent_with_user_errors() {
        let op = Mutation::UpdateFieldsValues {
            node_id: "c1".into(),
            values: vec![NodeFieldValue {
                field_id: "nope".into(),
                value: json!("x"),
                operation: FieldOperation::Replace,
            }],
        };
        let r = op.parse(&json!({"success": false, "userErrors": [
            {"field": ["nope"], "message": "Field not found"},
            {"field": null, "message": "You exceeded the maximum number of fields"}
        ], "updatedNode": null}));
        assert_eq!(
            r,
            Err(Failure::permanent(
                Some("USER_ERROR".into()),
                "nope: Field not found; You exceeded the maximum number of fields"
            ))
        );
        let del = Mutation::DeleteCard { id: "1".into() };
        assert_eq!(
            del.parse(&json!({"success": false})),
            Err(Failure::permanent(
                Some("USER_ERROR".into()),
                "Pipefy reported success: false"
            ))
        );
    }

    #[test]
    fn create_without_id_is_uncertain() {
        let op = &all_ops()[0];
        assert!(matches!(
            op.parse(&json!({"card": null})),
            Err(Failure::Uncertain { .. })
        ));
        assert!(matches!(
            op.parse(&json!("weird")),
            Err(Failure::Uncertain { .. })
        ));
    }

    #[test]
    fn precheck_rejects_too_many_values() {
        let values: Vec<NodeFieldValue> = (0..31)
            .map(|i| NodeFieldValue {
                field_id: format!("f{i}"),
                value: json!(i),
                operation: FieldOperation::Replace,
            })
            .collect();
        let op = Mutation::UpdateFieldsValues {
            node_id: "1".into(),
            values: values.clone(),
        };
        assert!(matches!(op.precheck(), Some(Failure::Permanent { .. })));
        let ok = Mutation::UpdateFieldsValues {
            node_id: "1".into(),
            values: values[..30].to_vec(),
        };
        assert!(ok.precheck().is_none());
    }
}
