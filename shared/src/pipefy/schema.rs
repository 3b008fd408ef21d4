//! The parts of a pipe's or a database table's schema that mapping and preflight need,
//! fetched once per run (`pipe(id){...}` / `table(id){...}`, docs/pipefy-api.md §5).

use serde::{Deserialize, Serialize};

/// Pipefy field type ids (docs/pipefy-api.md §6), lower-case as Pipefy spells them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    AssigneeSelect,
    Attachment,
    ChecklistHorizontal,
    ChecklistVertical,
    Cnpj,
    Connector,
    Cpf,
    Currency,
    Date,
    Datetime,
    DueDate,
    DynamicContent,
    Email,
    Id,
    LabelSelect,
    LongText,
    Number,
    Phone,
    RadioHorizontal,
    RadioVertical,
    Select,
    ShortText,
    Statement,
    Time,
    Formula,
    /// A type this build does not know; kept so a new Pipefy type does not break schema fetches.
    #[serde(other)]
    Unknown,
}

impl FieldType {
    /// Types whose value is computed or display-only (docs/pipefy-api.md §6): never written.
    pub fn is_writable(&self) -> bool {
        !matches!(
            self,
            FieldType::Statement
                | FieldType::DynamicContent
                | FieldType::Formula
                | FieldType::Id
                | FieldType::Unknown
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    /// The slug used by card writes (`fields_attributes.field_id`, `updateFieldsValues.fieldId`).
    pub id: String,
    /// Needed by the `records(where: {field: uuid})` lookup.
    pub uuid: Option<String>,
    pub internal_id: Option<String>,
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    /// Options of select / radio / checklist fields; empty otherwise.
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub done: bool,
    /// Phase fields (required ones are enforced by moveCardToPhase).
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Phase ids a card in this phase may be moved to.
    #[serde(default)]
    pub cards_can_be_moved_to_phases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelDef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberDef {
    /// User id, the value assignee_ids take.
    pub id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipeSchema {
    pub id: String,
    pub name: String,
    pub start_form_phase_id: Option<String>,
    /// The organization holding the pipe: what attachments are uploaded for.
    pub organization_id: Option<String>,
    pub phases: Vec<PhaseDef>,
    pub start_form_fields: Vec<FieldDef>,
    pub labels: Vec<LabelDef>,
    pub members: Vec<MemberDef>,
}

impl PipeSchema {
    /// A custom field by slug: start-form fields first, then phase fields.
    pub fn field(&self, id: &str) -> Option<&FieldDef> {
        self.start_form_fields
            .iter()
            .find(|f| f.id == id)
            .or_else(|| {
                self.phases
                    .iter()
                    .flat_map(|p| p.fields.iter())
                    .find(|f| f.id == id)
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub id: String,
    pub name: String,
    pub fields: Vec<FieldDef>,
}

impl TableSchema {
    pub fn field(&self, id: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.id == id)
    }
}
