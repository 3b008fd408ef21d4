//! Aliased batches: several root fields in one GraphQL document (docs/pipefy-api.md §9), each with its
//! own variables, and the mapping of each alias's result (or error) back to its operation.

use serde_json::{Map, Value};

use super::error::{failure_from_errors, Failure, GqlError};

/// `mutation` or `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocKind {
    Query,
    Mutation,
}

impl DocKind {
    fn keyword(self) -> &'static str {
        match self {
            DocKind::Query => "query",
            DocKind::Mutation => "mutation",
        }
    }
}

/// Variables of one document. Every value goes through a variable, never into the text, so
/// no value can break or inject into the document.
#[derive(Debug, Default)]
pub(crate) struct Vars {
    decls: Vec<String>,
    values: Map<String, Value>,
    /// Render only the forms Pipefy's own material shows (no guessed members).
    pub(crate) documented_only: bool,
}

impl Vars {
    /// Declares a variable of GraphQL type `ty` holding `value`; returns `$name` to use in
    /// the document text.
    pub(crate) fn add(&mut self, ty: &str, value: Value) -> String {
        let name = format!("v{}", self.decls.len());
        self.decls.push(format!("${name}: {ty}"));
        self.values.insert(name.clone(), value);
        format!("${name}")
    }
}

/// One root field of a batch.
pub(crate) trait BatchOp: Sync {
    type Output: Send;

    /// The root field with arguments and selection, e.g. `createCard(input: $v0) { card { id } }`;
    /// values go through `vars`.
    fn render(&self, vars: &mut Vars) -> String;

    /// Whether an unknown outcome makes this operation ambiguous (creates) instead of
    /// retryable (idempotent operations and reads).
    fn is_create(&self) -> bool {
        false
    }

    /// A problem found before sending (e.g. too many values): fails without a request.
    fn precheck(&self) -> Option<Failure> {
        None
    }

    /// Whether this operation, rendered normally, uses a shape no Pipefy-owned source shows
    /// (and renders differently with [`Vars::documented_only`]).
    fn uses_guessed_shape(&self) -> bool {
        false
    }

    /// Reads this field's payload (the value under its alias; never null here).
    fn parse(&self, payload: &Value) -> Result<Self::Output, Failure>;

    /// The result of a null payload without errors, for fields where null is an answer
    /// (`card(id)` of a missing card). `None`: null is unexpected.
    fn on_null(&self) -> Option<Self::Output> {
        None
    }
}

/// The alias of the operation at `index` of a call; stable across retries so that logs of
/// several attempts line up.
pub(crate) fn alias(index: usize) -> String {
    format!("op{index}")
}

/// Builds the document and variables for the operations `(index, op)`.
#[cfg(test)]
pub(crate) fn build_document<O: BatchOp>(kind: DocKind, ops: &[(usize, &O)]) -> Value {
    build_document_with(kind, ops, false)
}

/// [`build_document`], with only documented shapes when `documented_only`.
pub(crate) fn build_document_with<O: BatchOp>(
    kind: DocKind,
    ops: &[(usize, &O)],
    documented_only: bool,
) -> Value {
    let mut vars = Vars {
        documented_only,
        ..Vars::default()
    };
    let mut fields = String::new();
    for (index, op) in ops {
        let rendered = op.render(&mut vars);
        fields.push_str("  ");
        fields.push_str(&alias(*index));
        fields.push_str(": ");
        fields.push_str(&rendered);
        fields.push('\n');
    }
    let decls = if vars.decls.is_empty() {
        String::new()
    } else {
        format!("({})", vars.decls.join(", "))
    };
    let query = format!("{} Batch{decls} {{\n{fields}}}", kind.keyword());
    serde_json::json!({ "query": query, "variables": Value::Object(vars.values) })
}

/// graphql-ruby's static-validation codes (docs/pipefy-api.md §10): the document's shape
/// was refused before anything ran.
const SHAPE_ERROR_CODES: &[&str] = &[
    "variableMismatch",
    "argumentLiteralsIncompatible",
    "undefinedField",
    "argumentNotAccepted",
    "selectionMismatch",
    "missingRequiredInputObjectAttribute",
    "variableRequiresValidType",
    "GRAPHQL_VALIDATION_FAILED",
];

