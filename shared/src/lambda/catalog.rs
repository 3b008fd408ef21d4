//! The destination catalog: the destination files under the config prefix, loaded once per
//! container and refreshed after a few minutes so a `terraform apply` reaches warm
//! containers. Handlers see it through the [`Catalog`] trait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::config::{parse_destination, Destination, DestinationSet};
use crate::store::ObjectStore;

use super::error::HandlerError;

/// The destinations a handler may run.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// One destination by name; a miss reloads the catalog once before it is an error, so
    /// a destination deployed a moment ago is found. A destination whose file does not parse
    /// is [`HandlerError::DestinationInvalid`] with the parse error.
    async fn get(&self, name: &str) -> Result<Destination, HandlerError>;
    /// The version (ETag) of the file a destination was loaded from.
    async fn version(&self, name: &str) -> Option<String>;
    /// Every valid destination, from the cached copy while it is fresh.
    async fn all(&self) -> Result<Arc<DestinationSet>, HandlerError>;
    /// Every valid destination, reloaded now.
    async fn refreshed(&self) -> Result<Arc<DestinationSet>, HandlerError>;
}

/// [`Catalog`] over destination files in an object store.
pub struct DestinationCatalog {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cache: Mutex<Option<(Instant, Arc<DestinationSet>)>>,
    /// Files that did not parse at the last load, by file stem (`customers` for
    /// `config/destinations/customers.yaml`), with why: one bad file must not stop the other
    /// destinations, but its error is what a run of it reports. Sorted, for stable messages.
    invalid: Mutex<Vec<(String, String)>>,
    /// Destination name -> the ETag of its file at the last load.
    versions: Mutex<HashMap<String, String>>,
}

const CATALOG_TTL: Duration = Duration::from_secs(300);

/// The destination a file is named for: its name without folders and `.yaml`/`.yml`.
fn file_stem(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
}

impl DestinationCatalog {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        DestinationCatalog {
            store,
            prefix: prefix.to_string(),
            cache: Mutex::new(None),
            invalid: Mutex::new(Vec::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The catalog, reloaded when the cached copy is older than `max_age`.
    pub async fn load(&self, max_age: Duration) -> Result<Arc<DestinationSet>, HandlerError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, set)) = cache.as_ref() {
            if at.elapsed() < max_age {
                return Ok(set.clone());
            }
        }
        let mut set = DestinationSet::new();
        let mut invalid = Vec::new();
        let mut versions = HashMap::new();
        let listed = self.store.list(&self.prefix).await.map_err(|e| {
            HandlerError::storage(
                format!("listing destination files under {}", self.prefix),
                e,
            )
        })?;
        for meta in listed {
            let Some(stem) = file_stem(&meta.key) else {
                continue;
            };
            let (_, bytes) = self
                .store
                .get_bytes(&meta.key)
                .await
                .map_err(|e| HandlerError::storage(format!("reading {}", meta.key), e))?;
            let file = format!("{}/{}", self.store.describe(), meta.key);
            let text = String::from_utf8_lossy(&bytes);
            match parse_destination(&file, &text) {
                Ok(dest) => {
                    versions.insert(dest.name.clone(), meta.etag.clone());
                    set.insert(dest.name.clone(), dest);
                }
                Err(e) => {
                    tracing::error!(file = %file, error = %e, "destination file is invalid; skipped");
                    invalid.push((stem.to_string(), e.to_string()));
                }
            }
        }
        *self.invalid.lock().await = invalid;
        *self.versions.lock().await = versions;
        let set = Arc::new(set);
        *cache = Some((Instant::now(), set.clone()));
        Ok(set)
    }
}

#[async_trait]
impl Catalog for DestinationCatalog {
    async fn version(&self, name: &str) -> Option<String> {
        self.versions.lock().await.get(name).cloned()
    }

    async fn all(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        self.load(CATALOG_TTL).await
    }

    /// Reloads the catalog now; used when a name or an uploaded object is not found in the
    /// cached copy, so a destination deployed a moment ago is found without waiting for the
    /// TTL. A miss is rare (a new destination, or a wrong name), so it costs little.
    async fn refreshed(&self) -> Result<Arc<DestinationSet>, HandlerError> {
        self.load(Duration::ZERO).await
    }

    async fn get(&self, name: &str) -> Result<Destination, HandlerError> {
        let mut all = self.all().await?;
        if !all.contains_key(name) {
            all = self.refreshed().await?;
        }
        if let Some(d) = all.get(name) {
            return Ok(d.clone());
        }
        let invalid = self.invalid.lock().await;
        if let Some((_, bad)) = invalid.iter().find(|(stem, _)| stem == name) {
            return Err(HandlerError::DestinationInvalid(bad.clone()));
        }
        let mut known = if all.is_empty() {
            format!(
                "none (no destination files under {}/{})",
                self.store.describe(),
                self.prefix
            )
        } else {
            all.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        if !invalid.is_empty() {
            let errors: Vec<&str> = invalid.iter().map(|(_, e)| e.as_str()).collect();
            known.push_str(&format!(
                "; files that do not parse: {}",
                errors.join(" | ")
            ));
        }
        Err(HandlerError::UnknownDestination {
            name: name.to_string(),
            known,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::WriteCondition;

    const VALID: &str = "pipe_id: \"1\"\noperation: create_card\nsource: { bucket: lake, layer: refined, table: customers }\nmapping:\n  title: name\ntoken: { secret: s }\n";

    async fn put(store: &MemoryStore, key: &str, text: &str) {
        store
            .put_bytes(key, Bytes::from(text.to_string()), WriteCondition::None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_invalid_file_is_the_error_of_its_own_destination_only() {
        let store = Arc::new(MemoryStore::new());
        let p = "config/destinations/";
        put(
            &store,
            &format!("{p}customers.yaml"),
            &format!("name: customers\n{VALID}"),
        )
        .await;
        // A broken file whose name contains another destination's name: it must not be
        // taken for that destination's error.
        put(&store, &format!("{p}old-customers.yaml"), "name: [unclosed").await;
        put(
            &store,
            &format!("{p}orders.yml"),
            "name: orders\npipe_id: 5\nbogus: 1\n",
        )
        .await;
        put(&store, &format!("{p}README.md"), "not a destination").await;
        let catalog = DestinationCatalog::new(store, p);

        assert_eq!(catalog.get("customers").await.unwrap().name, "customers");
        assert!(catalog.version("customers").await.is_some());
        match catalog.get("orders").await {
            Err(HandlerError::DestinationInvalid(m)) => assert!(m.contains("orders.yml"), "{m}"),
            other => panic!("{other:?}"),
        }
        match catalog.get("old-customers").await {
            Err(HandlerError::DestinationInvalid(m)) => {
                assert!(m.contains("old-customers.yaml"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match catalog.get("nobody").await {
            Err(HandlerError::UnknownDestination { known, .. }) => {
                assert!(known.starts_with("customers;"), "{known}");
                assert!(known.contains("files that do not parse"), "{known}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(catalog.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_destination_deployed_since_the_last_load_is_found() {
        let store = Arc::new(MemoryStore::new());
        let catalog = DestinationCatalog::new(store.clone(), "config/");
        assert!(matches!(
            catalog.get("late").await,
            Err(HandlerError::UnknownDestination { .. })
        ));
        put(&store, "config/late.yaml", &format!("name: late\n{VALID}")).await;
        assert!(
            catalog.all().await.unwrap().is_empty(),
            "cached within the TTL"
        );
        assert_eq!(catalog.get("late").await.unwrap().name, "late");
    }
}
