//! The Pipefy client against the emulator over HTTP: every operation, alias mapping, each
//! error class, the rate limiter, both token kinds, schema fetch, lookups, pagination and
//! secrecy. With `PIPEFY_TOKEN` and `PIPEFY_TEST_PIPE_ID` set, a read-only contract check
//! also runs against real Pipefy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipefy_emulator::{EmulatorConfig, EmulatorHandle, Faults, MissingIdCode};
use pipefy_sync::pipefy::{
    ClientConfig, CreateCardInput, CreateTableRecordInput, Credentials, CredentialsFn,
    CredentialsProvider, ErrorClass, FieldOperation, FieldValueInput, Mutation, NodeFieldValue,
    PipefyClient, PipefyError, Secret, StaticCredentials, UpdateCardInput, UpdateTableRecordInput,
};
use serde_json::json;

const DEMO_TOKEN: &str = "demo-token";

async fn emulator() -> EmulatorHandle {
    emulator_with(EmulatorConfig::default()).await
}

async fn emulator_with(config: EmulatorConfig) -> EmulatorHandle {
    pipefy_emulator::start(config).await.unwrap()
}

/// Short timeouts and backoff so fault tests stay fast; a generous rate bound.
fn fast_config(emu: &EmulatorHandle) -> ClientConfig {
    ClientConfig {
        endpoint: emu.graphql_url(),
        requests_per_window: 10_000,
        window: Duration::from_secs(1),
        max_in_flight: 4,
        mutations_per_request: 20,
        lookups_per_request: 20,
        request_timeout: Duration::from_millis(2_000),
        max_retries: 3,
        throttle_patience: Duration::from_millis(300),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
    }
}

fn pat(token: &str) -> Arc<dyn CredentialsProvider> {
    Arc::new(StaticCredentials(Credentials::PersonalToken(Secret::new(
        token,
    ))))
}

fn client(emu: &EmulatorHandle) -> PipefyClient {
    PipefyClient::new(fast_config(emu), pat(DEMO_TOKEN)).unwrap()
}

fn new_card(key: &str) -> Mutation {
    Mutation::CreateCard(CreateCardInput {
        pipe_id: "301".into(),
        title: Some(format!("Customer {key}")),
        fields_attributes: vec![
            FieldValueInput {
                field_id: "external_id".into(),
                field_value: json!(key),
            },
            FieldValueInput {
                field_id: "customer_name".into(),
                field_value: json!(format!("Customer {key}")),
            },
        ],
        ..Default::default()
    })
}

fn rename_card(id: &str, title: &str) -> Mutation {
    Mutation::UpdateCard(UpdateCardInput {
        id: id.into(),
        title: Some(title.into()),
        ..Default::default()
    })
}

fn cards_with_key(emu: &EmulatorHandle, key: &str) -> usize {
    emu.snapshot()
        .cards
        .iter()
        .filter(|c| c.fields.get("external_id") == Some(&json!(key)))
        .count()
}