/// Whether a body is a document-level validation failure: errors with graphql-ruby
/// validation codes and no `data` at all (so nothing was executed).
pub(crate) fn is_shape_rejection(body: &Value) -> bool {
    if body.get("data").is_some() {
        return false;
    }
    let errors = GqlError::all_from_body(body);
    !errors.is_empty()
        && errors.iter().all(|e| {
            e.code
                .as_deref()
                .is_some_and(|c| SHAPE_ERROR_CODES.contains(&c))
        })
}

/// Codes of a document refused for its size: the complexity limit (graphql-ruby gives it no
/// code; the words below find Pipefy's message) and an alias cap (none is documented; the
/// emulator can set one).
const SIZE_ERROR_CODES: &[&str] = &["MAX_COMPLEXITY_EXCEEDED", "MAX_ALIASES_EXCEEDED"];
const SIZE_ERROR_WORDS: &[&str] = &["exceeds max complexity", "too many aliases"];

/// Whether a body refuses the whole document for its size (nothing was executed): the same
/// operations in smaller documents would be taken.
pub(crate) fn is_size_rejection(body: &Value) -> bool {
    if body.get("data").is_some_and(|d| !d.is_null()) {
        return false;
    }
    GqlError::all_from_body(body).iter().any(|e| {
        let message = e.message.to_lowercase();
        e.code
            .as_deref()
            .is_some_and(|c| SIZE_ERROR_CODES.contains(&c))
            || SIZE_ERROR_WORDS.iter().any(|w| message.contains(w))
    })
}

