//! From a planned row to Pipefy mutations (docs/pipefy-api.md §4), and from their results back to the
//! row's outcome. One row can need several mutations (an update: updateCard for the card
//! attributes, updateFieldsValues for custom fields in chunks of 30, moveCardToPhase); the
//! row succeeds only when all of them do.

use crate::mapping::{ConnectionRef, FieldValue, MappedRow, Set};
use crate::pipefy::{
    CreateCardInput, CreateTableRecordInput, FieldOperation, FieldValueInput, Mutation,
    NodeFieldValue, UpdateCardInput, UpdateTableRecordInput, MAX_VALUES_PER_UPDATE,
};

/// What a mutation does for its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpRole {
    Create,
    Update,
    Move,
    /// The move or delete of a removed row's card or record.
    Remove,
}

/// Where the destination writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    Pipe(String),
    Table(String),
}

/// Connector and parent references, resolved to ids by the engine before ops are built.
pub trait ConnectionIds {
    fn ids(&self, refs: &[ConnectionRef]) -> Vec<String>;
}

fn set_text(v: &Option<Set<String>>) -> Option<String> {
    match v {
        Some(Set::Value(s)) => Some(s.clone()),
        Some(Set::Clear) => Some(String::new()),
        None => None,
    }
}

fn set_list(v: &Option<Set<Vec<String>>>) -> Option<Vec<String>> {
    match v {
        Some(Set::Value(ids)) => Some(ids.clone()),
        Some(Set::Clear) => Some(Vec::new()),
        None => None,
    }
}

fn field_json(value: &FieldValue, conn: &dyn ConnectionIds) -> serde_json::Value {
    match value {
        FieldValue::Json(v) => v.clone(),
        FieldValue::Connect(refs) => serde_json::Value::from(conn.ids(refs)),
        // Replaced by storage paths once uploaded (engine/attachments.rs); left as it is only
        // in a dry run's plan, where it says what would be uploaded. Pipefy refuses it.
        FieldValue::Files(files) => files
            .iter()
            .map(|f| format!("upload {}", f.location()))
            .collect(),
        FieldValue::Clear => serde_json::Value::Null,
    }
}

/// The create mutation of a row.
pub fn create_op(repo: &Repo, row: &MappedRow, conn: &dyn ConnectionIds) -> Mutation {
    // A create has nothing to clear: cleared fields are simply not sent.
    let fields_attributes: Vec<FieldValueInput> = row
        .fields
        .iter()
        .filter(|f| !matches!(f.value, FieldValue::Clear))
        .map(|f| FieldValueInput {
            field_id: f.field_id.clone(),
            field_value: field_json(&f.value, conn),
        })
        .collect();
    let only_values = |v: &Option<Set<String>>| match v {
        Some(Set::Value(s)) => Some(s.clone()),
        _ => None,
    };
    let only_list = |v: &Option<Set<Vec<String>>>| match v {
        Some(Set::Value(ids)) => Some(ids.clone()),
        _ => None,
    };
    match repo {
        Repo::Pipe(pipe_id) => Mutation::CreateCard(CreateCardInput {
            pipe_id: pipe_id.clone(),
            title: only_values(&row.title),
            phase_id: row.phase_id.clone(),
            due_date: only_values(&row.due_date),
            assignee_ids: only_list(&row.assignee_ids),
            label_ids: only_list(&row.label_ids),
            parent_ids: row.parent_ids.as_ref().map(|refs| conn.ids(refs)),
            fields_attributes,
        }),
        Repo::Table(table_id) => Mutation::CreateTableRecord(CreateTableRecordInput {
            table_id: table_id.clone(),
            title: only_values(&row.title),
            due_date: only_values(&row.due_date),
            assignee_ids: only_list(&row.assignee_ids),
            label_ids: only_list(&row.label_ids),
            fields_attributes,
        }),
    }
}

/// Whether an update of `row` (without a phase move) would send nothing.
pub fn sends_nothing(repo: &Repo, row: &MappedRow) -> bool {
    let attributes = match repo {
        Repo::Pipe(_) => {
            row.title.is_some()
                || row.due_date.is_some()
                || row.assignee_ids.is_some()
                || row.label_ids.is_some()
        }
        Repo::Table(_) => row.title.is_some() || row.due_date.is_some(),
    };
    !attributes && row.fields.is_empty()
}

