//! Destination files: one YAML file per destination, the single source of truth read by the
//! functions, the CLI and Terraform. See docs/destinations.md for the reference.
//!
//! Parsing is strict: unknown keys are errors (`deny_unknown_fields`), and every error names
//! the file, the key path and what was expected.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

mod validate;
pub use validate::{load_destination_file, parse_destination, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Unique name: `[a-z0-9][a-z0-9_-]*`, used in S3 keys, schedules and reports.
    pub name: String,
    pub description: Option<String>,
    /// Target pipe (card operations).
    pub pipe_id: Option<String>,
    /// Target database table (record operations).
    pub table_id: Option<String>,
    pub operation: Operation,
    /// How a row is identified in Pipefy. Required by the upsert operations; optional for
    /// creates, where it makes creates exactly-once under faults and skips rows already synced.
    pub key: Option<KeyConfig>,
    /// Upserts only: whether a key not found may be created and a key found updated.
    #[serde(default)]
    pub upsert: UpsertModes,
    pub source: SourceConfig,
    /// Pipefy target (attribute name or custom field slug) -> how its value is made.
    pub mapping: IndexMap<String, FieldMapping>,
    #[serde(default = "default_true")]
    pub partial_success: bool,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub trigger: Trigger,
    pub token: TokenSource,
    /// Pipefy GraphQL endpoint; default `https://api.pipefy.com/graphql`.
    pub endpoint: Option<String>,
    #[serde(default)]
    pub sync: SyncOptions,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    CreateCard,
    UpdateCard,
    UpsertCard,
    CreateRecord,
    UpsertRecord,
}

impl Operation {
    pub fn is_card(self) -> bool {
        matches!(
            self,
            Operation::CreateCard | Operation::UpdateCard | Operation::UpsertCard
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateCard => "create_card",
            Operation::UpdateCard => "update_card",
            Operation::UpsertCard => "upsert_card",
            Operation::CreateRecord => "create_record",
            Operation::UpsertRecord => "upsert_record",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Source column(s) whose values, joined with `separator`, form the key.
    pub columns: Vec<String>,
    #[serde(default = "default_key_separator")]
    pub separator: String,
    /// The Pipefy custom field (slug) that holds the key, used to find existing cards/records.
    pub field: String,
}

fn default_key_separator() -> String {
    "|".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// S3 bucket; absent for a local folder (`path`).
    pub bucket: Option<String>,
    /// Local folder holding `<layer>/<table>/` (CLI runs). Relative to the destination file.
    pub path: Option<String>,
    pub layer: String,
    pub table: String,
    /// `csv`, `jsonl`, `json` or `parquet`; by default from each file's extension.
    pub format: Option<FileFormat>,
    /// `auto` (by extension: .gz, .zst), `none`, `gzip`, `zstd`.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub csv: CsvOptions,
}

impl SourceConfig {
    /// `<layer>/<table>/`: the prefix every data file of the table lives under.
    pub fn prefix(&self) -> String {
        format!(
            "{}/{}/",
            self.layer.trim_matches('/'),
            self.table.trim_matches('/')
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Json,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "default_quote")]
    pub quote: char,
    #[serde(default = "default_true")]
    pub header: bool,
    /// Any WHATWG encoding label (`utf-8`, `latin1`, `windows-1252`, `utf-16le`...).
    #[serde(default = "default_encoding")]
    pub encoding: String,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: default_delimiter(),
            quote: default_quote(),
            header: true,
            encoding: default_encoding(),
        }
    }
}

fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}
fn default_encoding() -> String {
    "utf-8".to_string()
}

/// How one Pipefy target gets its value. In YAML a bare string is a column name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "FieldMappingRepr")]
pub struct FieldMapping {
    pub value: ValueSource,
    pub transforms: Vec<Transform>,
    pub on_null: NullPolicy,
    /// For connector fields and `parent_ids`: resolve source values as keys in another pipe/table.
    pub connect: Option<ConnectConfig>,
    /// When the target is written: always, only into an empty value, or only on create.
    pub write: WritePolicy,
    /// List targets: replace Pipefy's list, or add the row's items to it.
    pub mode: ListMode,
    /// Overrides `sync.on_conflict` for this target.
    pub on_conflict: Option<OnConflict>,
    /// Attachment fields: the column names files in S3, which pipefy-sync uploads.
    pub attach: Option<AttachConfig>,
}

/// Where the files an attachment column names are read from (docs/mapping.md,
/// "Attachments from S3").
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachConfig {
    /// The bucket that holds the files (default: the source's bucket).
    pub bucket: Option<String>,
    /// The folder that holds them: a relative key is read under it, and a key outside it
    /// is refused. It is also what the functions' IAM policy grants.
    pub prefix: Option<String>,
}