/// Maps a GraphQL response body to one outcome per operation, by alias.
///
/// - No `data` (document-level failure): every operation gets the failure the errors stand
///   for (validation errors: permanent; internal errors: uncertain).
/// - An error whose `path` starts with the alias belongs to that operation. A create whose
///   payload nevertheless carries the new id succeeded (the error is about a sub-field).
/// - A null payload without its own error takes the errors that belong to no alias, or is
///   uncertain when there are none.
pub(crate) fn interpret<O: BatchOp>(
    body: &Value,
    ops: &[(usize, &O)],
) -> Vec<Result<O::Output, Failure>> {
    let errors = GqlError::all_from_body(body);
    let data = body.get("data").and_then(Value::as_object);
    let Some(data) = data else {
        let all: Vec<&GqlError> = errors.iter().collect();
        let failure = if all.is_empty() {
            Failure::uncertain("response has neither data nor errors")
        } else {
            failure_from_errors(&all)
        };
        return ops.iter().map(|_| Err(failure.clone())).collect();
    };
    let aliases: Vec<String> = ops.iter().map(|(i, _)| alias(*i)).collect();
    let stray: Vec<&GqlError> = errors
        .iter()
        .filter(|e| e.root.as_ref().is_none_or(|r| !aliases.contains(r)))
        .collect();
    ops.iter()
        .zip(aliases.iter())
        .map(|((_, op), name)| {
            let own: Vec<&GqlError> = errors
                .iter()
                .filter(|e| e.root.as_deref() == Some(name.as_str()))
                .collect();
            let payload = data.get(name).filter(|p| !p.is_null());
            match (payload, own.is_empty()) {
                (Some(p), true) => op.parse(p),
                (Some(p), false) => {
                    if op.is_create() {
                        if let Ok(out) = op.parse(p) {
                            return Ok(out);
                        }
                    }
                    Err(failure_from_errors(&own))
                }
                (None, false) => Err(failure_from_errors(&own)),
                (None, true) if !stray.is_empty() => Err(failure_from_errors(&stray)),
                // Only an explicit null is an answer; a missing key is a broken response.
                (None, true) => data.get(name).and_then(|_| op.on_null()).ok_or_else(|| {
                    Failure::uncertain(format!("Pipefy returned no result for {name}"))
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stand-in operation: `thing(input: $vN) { id }`.
    struct Thing {
        input: &'static str,
        create: bool,
    }

    impl BatchOp for Thing {
        type Output = String;
        fn render(&self, vars: &mut Vars) -> String {
            let v = vars.add("ThingInput!", json!({ "name": self.input }));
            format!("thing(input: {v}) {{ id }}")
        }
        fn is_create(&self) -> bool {
            self.create
        }
        fn parse(&self, payload: &Value) -> Result<String, Failure> {
            payload
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Failure::uncertain("no id"))
        }
    }

    fn things() -> Vec<Thing> {
        vec![
            Thing {
                input: "a\"}) { evil }",
                create: true,
            },
            Thing {
                input: "b",
                create: false,
            },
            Thing {
                input: "c",
                create: true,
            },
        ]
    }

    #[test]
    fn document_uses_one_variable_per_alias() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(4, &t[0]), (7, &t[1])];
        let doc = build_document(DocKind::Mutation, &ops);
        let q = doc["query"].as_str().unwrap();
        assert_eq!(
            q,
            "mutation Batch($v0: ThingInput!, $v1: ThingInput!) {\n  op4: thing(input: $v0) { id }\n  op7: thing(input: $v1) { id }\n}"
        );
        // The hostile value stays inside the variables.
        assert_eq!(doc["variables"]["v0"]["name"], "a\"}) { evil }");
        assert_eq!(doc["variables"]["v1"]["name"], "b");
    }

    #[test]
    fn results_map_back_by_alias_not_position() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(0, &t[0]), (1, &t[1]), (2, &t[2])];
        // Pipefy's object order is irrelevant; op1 failed with its own error.
        let body = json!({
            "data": {"op2": {"id": "C"}, "op1": null, "op0": {"id": "A"}},
            "errors": [{"message": "Permission denied", "path": ["op1"],
                        "extensions": {"code": "PERMISSION_DENIED"}}]
        });
        let r = interpret(&body, &ops);
        assert_eq!(r[0], Ok("A".to_string()));
        assert_eq!(
            r[1],
            Err(Failure::permanent(
                Some("PERMISSION_DENIED".into()),
                "Permission denied"
            ))
        );
        assert_eq!(r[2], Ok("C".to_string()));
    }

    #[test]
    fn document_level_validation_error_fails_every_op_permanently() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(0, &t[0]), (1, &t[1])];
        let body = json!({"errors": [{"message": "Field 'x' doesn't exist",
                                      "extensions": {"code": "undefinedField"}}]});
        for r in interpret(&body, &ops) {
            assert_eq!(
                r,
                Err(Failure::permanent(
                    Some("undefinedField".into()),
                    "Field 'x' doesn't exist"
                ))
            );
        }
        let body = json!({"data": null, "errors": [{"message": "Something went wrong",
                          "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]});
        for r in interpret(&body, &ops) {
            assert!(matches!(r, Err(Failure::Uncertain { .. })));
        }
    }

    #[test]
    fn odd_bodies_are_uncertain_not_panics() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(0, &t[0]), (1, &t[1])];
        for body in [
            json!({}),
            json!({"data": {}}),
            json!({"data": []}),
            json!({"data": {"op0": 5, "op1": "x"}}),
            json!({"data": {"op0": {"id": 5}}}),
            json!({"data": {"op0": null}, "errors": "nonsense"}),
        ] {
            for r in interpret(&body, &ops) {
                assert!(matches!(r, Err(Failure::Uncertain { .. })), "{body}");
            }
        }
    }

    #[test]
    fn null_payload_takes_errors_without_a_path() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(0, &t[0])];
        let body = json!({"data": {"op0": null},
                          "errors": [{"message": "Invalid input", "extensions": {"code": "INVALID_INPUT"}}]});
        assert_eq!(
            interpret(&body, &ops)[0],
            Err(Failure::permanent(
                Some("INVALID_INPUT".into()),
                "Invalid input"
            ))
        );
    }

    #[test]
    fn a_create_with_an_id_succeeded_even_with_an_error() {
        let t = things();
        let ops: Vec<(usize, &Thing)> = vec![(0, &t[0]), (1, &t[1])];
        let body = json!({
            "data": {"op0": {"id": "A"}, "op1": {"id": "B"}},
            "errors": [
                {"message": "sub-field failed", "path": ["op0", "card", "x"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}},
                {"message": "sub-field failed", "path": ["op1", "x"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
            ]
        });
        let r = interpret(&body, &ops);
        assert_eq!(r[0], Ok("A".to_string()));
        assert!(matches!(r[1], Err(Failure::Uncertain { .. })));
    }
}