/// The update mutations of a row whose card/record id is known. `move_phase`: the phase
/// changed since the last write, so the card is moved (cards only). `adds(field)`: the
/// field's target has `mode: add`, so its items are added (`ADD`) instead of replacing the
/// list.
pub fn update_ops(
    repo: &Repo,
    id: &str,
    row: &MappedRow,
    move_phase: bool,
    conn: &dyn ConnectionIds,
    adds: &dyn Fn(&str) -> bool,
) -> Vec<(OpRole, Mutation)> {
    let mut ops = Vec::new();
    let title = set_text(&row.title);
    let due_date = set_text(&row.due_date);
    match repo {
        Repo::Pipe(_) => {
            let assignee_ids = set_list(&row.assignee_ids);
            let label_ids = set_list(&row.label_ids);
            if title.is_some()
                || due_date.is_some()
                || assignee_ids.is_some()
                || label_ids.is_some()
            {
                ops.push((
                    OpRole::Update,
                    Mutation::UpdateCard(UpdateCardInput {
                        id: id.to_string(),
                        title,
                        due_date,
                        assignee_ids,
                        label_ids,
                    }),
                ));
            }
        }
        Repo::Table(_) => {
            if title.is_some() || due_date.is_some() {
                ops.push((
                    OpRole::Update,
                    Mutation::UpdateTableRecord(UpdateTableRecordInput {
                        id: id.to_string(),
                        title,
                        due_date,
                        status_id: None,
                    }),
                ));
            }
        }
    }
    // Custom fields: REPLACE and ADD are idempotent, so a retried or repeated update is
    // harmless. A cleared list in add mode has nothing to add.
    let values: Vec<NodeFieldValue> = row
        .fields
        .iter()
        .filter_map(|f| {
            let add = adds(&f.field_id);
            if add && matches!(f.value, FieldValue::Clear) {
                return None;
            }
            Some(NodeFieldValue {
                field_id: f.field_id.clone(),
                value: field_json(&f.value, conn),
                operation: if add {
                    FieldOperation::Add
                } else {
                    FieldOperation::Replace
                },
            })
        })
        .collect();
    for chunk in values.chunks(MAX_VALUES_PER_UPDATE) {
        ops.push((
            OpRole::Update,
            Mutation::UpdateFieldsValues {
                node_id: id.to_string(),
                values: chunk.to_vec(),
            },
        ));
    }
    if let (Repo::Pipe(_), true, Some(phase_id)) = (repo, move_phase, &row.phase_id) {
        ops.push((
            OpRole::Move,
            Mutation::MoveCardToPhase {
                card_id: id.to_string(),
                phase_id: phase_id.clone(),
            },
        ));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappedField;

    struct Ids;
    impl ConnectionIds for Ids {
        fn ids(&self, refs: &[ConnectionRef]) -> Vec<String> {
            refs.iter()
                .map(|r| match r {
                    ConnectionRef::Id(id) => id.clone(),
                    ConnectionRef::Key { key, .. } => format!("id-of-{key}"),
                })
                .collect()
        }
    }

    fn row_with_fields(n: usize) -> MappedRow {
        MappedRow {
            title: Some(Set::Value("T".into())),
            phase_id: Some("p2".into()),
            fields: (0..n)
                .map(|i| MappedField {
                    field_id: format!("f{i}"),
                    value: FieldValue::Json(serde_json::json!(i)),
                })
                .collect(),
            ..MappedRow::default()
        }
    }

    #[test]
    fn updates_chunk_custom_fields_by_thirty_and_move_last() {
        let ops = update_ops(
            &Repo::Pipe("1".into()),
            "9",
            &row_with_fields(61),
            true,
            &Ids,
            &|_| false,
        );
        let names: Vec<&str> = ops.iter().map(|(_, m)| m.name()).collect();
        assert_eq!(
            names,
            [
                "updateCard",
                "updateFieldsValues",
                "updateFieldsValues",
                "updateFieldsValues",
                "moveCardToPhase"
            ]
        );
        let sizes: Vec<usize> = ops
            .iter()
            .filter_map(|(_, m)| match m {
                Mutation::UpdateFieldsValues { values, .. } => Some(values.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [30, 30, 1]);
        assert_eq!(ops.last().map(|(r, _)| *r), Some(OpRole::Move));
    }

    #[test]
    fn no_move_unless_the_phase_changed() {
        let ops = update_ops(
            &Repo::Pipe("1".into()),
            "9",
            &row_with_fields(1),
            false,
            &Ids,
            &|_| false,
        );
        assert!(ops.iter().all(|(r, _)| *r != OpRole::Move));
    }

    #[test]
    fn creates_skip_cleared_fields_and_resolve_connections() {
        let mut row = row_with_fields(1);
        row.fields.push(MappedField {
            field_id: "gone".into(),
            value: FieldValue::Clear,
        });
        row.fields.push(MappedField {
            field_id: "account".into(),
            value: FieldValue::Connect(vec![ConnectionRef::Key {
                repo: "table:t".into(),
                key_field: "code".into(),
                key: "A1".into(),
            }]),
        });
        let Mutation::CreateCard(input) = create_op(&Repo::Pipe("301".into()), &row, &Ids) else {
            panic!("expected createCard");
        };
        let ids: Vec<&str> = input
            .fields_attributes
            .iter()
            .map(|f| f.field_id.as_str())
            .collect();
        assert_eq!(ids, ["f0", "account"]);
        assert_eq!(
            input.fields_attributes[1].field_value,
            serde_json::json!(["id-of-A1"])
        );
        assert_eq!(input.phase_id.as_deref(), Some("p2"));
    }
}
