//! Loading and validating destination files. Parsing is strict (unknown keys are errors);
//! then the rules that span keys are checked. Every error names the file, the key path and
//! what is expected.

use std::path::Path;

use super::{
    target_of, Destination, ListMode, Operation, RemovalAction, Target, UpsertModes, ValueSource,
    WritePolicy,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Unreadable { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

pub fn parse_destination(file: &str, text: &str) -> Result<Destination, ConfigError> {
    let invalid = |path: String, message: String| ConfigError::Invalid {
        file: file.to_string(),
        path,
        message,
    };
    let de = serde_norway::Deserializer::from_str(text);
    let dest: Destination = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        invalid(
            if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message,
        )
    })?;
    validate(&dest).map_err(|(path, message)| invalid(path, message))?;
    Ok(dest)
}

pub fn load_destination_file(path: &Path) -> Result<Destination, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        file: file.clone(),
        message: e.to_string(),
    })?;
    parse_destination(&file, &text)
}

type Problem = (String, String);

fn problem(path: &str, message: impl Into<String>) -> Problem {
    (path.to_string(), message.into())
}

/// The rules serde cannot express.
pub fn validate(d: &Destination) -> Result<(), Problem> {
    let name_ok = !d.name.is_empty()
        && d.name.len() <= 64
        && d.name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && d.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(problem(
            "name",
            format!("'{}' must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit (it is used in S3 keys and schedule names)", d.name),
        ));
    }
    match (d.operation.is_card(), &d.pipe_id, &d.table_id) {
        (true, None, _) => {
            return Err(problem(
                "pipe_id",
                format!("operation {} needs pipe_id", d.operation.as_str()),
            ))
        }
        (false, _, None) => {
            return Err(problem(
                "table_id",
                format!("operation {} needs table_id", d.operation.as_str()),
            ))
        }
        (true, Some(_), Some(_)) => {
            return Err(problem("table_id", "a card operation takes pipe_id only"))
        }
        (false, Some(_), Some(_)) => {
            return Err(problem("pipe_id", "a record operation takes table_id only"))
        }
        _ => {}
    }
    if matches!(d.operation, Operation::UpsertCard | Operation::UpsertRecord) && d.key.is_none() {
        return Err(problem(
            "key",
            format!("operation {} needs a key: {{columns: [<source column>...], field: <Pipefy field that holds it>}}", d.operation.as_str()),
        ));
    }
    if d.operation == Operation::UpdateCard && !d.mapping.contains_key("id") {
        return Err(problem(
            "mapping.id",
            "operation update_card needs a column mapped to `id` (the card id)",
        ));
    }
    if d.operation != Operation::UpdateCard && d.mapping.contains_key("id") {
        return Err(problem(
            "mapping.id",
            "`id` is only mapped by update_card; use `key` to match existing cards",
        ));
    }
    if let Some(key) = &d.key {
        if key.columns.is_empty() || key.columns.iter().any(|c| c.trim().is_empty()) {
            return Err(problem(
                "key.columns",
                "needs at least one non-empty source column",
            ));
        }
        if key.field.trim().is_empty() {
            return Err(problem(
                "key.field",
                "needs the Pipefy field (slug) that holds the key",
            ));
        }
    }
    let upserts = matches!(d.operation, Operation::UpsertCard | Operation::UpsertRecord);
    if !upserts && d.upsert != UpsertModes::default() {
        return Err(problem(
            "upsert",
            format!(
                "applies to upsert_card and upsert_record, not {}",
                d.operation.as_str()
            ),
        ));
    }
    if !d.upsert.create && !d.upsert.update {
        return Err(problem(
            "upsert",
            "`create: false` with `update: false` would write nothing",
        ));
    }
    if d.mapping.is_empty() {
        return Err(problem(
            "mapping",
            "maps no field: nothing would be written",
        ));
    }
    for (target, m) in &d.mapping {
        let path = format!("mapping.{target}");
        if let Target::Field(slug) = target_of(target) {
            if slug.is_empty() {
                return Err(problem(&path, "`field:` needs a field slug after it"));
            }
        }
        match &m.value {
            ValueSource::Column(c) if c.trim().is_empty() => {
                return Err(problem(&format!("{path}.column"), "is empty"))
            }
            ValueSource::Template(t) if !t.contains('{') => {
                return Err(problem(
                    &format!("{path}.template"),
                    "has no {column} placeholder; use `constant` for a fixed value",
                ))
            }
            _ => {}
        }
        if let Some(c) = &m.connect {
            if c.pipe_id.is_some() == c.table_id.is_some() {
                return Err(problem(
                    &format!("{path}.connect"),
                    "needs exactly one of pipe_id or table_id",
                ));
            }
        }
        match (target.as_str(), m.write) {
            ("id", WritePolicy::IfEmpty | WritePolicy::OnCreate) => {
                return Err(problem(
                    &format!("{path}.write"),
                    "`id` names the card to update; it is not written",
                ))
            }
            ("phase_id", WritePolicy::IfEmpty) => {
                return Err(problem(
                    &format!("{path}.write"),
                    "a card always has a phase, so `if_empty` would never write it; use `on_create` to set the phase only when the card is created",
                ))
            }
            _ => {}
        }
        if m.mode == ListMode::Add
            && matches!(target.as_str(), "id" | "title" | "due_date" | "phase_id")
        {
            return Err(problem(
                &format!("{path}.mode"),
                "`mode: add` applies to list targets (labels, assignees, parents, checklist, connector, label and assignee fields)",
            ));
        }
        if target == "parent_ids" && m.connect.as_ref().is_some_and(|c| c.table_id.is_some()) {
            return Err(problem(
                &format!("{path}.connect"),
                "parent cards live in a pipe: use pipe_id",
            ));
        }
    }
    match (&d.source.bucket, &d.source.path) {
        (None, None) => {
            return Err(problem(
                "source",
                "needs `bucket` (S3) or `path` (a local folder)",
            ))
        }
        (Some(b), _) if !bucket_name_ok(b) && !b.starts_with("${") => {
            return Err(problem(
                "source.bucket",
                format!("'{b}' is not a valid S3 bucket name"),
            ))
        }
        _ => {}
    }
    for (path, part) in [
        ("source.layer", &d.source.layer),
        ("source.table", &d.source.table),
    ] {
        if part.trim_matches('/').is_empty() || part.contains("..") {
            return Err(problem(path, "must name a folder (not empty, no '..')"));
        }
    }
    if !d.source.csv.delimiter.is_ascii() || !d.source.csv.quote.is_ascii() {
        return Err(problem(
            "source.csv",
            "delimiter and quote must be single ASCII characters",
        ));
    }
    if encoding_rs::Encoding::for_label(d.source.csv.encoding.as_bytes()).is_none() {
        return Err(problem(
            "source.csv.encoding",
            format!(
                "'{}' is not a known encoding label (utf-8, latin1, windows-1252, utf-16le...)",
                d.source.csv.encoding
            ),
        ));
    }
    let l = &d.limits;
    if l.requests_per_window == 0 || l.window_seconds == 0 {
        return Err(problem(
            "limits",
            "requests_per_window and window_seconds must be at least 1",
        ));
    }
    if !(1..=50).contains(&l.mutations_per_request) {
        return Err(problem(
            "limits.mutations_per_request",
            "must be 1 to 50 (Pipefy advises about 20 per request)",
        ));
    }
    if !(1..=100).contains(&l.lookups_per_request) {
        return Err(problem("limits.lookups_per_request", "must be 1 to 100"));
    }
    if !(1..=64).contains(&l.concurrency) {
        return Err(problem("limits.concurrency", "must be 1 to 64"));
    }
    // Each upload in flight holds a read buffer and a connection, not the file.
    if !(1..=32).contains(&l.upload_concurrency) {
        return Err(problem("limits.upload_concurrency", "must be 1 to 32"));
    }
    if let Some(s) = &d.trigger.schedule {
        check_schedule(&s.expression).map_err(|m| problem("trigger.schedule.expression", m))?;
        if s.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(problem(
                "trigger.schedule.timezone",
                format!(
                    "'{}' is not an IANA time zone (e.g. UTC, America/Sao_Paulo)",
                    s.timezone
                ),
            ));
        }
    }
    if let Some(u) = &d.trigger.on_upload {
        if let Some(bad) = u.suffixes.iter().find(|s| s.is_empty() || s.contains('/')) {
            return Err(problem(
                "trigger.on_upload.suffixes",
                format!("'{bad}' is not a file suffix such as .csv or .csv.gz"),
            ));
        }
        if d.source.bucket.is_none() {
            return Err(problem(
                "trigger.on_upload",
                "on_upload needs source.bucket",
            ));
        }
    }
    if d.token.secret.is_none() == d.token.env.is_none() {
        return Err(problem("token", "needs exactly one of `secret` (Secrets Manager name or ARN) or `env` (environment variable)"));
    }
    if !d.sync.removed_rows.is_ignore() && d.key.is_none() && d.operation != Operation::UpdateCard {
        return Err(problem(
            "sync.removed_rows",
            "needs a `key`: without one a rewritten file looks like removed rows",
        ));
    }
    if let (RemovalAction::MoveToPhase { .. }, false) =
        (&d.sync.removed_rows.action, d.operation.is_card())
    {
        return Err(problem(
            "sync.removed_rows",
            "move_to_phase applies to cards; records can only be deleted or ignored",
        ));
    }
    if !(1..=3600).contains(&d.sync.lease_seconds) {
        return Err(problem("sync.lease_seconds", "must be between 1 and 3600"));
    }
    if !(0.0..=60.0).contains(&d.sync.ambiguous_settle_seconds) {
        return Err(problem(
            "sync.ambiguous_settle_seconds",
            "must be between 0 and 60",
        ));
    }
    if let Some(e) = &d.endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://") || e.starts_with("${")) {
            return Err(problem("endpoint", format!("'{e}' is not an http(s) URL")));
        }
    }
    Ok(())
}

