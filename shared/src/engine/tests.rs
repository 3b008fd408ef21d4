//! Fast tests of the stages with a fake Pipefy: planning, unknown outcomes, removals.
//! (The same paths run against the emulator over HTTP in tests/e2e.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::plan::{ItemKind, Planner, WorkItem};
use super::removed::RemovalOp;
use super::window::{process, Window};
use super::{LookupResults, PipefyApi, Repo, RunShared};
use crate::config::parse_destination;
use crate::mapping::{Mapper, Schema};
use crate::pipefy::schema::{FieldDef, FieldType, PhaseDef, PipeSchema};
use crate::pipefy::{
    Card, ClientStats, ErrorClass, Mutation, OpError, OpResult, OpSuccess, PipefyError,
    PresignedUrl, UploadBody, UploadError, UploadRequest, WriteGate,
};
use crate::report::RowAction;
use crate::source::{Provenance, Row};
use crate::state::{key_hash, Entry, Ledger, RecordId, SeenKeys};
use crate::store::ObjectMeta;
use crate::value::Value;

/// Answers writes from a script, one answer list per `mutate` call, and lookups from a map.
#[derive(Default)]
struct FakePipefy {
    answers: StdMutex<Vec<Vec<OpResult>>>,
    found: StdMutex<HashMap<String, Vec<Vec<String>>>>,
    sent: StdMutex<Vec<Vec<Mutation>>>,
    /// Per file name: how many more PUTs fail on the way before one succeeds.
    upload_failures: StdMutex<HashMap<String, u32>>,
    /// Storage paths of the PUTs that succeeded.
    uploads: StdMutex<Vec<String>>,
}

impl FakePipefy {
    fn answer(self, results: Vec<OpResult>) -> Self {
        self.answers.lock().unwrap().push(results);
        self
    }

    /// The successive answers of lookups of `key` (the last one repeats).
    fn finds(self, key: &str, answers: Vec<Vec<&str>>) -> Self {
        self.found.lock().unwrap().insert(
            key.into(),
            answers
                .into_iter()
                .map(|ids| ids.into_iter().map(String::from).collect())
                .collect(),
        );
        self
    }