#[tokio::test]
async fn every_operation_round_trips() {
    let emu = emulator().await;
    let c = client(&emu);

    let created = c
        .mutate(vec![
            Mutation::CreateCard(CreateCardInput {
                pipe_id: "301".into(),
                title: Some("Wayne Enterprises".into()),
                phase_id: Some("3011".into()),
                due_date: Some("2030-01-02T03:04:05Z".into()),
                assignee_ids: Some(vec!["1002".into()]),
                label_ids: Some(vec!["310003".into()]),
                parent_ids: Some(vec!["900001".into()]),
                fields_attributes: vec![
                    FieldValueInput {
                        field_id: "external_id".into(),
                        field_value: json!("CUST-WAYNE"),
                    },
                    FieldValueInput {
                        field_id: "customer_name".into(),
                        field_value: json!("Wayne Enterprises"),
                    },
                    FieldValueInput {
                        field_id: "email".into(),
                        field_value: json!("bruce@wayne.example"),
                    },
                ],
            }),
            Mutation::CreateTableRecord(CreateTableRecordInput {
                table_id: "tbl_accounts".into(),
                title: Some("Wayne".into()),
                fields_attributes: vec![
                    FieldValueInput {
                        field_id: "code".into(),
                        field_value: json!("WAYNE"),
                    },
                    FieldValueInput {
                        field_id: "name".into(),
                        field_value: json!("Wayne"),
                    },
                ],
                ..Default::default()
            }),
        ])
        .await
        .unwrap();
    let card_id = created[0].as_ref().unwrap().id.clone().unwrap();
    let record_id = created[1].as_ref().unwrap().id.clone().unwrap();
    let snap = emu.snapshot();
    let card = snap.card(&card_id).unwrap();
    assert_eq!(card.pipe_id, "301");
    assert_eq!(card.title, "Wayne Enterprises");
    assert_eq!(card.phase_id, "3011");
    assert_eq!(card.assignees, vec!["1002"]);
    assert_eq!(card.labels, vec!["310003"]);
    assert_eq!(card.parent_ids, vec!["900001"]);
    assert!(card.due_date.as_deref().unwrap().starts_with("2030-01-02"));
    assert_eq!(card.fields["external_id"], json!("CUST-WAYNE"));
    assert_eq!(
        snap.record(&record_id).unwrap().fields["code"],
        json!("WAYNE")
    );

    let updated = c
        .mutate(vec![
            rename_card(&card_id, "Wayne Ent."),
            Mutation::UpdateCardField {
                card_id: card_id.clone(),
                field_id: "email".into(),
                value: json!("alfred@wayne.example"),
            },
            Mutation::UpdateFieldsValues {
                node_id: card_id.clone(),
                values: vec![
                    NodeFieldValue {
                        field_id: "seats".into(),
                        value: json!(42),
                        operation: FieldOperation::Replace,
                    },
                    NodeFieldValue {
                        field_id: "tags".into(),
                        value: json!(["310001"]),
                        operation: FieldOperation::Add,
                    },
                ],
            },
            Mutation::UpdateTableRecord(UpdateTableRecordInput {
                id: record_id.clone(),
                title: Some("Wayne Corp".into()),
                ..Default::default()
            }),
            Mutation::SetTableRecordFieldValue {
                record_id: record_id.clone(),
                field_id: "region".into(),
                value: json!("Europe"),
            },
            Mutation::UpdateFieldsValues {
                node_id: record_id.clone(),
                values: vec![NodeFieldValue {
                    field_id: "name".into(),
                    value: json!("Wayne Corporation"),
                    operation: FieldOperation::Replace,
                }],
            },
        ])
        .await
        .unwrap();
    for (i, r) in updated.iter().enumerate() {
        let ok = r.as_ref().unwrap_or_else(|e| panic!("op {i}: {e}"));
        let expected = if i < 3 { &card_id } else { &record_id };
        assert_eq!(ok.id.as_ref(), Some(expected), "op {i}");
    }
    // The move goes in its own call: mutate does not order operations across requests.
    let moved = c
        .mutate(vec![Mutation::MoveCardToPhase {
            card_id: card_id.clone(),
            phase_id: "3012".into(),
        }])
        .await
        .unwrap();
    assert!(moved[0].is_ok(), "{moved:?}");

    let snap = emu.snapshot();
    let card = snap.card(&card_id).unwrap();
    assert_eq!(card.title, "Wayne Ent.");
    assert_eq!(card.phase_id, "3012");
    assert_eq!(card.fields["email"], json!("alfred@wayne.example"));
    assert_eq!(card.fields["seats"], json!(42));
    assert_eq!(card.fields["tags"], json!(["310001"]));
    let rec = snap.record(&record_id).unwrap();
    assert_eq!(rec.fields["region"], json!("Europe"));
    assert_eq!(rec.fields["name"], json!("Wayne Corporation"));

    let deleted = c
        .mutate(vec![
            Mutation::DeleteCard {
                id: card_id.clone(),
            },
            Mutation::DeleteTableRecord {
                id: record_id.clone(),
            },
        ])
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let snap = emu.snapshot();
    assert!(snap.card(&card_id).is_none());
    assert!(snap.record(&record_id).is_none());

    let stats = emu.stats();
    for name in [
        "createCard",
        "updateCard",
        "updateCardField",
        "updateFieldsValues",
        "deleteCard",
        "moveCardToPhase",
        "createTableRecord",
        "updateTableRecord",
        "setTableRecordFieldValue",
        "deleteTableRecord",
    ] {
        assert!(
            stats.mutations.get(name).copied().unwrap_or(0) >= 1,
            "{name} not executed"
        );
    }
    assert_eq!(c.stats().mutations, 11);
    assert_eq!(c.stats().requests, 4);
}

#[tokio::test]
async fn aliases_map_back_to_their_ops_across_requests() {
    let emu = emulator().await;
    let c = client(&emu);
    // 45 ops -> 3 requests of <= 20. Every 7th op is an update of a missing card.
    let ops: Vec<Mutation> = (0..45)
        .map(|i| {
            if i % 7 == 3 {
                rename_card(&format!("77777{i}"), "nope")
            } else {
                new_card(&format!("ALIAS-{i}"))
            }
        })
        .collect();
    let results = c.mutate(ops).await.unwrap();
    assert_eq!(results.len(), 45);
    let snap = emu.snapshot();
    for (i, r) in results.iter().enumerate() {
        if i % 7 == 3 {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.class, ErrorClass::Permanent, "op {i}");
            assert_eq!(e.code.as_deref(), Some("PERMISSION_DENIED"));
            assert_eq!(e.attempts, 1);
        } else {
            let id = r.as_ref().unwrap().id.clone().unwrap();
            // The id returned for op i is the card holding op i's key.
            assert_eq!(
                snap.card(&id).unwrap().fields["external_id"],
                json!(format!("ALIAS-{i}")),
                "op {i}"
            );
        }
    }
    let s = c.stats();
    assert_eq!(s.requests, 3);
    assert_eq!(s.mutations, 45);
    assert_eq!(s.retries, 0);
}

#[tokio::test]
async fn server_errors_make_creates_ambiguous_and_retry_idempotent_ops() {
    let emu = emulator().await;
    let c = client(&emu);
    emu.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let before = emu.snapshot().cards.len();
    let r = c
        .mutate(vec![new_card("FIVE-1"), rename_card("900004", "Acme 5xx")])
        .await
        .unwrap();
    let create = r[0].as_ref().unwrap_err();
    assert_eq!(create.class, ErrorClass::Ambiguous);
    assert_eq!(create.attempts, 1);
    assert!(create.code.as_deref().unwrap().starts_with("HTTP_5"));
    let update = r[1].as_ref().unwrap_err();
    assert_eq!(update.class, ErrorClass::Retryable);
    assert_eq!(update.attempts, 4);
    let s = c.stats();
    // The create went once; the update was re-sent alone three times.
    assert_eq!(s.requests, 4);
    assert_eq!(s.retries, 3);
    assert_eq!(s.mutations, 1 + 4);
    assert_eq!(emu.snapshot().cards.len(), before);

    // Intermittent 5xx: idempotent updates get through by retrying.
    emu.set_faults(Faults {
        seed: 11,
        error_5xx_rate: 0.4,
        ..Faults::default()
    });
    let c = PipefyClient::new(
        ClientConfig {
            max_retries: 10,
            mutations_per_request: 1,
            ..fast_config(&emu)
        },
        pat(DEMO_TOKEN),
    )
    .unwrap();
    let ops: Vec<Mutation> = (0..6)
        .map(|i| rename_card("900004", &format!("Acme {i}")))
        .collect();
    let r = c.mutate(ops).await.unwrap();
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    assert!(c.stats().retries > 0);
    assert!(emu.stats().faults.error_5xx > 0);
}