/// What an update does to a value a person changed in Pipefy since pipefy-sync wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The table wins: the value is written (the behaviour without this setting).
    #[default]
    Overwrite,
    /// The person's value stays; the row's result says so (`kept_edits`).
    KeepEdits,
}

/// When a mapped target is written (docs/mapping.md, "Write policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePolicy {
    /// Whenever the value changed since the last write.
    #[default]
    Always,
    /// Only while Pipefy's current value is empty (read before the update).
    IfEmpty,
    /// Only when the card or record is created; never updated.
    OnCreate,
}

/// How a list target (labels, assignees, checklists, connections) is written on update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListMode {
    /// Pipefy's list becomes the row's list.
    #[default]
    Replace,
    /// The row's items are added; nothing already in Pipefy is removed.
    Add,
}

/// What an upsert may do (`upsert:` in the destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertModes {
    /// `false`: update-only; a key not in Pipefy is reported `NOT_FOUND`, never created.
    #[serde(default = "default_true")]
    pub create: bool,
    /// `false`: create-only; a card or record that exists is left alone, reported `EXISTS`.
    #[serde(default = "default_true")]
    pub update: bool,
}

impl Default for UpsertModes {
    fn default() -> Self {
        UpsertModes {
            create: true,
            update: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    Column(String),
    Constant(serde_norway::Value),
    /// `"{first_name} {last_name}"`: `{col}` is replaced by the column's text; `{{` is a brace.
    Template(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum FieldMappingRepr {
    Full(FieldMappingFull),
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldMappingFull {
    column: Option<String>,
    constant: Option<serde_norway::Value>,
    template: Option<String>,
    // YAML writes a transform as `{parse_date: {format: ...}}` or a bare `trim`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_norway::with::singleton_map_recursive"
    )]
    transforms: Vec<Transform>,
    #[serde(default)]
    on_null: NullPolicy,
    connect: Option<ConnectConfig>,
    #[serde(default)]
    write: WritePolicy,
    #[serde(default)]
    mode: ListMode,
    on_conflict: Option<OnConflict>,
    attach: Option<AttachConfig>,
}

// By hand rather than `untagged`, so a typo inside an entry ("colum: name") gets serde's
// "unknown field `colum`, expected one of ..." instead of "did not match any variant".
impl<'de> Deserialize<'de> for FieldMapping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldMappingVisitor)
    }
}

struct FieldMappingVisitor;

impl<'de> serde::de::Visitor<'de> for FieldMappingVisitor {
    type Value = FieldMapping;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column name, or a mapping with `column`, `constant` or `template`")
    }

    fn visit_str<E: serde::de::Error>(self, c: &str) -> Result<FieldMapping, E> {
        Ok(FieldMapping {
            value: ValueSource::Column(c.to_string()),
            transforms: Vec::new(),
            on_null: NullPolicy::default(),
            connect: None,
            write: WritePolicy::default(),
            mode: ListMode::default(),
            on_conflict: None,
            attach: None,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FieldMapping, A::Error> {
        use serde::de::Error;
        // Deserialising the entry through the original deserializer keeps YAML's own enum
        // handling for transforms and serde's "unknown field" messages.
        let full =
            FieldMappingFull::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let value = match (full.column, full.constant, full.template) {
            (Some(c), None, None) => ValueSource::Column(c),
            (None, Some(k), None) => ValueSource::Constant(k),
            (None, None, Some(t)) => ValueSource::Template(t),
            (None, None, None) => {
                return Err(A::Error::custom(
                    "needs one of `column`, `constant` or `template`",
                ))
            }
            _ => {
                return Err(A::Error::custom(
                    "takes only one of `column`, `constant` or `template`",
                ))
            }
        };
        Ok(FieldMapping {
            value,
            transforms: full.transforms,
            on_null: full.on_null,
            connect: full.connect,
            write: full.write,
            mode: full.mode,
            on_conflict: full.on_conflict,
            attach: full.attach,
        })
    }
}

impl From<FieldMapping> for FieldMappingRepr {
    fn from(m: FieldMapping) -> Self {
        let (column, constant, template) = match m.value {
            ValueSource::Column(c) => (Some(c), None, None),
            ValueSource::Constant(v) => (None, Some(v), None),
            ValueSource::Template(t) => (None, None, Some(t)),
        };
        FieldMappingRepr::Full(FieldMappingFull {
            column,
            constant,
            template,
            transforms: m.transforms,
            on_null: m.on_null,
            connect: m.connect,
            write: m.write,
            mode: m.mode,
            on_conflict: m.on_conflict,
            attach: m.attach,
        })
    }
}

/// What an empty / null source value does to the Pipefy field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullPolicy {
    /// Do not send the field: Pipefy keeps what it has.
    #[default]
    Leave,
    /// Send an empty value: Pipefy clears the field.
    Clear,
}

/// Per-field transforms, applied in order before type conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    Trim,
    Lowercase,
    Uppercase,
    /// Split a string into a list on a separator (each item trimmed, empty items dropped).
    Split {
        separator: String,
    },
    /// Parse text into a date/datetime with a chrono format; `timezone` (IANA) applies to
    /// values without an offset.
    ParseDate {
        format: String,
        timezone: Option<String>,
    },
    /// Parse text into a number with the given decimal separator (`,` for `1.234,56`).
    ParseNumber {
        #[serde(default = "default_decimal_separator")]
        decimal_separator: char,
    },
}

