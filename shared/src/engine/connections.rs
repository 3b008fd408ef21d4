//! Stage 3b, connections: references to other cards and records by their key are resolved
//! to ids (cached for the run), and a row whose reference is unknown fails on its own.

use std::collections::{HashMap, HashSet};

use crate::failure::FailureCode;
use crate::mapping::{ConnectionRef, FieldValue, MappedRow};
use crate::pipefy::{FieldDef, FieldType};

use super::plan::ItemKind;
use super::requests::ConnectionIds;
use super::window::{failure_for, Outcome, Slot};
use super::{EngineError, Repo, RunShared};

/// Connection references resolved for one window.
pub(super) struct ResolvedConnections(HashMap<ConnectionKey, String>);

/// A connection by key: the connected repo (`pipe:<id>`, `table:<id>`), its key field, and
/// the key.
type ConnectionKey = (String, String, String);

fn by_key(r: &ConnectionRef) -> Option<ConnectionKey> {
    match r {
        ConnectionRef::Id(_) => None,
        ConnectionRef::Key {
            repo,
            key_field,
            key,
        } => Some((repo.clone(), key_field.clone(), key.clone())),
    }
}

impl ConnectionIds for ResolvedConnections {
    fn ids(&self, refs: &[ConnectionRef]) -> Vec<String> {
        refs.iter()
            .filter_map(|r| match r {
                ConnectionRef::Id(id) => Some(id.clone()),
                ConnectionRef::Key { .. } => self.0.get(&by_key(r)?).cloned(),
            })
            .collect()
    }
}

/// The connections a row makes by key, each with the field it is for (a connection by id
/// needs no lookup).
fn key_refs(mapped: &MappedRow) -> Vec<(String, ConnectionKey)> {
    let mut refs = Vec::new();
    if let Some(parents) = &mapped.parent_ids {
        refs.extend(
            parents
                .iter()
                .filter_map(by_key)
                .map(|k| ("parent_ids".to_string(), k)),
        );
    }
    for f in &mapped.fields {
        if let FieldValue::Connect(list) = &f.value {
            refs.extend(
                list.iter()
                    .filter_map(by_key)
                    .map(|k| (f.field_id.clone(), k)),
            );
        }
    }
    refs
}

/// Connections by key: looked up once per run (cached), batched per connected pipe/table.
pub(super) async fn resolve_connections(
    shared: &RunShared,
    slots: &mut [Slot],
) -> Result<ResolvedConnections, EngineError> {
    let mut wanted: HashMap<(String, String), HashSet<String>> = HashMap::new();
    {
        let cache = shared.connections.lock().await;
        for slot in slots.iter().filter(|s| s.outcome.is_none()) {
            let ItemKind::Send { mapped, .. } = &slot.item.kind else {
                continue;
            };
            for (_, k) in key_refs(mapped) {
                if !cache.contains_key(&k) {
                    let (repo, key_field, key) = k;
                    wanted.entry((repo, key_field)).or_default().insert(key);
                }
            }
        }
    }
    for ((repo, key_field), keys) in wanted {
        let keys: Vec<String> = keys.into_iter().collect();
        let field = FieldDef {
            id: key_field.clone(),
            uuid: None,
            internal_id: None,
            label: key_field.clone(),
            field_type: FieldType::ShortText,
            required: false,
            options: Vec::new(),
        };
        let target = match repo.strip_prefix("pipe:") {
            Some(pipe) => Repo::Pipe(pipe.to_string()),
            None => Repo::Table(repo.strip_prefix("table:").unwrap_or(&repo).to_string()),
        };
        let results = shared.client.find_by_field(&target, &field, &keys).await?;
        let mut cache = shared.connections.lock().await;
        for (key, result) in keys.into_iter().zip(results) {
            let resolved = match result {
                Ok(ids) if ids.len() == 1 => Ok(ids.into_iter().next().unwrap_or_default()),
                Ok(ids) if ids.is_empty() => {
                    Err(format!("nothing in {repo} has {key_field} = '{key}'"))
                }
                Ok(ids) => Err(format!(
                    "{} items in {repo} have {key_field} = '{key}'",
                    ids.len()
                )),
                Err(e) => Err(format!(
                    "looking up {key_field} = '{key}' in {repo}: {}",
                    e.message
                )),
            };
            cache.insert((repo.clone(), key_field.clone(), key), resolved);
        }
    }
    let cache = shared.connections.lock().await;
    let mut resolved = HashMap::new();
    for slot in slots.iter_mut().filter(|s| s.outcome.is_none()) {
        let ItemKind::Send { mapped, .. } = &slot.item.kind else {
            continue;
        };
        let mut problem = None;
        for (field, k) in key_refs(mapped) {
            match cache.get(&k) {
                Some(Ok(id)) => {
                    resolved.insert(k, id.clone());
                }
                Some(Err(reason)) => {
                    problem = Some((field, reason.clone()));
                    break;
                }
                None => {
                    let (repo, key_field, key) = &k;
                    let reason = format!("{key_field} = '{key}' in {repo} was not looked up");
                    problem = Some((field, reason));
                    break;
                }
            }
        }
        if let Some((field, reason)) = problem {
            let mut failure = failure_for(
                &slot.item,
                FailureCode::UnknownReference,
                format!("cannot connect: {reason}"),
            );
            if let Some(column) = shared.mapper.column_of(&field) {
                failure = failure.with_column(column);
            }
            slot.outcome = Some(Outcome::Failed {
                failure: failure.with_field(field),
                clear_intent: false,
            });
        }
    }
    Ok(ResolvedConnections(resolved))
}
