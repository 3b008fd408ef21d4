//! A bounded, deterministic fuzz of `POST /graphql`: random token soup, mutated valid
//! documents and declarations, hostile variables (huge, deep, wrongly typed), selection
//! and value nesting far beyond depth 15, complexity far beyond 50,000 (directly, through
//! aliases, and through exponentially inlining fragments). Every answer must be HTTP 200
//! with either `data` or errors that all carry an `extensions.code`, each within a
//! timeout, and the server must still answer a valid request at the end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pipefy_emulator::EmulatorConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// Total time the generated cases may take (the fixed cases come on top, about 6 s in a
/// debug build).
const BUDGET: Duration = Duration::from_secs(6);
/// Per request: an answer slower than this is a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RANDOM_CASES: usize = 4_000;

/// Valid documents with their variables: the seeds of the mutations.
fn seeds() -> Vec<(String, Value)> {
    let card_sel = "id title done due_date current_phase { id name } labels { id name } assignees { id name email } fields { name value field { id } }";
    vec![
        (
            "query($id: ID!) { card(id: $id) { id title } }".into(),
            json!({"id": "900004"}),
        ),
        (
            format!("query Batch($v0: ID!, $v1: Int, $v2: String) {{ op0: cards(pipe_id: $v0, first: $v1, after: $v2, search: {{include_done: true}}) {{ pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {card_sel} }} }} }} }}"),
            json!({"v0": "302", "v1": 50, "v2": null}),
        ),
        (
            "query($p: ID!, $f: String!, $v: String!) { findCards(pipeId: $p, search: {fieldId: $f, fieldValue: $v}, first: 2) { edges { node { id } } } }".into(),
            json!({"p": "302", "f": "project_code", "v": "P-100"}),
        ),
        (
            "query($r: ID!, $w: FilterSet!) { records(repoId: $r, where: $w, first: 2) { totalCount edges { node { id title } } } }".into(),
            json!({"r": "301", "w": {"field": uuid_of("301", "external_id"), "eq": "CUST-0001"}}),
        ),
        (
            "query($id: ID!) { pipe(id: $id) { id name phases { id name fields { id uuid } cards_can_be_moved_to_phases { id } } start_form_fields { id type options } labels { id } } }".into(),
            json!({"id": "301"}),
        ),
        (
            "query($t: String!, $f: String!, $v: String!) { findRecords(tableId: $t, search: {fieldId: $f, fieldValue: $v}) { edges { node { id title } } } }".into(),
            json!({"t": "tbl_accounts", "f": "code", "v": "ACME"}),
        ),
        (
            "mutation Batch($v0: UpdateFieldsValuesInput!, $v1: UpdateCardInput!) { op0: updateFieldsValues(input: $v0) { success userErrors { field message } updatedNode { ... on Card { id } ... on TableRecord { id } } } op1: updateCard(input: $v1) { card { id } } }".into(),
            json!({"v0": {"nodeId": "900004", "values": [{"fieldId": "seats", "value": [12], "operation": "REPLACE"}]}, "v1": {"id": "900001", "title": "Website relaunch"}}),
        ),
        (
            "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id title } clientMutationId } }".into(),
            json!({"i": {"pipe_id": "301", "fields_attributes": [{"field_id": "external_id", "field_value": "FUZZ-1"}, {"field_id": "customer_name", "field_value": "Fuzz"}]}}),
        ),
        (
            "query Q($x: ID!, $full: Boolean!) { ...F } fragment F on Query { card(id: $x) { id title @include(if: $full) } }".into(),
            json!({"x": "900004", "full": true}),
        ),
        (
            "{ __type(name: \"CreateCardInput\") { name inputFields { name type { name kind ofType { name } } } } }".into(),
            json!({}),
        ),
    ]
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    "$",
    "!",
    "@",
    "...",
    "=",
    ",",
    "\"",
    "\"\"\"",
    "#",
    "\n",
    " ",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "on",
    "card",
    "cards",
    "id",
    "title",
    "pipe",
    "phases",
    "input",
    "createCard",
    "updateCard",
    "deleteCard",
    "ID",
    "ID!",
    "String",
    "String!",
    "Int",
    "[ID]",
    "[ID!]!",
    "Boolean",
    "CreateCardInput!",
    "$x",
    "$id",
    "$v0",
    "null",
    "true",
    "1",
    "-1",
    "1e999",
    "99999999999999999999",
    "\"s\"",
    "\\u0000",
    "é",
    "\u{1F600}",
    "__typename",
    "__schema",
    "@include(if: true)",
    "@skip(if: $x)",
];