fn default_decimal_separator() -> char {
    '.'
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Connected pipe (cards) or table (records): exactly one.
    pub pipe_id: Option<String>,
    pub table_id: Option<String>,
    /// Field slug in the connected pipe/table that holds the key the source column carries.
    /// Absent: the source values are already Pipefy IDs.
    pub key_field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests allowed per window per token (Pipefy: 500 per 30 s, unofficial; docs/pipefy-api.md §9).
    #[serde(default = "default_requests_per_window")]
    pub requests_per_window: u32,
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u32,
    /// Aliased mutations per HTTP request (docs/pipefy-api.md §9: conservative 20).
    #[serde(default = "default_mutations_per_request")]
    pub mutations_per_request: u32,
    /// Aliased reads (key lookups, card and record reads) per HTTP request: they cost a few
    /// complexity points each, so a request takes many (docs/pipefy-api.md §9).
    #[serde(default = "default_lookups_per_request")]
    pub lookups_per_request: u32,
    /// HTTP requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Attachment uploads (S3 to Pipefy's storage) in flight at once.
    #[serde(default = "default_concurrency")]
    pub upload_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_window: default_requests_per_window(),
            window_seconds: default_window_seconds(),
            mutations_per_request: default_mutations_per_request(),
            lookups_per_request: default_lookups_per_request(),
            concurrency: default_concurrency(),
            upload_concurrency: default_concurrency(),
        }
    }
}

fn default_requests_per_window() -> u32 {
    500
}
fn default_window_seconds() -> u32 {
    30
}
fn default_mutations_per_request() -> u32 {
    20
}
fn default_lookups_per_request() -> u32 {
    100
}
fn default_concurrency() -> u32 {
    4
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub schedule: Option<Schedule>,
    pub on_upload: Option<OnUpload>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// EventBridge Scheduler expression: `cron(0 6 * * ? *)` or `rate(1 hour)`.
    pub expression: String,
    /// IANA time zone for cron expressions.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnUpload {
    /// Only objects whose key ends with one of these (e.g. `.csv`, `.csv.gz`). Empty: any.
    #[serde(default)]
    pub suffixes: Vec<String>,
}

/// Where the Pipefy token comes from. Never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// Secrets Manager secret name or ARN. Its value is the personal token, or JSON
    /// `{"client_id": "...", "client_secret": "..."}` for a service account.
    pub secret: Option<String>,
    /// Environment variable holding the token (local runs).
    pub env: Option<String>,
    /// Service-account token endpoint; default `https://app.pipefy.com/oauth/token`.
    pub oauth_url: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncOptions {
    /// First run only: record the current table as synced without sending anything.
    #[serde(default)]
    pub skip_initial_backfill: bool,
    /// What happens to cards/records whose row disappeared from the table (full-table runs).
    #[serde(default)]
    pub removed_rows: RemovedRows,
    /// Upsert: look keys that the ledger does not know up in Pipefy before creating
    /// (protects against cards made outside pipefy-sync). Off only for a pipe known empty.
    #[serde(default = "default_true")]
    pub lookup_unknown_keys: bool,
    /// Seconds to wait before looking a key up after an ambiguous create (Pipefy's search
    /// may lag a write; docs/pipefy-api.md, Unverified: no source says by how much).
    #[serde(default = "default_ambiguous_settle_seconds")]
    pub ambiguous_settle_seconds: f64,
    /// Notify when failed rows of a run exceed this count.
    #[serde(default)]
    pub failed_rows_alert_threshold: u64,
    /// How long a run's lease on the destination lives without renewal: the longest a
    /// crashed run can keep the next one waiting. Renewed every quarter of it.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// What an update does to a value a person changed in Pipefy: `overwrite` (default) or
    /// `keep_edits`; a mapping entry's own `on_conflict` overrides it.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Record what Pipefy shows of each target right after writing it (one batched read
    /// per window), so that `pipefy-sync drift` can tell a person's edit from the value
    /// pipefy-sync wrote. `keep_edits` targets always record it.
    #[serde(default)]
    pub track_edits: bool,
    /// The Pipefy organization that attachments are uploaded for. Absent: the pipe's
    /// `organizationId` (read with its schema), or for a table the organization whose
    /// `tables` list it.
    pub organization_id: Option<String>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            skip_initial_backfill: false,
            removed_rows: RemovedRows::default(),
            lookup_unknown_keys: true,
            ambiguous_settle_seconds: default_ambiguous_settle_seconds(),
            failed_rows_alert_threshold: 0,
            lease_seconds: default_lease_seconds(),
            on_conflict: OnConflict::default(),
            track_edits: false,
            organization_id: None,
        }
    }
}