#[tokio::test]
async fn timeouts_make_creates_ambiguous_and_the_key_lookup_resolves_them() {
    let emu = emulator().await;
    let c = PipefyClient::new(
        ClientConfig {
            request_timeout: Duration::from_millis(300),
            max_retries: 1,
            ..fast_config(&emu)
        },
        pat(DEMO_TOKEN),
    )
    .unwrap();
    emu.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_hold_ms: 1_500,
        timeout_applied_share: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    let r = c
        .mutate(vec![new_card("TIMEOUT-1"), rename_card("900004", "Acme T")])
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(1_400));
    let create = r[0].as_ref().unwrap_err();
    assert_eq!(create.class, ErrorClass::Ambiguous);
    assert_eq!(create.code.as_deref(), Some("TIMEOUT"));
    let update = r[1].as_ref().unwrap_err();
    assert_eq!(update.class, ErrorClass::Retryable);
    assert_eq!(update.attempts, 2);
    // The emulator applied the create before holding: exactly why it is not retried.
    assert_eq!(cards_with_key(&emu, "TIMEOUT-1"), 1);

    emu.set_faults(Faults::default());
    let schema = c.pipe_schema("301").await.unwrap();
    let key = schema.field("external_id").unwrap();
    let found = c
        .find_cards_by_field("301", key, &["TIMEOUT-1".to_string()])
        .await
        .unwrap();
    assert_eq!(found[0].as_ref().unwrap().len(), 1);
}

#[tokio::test]
async fn connection_resets_make_creates_ambiguous() {
    let emu = emulator().await;
    let c = client(&emu);
    emu.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let r = c
        .mutate(vec![new_card("RESET-1"), rename_card("900004", "Acme R")])
        .await
        .unwrap();
    let create = r[0].as_ref().unwrap_err();
    assert_eq!(create.class, ErrorClass::Ambiguous, "{create}");
    assert_eq!(create.attempts, 1);
    let update = r[1].as_ref().unwrap_err();
    assert_eq!(update.class, ErrorClass::Retryable, "{update}");
    assert_eq!(update.attempts, 4);
    assert!(emu.stats().faults.resets >= 4);
    assert_eq!(cards_with_key(&emu, "RESET-1"), 0);
}

#[tokio::test]
async fn applied_but_reported_failed_create_is_ambiguous() {
    let emu = emulator().await;
    let c = client(&emu);
    emu.set_faults(Faults {
        applied_but_failed_rate: 1.0,
        ..Faults::default()
    });
    let r = c
        .mutate(vec![new_card("ABF-1"), rename_card("900004", "Acme ABF")])
        .await
        .unwrap();
    let create = r[0].as_ref().unwrap_err();
    assert_eq!(create.class, ErrorClass::Ambiguous);
    assert_eq!(create.code.as_deref(), Some("INTERNAL_SERVER_ERROR"));
    assert_eq!(create.attempts, 1);
    // The update is idempotent: re-sent (and re-applied) until the retries ran out.
    let update = r[1].as_ref().unwrap_err();
    assert_eq!(update.class, ErrorClass::Retryable);
    assert_eq!(update.attempts, 4);
    // Applied once, never repeated.
    assert_eq!(cards_with_key(&emu, "ABF-1"), 1);
    assert_eq!(emu.stats().mutations.get("createCard").copied(), Some(1));
}

#[tokio::test]
async fn throttle_bursts_are_retried_counted_and_slow_the_limiter() {
    let emu = emulator().await;
    let config = ClientConfig {
        max_retries: 5,
        ..fast_config(&emu)
    };
    let c = PipefyClient::new(config, pat(DEMO_TOKEN)).unwrap();
    assert_eq!(c.stats().rate_per_window, 10_000);
    emu.set_faults(Faults {
        throttle_burst: 3,
        ..Faults::default()
    });
    let r = c.mutate(vec![new_card("THROTTLE-1")]).await.unwrap();
    // 429 means nothing was applied: even a create is simply retried.
    let ok = r[0].as_ref().unwrap();
    assert!(ok.id.is_some());
    assert_eq!(cards_with_key(&emu, "THROTTLE-1"), 1);
    let s = c.stats();
    assert_eq!(s.throttles, 3);
    assert_eq!(s.retries, 3);
    assert_eq!(s.requests, 4);
    assert_eq!(emu.stats().status_429, 3);
    // Slowed down (halved per burst, once per 429 of a later request)...
    assert!(s.rate_per_window <= 10_000 / 4, "{s:?}");
    // ...and back to the bound after a run of successes.
    for _ in 0..120 {
        c.card("900004").await.unwrap();
    }
    assert_eq!(c.stats().rate_per_window, 10_000);

    // 429s are retried for `throttle_patience` (300 ms here), not `max_retries` (3) times:
    // a throttle says "wait". A burst longer than that: retryable, never ambiguous.
    emu.set_faults(Faults {
        throttle_burst: 500,
        ..Faults::default()
    });
    let c = client(&emu);
    let r = c.mutate(vec![new_card("THROTTLE-2")]).await.unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable);
    assert_eq!(e.code.as_deref(), Some("THROTTLED"));
    assert!(c.stats().throttles > 4, "{:?}", c.stats());
    assert_eq!(cards_with_key(&emu, "THROTTLE-2"), 0);
}

