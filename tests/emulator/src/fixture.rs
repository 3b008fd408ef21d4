//! The seed fixture: users, tokens, service accounts, pipes, tables, cards and records.
//!
//! A fixture is plain JSON (see `tests/fixtures/emulator/demo.json` and the README). Card and
//! record field values in a fixture are written the way a client writes them (docs/pipefy-api.md §6)
//! and are normalised through the same validation as `createCard` when the emulator loads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::{Card, Record};
use crate::values::FieldType;

/// The demo fixture, also the built-in default of [`crate::EmulatorConfig`].
const DEMO_FIXTURE: &str = include_str!("../../fixtures/emulator/demo.json");

/// Errors while loading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("fixture {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("fixture is inconsistent: {0}")]
    Invalid(String),
}

/// Everything the emulator starts from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub users: Vec<User>,
    /// Personal access tokens.
    #[serde(default)]
    pub tokens: Vec<PersonalToken>,
    /// Service accounts (OAuth2 client credentials at `POST /oauth/token`).
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccount>,
    #[serde(default)]
    pub pipes: Vec<PipeDef>,
    #[serde(default)]
    pub tables: Vec<TableDef>,
    /// Existing cards. `phase_id` defaults to the pipe's start phase.
    #[serde(default)]
    pub cards: Vec<Card>,
    /// Existing table records.
    #[serde(default)]
    pub records: Vec<Record>,
    /// Organisations. A fixture without any gets one, id `1`, holding every pipe and
    /// table (see [`Fixture::effective_organizations`]).
    #[serde(default)]
    pub organizations: Vec<OrganizationDef>,
}

/// A Pipefy organisation: the pipes and tables it holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrganizationDef {
    /// Numeric string.
    pub id: String,
    pub name: String,
    /// Empty: derived from the id.
    #[serde(default)]
    pub uuid: String,
    #[serde(default = "default_plan_name")]
    pub plan_name: String,
    #[serde(default)]
    pub pipe_ids: Vec<String>,
    #[serde(default)]
    pub table_ids: Vec<String>,
    /// ISO UTC.
    #[serde(default = "default_org_created_at")]
    pub created_at: String,
}

fn default_plan_name() -> String {
    "Enterprise".to_string()
}

fn default_org_created_at() -> String {
    "2024-01-01T00:00:00Z".to_string()
}

impl Fixture {
    /// Reads and parses a fixture file (consistency is checked when the emulator starts).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Fixture, FixtureError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_json(&text).map_err(|source| FixtureError::Parse {
            path: shown,
            source,
        })
    }

    /// The demo fixture, whose pipe 301 has the attachment field `documents` on its start
    /// form, plus one on table `tbl_accounts` (`contract`).
    pub fn demo_with_attachments() -> Fixture {
        let mut fixture = Fixture::demo();
        let contract = serde_json::from_value::<FieldDef>(serde_json::json!({
            "id": "contract", "uuid": "5f0c2a52-6a8e-4d1e-9c61-0d6a3c1b7e02",
            "internal_id": "428000299", "label": "Contract", "type": "attachment"
        }));
        if let (Some(t), Ok(f)) = (
            fixture.tables.iter_mut().find(|t| t.id == "tbl_accounts"),
            contract,
        ) {
            if !t.fields.iter().any(|x| x.id == f.id) {
                t.fields.push(f);
            }
        }
        fixture
    }

    /// Parses a fixture from JSON text.
    pub fn from_json(text: &str) -> Result<Fixture, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The demo fixture shipped in `tests/fixtures/emulator/demo.json`.
    pub fn demo() -> Fixture {
        match Self::from_json(DEMO_FIXTURE) {
            Ok(f) => f,
            Err(e) => {
                // The file is compiled in and covered by a test; an empty fixture keeps
                // the emulator usable if someone breaks it.
                tracing::error!(error = %e, "built-in demo fixture does not parse");
                Fixture::default()
            }
        }
    }

    /// Finds a pipe definition by id.
    pub fn pipe(&self, id: &str) -> Option<&PipeDef> {
        self.pipes.iter().find(|p| p.id == id)
    }

    /// Finds a table definition by id.
    pub fn table(&self, id: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// The organisations the emulator serves: the fixture's, or, when it has none, one
    /// organisation `1` ("Demo organization") holding every pipe and table.
    pub fn effective_organizations(&self) -> Vec<OrganizationDef> {
        if !self.organizations.is_empty() {
            return self.organizations.clone();
        }
        vec![OrganizationDef {
            id: "1".to_string(),
            name: "Demo organization".to_string(),
            uuid: String::new(),
            plan_name: default_plan_name(),
            pipe_ids: self.pipes.iter().map(|p| p.id.clone()).collect(),
            table_ids: self.tables.iter().map(|t| t.id.clone()).collect(),
            created_at: default_org_created_at(),
        }]
    }
}

/// A Pipefy user (people and service-account users alike).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Company (organisation) admins may read and write every pipe and table.
    #[serde(default)]
    pub org_admin: bool,
}

/// A personal access token belonging to a user.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersonalToken {
    pub token: String,
    pub user_id: String,
}

impl fmt::Debug for PersonalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonalToken")
            .field("token", &"***")
            .field("user_id", &self.user_id)
            .finish()
    }
}

fn default_expires_in() -> u64 {
    3600
}

/// A service account: exchanges client credentials for an expiring bearer token.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    pub client_id: String,
    pub client_secret: String,
    pub user_id: String,
    /// Lifetime of issued tokens in seconds (Pipefy: chosen at creation, 5 min..30 days).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("user_id", &self.user_id)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A member of a pipe or table with a role (`admin`, `member`, ...).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberDef {
    pub user_id: String,
    pub role_name: String,
}