fn bucket_name_ok(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// EventBridge Scheduler expressions: `cron(min hour dom month dow year)` or
/// `rate(<n> minute(s)|hour(s)|day(s))`.
fn check_schedule(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if let Some(inner) = expr.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
        let n = inner.split_whitespace().count();
        if n != 6 {
            return Err(format!("'{expr}': cron takes 6 fields (minutes hours day-of-month month day-of-week year), got {n}"));
        }
        return Ok(());
    }
    if let Some(inner) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let mut parts = inner.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "'{expr}': rate takes a number and a unit, e.g. rate(1 hour)"
            ));
        };
        let n: u32 = n
            .parse()
            .map_err(|_| format!("'{expr}': '{n}' is not a whole number"))?;
        let ok_unit = matches!(
            unit,
            "minute" | "minutes" | "hour" | "hours" | "day" | "days"
        );
        if n == 0 || !ok_unit || (n == 1) != unit.ends_with(|c| c != 's') {
            return Err(format!(
                "'{expr}': use rate(1 hour) / rate(5 minutes) (singular unit for 1)"
            ));
        }
        return Ok(());
    }
    Err(format!("'{expr}' is neither cron(...) nor rate(...)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: customers
pipe_id: "301"
operation: upsert_card
key: { columns: [id], field: external_id }
source: { bucket: my-lake, layer: refined, table: customers }
mapping:
  title: name
  external_id: id
  plan: { constant: Pro }
token: { secret: pipefy/token }
trigger:
  schedule: { expression: "rate(1 hour)" }
  on_upload: { suffixes: [.csv] }
"#;

    fn err_of(yaml: &str) -> String {
        parse_destination("dest.yaml", yaml)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let d = parse_destination("dest.yaml", GOOD).unwrap();
        assert!(d.partial_success);
        assert_eq!(d.limits.mutations_per_request, 20);
        assert_eq!(d.source.prefix(), "refined/customers/");
        assert!(matches!(d.mapping["title"].value, ValueSource::Column(ref c) if c == "name"));
    }

    #[test]
    fn errors_name_the_file_the_key_path_and_what_is_expected() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "operation: upsert_card",
                "operation: upsert_cards",
                "operation",
            ),
            ("  title: name", "  title: { colum: name }", "mapping.title"),
            ("name: customers", "name: Customers!", "name"),
            ("token: { secret: pipefy/token }", "token: {}", "token"),
            (
                "token: { secret: pipefy/token }",
                "token: { secret: a, env: B }",
                "token",
            ),
            ("key: { columns: [id], field: external_id }", "", "key"),
            (
                "\"rate(1 hour)\"",
                "\"rate(2 hour)\"",
                "trigger.schedule.expression",
            ),
            (
                "\"rate(1 hour)\"",
                "\"cron(0 6 * *)\"",
                "trigger.schedule.expression",
            ),
            (
                "  plan: { constant: Pro }",
                "  plan: { constant: Pro, column: p }",
                "mapping.plan",
            ),
            ("pipe_id: \"301\"", "pipe_idd: \"301\"", "pipe_idd"),
            ("bucket: my-lake", "bucket: My_Lake", "source.bucket"),
            (
                "  title: name",
                "  title: { column: name, mode: add }",
                "mapping.title.mode",
            ),
            (
                "  title: name",
                "  title: { column: name, write: sometimes }",
                "mapping.title",
            ),
            (
                "  title: name",
                "  title: name\n  phase_id: { column: stage, write: if_empty }",
                "mapping.phase_id.write",
            ),
            (
                "operation: upsert_card",
                "operation: upsert_card\nupsert: { create: false, update: false }",
                "upsert",
            ),
            (
                "operation: upsert_card",
                "operation: create_card\nupsert: { create: false }",
                "upsert",
            ),
        ];
        for (from, to, path) in cases {
            let yaml = GOOD.replace(from, to);
            let msg = err_of(&yaml);
            assert!(msg.starts_with("dest.yaml: "), "{msg}");
            assert!(msg.contains(path), "expected path {path} in: {msg}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let msg = err_of(&format!("{GOOD}\npartial_sucess: false\n"));
        assert!(msg.contains("partial_sucess"), "{msg}");
        let msg = err_of(&GOOD.replace("layer: refined", "layer: refined, tabel: x"));
        assert!(msg.contains("tabel"), "{msg}");
    }
}