#[tokio::test]
async fn rate_limiter_runs_close_to_the_bound_without_429s() {
    // The emulator allows 44/s per token; the client is told 40/s.
    let emu = emulator_with(EmulatorConfig {
        rate_limit_requests: 44,
        rate_limit_window: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await;
    let c = PipefyClient::new(
        ClientConfig {
            requests_per_window: 40,
            window: Duration::from_secs(1),
            max_in_flight: 8,
            mutations_per_request: 1,
            lookups_per_request: 1,
            ..fast_config(&emu)
        },
        pat(DEMO_TOKEN),
    )
    .unwrap();
    let field = c.table_schema("tbl_accounts").await.unwrap();
    let code = field.field("code").unwrap().clone();
    let values: Vec<String> = (0..60).map(|i| format!("K{i}")).collect();
    let started = Instant::now();
    let r = c
        .find_records_by_field("tbl_accounts", &code, &values)
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(r.iter().all(Result::is_ok));
    // 61 requests at 40/s: the last one starts at 60/40 = 1.5 s.
    assert!(elapsed >= 1.45, "faster than the bound: {elapsed}");
    assert!(
        elapsed <= 1.5 / 0.9 + 0.1,
        "below 90% of the bound: {elapsed}"
    );
    assert_eq!(emu.stats().status_429, 0);
    assert_eq!(c.stats().requests, 61);
}

#[tokio::test]
async fn requests_in_flight_are_bounded() {
    let emu = emulator().await;
    emu.set_faults(Faults {
        latency_ms: 100,
        ..Faults::default()
    });
    let timed = |max_in_flight: usize| {
        let c = PipefyClient::new(
            ClientConfig {
                max_in_flight,
                mutations_per_request: 1,
                ..fast_config(&emu)
            },
            pat(DEMO_TOKEN),
        )
        .unwrap();
        async move {
            let ops = (0..6)
                .map(|i| rename_card("900004", &format!("Acme {i}")))
                .collect();
            let started = Instant::now();
            let r = c.mutate(ops).await.unwrap();
            assert!(r.iter().all(Result::is_ok));
            started.elapsed()
        }
    };
    // 6 requests of 100 ms: three waves with 2 in flight, one wave with 6.
    let two = timed(2).await;
    let six = timed(6).await;
    assert!(two >= Duration::from_millis(300), "{two:?}");
    assert!(six + Duration::from_millis(50) < two, "{six:?} vs {two:?}");
}

#[tokio::test]
async fn permanent_errors_carry_pipefy_code_and_message() {
    let emu = emulator().await;
    let c = client(&emu);
    let r = c
        .mutate(vec![
            // A nonexistent card: Pipefy answers PERMISSION_DENIED.
            rename_card("123456789", "x"),
            // An unknown field: success false with userErrors.
            Mutation::UpdateFieldsValues {
                node_id: "900004".into(),
                values: vec![NodeFieldValue {
                    field_id: "no_such_field".into(),
                    value: json!("x"),
                    operation: FieldOperation::Replace,
                }],
            },
            // A value outside the select's options.
            Mutation::UpdateCardField {
                card_id: "900004".into(),
                field_id: "plan".into(),
                value: json!("Platinum"),
            },
            // A move along no phase connection.
            Mutation::MoveCardToPhase {
                card_id: "900004".into(),
                phase_id: "3011".into(),
            },
        ])
        .await
        .unwrap();
    let errs: Vec<_> = r.iter().map(|x| x.as_ref().unwrap_err()).collect();
    assert!(errs
        .iter()
        .all(|e| e.class == ErrorClass::Permanent && e.attempts == 1));
    assert_eq!(errs[0].code.as_deref(), Some("PERMISSION_DENIED"));
    assert_eq!(errs[0].message, "Permission denied");
    assert_eq!(errs[1].code.as_deref(), Some("USER_ERROR"));
    assert!(
        errs[1].message.contains("no_such_field") || errs[1].message.contains("not found"),
        "{}",
        errs[1].message
    );
    assert!(errs[2].code.is_some());
    assert!(errs[3].code.is_some());
    assert_eq!(c.stats().retries, 0);

    // A member (not admin) may read but not write.
    let mut config = EmulatorConfig::default();
    config.fixture.tokens.push(pipefy_emulator::PersonalToken {
        token: "member-token".into(),
        user_id: "1002".into(),
    });
    let emu = emulator_with(config).await;
    let c = PipefyClient::new(fast_config(&emu), pat("member-token")).unwrap();
    assert!(c.pipe_schema("301").await.is_ok());
    let r = c.mutate(vec![new_card("MEMBER-1")]).await.unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::Permanent, Some("PERMISSION_DENIED"))
    );
    assert_eq!(cards_with_key(&emu, "MEMBER-1"), 0);

    // Too many values are refused before sending.
    let values = (0..31)
        .map(|i| NodeFieldValue {
            field_id: format!("f{i}"),
            value: json!(i),
            operation: FieldOperation::Replace,
        })
        .collect();
    let r = c
        .mutate(vec![Mutation::UpdateFieldsValues {
            node_id: "900004".into(),
            values,
        }])
        .await
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().attempts, 0);
}