/// A label of a pipe or table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub color: String,
}

fn yes() -> bool {
    true
}

/// A field of a start form, a phase or a table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// The slug, used by card writes.
    pub id: String,
    /// The uuid, used by the `records` filter.
    pub uuid: String,
    /// Numeric id used by automations.
    pub internal_id: String,
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    /// Options of select/radio/checklist fields.
    #[serde(default)]
    pub options: Vec<String>,
    /// Tables only: values must be unique across records.
    #[serde(default)]
    pub unique: bool,
    /// Connector fields: the pipe or table whose cards/records may be connected.
    #[serde(default)]
    pub connected_repo_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub help: Option<String>,
    #[serde(default = "yes")]
    pub editable: bool,
}

/// A phase of a pipe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Phase ids cards in this phase may be moved to (`cards_can_be_moved_to_phases`).
    #[serde(default)]
    pub moves_to: Vec<String>,
}

/// A pipe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipeDef {
    pub id: String,
    pub name: String,
    /// Defaults to the first phase.
    #[serde(default)]
    pub start_form_phase_id: Option<String>,
    #[serde(default)]
    pub start_form_fields: Vec<FieldDef>,
    #[serde(default)]
    pub phases: Vec<PhaseDef>,
    #[serde(default)]
    pub labels: Vec<LabelDef>,
    #[serde(default)]
    pub members: Vec<MemberDef>,
    /// When set, the card title is derived from this field (Pipefy's title field) and the
    /// `title` sent by the client is ignored whenever the field has a value.
    #[serde(default)]
    pub title_field_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl PipeDef {
    /// The phase new cards land in.
    pub fn start_phase_id(&self) -> Option<&str> {
        self.start_form_phase_id
            .as_deref()
            .or_else(|| self.phases.first().map(|p| p.id.as_str()))
    }

    /// Start-form fields followed by every phase's fields.
    pub fn all_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.start_form_fields
            .iter()
            .chain(self.phases.iter().flat_map(|p| p.fields.iter()))
    }
}

/// A database table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    #[serde(default)]
    pub labels: Vec<LabelDef>,
    #[serde(default)]
    pub members: Vec<MemberDef>,
    /// When set, the record title is derived from this field.
    #[serde(default)]
    pub title_field_id: Option<String>,
}

/// Checks ids are unique and references resolve; the state loader checks values.
pub(crate) fn check_consistency(f: &Fixture) -> Result<(), FixtureError> {
    let mut seen: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut claim = |id: &str, what: &'static str| -> Result<(), FixtureError> {
        if let Some(prev) = seen.insert(id.to_string(), what) {
            return Err(FixtureError::Invalid(format!(
                "id {id:?} used by a {prev} and a {what}"
            )));
        }
        Ok(())
    };
    for p in &f.pipes {
        claim(&p.id, "pipe")?;
        for ph in &p.phases {
            claim(&ph.id, "phase")?;
        }
    }
    for t in &f.tables {
        claim(&t.id, "table")?;
    }
    let user_ids: Vec<&str> = f.users.iter().map(|u| u.id.as_str()).collect();
    let known_user = |id: &str| user_ids.contains(&id);
    for t in &f.tokens {
        if !known_user(&t.user_id) {
            return Err(FixtureError::Invalid(format!(
                "token of unknown user {}",
                t.user_id
            )));
        }
    }
    for sa in &f.service_accounts {
        if !known_user(&sa.user_id) {
            return Err(FixtureError::Invalid(format!(
                "service account {} of unknown user {}",
                sa.client_id, sa.user_id
            )));
        }
    }
    let mut uuids = BTreeMap::new();
    let mut check_fields =
        |repo: &str, fields: &mut dyn Iterator<Item = &FieldDef>| -> Result<(), FixtureError> {
            let mut slugs = BTreeMap::new();
            for fd in fields {
                if slugs.insert(fd.id.clone(), ()).is_some() {
                    return Err(FixtureError::Invalid(format!(
                        "field slug {} repeated in {repo}",
                        fd.id
                    )));
                }
                if uuids.insert(fd.uuid.clone(), ()).is_some() {
                    return Err(FixtureError::Invalid(format!(
                        "field uuid {} repeated",
                        fd.uuid
                    )));
                }
                if !crate::values::is_canonical_uuid(&fd.uuid) {
                    return Err(FixtureError::Invalid(format!(
                        "field {} has a non-canonical uuid {}",
                        fd.id, fd.uuid
                    )));
                }
            }
            Ok(())
        };
    for p in &f.pipes {
        check_fields(&p.id, &mut p.all_fields())?;
        for ph in &p.phases {
            for to in &ph.moves_to {
                if !p.phases.iter().any(|x| &x.id == to) {
                    return Err(FixtureError::Invalid(format!(
                        "phase {} moves to {to}, not a phase of pipe {}",
                        ph.id, p.id
                    )));
                }
            }
        }
        if p.phases.is_empty() {
            return Err(FixtureError::Invalid(format!(
                "pipe {} has no phases",
                p.id
            )));
        }
        for m in &p.members {
            if !known_user(&m.user_id) {
                return Err(FixtureError::Invalid(format!(
                    "pipe {} member {} is not a user",
                    p.id, m.user_id
                )));
            }
        }
    }
    for t in &f.tables {
        check_fields(&t.id, &mut t.fields.iter())?;
        for m in &t.members {
            if !known_user(&m.user_id) {
                return Err(FixtureError::Invalid(format!(
                    "table {} member {} is not a user",
                    t.id, m.user_id
                )));
            }
        }
    }
    Ok(())
}