const TYPES: &[&str] = &[
    "ID",
    "ID!",
    "String",
    "String!",
    "Int",
    "Int!",
    "[ID]",
    "[ID]!",
    "[ID!]!",
    "[[ID]]",
    "Boolean!",
    "Float",
    "UndefinedInput",
    "[UndefinedInput]",
    "CreateCardInput!",
    "UpdateCardInput!",
    "FilterSet",
    "FindCards!",
    "Card",
    "Nope!",
    "DateTime",
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

fn token_soup(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..120);
    (0..n)
        .map(|_| *pick(rng, TOKENS))
        .collect::<Vec<_>>()
        .join(if rng.gen_bool(0.5) { " " } else { "" })
}

fn char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// One random edit of a document's text.
fn mutate_text(rng: &mut StdRng, doc: &str) -> String {
    let len = doc.len();
    let a = char_boundary(doc, rng.gen_range(0..=len));
    let b = char_boundary(doc, rng.gen_range(a..=len));
    match rng.gen_range(0..7) {
        0 => format!("{}{}", &doc[..a], &doc[b..]),
        1 => format!("{}{}{}", &doc[..a], pick(rng, TOKENS), &doc[a..]),
        2 => format!("{}{}{}", &doc[..b], &doc[a..b], &doc[b..]),
        3 => {
            // Re-type one declared variable.
            let decls: Vec<usize> = doc.match_indices(": ").map(|(i, _)| i + 2).collect();
            match decls.get(rng.gen_range(0..decls.len().max(1))) {
                Some(&at) => {
                    let end = doc[at..]
                        .find([',', ')', ' ', '='])
                        .map(|e| at + e)
                        .unwrap_or(len);
                    format!("{}{}{}", &doc[..at], pick(rng, TYPES), &doc[end..])
                }
                None => doc.to_string(),
            }
        }
        4 => doc.replacen('!', "", 1),
        5 => doc.replacen("$", "$zz", 1),
        _ => doc[..a].to_string(),
    }
}

fn random_json(rng: &mut StdRng, depth: usize) -> Value {
    match rng.gen_range(0..if depth > 90 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.gen_bool(0.5)),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>() * 1e300),
        4 => json!("x".repeat(rng.gen_range(0..50))),
        5 => json!(pick(
            rng,
            &["900004", "301", "", "tbl_accounts", "REPLACE", "\u{0}"]
        )),
        6 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        7 => {
            let mut m = Map::new();
            for k in ["id", "pipe_id", "nodeId", "values", "fieldId", "value", "x"] {
                if rng.gen_bool(0.3) {
                    m.insert(k.to_string(), random_json(rng, depth + 1));
                }
            }
            Value::Object(m)
        }
        _ => {
            // A deep chain (below serde_json's own limit of 128 for the whole body).
            let mut v = json!("leaf");
            for _ in 0..rng.gen_range(1..(100 - depth.min(99)).max(2)) {
                v = json!([v]);
            }
            v
        }
    }
}

fn mutate_vars(rng: &mut StdRng, vars: &Value) -> Value {
    let mut m = vars.as_object().cloned().unwrap_or_default();
    match rng.gen_range(0..5) {
        0 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            if let Some(k) = keys.get(rng.gen_range(0..keys.len().max(1))) {
                m.insert(k.clone(), random_json(rng, 0));
            }
        }
        1 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            if let Some(k) = keys.get(rng.gen_range(0..keys.len().max(1))) {
                m.remove(k);
            }
        }
        2 => {
            m.insert("unexpected".into(), random_json(rng, 0));
        }
        3 => return random_json(rng, 0),
        _ => {}
    }
    Value::Object(m)
}

/// `{ pipe(id: 301) { phases { pipe { phases { ... { id } } } } } }` with `depth` fields.
fn deep_valid(depth: usize) -> String {
    let mut open = String::from("{ pipe(id: 301) { ");
    let mut close = String::from("} }");
    for i in 1..depth.saturating_sub(1) {
        open.push_str(if i % 2 == 1 { "phases { " } else { "pipe { " });
        close.push_str(" }");
    }
    format!("{open}id {close}")
}

/// Fragments F0..Fn, each spreading the next twice: 2^n fields once inlined.
fn fragment_bomb(n: usize) -> String {
    let mut doc = String::from("query { ...F0 }\n");
    for i in 0..n {
        doc.push_str(&format!(
            "fragment F{i} on Query {{ ...F{j} ...F{j} }}\n",
            j = i + 1
        ));
    }
    doc.push_str(&format!("fragment F{n} on Query {{ me {{ id }} }}\n"));
    doc
}