#[tokio::test]
async fn service_account_tokens_are_fetched_and_refreshed() {
    let mut config = EmulatorConfig::default();
    config
        .fixture
        .service_accounts
        .push(pipefy_emulator::ServiceAccount {
            client_id: "short-lived".into(),
            client_secret: "short-secret-value".into(),
            user_id: "1004".into(),
            expires_in: 1,
        });
    let emu = emulator_with(config).await;
    let sa = |id: &str, secret: &str| -> Arc<dyn CredentialsProvider> {
        Arc::new(StaticCredentials(Credentials::ServiceAccount {
            client_id: id.into(),
            client_secret: Secret::new(secret),
            token_url: emu.token_url(),
        }))
    };
    let c = PipefyClient::new(fast_config(&emu), sa("demo-sa-client", "demo-sa-secret")).unwrap();
    assert_eq!(c.pipe_schema("301").await.unwrap().id, "301");
    c.table_schema("tbl_accounts").await.unwrap();
    assert_eq!(c.stats().token_requests, 1);
    assert_eq!(emu.stats().oauth_tokens_issued, 1);

    // Revoked/expired server-side: the 401 triggers one fetch of a new token.
    emu.expire_tokens();
    let clone = c.clone();
    assert_eq!(clone.pipe_schema("301").await.unwrap().id, "301");
    assert_eq!(emu.stats().status_401, 1);
    assert_eq!(emu.stats().oauth_tokens_issued, 2);
    assert_eq!(c.stats().token_requests, 2);

    // A token that lives 1 s is refreshed before it expires: no 401.
    let c = PipefyClient::new(fast_config(&emu), sa("short-lived", "short-secret-value")).unwrap();
    c.pipe_schema("301").await.unwrap();
    tokio::time::sleep(Duration::from_millis(850)).await;
    c.pipe_schema("301").await.unwrap();
    assert_eq!(c.stats().token_requests, 2);
    assert_eq!(emu.stats().status_401, 1);

    // Wrong secret: a run-level Unauthorized that does not show the secret.
    let c = PipefyClient::new(fast_config(&emu), sa("demo-sa-client", "wrong-secret-xyz")).unwrap();
    let e = c.mutate(vec![new_card("SA-BAD")]).await.unwrap_err();
    assert!(matches!(e, PipefyError::Unauthorized(_)), "{e}");
    assert!(!e.to_string().contains("wrong-secret-xyz"));
    assert!(!format!("{e:?}").contains("wrong-secret-xyz"));
}

#[tokio::test]
async fn personal_token_is_refreshed_once_on_401() {
    let emu = emulator().await;
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    // The first read returns a rotated-away token; re-reading the secret gives the new one.
    let provider = Arc::new(CredentialsFn(move |refresh: bool| {
        if refresh {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Credentials::PersonalToken(Secret::new(DEMO_TOKEN)))
        } else {
            Ok(Credentials::PersonalToken(Secret::new("stale-token-0001")))
        }
    }));
    let c = PipefyClient::new(fast_config(&emu), provider).unwrap();
    let r = c.mutate(vec![new_card("PAT-1")]).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    c.card("900004").await.unwrap().unwrap();
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(emu.stats().status_401, 1);
    assert_eq!(cards_with_key(&emu, "PAT-1"), 1);

    // Still rejected after the refresh: a run-level error, token not shown.
    let c = PipefyClient::new(fast_config(&emu), pat("revoked-token-9876")).unwrap();
    let e = c.mutate(vec![new_card("PAT-2")]).await.unwrap_err();
    assert!(matches!(e, PipefyError::Unauthorized(_)), "{e}");
    assert!(!e.to_string().contains("revoked-token-9876"));
    assert!(!format!("{e:?}").contains("revoked-token-9876"));
    assert!(matches!(
        c.pipe_schema("301").await,
        Err(PipefyError::Unauthorized(_))
    ));
    assert_eq!(cards_with_key(&emu, "PAT-2"), 0);
}

#[tokio::test]
async fn schema_fetch_reads_fields_phases_labels_members() {
    let emu = emulator().await;
    let c = client(&emu);
    let p = c.pipe_schema("301").await.unwrap();
    assert_eq!(p.name, "Customer onboarding");
    assert_eq!(p.start_form_phase_id.as_deref(), Some("3011"));
    let ext = p.field("external_id").unwrap();
    assert!(ext.required);
    assert_eq!(
        ext.uuid.as_deref(),
        Some("30d08781-5a5b-41b0-aae3-5e9eaab6d241")
    );
    assert_eq!(ext.internal_id.as_deref(), Some("428000101"));
    assert_eq!(
        p.field("plan").unwrap().options,
        vec!["Free", "Pro", "Enterprise"]
    );
    assert_eq!(
        p.field("account").unwrap().field_type,
        pipefy_sync::pipefy::FieldType::Connector
    );
    assert_eq!(p.phases.len(), 4);
    assert_eq!(
        p.phases[0].cards_can_be_moved_to_phases,
        vec!["3012", "3014"]
    );
    assert!(p.phases[2].done);
    assert!(p.field("go_live_date").unwrap().required);
    assert_eq!(p.labels.len(), 3);
    assert!(p
        .members
        .iter()
        .any(|m| m.id == "1002" && m.email == "bruno.lima@example.com"));

    let t = c.table_schema("tbl_accounts").await.unwrap();
    assert_eq!(t.name, "Accounts");
    assert!(t.field("code").unwrap().required);
    assert_eq!(t.field("region").unwrap().options.len(), 4);

    let e = c.pipe_schema("999").await.unwrap_err();
    assert_eq!(
        e,
        PipefyError::Api {
            code: Some("PERMISSION_DENIED".into()),
            message: "Permission denied".into()
        }
    );
}