fn default_lease_seconds() -> u64 {
    120
}

fn default_ambiguous_settle_seconds() -> f64 {
    1.0
}

/// What a whole-table run does with the cards or records whose row left the table
/// (`sync.removed_rows`), and the guard against removing most of a destination at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RemovedRowsFile", into = "RemovedRowsFile")]
pub struct RemovedRows {
    pub action: RemovalAction,
    /// A removal pass that would touch more than this share of the destination's keys does
    /// not run (`REMOVAL_GUARD`) unless the run allows mass removal.
    pub max_fraction: f64,
}

impl Default for RemovedRows {
    fn default() -> Self {
        RemovedRows {
            action: RemovalAction::Ignore,
            max_fraction: DEFAULT_REMOVAL_MAX_FRACTION,
        }
    }
}

impl RemovedRows {
    pub fn is_ignore(&self) -> bool {
        self.action == RemovalAction::Ignore
    }
}

pub const DEFAULT_REMOVAL_MAX_FRACTION: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum RemovalAction {
    #[default]
    Ignore,
    MoveToPhase {
        phase: String,
    },
    Delete,
}

/// `removed_rows` as written in a destination file.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedRowsFile {
    action: RemovalActionName,
    phase: Option<String>,
    max_fraction: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RemovalActionName {
    Ignore,
    MoveToPhase,
    Delete,
}

impl TryFrom<RemovedRowsFile> for RemovedRows {
    type Error = String;

    fn try_from(f: RemovedRowsFile) -> Result<Self, String> {
        let action = match (f.action, f.phase) {
            (RemovalActionName::MoveToPhase, Some(phase)) if !phase.trim().is_empty() => {
                RemovalAction::MoveToPhase { phase }
            }
            (RemovalActionName::MoveToPhase, _) => {
                return Err("`action: move_to_phase` needs `phase`: the phase's name or id".into())
            }
            (_, Some(_)) => {
                return Err("`phase` goes only with `action: move_to_phase`".into());
            }
            (RemovalActionName::Ignore, None) => RemovalAction::Ignore,
            (RemovalActionName::Delete, None) => RemovalAction::Delete,
        };
        let max_fraction = f.max_fraction.unwrap_or(DEFAULT_REMOVAL_MAX_FRACTION);
        if !(0.0..=1.0).contains(&max_fraction) {
            return Err(format!(
                "`max_fraction` must be between 0 and 1 (the share of the destination's keys one run may remove), not {max_fraction}"
            ));
        }
        Ok(RemovedRows {
            action,
            max_fraction,
        })
    }
}

impl From<RemovedRows> for RemovedRowsFile {
    fn from(r: RemovedRows) -> Self {
        let (action, phase) = match r.action {
            RemovalAction::Ignore => (RemovalActionName::Ignore, None),
            RemovalAction::MoveToPhase { phase } => (RemovalActionName::MoveToPhase, Some(phase)),
            RemovalAction::Delete => (RemovalActionName::Delete, None),
        };
        RemovedRowsFile {
            action,
            phase,
            max_fraction: Some(r.max_fraction),
        }
    }
}

/// Reserved mapping targets: card/record attributes rather than custom fields. A custom field
/// whose slug collides with one of these is written `field:<slug>`.
pub const ATTRIBUTE_TARGETS: &[&str] = &[
    "id",
    "title",
    "due_date",
    "phase_id",
    "assignee_ids",
    "label_ids",
    "parent_ids",
];

/// A mapping key split into what it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Attribute(&'a str),
    Field(&'a str),
}

pub fn target_of(key: &str) -> Target<'_> {
    if let Some(slug) = key.strip_prefix("field:") {
        Target::Field(slug)
    } else if ATTRIBUTE_TARGETS.contains(&key) {
        Target::Attribute(key)
    } else {
        Target::Field(key)
    }
}

/// Destinations by name, as loaded by the functions.
pub type DestinationSet = BTreeMap<String, Destination>;