#[derive(Default, Debug)]
struct Seen {
    data: usize,
    codes: std::collections::BTreeMap<String, usize>,
}

impl Seen {
    fn code(&self, c: &str) -> usize {
        self.codes.get(c).copied().unwrap_or(0)
    }
}

/// Sends one case and checks the answer's shape; returns the body.
async fn check(e: &Emu, body: Value, seen: &mut Seen, what: &str) -> Value {
    let started = Instant::now();
    let r = e
        .http
        .post(e.h.graphql_url())
        .header("Authorization", format!("Bearer {TOKEN}"))
        .timeout(REQUEST_TIMEOUT)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|err| panic!("{what}: no answer ({err}) for {}", snippet(&body)));
    let status = r.status().as_u16();
    let text = r.text().await.expect("body read");
    assert_eq!(
        status,
        200,
        "{what}: HTTP {status}: {text:.300} for {}",
        snippet(&body)
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{what}: not JSON ({err}): {text:.300}"));
    match v.get("errors") {
        Some(errors) => {
            let errors = errors.as_array().expect("errors is an array");
            assert!(!errors.is_empty(), "{what}: empty errors: {text:.300}");
            for err in errors {
                assert!(err["message"].is_string(), "{what}: {err}");
                let code = err["extensions"]["code"].as_str().unwrap_or_default();
                assert!(!code.is_empty(), "{what}: an error without code: {err}");
                *seen.codes.entry(code.to_string()).or_default() += 1;
            }
            if let Some(d) = v.get("data") {
                assert!(d.is_object() || d.is_null(), "{what}: {text:.300}");
            }
        }
        None => {
            assert!(
                v["data"].is_object(),
                "{what}: neither errors nor data: {text:.300}"
            );
            seen.data += 1;
        }
    }
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "{what}: took {:?}",
        started.elapsed()
    );
    v
}

fn snippet(body: &Value) -> String {
    let s = body.to_string();
    s.chars().take(300).collect()
}