#[tokio::test]
async fn documents_refused_for_their_size_are_sent_again_in_halves() {
    // An alias cap Pipefy does not document, lower than the client's settings.
    let emu = emulator_with(EmulatorConfig {
        max_aliases: Some(30),
        ..EmulatorConfig::default()
    })
    .await;
    let c = PipefyClient::new(
        ClientConfig {
            mutations_per_request: 40,
            lookups_per_request: 100,
            ..fast_config(&emu)
        },
        pat(DEMO_TOKEN),
    )
    .unwrap();
    // 40 creates in one document: refused before anything ran, then sent as 20 + 20.
    let ops: Vec<Mutation> = (0..40).map(|i| new_card(&format!("SPLIT-{i}"))).collect();
    let results = c.mutate(ops).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    for i in 0..40 {
        assert_eq!(
            cards_with_key(&emu, &format!("SPLIT-{i}")),
            1,
            "card {i} once"
        );
    }
    let s = c.stats();
    assert_eq!(
        (s.requests, s.splits),
        (3, 1),
        "the refused document and its halves"
    );
    // Later writes are cut to the half at once.
    let more: Vec<Mutation> = (40..80).map(|i| new_card(&format!("SPLIT-{i}"))).collect();
    assert!(c.mutate(more).await.unwrap().iter().all(|r| r.is_ok()));
    let s = c.stats();
    assert_eq!((s.requests, s.splits), (5, 1), "{s:?}");

    // 70 lookups: halved until a document fits (70 -> 35 -> 17), every key answered.
    let key = c
        .pipe_schema("301")
        .await
        .unwrap()
        .field("external_id")
        .unwrap()
        .clone();
    let values: Vec<String> = (0..70).map(|i| format!("SPLIT-{i}")).collect();
    let found = c.find_cards_by_field("301", &key, &values).await.unwrap();
    for (i, ids) in found.iter().enumerate() {
        assert_eq!(
            ids.as_ref().map(Vec::len).ok(),
            Some(1),
            "lookup {i}: {ids:?}"
        );
    }
    let after_lookups = c.stats();
    assert!(after_lookups.splits >= 3, "{after_lookups:?}");
    // And the next lookups go 17 to a document, with no refusal.
    let again = c
        .find_cards_by_field("301", &key, &values[..34])
        .await
        .unwrap();
    assert!(again.iter().all(|r| r.is_ok()));
    let s = c.stats();
    assert_eq!(s.requests - after_lookups.requests, 2, "{s:?}");
    assert_eq!(s.splits, after_lookups.splits);
}

#[tokio::test]
async fn lookups_return_ids_per_key_in_batches() {
    let emu = emulator().await;
    let c = client(&emu);
    let schema = c.pipe_schema("301").await.unwrap();
    let key = schema.field("external_id").unwrap().clone();
    // A duplicate of CUST-0001 and a key full of GraphQL punctuation.
    let odd = "we\"ird } key { $x".to_string();
    let r = c
        .mutate(vec![new_card("CUST-0001"), new_card(&odd)])
        .await
        .unwrap();
    let dup_id = r[0].as_ref().unwrap().id.clone().unwrap();
    let odd_id = r[1].as_ref().unwrap().id.clone().unwrap();

    let values = vec!["CUST-0001".to_string(), "NOPE".to_string(), odd.clone()];
    let before = c.stats().requests;
    // With the uuid: records(where: {field: uuid, eq}).
    let by_uuid = c.find_cards_by_field("301", &key, &values).await.unwrap();
    let mut dup = by_uuid[0].clone().unwrap();
    dup.sort();
    assert_eq!(dup, {
        let mut v = vec!["900004".to_string(), dup_id.clone()];
        v.sort();
        v
    });
    assert_eq!(by_uuid[1], Ok(vec![]));
    assert_eq!(by_uuid[2], Ok(vec![odd_id.clone()]));
    // Without a uuid: findCards by slug, same answers.
    let no_uuid = pipefy_sync::pipefy::FieldDef {
        uuid: None,
        ..key.clone()
    };
    let by_slug = c
        .find_cards_by_field("301", &no_uuid, &values)
        .await
        .unwrap();
    assert_eq!(by_slug[1], Ok(vec![]));
    assert_eq!(by_slug[2], Ok(vec![odd_id]));
    assert_eq!(by_slug[0].as_ref().unwrap().len(), 2);
    assert_eq!(c.stats().requests - before, 2);
    let q = emu.stats().queries;
    assert!(q.get("records").copied().unwrap_or(0) >= 3);
    assert!(q.get("findCards").copied().unwrap_or(0) >= 3);

    // Tables, 45 keys: 3 requests of <= 20 aliases.
    let t = c.table_schema("tbl_accounts").await.unwrap();
    let code = t.field("code").unwrap();
    let mut keys: Vec<String> = (0..42).map(|i| format!("MISSING-{i}")).collect();
    keys.extend(["ACME", "GLOBEX", "INITECH"].map(String::from));
    let before = c.stats().requests;
    let found = c
        .find_records_by_field("tbl_accounts", code, &keys)
        .await
        .unwrap();
    assert_eq!(c.stats().requests - before, 3);
    assert!(found[..42].iter().all(|r| r == &Ok(vec![])));
    assert_eq!(found[42], Ok(vec!["Xa7KpQ2m".to_string()]));
    assert_eq!(found[43], Ok(vec!["bR4nT8wZ".to_string()]));
    assert_eq!(found[44], Ok(vec!["Lm3Yd9Qe".to_string()]));

    // A lookup in a pipe the caller cannot see fails per key, permanently.
    let r = c
        .find_cards_by_field("999", &key, &values[..1])
        .await
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().class, ErrorClass::Permanent);
}