    fn sent(&self) -> Vec<Vec<Mutation>> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl PipefyApi for FakePipefy {
    async fn schema(&self, _repo: &Repo) -> Result<Schema, PipefyError> {
        Ok(Schema::Pipe(pipe()))
    }

    async fn find_by_field(
        &self,
        _repo: &Repo,
        _field: &FieldDef,
        values: &[String],
    ) -> Result<LookupResults, PipefyError> {
        let mut found = self.found.lock().unwrap();
        Ok(values
            .iter()
            .map(|v| {
                let answers = found.entry(v.clone()).or_default();
                Ok(match answers.len() {
                    0 => Vec::new(),
                    1 => answers[0].clone(),
                    _ => answers.remove(0),
                })
            })
            .collect())
    }

    async fn mutate(
        &self,
        ops: Vec<Mutation>,
        _gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<OpResult>, PipefyError> {
        let n = ops.len();
        if n == 0 {
            // A window with nothing to write asks with no operations: no request.
            return Ok(Vec::new());
        }
        self.sent.lock().unwrap().push(ops);
        let mut answers = self.answers.lock().unwrap();
        let next = if answers.is_empty() {
            Vec::new()
        } else {
            answers.remove(0)
        };
        assert_eq!(
            next.len(),
            n,
            "the script answers every operation of the call"
        );
        Ok(next)
    }

    async fn card(&self, _id: &str) -> Result<Option<Card>, PipefyError> {
        Ok(None)
    }

    async fn current(
        &self,
        _repo: &Repo,
        ids: &[String],
    ) -> Result<super::pipefy_api::CurrentResults, PipefyError> {
        Ok(ids.iter().map(|_| Ok(None)).collect())
    }

    async fn page(
        &self,
        _of: &crate::pipefy::Listing,
        _after: Option<&str>,
    ) -> Result<crate::pipefy::CardPage, PipefyError> {
        Ok(crate::pipefy::CardPage {
            cards: Vec::new(),
            has_next_page: false,
            end_cursor: None,
        })
    }

    async fn table_organization(&self, _table_id: &str) -> Result<Option<String>, PipefyError> {
        Ok(Some("1".to_string()))
    }

    async fn presigned_urls(
        &self,
        requests: &[UploadRequest],
        _gate: Option<&dyn WriteGate>,
    ) -> Result<Vec<Result<PresignedUrl, OpError>>, PipefyError> {
        Ok(requests
            .iter()
            .enumerate()
            .map(|(n, r)| {
                let url = format!("http://127.0.0.1/orgs/o/uploads/{n}/{}?sig=s", r.file_name);
                PresignedUrl::parse(&url).map_err(|message| OpError {
                    class: ErrorClass::Permanent,
                    code: None,
                    message,
                    attempts: 1,
                })
            })
            .collect())
    }

    async fn put_upload(
        &self,
        target: &PresignedUrl,
        _file: UploadBody<'_>,
    ) -> Result<(), UploadError> {
        let name = target.storage_path.rsplit('/').next().unwrap_or_default();
        let mut failures = self.upload_failures.lock().unwrap();
        if let Some(left @ 1..) = failures.get_mut(name) {
            *left -= 1;
            return Err(UploadError::Transient {
                path: target.storage_path.clone(),
                reason: "the connection failed while sending the file".into(),
            });
        }
        self.uploads
            .lock()
            .unwrap()
            .push(target.storage_path.clone());
        Ok(())
    }

    fn stats(&self) -> ClientStats {
        ClientStats::default()
    }
}

fn field(id: &str, ty: FieldType, required: bool) -> FieldDef {
    FieldDef {
        id: id.into(),
        uuid: None,
        internal_id: None,
        label: id.into(),
        field_type: ty,
        required,
        options: Vec::new(),
    }
}

/// Pipe 301 of the stages' tests (also the drift judge's).
pub(super) fn pipe() -> PipeSchema {
    PipeSchema {
        id: "301".into(),
        name: "Customers".into(),
        start_form_phase_id: Some("10".into()),
        organization_id: None,
        phases: vec![PhaseDef {
            id: "10".into(),
            name: "Inbox".into(),
            done: false,
            fields: Vec::new(),
            cards_can_be_moved_to_phases: Vec::new(),
        }],
        start_form_fields: vec![
            field("customer_name", FieldType::ShortText, true),
            field("external_id", FieldType::ShortText, false),
            field("seats", FieldType::Number, false),
            field("documents", FieldType::Attachment, false),
        ],
        labels: Vec::new(),
        members: Vec::new(),
    }
}

fn shared(operation: &str, fake: Arc<FakePipefy>, removal: Option<RemovalOp>) -> Arc<RunShared> {
    let dest = parse_destination(
        "t.yaml",
        &format!(
            "name: t\npipe_id: \"301\"\noperation: {operation}\nkey: {{ columns: [cid], field: external_id }}\nsource: {{ path: data, layer: refined, table: customers }}\nmapping:\n  title: name\n  customer_name: name\n  seats: seats\ntoken: {{ env: T }}\nsync: {{ ambiguous_settle_seconds: 0 }}\n"
        ),
    )
    .unwrap();
    shared_with(dest, fake, removal, None)
}

/// The run's shared part for `dest`, compiled against [`pipe`].
fn shared_with(
    dest: crate::config::Destination,
    fake: Arc<FakePipefy>,
    removal: Option<RemovalOp>,
    attachments: Option<super::attachments::Attachments>,
) -> Arc<RunShared> {
    let mapper = Mapper::new(&dest, &Schema::Pipe(pipe())).unwrap();
    Arc::new(RunShared {
        key_field: pipe().field("external_id").cloned(),
        dest,
        mapper,
        client: fake,
        repo: Repo::Pipe("301".into()),
        dry_run: false,
        settle: Duration::ZERO,
        connections: Mutex::new(HashMap::new()),
        state: None,
        stopped: std::sync::atomic::AtomicBool::new(false),
        run_id: "run-1".into(),
        lease: None,
        removal,
        current_reads: Default::default(),
        attachments,
    })
}

fn row(line: u64, cells: &[(&str, &str)]) -> Row {
    Row {
        provenance: Provenance {
            file: Arc::from("refined/customers/a.csv"),
            line,
        },
        values: cells
            .iter()
            .map(|(c, v)| (Arc::from(*c), Value::Str((*v).to_string())))
            .collect(),
    }
}

fn file() -> ObjectMeta {
    ObjectMeta {
        key: "refined/customers/a.csv".into(),
        size: 1,
        etag: "\"e\"".into(),
        version_id: None,
    }
}

fn planner(ledger: Arc<Ledger>) -> Planner {
    Planner::new(ledger, Arc::new(Default::default()), false, false)
}

fn ambiguous() -> OpResult {
    Err(OpError {
        class: ErrorClass::Ambiguous,
        code: Some("TIMEOUT".into()),
        message: "no answer".into(),
        attempts: 1,
    })
}

async fn one_window(shared: &Arc<RunShared>, items: Vec<WorkItem>) -> Vec<super::window::DoneItem> {
    let mut w = Window::new(0);
    for item in items {
        w.push(item);
    }
    process(shared, w).await.unwrap().items
}

/// A new key's row planned against an empty ledger, then its window sent.
async fn plan_and_send(shared: &Arc<RunShared>, row: Row) -> Vec<super::window::DoneItem> {
    let ledger = Arc::new(Ledger::new());
    let mut seen = SeenKeys::new(ledger.clone());
    let (item, _) = planner(ledger).plan(shared, &file(), row, &mut seen);
    one_window(shared, vec![item]).await
}

#[tokio::test]
async fn a_row_that_does_not_map_still_counts_its_key_as_present() {
    let fake = Arc::new(FakePipefy::default());
    let s = shared("create_card", fake, None);
    let ledger = Arc::new(Ledger::new());
    let p = planner(ledger.clone());
    let mut seen = SeenKeys::new(ledger);
    let (item, known) = p.plan(
        &s,
        &file(),
        row(2, &[("cid", "K1"), ("name", "One"), ("seats", "many")]),
        &mut seen,
    );
    assert!(known, "the key was read");
    assert!(item.is_failure(), "seats is no number");
    assert!(
        seen.contains(key_hash("K1")),
        "K1 is present for the removal pass"
    );
    // A row without its key cell: its identity is unknown.
    let (item, known) = p.plan(
        &s,
        &file(),
        row(3, &[("name", "Two"), ("seats", "2")]),
        &mut seen,
    );
    assert!(!known && item.is_failure());
}

#[tokio::test]
async fn an_unconfirmed_create_found_by_its_key_is_recorded_and_not_sent_again() {
    let fake = Arc::new(
        FakePipefy::default()
            .answer(vec![ambiguous()])
            .finds("K1", vec![vec!["555"]]),
    );
    let s = shared("create_card", fake.clone(), None);
    let done = plan_and_send(
        &s,
        row(2, &[("cid", "K1"), ("name", "One"), ("seats", "1")]),
    )
    .await;
    assert_eq!(done[0].result.action, RowAction::Created);
    assert_eq!(done[0].result.id.as_deref(), Some("555"));
    assert_eq!(fake.sent().len(), 1, "the create was not sent twice");
    assert!(done[0].intent_done.is_some());
}

#[tokio::test]
async fn an_unconfirmed_create_surely_absent_is_sent_once_more() {
    let fake = Arc::new(
        FakePipefy::default()
            .answer(vec![ambiguous()])
            .answer(vec![Ok(OpSuccess {
                id: Some("7".into()),
            })])
            .finds("K1", vec![vec![]]),
    );
    let s = shared("create_card", fake.clone(), None);
    let done = plan_and_send(
        &s,
        row(2, &[("cid", "K1"), ("name", "One"), ("seats", "1")]),
    )
    .await;
    assert_eq!(done[0].result.action, RowAction::Created);
    assert_eq!(done[0].result.id.as_deref(), Some("7"));
    assert_eq!(fake.sent().len(), 2);
    // Two cards holding the key after an unknown outcome is a duplicate to report.
    let fake = Arc::new(
        FakePipefy::default()
            .answer(vec![ambiguous()])
            .finds("K2", vec![vec!["1", "2"]]),
    );
    let s = shared("create_card", fake.clone(), None);
    let done = plan_and_send(
        &s,
        row(3, &[("cid", "K2"), ("name", "Two"), ("seats", "2")]),
    )
    .await;
    assert_eq!(done[0].result.action, RowAction::Failed);
    assert_eq!(done[0].result.error_code.as_deref(), Some("DUPLICATE_KEY"));
    assert_eq!(fake.sent().len(), 1);
}

#[tokio::test]
async fn removals_forget_their_key_even_when_a_person_deleted_the_card_first() {
    let fake = Arc::new(FakePipefy::default().answer(vec![
        Ok(OpSuccess { id: None }),
        Err(OpError {
            class: ErrorClass::Permanent,
            code: Some("RESOURCE_NOT_FOUND".into()),
            message: "gone".into(),
            attempts: 1,
        }),
        Err(OpError {
            class: ErrorClass::Permanent,
            code: Some("PERMISSION_DENIED".into()),
            message: "no".into(),
            attempts: 1,
        }),
    ]));
    let s = shared("upsert_card", fake.clone(), Some(RemovalOp::Delete));
    let items = vec![
        WorkItem::removal(11, "900".into(), 1),
        WorkItem::removal(12, "901".into(), 2),
        WorkItem::removal(13, "902".into(), 3),
    ];
    assert!(items
        .iter()
        .all(|i| matches!(i.kind, ItemKind::Send { .. })));
    let done = one_window(&s, items).await;
    assert_eq!(
        fake.sent()[0],
        vec![
            Mutation::DeleteCard { id: "900".into() },
            Mutation::DeleteCard { id: "901".into() },
            Mutation::DeleteCard { id: "902".into() },
        ]
    );
    assert_eq!(done[0].result.action, RowAction::Deleted);
    assert_eq!(done[0].ledger_write, Some((11, None)));
    assert_eq!(
        done[1].result.action,
        RowAction::Deleted,
        "already gone counts as removed"
    );
    assert_eq!(done[1].ledger_write, Some((12, None)));
    assert_eq!(done[2].result.action, RowAction::Failed);
    assert_eq!(
        done[2].ledger_write, None,
        "a refused removal keeps its key"
    );
}

#[tokio::test]
async fn an_unchanged_row_is_not_sent_and_a_changed_one_is_updated() {
    let ok = || {
        Ok(OpSuccess {
            id: Some("42".into()),
        })
    };
    let fake = Arc::new(FakePipefy::default().answer(vec![ok(), ok()]));
    let s = shared("upsert_card", fake.clone(), None);
    let r = row(2, &[("cid", "K1"), ("name", "One"), ("seats", "1")]);
    let hash = crate::mapping::canonical_hash(&s.mapper.map(&r).unwrap());
    let mut ledger = Ledger::new();
    ledger.insert(
        key_hash("K1"),
        Entry::new(RecordId::Num(42), hash, crate::state::phase_hash(None)),
    );
    ledger.compact();
    let ledger = Arc::new(ledger);
    let p = planner(ledger.clone());
    let mut seen = SeenKeys::new(ledger);
    let (same, _) = p.plan(&s, &file(), r, &mut seen);
    assert!(
        matches!(same.kind, ItemKind::Done { .. }),
        "unchanged: nothing to send"
    );
    let done = one_window(&s, vec![same]).await;
    assert_eq!(done[0].result.action, RowAction::Unchanged);
    assert!(fake.sent().is_empty());
    // The same key with another seats value is an update of card 42, no lookup and no
    // create. (The whole row is sent again: its title and its fields.)
    let (changed, _) = p.plan(
        &s,
        &file(),
        row(3, &[("cid", "K1"), ("name", "One"), ("seats", "5")]),
        &mut SeenKeys::new(Arc::new(Ledger::new())),
    );
    let done = one_window(&s, vec![changed]).await;
    assert_eq!(
        done[0].result.action,
        RowAction::Updated,
        "{:?}",
        fake.sent()
    );
    assert_eq!(done[0].result.id.as_deref(), Some("42"));
    assert!(
        matches!(
            fake.sent()[0][..],
            [Mutation::UpdateCard(_), Mutation::UpdateFieldsValues { .. }]
        ),
        "{:?}",
        fake.sent()
    );
}

/// A run's share of attachments: a source store holding `files`, a fresh state.
async fn with_attachments(fake: Arc<FakePipefy>, files: &[&str]) -> Arc<RunShared> {
    let dest = parse_destination(
        "t.yaml",
        "name: t\npipe_id: \"301\"\noperation: create_card\nkey: { columns: [cid], field: external_id }\nsource: { path: data, layer: refined, table: customers }\nmapping:\n  title: name\n  customer_name: name\n  documents: { column: docs, transforms: [{ split: { separator: ';' } }], attach: { prefix: docs } }\ntoken: { env: T }\n",
    )
    .unwrap();
    let source: Arc<dyn crate::store::ObjectStore> = Arc::new(crate::store::MemoryStore::new());
    for f in files {
        source
            .put_bytes(
                &format!("docs/{f}"),
                bytes::Bytes::from_static(b"abc"),
                crate::store::WriteCondition::None,
            )
            .await
            .unwrap();
    }
    let state = crate::state::StateStore::new(Arc::new(crate::store::MemoryStore::new()), "", "t");
    let attachments = super::attachments::Attachments::new(
        &dest,
        "1".into(),
        [(None, source)].into_iter().collect(),
        &state,
    );
    let shared = shared_with(dest, fake, None, Some(attachments));
    let listing = files
        .iter()
        .map(|f| {
            let stat = crate::mapping::attach::ObjectStat {
                etag: format!("\"{f}\""),
                size: 3,
            };
            (format!("docs/{f}"), stat)
        })
        .collect();
    shared.mapper.attach_sources()[0].set_listing(Ok(listing));
    shared
}

#[tokio::test]
async fn an_upload_that_fails_on_the_way_is_tried_again_and_one_that_keeps_failing_fails_its_row() {
    let fake = Arc::new(FakePipefy::default().answer(vec![Ok(OpSuccess {
        id: Some("7".into()),
    })]));
    // a.pdf fails once, then goes; b.pdf fails every attempt.
    fake.upload_failures
        .lock()
        .unwrap()
        .extend([("a.pdf".to_string(), 1), ("b.pdf".to_string(), 99)]);
    let s = with_attachments(fake.clone(), &["a.pdf", "b.pdf"]).await;
    let ledger = Arc::new(Ledger::new());
    let mut seen = SeenKeys::new(ledger.clone());
    let p = planner(ledger);
    let (good, _) = p.plan(
        &s,
        &file(),
        row(2, &[("cid", "A"), ("name", "One"), ("docs", "a.pdf")]),
        &mut seen,
    );
    let (bad, _) = p.plan(
        &s,
        &file(),
        row(
            3,
            &[("cid", "B"), ("name", "Two"), ("docs", "a.pdf; b.pdf")],
        ),
        &mut seen,
    );
    let done = one_window(&s, vec![good, bad]).await;

    assert_eq!(
        done[0].result.action,
        RowAction::Created,
        "{:?}",
        done[0].result
    );
    let failure = done[1].failure.as_ref().expect("row 3 failed");
    assert_eq!(failure.field.as_deref(), Some("documents"));
    assert!(
        failure.message.contains("docs/b.pdf"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("gave up after 3 attempts"),
        "{}",
        failure.message
    );
    // Row 2's a.pdf went on its second attempt; row 3's a.pdf is its own upload (another
    // card), and row 3 sent nothing since its b.pdf never went.
    let uploads = fake.uploads.lock().unwrap().clone();
    assert_eq!(
        uploads.iter().filter(|u| u.ends_with("/a.pdf")).count(),
        2,
        "{uploads:?}"
    );
    assert!(
        !uploads.iter().any(|u| u.ends_with("/b.pdf")),
        "{uploads:?}"
    );
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "one create request: {sent:?}");
    let Mutation::CreateCard(input) = &sent[0][0] else {
        panic!("a create: {sent:?}");
    };
    let docs = input
        .fields_attributes
        .iter()
        .find(|f| f.field_id == "documents")
        .expect("documents sent");
    assert!(
        docs.field_value[0]
            .as_str()
            .unwrap_or_default()
            .starts_with("orgs/o/uploads/"),
        "{docs:?}"
    );
    let att = s.attachments.as_ref().unwrap();
    assert_eq!(
        att.files_uploaded.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}