#[tokio::test]
async fn fuzzed_documents_get_coded_errors_or_data_and_the_server_keeps_serving() {
    let e = emu_with(EmulatorConfig {
        rate_limit_requests: 1_000_000,
        ..EmulatorConfig::default()
    })
    .await;
    let mut seen = Seen::default();
    let seeds = seeds();

    // Fixed hostile cases first.
    for depth in [16, 40, 64, 65, 100, 127, 300, 5_000] {
        let body = check(&e, json!({"query": deep_valid(depth)}), &mut seen, "deep").await;
        assert_eq!(code(&body), "MAX_DEPTH_EXCEEDED", "depth {depth}: {body}");
        assert_eq!(
            message(&body),
            format!("Query has depth of {depth}, which exceeds max depth of 15")
        );
    }
    assert!(
        check(&e, json!({"query": deep_valid(15)}), &mut seen, "deep").await["data"].is_object()
    );
    for depth in [10, 100, 127, 129, 10_000] {
        let q = format!(
            "query {{ pipes(ids: {}\"301\"{}) {{ id }} }}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let body = check(&e, json!({"query": q}), &mut seen, "deep list").await;
        assert!(body.get("data").is_none(), "depth {depth}: {body}");
        let q = format!(
            "query {{ card(id: 1) {{ id }} }} fragment X on Query {{ cards(pipe_id: 1, search: {}) {{ totalCount }} }}",
            "{title: \"a\", x: ".repeat(depth) + &"}".repeat(depth)
        );
        check(&e, json!({"query": q}), &mut seen, "deep object").await;
    }
    let many: String = (0..60).map(|i| format!("f{i}: title ")).collect();
    for first in [1_000, 1_000_000, i32::MAX as i64] {
        let q = format!(
            "{{ cards(pipe_id: 301, first: {first}) {{ edges {{ node {{ {many} }} }} }} }}"
        );
        let body = check(&e, json!({"query": q}), &mut seen, "complex").await;
        assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED", "{body}");
    }
    let aliases: String = (0..60_000).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let body = check(
        &e,
        json!({"query": format!("{{ {aliases} }}")}),
        &mut seen,
        "aliases",
    )
    .await;
    assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED", "{}", snippet(&body));
    let flat: String = "id ".repeat(300_000);
    let body = check(
        &e,
        json!({"query": format!("{{ me {{ {flat} }} }}")}),
        &mut seen,
        "flat",
    )
    .await;
    assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED", "{}", snippet(&body));
    for n in [20, 40, 64] {
        let body = check(&e, json!({"query": fragment_bomb(n)}), &mut seen, "bomb").await;
        assert!(body.get("data").is_none(), "{}", snippet(&body));
        assert_eq!(code(&body), "MAX_COMPLEXITY_EXCEEDED", "{}", snippet(&body));
    }
    // Thousands of operations sharing a big fragment, and thousands of variables.
    let mut doc: String = (0..3_000)
        .map(|i| format!("query Q{i}($x: ID!) {{ ...F }}\n"))
        .collect();
    doc.push_str("fragment F on Query {");
    for j in 0..2_000 {
        doc.push_str(&format!(" c{j}: card(id: $x) {{ id }}"));
    }
    doc.push_str(" }");
    let body = check(
        &e,
        json!({"query": doc, "operationName": "Q7"}),
        &mut seen,
        "ops",
    )
    .await;
    assert!(body.get("data").is_none(), "{}", snippet(&body));
    let decls: String = (0..10_000).map(|i| format!("$v{i}: ID, ")).collect();
    let uses: String = (0..10_000)
        .map(|i| format!("c{i}: card(id: $v{i}) {{ id }} "))
        .collect();
    let body = check(
        &e,
        json!({"query": format!("query({decls}) {{ {uses} }}")}),
        &mut seen,
        "vars",
    )
    .await;
    assert_eq!(code(&body), "variableMismatch", "{}", snippet(&body));
    assert!(body["errors"].as_array().unwrap().len() <= 100);
    // Huge variables.
    let q = "query($id: ID!) { card(id: $id) { id } }";
    for vars in [
        json!({"id": "9".repeat(1_000_000)}),
        json!({"id": (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>()}),
        Value::Object((0..20_000).map(|i| (format!("k{i}"), json!(i))).collect()),
    ] {
        check(
            &e,
            json!({"query": q, "variables": vars}),
            &mut seen,
            "huge vars",
        )
        .await;
    }
    let body = check(
        &e,
        json!({"query": "mutation($v: [UndefinedInput]) { updateCardField(input: {card_id: 900004, field_id: \"notes\", new_value: $v}) { success } }",
               "variables": {"v": ["y".repeat(500_000)]}}),
        &mut seen,
        "huge value",
    )
    .await;
    assert!(body.get("errors").is_some() || body["data"]["updateCardField"]["success"] == true);

    // Generated cases, deterministic.
    let mut rng = StdRng::seed_from_u64(0x5EED_F00D);
    let started = Instant::now();
    let mut cases = 0;
    while cases < MAX_RANDOM_CASES && started.elapsed() < BUDGET {
        cases += 1;
        let (doc, vars) = pick(&mut rng, &seeds).clone();
        let body = match rng.gen_range(0..10) {
            0 => json!({"query": token_soup(&mut rng)}),
            1..=4 => {
                let mut d = doc;
                for _ in 0..rng.gen_range(1..4) {
                    d = mutate_text(&mut rng, &d);
                }
                json!({"query": d, "variables": vars})
            }
            5 | 6 => json!({"query": doc, "variables": mutate_vars(&mut rng, &vars)}),
            7 => {
                let d = mutate_text(&mut rng, &doc);
                json!({"query": d, "variables": mutate_vars(&mut rng, &vars)})
            }
            8 => {
                json!({"query": doc, "variables": vars, "operationName": pick(&mut rng, &["Q", "Batch", "", "nope"])})
            }
            _ => json!({"query": doc, "variables": vars}),
        };
        check(&e, body, &mut seen, &format!("case {cases}")).await;
    }
    assert!(cases >= 50, "only {cases} cases ran in {BUDGET:?}");
    eprintln!(
        "{cases} generated cases in {:?}; answers: {seen:?}",
        started.elapsed()
    );

    // The run produced every kind of answer it is meant to exercise.
    for c in [
        "GRAPHQL_PARSE_FAILED",
        "variableMismatch",
        "variableNotUsed",
        "variableNotDefined",
        "argumentLiteralsIncompatible",
        "MAX_DEPTH_EXCEEDED",
        "MAX_COMPLEXITY_EXCEEDED",
    ] {
        assert!(seen.code(c) > 0, "no {c} answer in {seen:?}");
    }
    assert!(seen.data > 10, "{seen:?}");
    assert_eq!(seen.code("INTERNAL_SERVER_ERROR"), 0, "{seen:?}");

    // Still serving.
    let d = e
        .data(
            "query($id: ID!) { card(id: $id) { id } }",
            json!({"id": "900004"}),
        )
        .await;
    assert_eq!(d["card"]["id"], "900004");
}