#[tokio::test]
async fn card_listing_paginates_and_cards_read_back() {
    let emu = emulator().await;
    let c = client(&emu);
    let ops: Vec<Mutation> = (0..117)
        .map(|i| {
            Mutation::CreateCard(CreateCardInput {
                pipe_id: "302".into(),
                title: Some(format!("Project {i}")),
                fields_attributes: vec![FieldValueInput {
                    field_id: "project_code".into(),
                    field_value: json!(format!("P-X{i}")),
                }],
                ..Default::default()
            })
        })
        .collect();
    assert!(c.mutate(ops).await.unwrap().iter().all(Result::is_ok));

    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = c.list_cards("302", after.as_deref()).await.unwrap();
        pages += 1;
        assert!(page.cards.len() <= 50);
        ids.extend(page.cards.iter().map(|c| c.id.clone()));
        if !page.has_next_page {
            break;
        }
        after = page.end_cursor;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 120);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 120);
    // The card in a done phase is listed too.
    assert!(ids.contains(&"900003".to_string()));

    let card = c.card("900004").await.unwrap().unwrap();
    assert_eq!(card.title.as_deref(), Some("Acme Corp"));
    assert_eq!(card.field("external_id"), Some("CUST-0001"));
    assert_eq!(card.current_phase.as_ref().unwrap().id, "3012");
    assert_eq!(card.labels[0].id, "310001");
    assert_eq!(card.assignees[0].id, "1002");
    assert!(!card.done);
    // Pipefy's usual answer for a missing id is PERMISSION_DENIED: an error.
    assert!(matches!(
        c.card("123456789").await,
        Err(PipefyError::Api { .. })
    ));

    let emu = emulator_with(EmulatorConfig {
        nonexistent_id_code: MissingIdCode::ResourceNotFound,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(client(&emu).card("123456789").await.unwrap(), None);
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let emu = emulator().await;
    let token = "super-secret-token-4242";
    let c = PipefyClient::new(fast_config(&emu), pat(token)).unwrap();
    let e = c.pipe_schema("301").await.unwrap_err();
    let creds = Credentials::PersonalToken(Secret::new(token));
    let sa = Credentials::ServiceAccount {
        client_id: "id".into(),
        client_secret: Secret::new(token),
        token_url: emu.token_url(),
    };
    for text in [
        format!("{c:?}"),
        format!("{e}"),
        format!("{e:?}"),
        format!("{creds:?}"),
        format!("{sa:?}"),
        format!("{:?}", c.stats()),
        format!("{}", Secret::new(token)),
    ] {
        assert!(!text.contains(token), "{text}");
    }
    // And a good client's failures (5xx bodies, messages) do not carry it either.
    emu.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let c = client(&emu);
    let r = c.mutate(vec![new_card("S-1")]).await.unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert!(!e.to_string().contains(DEMO_TOKEN));
    assert!(!format!("{c:?}").contains(DEMO_TOKEN));
}

/// A server that answers every request with the same raw HTTP response.
async fn raw_server(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the whole request first: closing with unread data would send a
                // reset instead of our answer.
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/graphql")
}

#[tokio::test]
async fn non_json_truncated_and_unexpected_bodies_are_classified() {
    let cases: [(&'static str, &str); 4] = [
        (
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\nConnection: close\r\n\r\n<html>hi</html>",
            "not valid JSON",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"data\": {\"op0\": {\"card\"",
            "",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            "neither data nor errors",
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\n500 Internal Server Error",
            "HTTP 500",
        ),
    ];
    for (response, expect) in cases {
        let url = raw_server(response).await;
        let c = PipefyClient::new(
            ClientConfig {
                endpoint: url,
                max_retries: 1,
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
                request_timeout: Duration::from_millis(1_000),
                ..ClientConfig::default()
            },
            pat(DEMO_TOKEN),
        )
        .unwrap();
        let r = c
            .mutate(vec![new_card("ODD"), rename_card("1", "x")])
            .await
            .unwrap();
        let create = r[0].as_ref().unwrap_err();
        assert_eq!(create.class, ErrorClass::Ambiguous, "{response}: {create}");
        assert!(create.message.contains(expect), "{create}");
        let update = r[1].as_ref().unwrap_err();
        assert_eq!(update.class, ErrorClass::Retryable, "{response}: {update}");
        assert_eq!(update.attempts, 2);
        // Queries: a clear error, no panic.
        let e = c.pipe_schema("301").await.unwrap_err();
        assert!(matches!(e, PipefyError::Unavailable { .. }), "{e}");
    }
}

/// Read-only checks against real Pipefy, when credentials are provided.
#[tokio::test]
async fn contract_real_pipefy_read_only() {
    let (Ok(token), Ok(pipe_id)) = (
        std::env::var("PIPEFY_TOKEN"),
        std::env::var("PIPEFY_TEST_PIPE_ID"),
    ) else {
        println!("skipped: set PIPEFY_TOKEN and PIPEFY_TEST_PIPE_ID to check the client against real Pipefy");
        return;
    };
    let config = ClientConfig {
        endpoint: std::env::var("PIPEFY_ENDPOINT")
            .unwrap_or_else(|_| pipefy_sync::pipefy::DEFAULT_ENDPOINT.to_string()),
        max_retries: 2,
        ..ClientConfig::default()
    };
    let c = PipefyClient::new(config, pat(&token)).unwrap();
    let schema = c.pipe_schema(&pipe_id).await.unwrap();
    assert_eq!(schema.id, pipe_id);
    assert!(!schema.phases.is_empty());
    let probe = vec![format!("pipefy-sync-contract-{}", uuid::Uuid::new_v4())];
    if let Some(field) = schema.start_form_fields.iter().find(|f| f.uuid.is_some()) {
        let r = c
            .find_cards_by_field(&pipe_id, field, &probe)
            .await
            .unwrap();
        assert_eq!(r[0], Ok(vec![]), "records lookup");
    }
    if let Some(field) = schema.start_form_fields.first() {
        let slug_only = pipefy_sync::pipefy::FieldDef {
            uuid: None,
            ..field.clone()
        };
        let r = c
            .find_cards_by_field(&pipe_id, &slug_only, &probe)
            .await
            .unwrap();
        assert_eq!(r[0], Ok(vec![]), "findCards lookup");
    }
    let page = c.list_cards(&pipe_id, None).await.unwrap();
    assert!(page.cards.len() <= 50);
    if let Some(card) = page.cards.first() {
        assert_eq!(c.card(&card.id).await.unwrap().unwrap().id, card.id);
    }
    if let Ok(table_id) = std::env::var("PIPEFY_TEST_TABLE_ID") {
        let t = c.table_schema(&table_id).await.unwrap();
        if let Some(field) = t.fields.first() {
            let r = c
                .find_records_by_field(&table_id, field, &probe)
                .await
                .unwrap();
            assert_eq!(r[0], Ok(vec![]), "findRecords lookup");
        }
    }
    println!(
        "contract checks passed against {}",
        pipefy_sync::pipefy::DEFAULT_ENDPOINT
    );
}

fn new_record(code: &str, due: Option<&str>) -> Mutation {
    Mutation::CreateTableRecord(CreateTableRecordInput {
        table_id: "tbl_accounts".into(),
        title: Some(format!("Account {code}")),
        due_date: due.map(str::to_string),
        fields_attributes: vec![
            FieldValueInput {
                field_id: "code".into(),
                field_value: json!(code),
            },
            FieldValueInput {
                field_id: "name".into(),
                field_value: json!(format!("Account {code}")),
            },
        ],
        ..Default::default()
    })
}

#[tokio::test]
async fn a_refused_guessed_shape_falls_back_to_the_documented_form() {
    // The emulator refuses `due_date`/`label_ids` on CreateTableRecordInput, as Pipefy
    // would if the guess is wrong: a document-level validation error, no data.
    let emu = emulator_with(EmulatorConfig {
        reject_unverified_shapes: true,
        ..EmulatorConfig::default()
    })
    .await;
    let c = client(&emu);
    let due = "2024-09-01T10:00:00Z";
    let r = c
        .mutate(vec![new_record("FB-1", Some(due)), new_card("FB-CARD")])
        .await
        .unwrap();
    let id = r[0].as_ref().unwrap().id.clone().unwrap();
    assert!(r[1].is_ok(), "{:?}", r[1]);
    assert_eq!(c.stats().shape_fallbacks, 1);
    // Created once, and the due date arrived through updateTableRecord.
    let snap = emu.snapshot();
    let rec = snap.record(&id).unwrap();
    assert!(rec.due_date.is_some(), "{rec:?}");
    assert_eq!(
        snap.records
            .iter()
            .filter(|r| r.field_text("code").as_deref() == Some("FB-1"))
            .count(),
        1
    );
    assert_eq!(cards_with_key(&emu, "FB-CARD"), 1);
    let m = emu.stats().mutations;
    assert_eq!(m.get("createTableRecord").copied(), Some(1));
    assert_eq!(m.get("updateTableRecord").copied(), Some(1));
    // The client remembers: the next create goes out documented at once.
    let r = c.mutate(vec![new_record("FB-2", Some(due))]).await.unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert_eq!(c.stats().shape_fallbacks, 1);

    // Against a server that takes the guess, nothing falls back.
    let emu = emulator().await;
    let c = client(&emu);
    let r = c.mutate(vec![new_record("FB-3", Some(due))]).await.unwrap();
    let id = r[0].as_ref().unwrap().id.clone().unwrap();
    assert_eq!(c.stats().shape_fallbacks, 0);
    assert!(emu.snapshot().record(&id).unwrap().due_date.is_some());
    assert_eq!(emu.stats().mutations.get("updateTableRecord"), None);
}

#[tokio::test]
async fn a_field_without_a_canonical_uuid_is_looked_up_by_slug() {
    // Pipefy answers a slug or a non-canonical uuid in `records(where:)` with its generic
    // internal error; the client never sends one, it uses findCards instead.
    let emu = emulator().await;
    let c = client(&emu);
    let schema = c.pipe_schema("301").await.unwrap();
    let key = schema.field("external_id").unwrap().clone();
    let odd = pipefy_sync::pipefy::FieldDef {
        uuid: key.uuid.as_ref().map(|u| u.to_uppercase()),
        ..key.clone()
    };
    let r = c
        .find_cards_by_field("301", &odd, &["CUST-0001".to_string()])
        .await
        .unwrap();
    assert_eq!(r[0], Ok(vec!["900004".to_string()]));
    let q = emu.stats().queries;
    assert_eq!(q.get("records"), None);
    assert_eq!(q.get("findCards").copied(), Some(1));
    assert_eq!(c.stats().retries, 0);
}
