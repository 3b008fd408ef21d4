#!/usr/bin/env python3
"""Terraform (infra/) and the code agree.

Checks that what infra/modules/pipefy-sync deploys matches what the Rust code expects:
  * functions: one per crate under functions/, handler `bootstrap`, provided.al2023, arm64,
    the cargo lambda zip layout, 900 s for sync-*, async retries and destinations;
  * environment: every PIPEFY_SYNC_* variable the code mentions is in DESIGN.md's table, and
    Terraform sets exactly the table's variables on exactly the functions that read them
    (with the table's defaults where Terraform sets a constant);
  * payloads: the Scheduler payload and the manual-run payloads fit the payload struct of
    shared/src/lambda/events.rs (keys are serde fields, required fields are present), and
    the Scheduler context attribute reaches Scheduler unescaped;
  * destination files: the example files only use keys of shared/src/config/mod.rs, the
    fields Terraform reads still exist there, and -- evaluated with `terraform console` on
    the module's provider-free destinations.tf -- the S3 filters, schedules, IAM source
    scopes and error reports derived from example and hand-made folders are the expected
    ones;
  * results table: the Glue table's columns are the keys of a result line (RowResult and
    the struct that adds run_id, shared/src/report/mod.rs) with fitting types, its
    partitions (destination, run_date) are projected onto the folders results_prefix writes,
    the enum of destinations is the destination files' names, and docs/results.md names
    every column, action and error code;
  * lifecycle events: PIPEFY_SYNC_EVENT_BUS is the bus's ARN on the sync functions only,
    the one IAM statement that allows events: actions is PutEvents for the sync functions'
    roles, on that bus, with the code's event source, and -- evaluated on the provider-free
    events.tf -- a bus name becomes this account's and region's ARN, an ARN stays, anything
    else is refused.

Needs PyYAML and python-hcl2 (the checkov virtualenv ships both: run it with that Python;
tests/infra/check.sh does). Terraform is optional: without it the `terraform console` checks
are skipped with a message. The last line is "N passed, N failed"; exit status 1 on failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "infra" / "modules" / "pipefy-sync"
EXAMPLE = ROOT / "infra" / "examples" / "basic"
EXAMPLE_DESTINATIONS = EXAMPLE / "destinations"
DESIGN = ROOT / "docs" / "DESIGN.md"
CONFIG_RS = ROOT / "shared" / "src" / "config" / "mod.rs"
EVENTS_RS = ROOT / "shared" / "src" / "lambda" / "events.rs"
REPORT_RS = ROOT / "shared" / "src" / "report" / "mod.rs"
SETTINGS_RS = ROOT / "shared" / "src" / "lambda" / "settings.rs"
LIFECYCLE_RS = ROOT / "shared" / "src" / "lambda" / "lifecycle.rs"
RESULTS_DOC = ROOT / "docs" / "results.md"

ALL_FUNCTIONS = ("sync-scheduled", "sync-upload", "notify")
SYNC_FUNCTIONS = ("sync-scheduled", "sync-upload")
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   - {what}")
        else:
            self.failed += 1
            print(f"FAIL - {what}" + (f"\n       {detail}" if detail else ""))
        return ok

    def skip(self, what: str, why: str) -> None:
        print(f"skip - {what}: {why}")


R = Results()


def finish() -> None:
    print(f"{R.passed} passed, {R.failed} failed")
    sys.exit(1 if R.failed else 0)


try:
    import hcl2  # type: ignore[import-not-found]
    import yaml  # type: ignore[import-untyped]
except ImportError as e:  # pragma: no cover - environment problem, reported as a failure
    R.check(
        False,
        "python-hcl2 and PyYAML are importable",
        f"{e}. Run this script with the checkov virtualenv's Python "
        "(e.g. .venv/bin/python tests/infra/agreement.py), which has both.",
    )
    finish()


# --------------------------------------------------------------------------------------
# Terraform, parsed


def load_tf(folder: Path) -> dict[str, Any]:
    """All *.tf of a folder merged: resources[type][name], data[type][name], locals,
    variables[name], outputs[name], modules[name]."""
    out: dict[str, Any] = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {}, "module": {}}
    for f in sorted(folder.glob("*.tf")):
        with f.open() as fh:
            doc = hcl2.load(fh)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        out[kind].setdefault(rtype, {})[name] = body
        for block in doc.get("locals", []):
            out["locals"].update(block)
        for kind in ("variable", "output", "module"):
            for block in doc.get(kind, []):
                out[kind].update(block)
    return out


def one(value: Any) -> Any:
    """hcl2 wraps attribute values and blocks in lists."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def var_default(tf: dict[str, Any], name: str) -> Any:
    return one(tf["variable"].get(name, {}).get("default", [None]))


def resolve_literal(tf: dict[str, Any], expr: Any) -> Any:
    """A local or variable reference resolved to its literal (local value or variable
    default); None when it is computed."""
    if not isinstance(expr, str):
        return expr
    m = re.fullmatch(r"\$\{local\.([a-z0-9_]+)\}", expr)
    if m:
        return resolve_literal(tf, one(tf["locals"].get(m.group(1))))
    m = re.fullmatch(r"\$\{var\.([a-z0-9_]+)\}", expr)
    if m:
        return var_default(tf, m.group(1))
    return None if "${" in expr else expr


# --------------------------------------------------------------------------------------
# Rust structs, parsed enough to know their serde field names


class RustStruct:
    def __init__(self, name: str) -> None:
        self.name = name
        self.accepted: set[str] = set()  # every key serde accepts (names and aliases)
        self.required: set[str] = set()  # keys serde needs present
        self.open = False  # #[serde(flatten)]: accepts more than its fields
        # What serialization writes: key -> the field's Rust type, in field order, and the
        # types of the #[serde(flatten)] fields (whose keys it writes too).
        self.written: dict[str, str] = {}
        self.flattened: list[str] = []


def _case(name: str, rule: str | None) -> str:
    words = name.split("_")
    if rule in (None, "snake_case"):
        return name
    if rule == "camelCase":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if rule == "PascalCase":
        return "".join(w.capitalize() for w in words)
    if rule == "kebab-case":
        return "-".join(words)
    if rule == "SCREAMING_SNAKE_CASE":
        return name.upper()
    if rule == "SCREAMING-KEBAB-CASE":
        return "-".join(words).upper()
    if rule == "lowercase":
        return name.lower()
    if rule == "UPPERCASE":
        return name.upper()
    return name


def parse_rust_structs(text: str) -> dict[str, RustStruct]:
    text = re.sub(r"//[^\n]*", "", text)  # comments (doc comments included)
    structs: dict[str, RustStruct] = {}
    for m in re.finditer(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?struct\s+(\w+)(?:<[^>{]*>)?\s*\{", text):
        attrs, name = m.group(1), m.group(2)
        # Body: up to the matching brace.
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end() : i - 1]
        s = RustStruct(name)
        serde_attrs = " ".join(re.findall(r"#\[serde\(([^\]]*)\)\]", attrs))
        rule_m = re.search(r'rename_all\s*=\s*"([^"]+)"', serde_attrs)
        rule = rule_m.group(1) if rule_m else None
        container_default = re.search(r"(^|[\s,(])default\b", serde_attrs) is not None
        pending: list[str] = []
        depth = 0
        for line in body.split("\n"):
            stripped = line.strip()
            if depth == 0 and stripped.startswith("#["):
                pending.append(stripped)
            elif depth == 0:
                fm = re.match(r"(?:pub(?:\([^)]*\))?\s+)?(?:r#)?([a-z_][a-z0-9_]*)\s*:\s*(.*)$", stripped)
                if fm:
                    field, ftype = fm.group(1), fm.group(2)
                    fattrs = " ".join(re.findall(r"#\[serde\(([^\]]*)\)\]", " ".join(pending)))
                    pending = []
                    if not re.search(r"\bskip(_serializing)?\b", fattrs):
                        if re.search(r"\bflatten\b", fattrs):
                            s.flattened.append(ftype.rstrip(",").strip())
                        else:
                            wn = re.search(r'rename\s*=\s*"([^"]+)"', fattrs) or re.search(
                                r'rename\s*\([^)]*(?<![a-z])serialize\s*=\s*"([^"]+)"', fattrs
                            )
                            s.written[wn.group(1) if wn else _case(field, rule)] = ftype.rstrip(",").strip()
                    if re.search(r"\bskip(_deserializing)?\b", fattrs):
                        continue
                    if re.search(r"\bflatten\b", fattrs):
                        s.open = True
                        continue
                    rn = re.search(r'rename\s*=\s*"([^"]+)"', fattrs) or re.search(
                        r'rename\s*\([^)]*deserialize\s*=\s*"([^"]+)"', fattrs
                    )
                    key = rn.group(1) if rn else _case(field, rule)
                    s.accepted.add(key)
                    s.accepted.update(re.findall(r'alias\s*=\s*"([^"]+)"', fattrs))
                    optional = ftype.startswith("Option<") or re.search(r"(^|[\s,(])default\b", fattrs)
                    if not optional and not container_default:
                        s.required.add(key)
            # Nested generics spanning lines are rare; track parens/angles only roughly.
            depth += stripped.count("<") - stripped.count(">") if not stripped.startswith("#[") else 0
            depth = max(depth, 0)
        structs[name] = s
    return structs


# --------------------------------------------------------------------------------------
# terraform console on destinations.tf


TERRAFORM = shutil.which("terraform")


def tf_console(files: dict[str, str], variables: dict[str, str], expressions: dict[str, str]) -> dict[str, Any]:
    """Evaluates expressions with `terraform console` in a scratch folder holding `files`
    (name -> text), with `variables` given as -var."""
    import json

    with tempfile.TemporaryDirectory(prefix="pipefy-sync-agreement-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        expr = "jsonencode({" + ", ".join(f"{k} = {v}" for k, v in expressions.items()) + "})"
        env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_DATA_DIR=str(Path(tmp) / ".terraform"))
        proc = subprocess.run(
            [TERRAFORM or "terraform", f"-chdir={tmp}", "console"] + [f"-var={k}={v}" for k, v in variables.items()],
            input=expr + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"terraform console failed: {proc.stderr.strip()}")
        line = proc.stdout.strip().splitlines()[-1]
        # The console prints an HCL string: JSON string syntax, with ${ and %{ doubled.
        text = json.loads(line).replace("$${", "${").replace("%%{", "%{")
        return json.loads(text)


def tf_eval(destinations_dir: Path, expressions: dict[str, str]) -> dict[str, Any]:
    """Evaluates `local.*` expressions of destinations.tf against a destination folder."""
    return tf_console(
        {"destinations.tf": (MODULE / "destinations.tf").read_text()},
        {"destinations_dir": str(destinations_dir)},
        expressions,
    )


# --------------------------------------------------------------------------------------
# Expectations computed from destination files, independently of the Terraform code


def rust_prefix(layer: str, table: str) -> str:
    """SourceConfig::prefix() in shared/src/config/mod.rs."""
    return f"{layer.strip('/')}/{table.strip('/')}/"


def attach_locations(d: dict[str, Any]) -> list[tuple[str, str]]:
    """AttachSource::new in shared/src/mapping/attach.rs: each `attach:` of the mapping, its
    bucket (default the source's) and its prefix as "<prefix>/" ("" for the whole bucket)."""
    out = []
    for m in (d.get("mapping") or {}).values():
        if isinstance(m, dict) and m.get("attach") is not None:
            a = m["attach"] or {}
            bucket = a.get("bucket") or (d.get("source") or {}).get("bucket")
            p = str(a.get("prefix") or "").strip("/")
            if bucket:
                out.append((bucket, f"{p}/" if p else ""))
    return out


def read_access(docs: list[tuple[str, Any]], uploads_only: bool) -> dict[str, set[str]]:
    """bucket -> prefixes a sync function may read: tables and attach locations."""
    out: dict[str, set[str]] = {}
    for _, d in docs:
        if uploads_only and (d.get("trigger") or {}).get("on_upload") is None:
            continue
        src = d["source"]
        out.setdefault(src["bucket"], set()).add(rust_prefix(src["layer"], src["table"]))
        for bucket, prefix in attach_locations(d):
            out.setdefault(bucket, set()).add(prefix)
    return out


def load_destination_docs(folder: Path) -> list[tuple[str, Any]]:
    docs = []
    for f in sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml"))):
        with f.open() as fh:
            docs.append((f.name, yaml.safe_load(fh)))
    return docs


def wanted_uploads(docs: list[tuple[str, Any]]) -> dict[str, set[tuple[str, str]]]:
    """bucket -> (prefix, suffix) every upload a destination wants to hear about."""
    out: dict[str, set[tuple[str, str]]] = {}
    for _, d in docs:
        trigger = d.get("trigger") or {}
        if trigger.get("on_upload") is None:
            continue
        src = d["source"]
        suffixes = (trigger["on_upload"] or {}).get("suffixes") or [""]
        for s in suffixes:
            out.setdefault(src["bucket"], set()).add((rust_prefix(src["layer"], src["table"]), s))
    return out


def covers(f: tuple[str, str], g: tuple[str, str]) -> bool:
    """S3 filter f matches every key g matches."""
    return g[0].startswith(f[0]) and g[1].endswith(f[1])


def overlap(f: tuple[str, str], g: tuple[str, str]) -> bool:
    return (f[0].startswith(g[0]) or g[0].startswith(f[0])) and (f[1].endswith(g[1]) or g[1].endswith(f[1]))


def check_upload_filters(label: str, got: dict[str, list[dict[str, str]]], wanted: dict[str, set[tuple[str, str]]]) -> None:
    got_sets = {b: {(c["prefix"], c["suffix"]) for c in cs} for b, cs in got.items()}
    R.check(set(got_sets) == set(wanted), f"{label}: one S3 notification per source bucket with uploads", f"Terraform {sorted(got_sets)}, files {sorted(wanted)}")
    missed = [(b, w) for b, ws in wanted.items() for w in ws if not any(covers(g, w) for g in got_sets.get(b, set()))]
    R.check(not missed, f"{label}: every (prefix, suffix) of the destination files triggers sync-upload", f"not covered: {missed}")
    extra = [(b, g) for b, gs in got_sets.items() for g in gs if g not in wanted.get(b, set())]
    R.check(not extra, f"{label}: no S3 filter beyond those of the destination files", f"extra: {extra}")
    clashes = [(b, f, g) for b, gs in got_sets.items() for f in gs for g in gs if f < g and overlap(f, g)]
    R.check(not clashes, f"{label}: no two filters of a bucket overlap (S3 would refuse them)", f"{clashes}")


# --------------------------------------------------------------------------------------
# The checks


def check_functions(tf: dict[str, Any]) -> None:
    crates = {}
    for cargo in sorted((ROOT / "functions").glob("*/Cargo.toml")):
        m = re.search(r'^name\s*=\s*"([^"]+)"', cargo.read_text(), re.M)
        if m:
            crates[m.group(1)] = cargo.parent.name
    functions = one(tf["locals"].get("functions")) or {}
    R.check(set(functions) == set(ALL_FUNCTIONS), "local.functions is sync-scheduled, sync-upload, notify", f"got {sorted(functions)}")
    R.check(set(crates) == set(functions), "one Lambda function per crate under functions/", f"crates {sorted(crates)}, Terraform {sorted(functions)}")
    R.check(all(crates.get(k) == k for k in functions), "crate names match their folders (cargo lambda writes target/lambda/<crate>/)", f"{crates}")

    fn = tf["resource"].get("aws_lambda_function", {}).get("this", {})
    R.check(one(fn.get("for_each")) == "${local.functions}", "aws_lambda_function.this is one function per local.functions entry")
    R.check(one(fn.get("handler")) == "bootstrap", "handler is bootstrap", f"got {fn.get('handler')}")
    R.check(one(fn.get("runtime")) == "provided.al2023", "runtime is provided.al2023", f"got {fn.get('runtime')}")
    R.check(one(fn.get("architectures")) == ["arm64"], "architecture is arm64", f"got {fn.get('architectures')}")
    R.check(
        one(fn.get("filename")) == "${var.lambda_zip_dir}/${each.key}/bootstrap.zip",
        "code is <lambda_zip_dir>/<function>/bootstrap.zip (cargo lambda build --output-format zip)",
        f"got {fn.get('filename')}",
    )
    R.check(one(fn.get("function_name")) == "${local.function_names[each.key]}", "function_name comes from local.function_names")
    names = one(tf["locals"].get("function_names", [""]))
    R.check(
        re.fullmatch(r'\$\{\{for k in keys\(local\.functions\) : k => "\$\{var\.name\}-\$\{k\}"\}\}', str(names)) is not None,
        "function names are <name>-<function>",
        f"got {names}",
    )
    for k in SYNC_FUNCTIONS:
        R.check(functions.get(k, {}).get("timeout") == 900, f"{k} times out at 900 s", f"got {functions.get(k, {}).get('timeout')}")
    R.check(var_default(tf, "sync_memory_size") == 1024, "sync memory defaults to 1024 MB")
    R.check(var_default(tf, "sync_ephemeral_storage_size") == 2048, "sync /tmp defaults to 2048 MB")

    logging = one(fn.get("logging_config", [{}]))
    R.check(one(logging.get("log_format")) == "JSON", "logs are JSON (AWS_LAMBDA_LOG_FORMAT)", f"got {logging}")
    R.check("application_log_level" in logging and "system_log_level" in logging, "log levels are set (AWS_LAMBDA_LOG_LEVEL)")

    invoke = tf["resource"].get("aws_lambda_function_event_invoke_config", {})
    sync_cfg = invoke.get("sync", {})
    R.check(one(sync_cfg.get("for_each")) == "${toset(local.sync_functions)}", "sync-* have asynchronous invocation settings")
    R.check(one(tf["locals"].get("sync_functions")) == list(SYNC_FUNCTIONS), "local.sync_functions is sync-scheduled, sync-upload")
    R.check(one(sync_cfg.get("maximum_retry_attempts")) == 2, "sync-* retry a failed asynchronous event twice, explicitly")
    dest = one(sync_cfg.get("destination_config", [{}]))
    notify_arn = '${aws_lambda_function.this["notify"].arn}'
    R.check(
        one(one(dest.get("on_success", [{}])).get("destination")) == notify_arn
        and one(one(dest.get("on_failure", [{}])).get("destination")) == notify_arn,
        "sync-* send successes and failures to notify",
    )
    notify_cfg = one(invoke.get("notify", {}).get("destination_config", [{}]))
    R.check(
        "aws_sqs_queue" in str(one(one(notify_cfg.get("on_failure", [{}])).get("destination"))),
        "notify's own failures go to an SQS dead-letter queue",
    )
    R.check("dead_letter_config" in fn, "every function has a dead_letter_config")


def design_env_table() -> list[tuple[list[str], str, str]]:
    """(variables, used by, meaning) rows of DESIGN.md's environment variable table."""
    rows = []
    in_section = False
    for line in DESIGN.read_text().splitlines():
        if line.startswith("## "):
            in_section = "Environment variables" in line
            continue
        if in_section and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3:
                names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
                if names:
                    rows.append((names, cells[1], cells[2]))
    return rows


def users(used_by: str) -> set[str]:
    out: set[str] = set()
    for token in re.split(r"[,/]|\band\b", used_by):
        token = token.strip().strip("`")
        if token == "all":
            out.update(ALL_FUNCTIONS)
        elif token == "sync-*":
            out.update(SYNC_FUNCTIONS)
        elif token in ALL_FUNCTIONS:
            out.add(token)
    return out


def check_environment(tf: dict[str, Any]) -> None:
    rows = design_env_table()
    if not R.check(bool(rows), "DESIGN.md has the environment variable table"):
        return
    table = {n: (used_by, meaning) for names, used_by, meaning in rows for n in names}

    code_files = list((ROOT / "shared" / "src").rglob("*.rs")) + list((ROOT / "functions").glob("*/src/**/*.rs"))
    in_code = sorted({v for f in code_files for v in re.findall(r"PIPEFY_SYNC_[A-Z0-9_]*[A-Z0-9]", f.read_text())})
    undocumented = [v for v in in_code if v not in table]
    R.check(
        not undocumented,
        f"every PIPEFY_SYNC_* variable in the code is in DESIGN.md's table ({len(in_code)} found)",
        f"add to the table (and to Terraform if a function reads it): {undocumented}",
    )

    env = one(tf["locals"].get("function_environment")) or {}
    fn = tf["resource"].get("aws_lambda_function", {}).get("this", {})
    variables = one(one(fn.get("environment", [{}])).get("variables"))
    R.check(
        isinstance(variables, str) and "local.function_environment[each.key]" in variables,
        "the functions' environment is local.function_environment[<function>]",
        f"got {variables}",
    )
    R.check(set(env) == set(ALL_FUNCTIONS), "local.function_environment covers the three functions", f"got {sorted(env)}")

    for var, (used_by, meaning) in sorted(table.items()):
        readers = users(used_by)
        setters = {f for f, e in env.items() if var in e}
        if var.startswith("PIPEFY_SYNC_"):
            R.check(setters == readers, f"{var} is set exactly on the functions that read it ({used_by})", f"Terraform sets it on {sorted(setters)}, DESIGN.md says {sorted(readers)}")
            default = re.search(r"default\s+`([^`]+)`", meaning)
            if default and setters:
                values = {resolve_literal(tf, env[f][var]) for f in setters}
                literal = {v for v in values if v is not None}
                if literal:
                    R.check(literal == {default.group(1)}, f"{var} is set to DESIGN.md's default `{default.group(1)}`", f"Terraform: {sorted(map(str, literal))}")
        elif var in ("AWS_LAMBDA_LOG_LEVEL", "AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_FUNCTION_NAME"):
            # Lambda sets these (from logging_config, checked above; the function name).
            R.check(not setters, f"{var} is left to Lambda", f"Terraform sets it on {sorted(setters)}")
        elif var.startswith("AWS_ENDPOINT_URL"):
            R.check(not setters, f"{var} (local runs only) is not set in AWS", f"Terraform sets it on {sorted(setters)}")
        else:
            R.check(False, f"{var}: agreement.py knows who sets it", "teach tests/infra/agreement.py about this variable")

    stray = sorted({v for e in env.values() for v in e if v not in table})
    R.check(not stray, "Terraform sets no variable DESIGN.md does not list", f"{stray}")

    # The alarms watch what the functions publish.
    alarm = tf["resource"].get("aws_cloudwatch_metric_alarm", {}).get("rows_failed", {})
    R.check(
        one(alarm.get("namespace")) == "${var.metrics_namespace}"
        and "${var.metrics_namespace}" in [env.get(f, {}).get("PIPEFY_SYNC_METRICS_NAMESPACE") for f in SYNC_FUNCTIONS]
        and var_default(tf, "metrics_namespace") == "PipefySync",
        "RowsFailed alarms watch the namespace the functions publish to (default PipefySync)",
    )
    R.check(one(alarm.get("metric_name")) == "RowsFailed", "the failed-rows alarm watches RowsFailed")
    R.check(set(one(alarm.get("dimensions", [{}])) or {}) == {"Destination"}, "the failed-rows alarm has the Destination dimension")

    config_prefix = resolve_literal(tf, "${local.config_prefix}")
    obj = tf["resource"].get("aws_s3_object", {}).get("destination", {})
    R.check(
        config_prefix == "config/destinations/" and one(obj.get("key")) == "${local.config_prefix}${each.key}.yaml",
        "destination files are uploaded as config/destinations/<name>.yaml",
        f"prefix {config_prefix}, key {obj.get('key')}",
    )
    R.check(one(obj.get("source")) == "${each.value.path}", "the uploaded object is the destination file itself")


def check_payloads(tf: dict[str, Any], evaluated: dict[str, Any] | None) -> None:
    schedule = tf["resource"].get("aws_scheduler_schedule", {}).get("destination", {})
    target = one(schedule.get("target", [{}]))
    R.check(one(target.get("arn")) == '${aws_lambda_function.this["sync-scheduled"].arn}', "schedules invoke sync-scheduled")
    R.check(one(target.get("input")) == "${local.schedule_payloads[each.key]}", "schedules send local.schedule_payloads")
    R.check(one(schedule.get("for_each")) == "${local.scheduled_destinations}", "one schedule per destination with a schedule")
    for key in ("retry_policy", "dead_letter_config"):
        R.check(key in target, f"schedules have a {key}")

    import json

    payloads: list[tuple[str, dict[str, Any]]] = []
    if evaluated is None:
        # Without terraform: the payloads' keys, read from destinations.tf's text.
        text = (MODULE / "destinations.tf").read_text()
        sched = re.search(r"schedule_payloads = \{(.*?)\n  \}", text, re.S)
        manual = re.search(r"manual_payloads = \{(.*?)\n  \}", text, re.S)
        if not R.check(bool(sched and manual), "destinations.tf defines schedule_payloads and manual_payloads"):
            return
        sched_keys = re.findall(r'\\"(\w+)\\":', sched.group(1))
        R.check(
            SCHEDULED_TIME in sched.group(1) and "jsonencode({" not in sched.group(1),
            f"the schedule payload carries {SCHEDULED_TIME} as literal text (jsonencode would escape < and >)",
        )
        payloads.append(("schedule payload", {k: "x" for k in sched_keys}))
        for label, body in re.findall(r"(\w+)\s*=\s*jsonencode\(\{([^}]*)\}\)", manual.group(1)):
            payloads.append((f"manual {label} payload", {k: "x" for k in re.findall(r"(\w+)\s*=", body)}))
        R.skip("payload values", "terraform is not installed; keys were read from the text of destinations.tf")
    else:
        for name, raw in evaluated["schedule_payloads"].items():
            R.check(SCHEDULED_TIME in raw, f"schedule payload of {name} carries {SCHEDULED_TIME} literally (Scheduler substitutes only that text)", raw)
            payloads.append((f"schedule payload of {name}", json.loads(raw)))
            R.check(json.loads(raw) == {"destination": name, "scheduled_time": SCHEDULED_TIME}, f"schedule payload of {name} is DESIGN.md's", raw)
        for name, cmds in evaluated["manual_payloads"].items():
            payloads.append((f"manual run of {name}", json.loads(cmds["run"])))
            payloads.append((f"manual dry run of {name}", json.loads(cmds["dry_run"])))
            R.check(json.loads(cmds["dry_run"]).get("dry_run") is True, f"dry-run payload of {name} has dry_run: true")
            payloads.append((f"manual drift report of {name}", json.loads(cmds["drift"])))
            R.check(json.loads(cmds["drift"]).get("drift") is True, f"drift payload of {name} has drift: true")

    if not EVENTS_RS.exists():
        R.check(
            False,
            "payload keys match the payload struct of shared/src/lambda/events.rs",
            f"{EVENTS_RS.relative_to(ROOT)} does not exist yet: the sync-scheduled payload struct (serde fields "
            "destination, scheduled_time, dry_run, full_resync, files, continue_run) belongs there",
        )
        return
    structs = [s for s in parse_rust_structs(EVENTS_RS.read_text()).values() if "destination" in s.accepted]
    if not R.check(bool(structs), "events.rs has a struct with a `destination` field"):
        return
    problems: dict[str, list[str]] = {}
    for s in structs:
        for label, p in payloads:
            unknown = set(p) - s.accepted if not s.open else set()
            missing = s.required - set(p)
            if unknown:
                problems.setdefault(s.name, []).append(f"{label}: keys {sorted(unknown)} are not fields of {s.name}")
            if missing:
                problems.setdefault(s.name, []).append(f"{label}: required fields {sorted(missing)} of {s.name} are missing")
    fitting = [s.name for s in structs if s.name not in problems]
    R.check(
        bool(fitting),
        f"every Terraform payload deserializes into the events.rs payload struct ({', '.join(fitting) or 'none'})",
        "; ".join(p for ps in problems.values() for p in ps),
    )


# Fields of the destination files Terraform reads: (struct, serde key).
TERRAFORM_READS = [
    ("Destination", "name"),
    ("Destination", "source"),
    ("Destination", "trigger"),
    ("Destination", "token"),
    ("Destination", "sync"),
    ("SourceConfig", "bucket"),
    ("SourceConfig", "layer"),
    ("SourceConfig", "table"),
    ("Trigger", "schedule"),
    ("Trigger", "on_upload"),
    ("Schedule", "expression"),
    ("Schedule", "timezone"),
    ("OnUpload", "suffixes"),
    ("TokenSource", "secret"),
    ("SyncOptions", "failed_rows_alert_threshold"),
    ("FieldMappingFull", "attach"),
    ("AttachConfig", "bucket"),
    ("AttachConfig", "prefix"),
]

# Where each key of a destination file is described: path in the YAML -> struct.
YAML_STRUCTS = {
    (): "Destination",
    ("source",): "SourceConfig",
    ("trigger",): "Trigger",
    ("trigger", "schedule"): "Schedule",
    ("trigger", "on_upload"): "OnUpload",
    ("token",): "TokenSource",
    ("sync",): "SyncOptions",
    ("limits",): "Limits",
    ("key",): "KeyConfig",
}


def check_destination_files(structs: dict[str, RustStruct]) -> list[tuple[str, Any]]:
    for sname, key in TERRAFORM_READS:
        s = structs.get(sname)
        R.check(s is not None and key in s.accepted, f"config/mod.rs still has {sname}.{key}, which Terraform reads")

    docs = load_destination_docs(EXAMPLE_DESTINATIONS)
    R.check(len(docs) >= 1, "the example has destination files")
    for fname, doc in docs:
        problems = []
        for path, sname in YAML_STRUCTS.items():
            node: Any = doc
            for p in path:
                node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                continue
            s = structs.get(sname)
            if s is None or not isinstance(node, dict):
                problems.append(f"{'.'.join(path) or '<top>'}: cannot check against {sname}")
                continue
            unknown = set(node) - s.accepted
            missing = s.required - set(node)
            if unknown:
                problems.append(f"{'.'.join(path) or '<top>'}: unknown keys {sorted(unknown)} ({sname} denies unknown fields)")
            if missing:
                problems.append(f"{'.'.join(path) or '<top>'}: missing required {sorted(missing)}")
        R.check(not problems, f"example {fname} fits shared/src/config/mod.rs", "; ".join(problems))
    return docs


def write_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def dest_yaml(name: str, layer: str = "refined", table: str = "t", bucket: str | None = "lake", trigger: str = "", token: bool = True, mapping: str = "") -> str:
    lines = [f"name: {name}", "operation: create_card", 'pipe_id: "1"', "source:"]
    if bucket is not None:
        lines.append(f"  bucket: {bucket}")
    lines += [f"  layer: '{layer}'", f"  table: '{table}'", "mapping:", "  title: a"]
    lines += ["  " + m for m in mapping.strip("\n").split("\n") if m]
    if trigger:
        lines.append("trigger:")
        lines += ["  " + t for t in trigger.strip("\n").split("\n")]
    if token:
        lines += ["token:", "  secret: pipefy/token"]
    return "\n".join(lines) + "\n"


EVAL = {
    "destinations": "local.destinations",
    "upload_notifications": "local.upload_notifications",
    "scheduled_destinations": "local.scheduled_destinations",
    "source_access": "local.source_access",
    "token_secret_ids": "local.token_secret_ids",
    "destination_errors": "local.destination_errors",
    "schedule_payloads": "local.schedule_payloads",
    "manual_payloads": "local.manual_payloads",
}


def check_example_evaluated(docs: list[tuple[str, Any]], ev: dict[str, Any]) -> None:
    R.check(ev["destination_errors"] == [], "the example's destination files are deployable", f"{ev['destination_errors']}")
    names = {d["name"] for _, d in docs}
    R.check(set(ev["destinations"]) == names, "Terraform finds the example's destinations by name", f"{sorted(ev['destinations'])}")
    check_upload_filters("example", ev["upload_notifications"], wanted_uploads(docs))

    want_sched = {
        d["name"]: {"expression": d["trigger"]["schedule"]["expression"], "timezone": d["trigger"]["schedule"].get("timezone") or "UTC"}
        for _, d in docs
        if (d.get("trigger") or {}).get("schedule")
    }
    R.check(ev["scheduled_destinations"] == want_sched, "example schedules: expression and time zone of each file", f"{ev['scheduled_destinations']}")

    all_src = read_access(docs, uploads_only=False)
    up_src = read_access(docs, uploads_only=True)
    got = {f: {b: set(p) for b, p in m.items()} for f, m in ev["source_access"].items()}
    R.check(got.get("sync-scheduled") == all_src, "sync-scheduled may read the source prefixes of all destinations, only", f"{got.get('sync-scheduled')}")
    R.check(got.get("sync-upload") == up_src, "sync-upload may read the source prefixes of upload destinations, only", f"{got.get('sync-upload')}")
    R.check(
        ev["token_secret_ids"] == sorted({d["token"]["secret"] for _, d in docs}),
        "the secrets the functions may read are the destinations' token.secret",
        f"{ev['token_secret_ids']}",
    )


def check_handmade_folders(tmp: Path) -> None:
    """Edge cases of the destination -> Terraform derivation, each in its own folder."""
    cases: list[tuple[str, dict[str, str], Callable[[dict[str, Any], list[tuple[str, Any]]], None]]] = []

    def filters_match(label: str) -> Callable[[dict[str, Any], list[tuple[str, Any]]], None]:
        def f(ev: dict[str, Any], docs: list[tuple[str, Any]]) -> None:
            R.check(ev["destination_errors"] == [], f"{label}: no error", f"{ev['destination_errors']}")
            check_upload_filters(label, ev["upload_notifications"], wanted_uploads(docs))

        return f

    cases.append(("no suffixes: no suffix filter", {"a.yaml": dest_yaml("a", trigger="on_upload:\n  suffixes: []")}, filters_match("no suffixes")))
    cases.append(("on_upload: {}", {"a.yaml": dest_yaml("a", trigger="on_upload: {}")}, filters_match("on_upload {}")))
    cases.append(
        (
            "slashes around layer and table",
            {"a.yml": dest_yaml("a", layer="/raw/", table="events/", trigger="on_upload:\n  suffixes: ['.jsonl']")},
            filters_match("slashes"),
        )
    )
    cases.append(
        (
            "two destinations on one table, one without suffix",
            {
                "a.yaml": dest_yaml("a", trigger="on_upload:\n  suffixes: ['.csv', '.csv.gz']"),
                "b.yaml": dest_yaml("b", trigger="on_upload: {}"),
                "c.yaml": dest_yaml("c", table="other", bucket="lake2", trigger="on_upload:\n  suffixes: ['.gz', '.csv.gz']"),
            },
            filters_match("covered filters"),
        )
    )

    def null_upload(ev: dict[str, Any], docs: list[tuple[str, Any]]) -> None:
        R.check(ev["upload_notifications"] == {}, "`on_upload:` (null) is no upload trigger", f"{ev['upload_notifications']}")
        R.check(ev["scheduled_destinations"] == {"a": {"expression": "rate(1 hour)", "timezone": "UTC"}}, "a schedule without timezone runs in UTC", f"{ev['scheduled_destinations']}")
        R.check(ev["source_access"]["sync-upload"] == {}, "sync-upload reads nothing when no destination has an upload trigger", f"{ev['source_access']}")

    def attach_access(ev: dict[str, Any], docs: list[tuple[str, Any]]) -> None:
        R.check(ev["destination_errors"] == [], "attach: no error", f"{ev['destination_errors']}")
        got = {f: {b: set(p) for b, p in m.items()} for f, m in ev["source_access"].items()}
        want = read_access(docs, uploads_only=False)
        R.check(
            want == {"lake": {"refined/t/", "invoices/2024/", ""}, "docs": {"contracts/"}},
            "attach: the expectation covers another bucket, slashes, the whole bucket and `attach:` alone",
            f"{want}",
        )
        R.check(got.get("sync-scheduled") == want, "sync-scheduled may read the attach locations of the mappings, only", f"{got.get('sync-scheduled')}")
        R.check(got.get("sync-upload") == read_access(docs, uploads_only=True), "sync-upload may read the attach locations of upload destinations", f"{got.get('sync-upload')}")

    cases.append(
        (
            "attachments from S3",
            {
                "a.yaml": dest_yaml(
                    "a",
                    trigger="on_upload: {}",
                    mapping="invoice: { column: f, attach: { prefix: /invoices/2024/ } }\ncontract: { column: c, attach: { bucket: docs, prefix: contracts } }",
                ),
                "b.yaml": dest_yaml("b", mapping="scan: { column: s, attach: {} }\nother: { column: o, attach: }\nplain: p"),
            },
            attach_access,
        )
    )
    cases.append(("null on_upload", {"a.yaml": dest_yaml("a", trigger="schedule:\n  expression: rate(1 hour)\non_upload:")}, null_upload))

    def errors(expected: list[str]) -> Callable[[dict[str, Any], list[tuple[str, Any]]], None]:
        def f(ev: dict[str, Any], docs: list[tuple[str, Any]]) -> None:
            errs = ev["destination_errors"]
            for e in expected:
                R.check(any(e in m for m in errs), f"reported: {e}", f"errors: {errs}")

        return f

    cases.append(
        (
            "broken files",
            {
                "a.yaml": dest_yaml("Bad Name"),
                "b.yaml": dest_yaml("dup"),
                "c.yaml": dest_yaml("dup"),
                "d.yaml": dest_yaml("nobucket", bucket=None),
                "e.yaml": dest_yaml("notoken", token=False),
                "f.yaml": dest_yaml("badcron", trigger="schedule:\n  expression: every day"),
                "g.yaml": "- just\n- a list\n",
            },
            errors(
                [
                    'a.yaml: name "Bad Name" must match',
                    'b.yaml, c.yaml: the name "dup" is used by more than one file',
                    "d.yaml: source.bucket is missing",
                    "e.yaml: token.secret is missing",
                    'f.yaml: trigger.schedule.expression "every day"',
                    "g.yaml: not a YAML mapping",
                ]
            ),
        )
    )
    cases.append(
        (
            "overlapping filters",
            {
                "a.yaml": dest_yaml("a", table="b", trigger="on_upload:\n  suffixes: ['.csv']"),
                "b.yaml": dest_yaml("b", table="b/c", trigger="on_upload: {}"),
            },
            errors(['bucket lake: S3 event filters overlap and cannot both exist: prefix "refined/b/" suffix ".csv" and prefix "refined/b/c/" suffix ""']),
        )
    )

    for i, (label, files, verify) in enumerate(cases):
        folder = write_folder(tmp / f"case{i}", files)
        try:
            ev = tf_eval(folder, EVAL)
        except RuntimeError as e:
            R.check(False, f"{label}: destinations.tf evaluates", str(e))
            continue
        docs = [(n, d) for n, d in load_destination_docs(folder) if isinstance(d, dict)]
        verify(ev, docs)


# --------------------------------------------------------------------------------------
# The results table (results.tf) against the result lines of shared/src/report/mod.rs


INT_TYPES = {"u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize"}


def bare_type(rtype: str) -> str:
    """A Rust type without a leading reference (`&'a str` -> `str`)."""
    return re.sub(r"^&\s*(?:'\w+\s+)?(?:mut\s+)?", "", rtype.strip()).strip()


def glue_type(rtype: str, structs: dict[str, RustStruct], enums: set[str]) -> str | None:
    """The Hive/Glue type of what serde writes for a Rust type; None when unknown."""
    t = bare_type(rtype)
    m = re.fullmatch(r"(?:Option|Box|Arc)<(.+)>", t)
    if m:
        return glue_type(m.group(1), structs, enums)
    m = re.fullmatch(r"Vec<(.+)>", t)
    if m:
        inner = glue_type(m.group(1), structs, enums)
        return f"array<{inner}>" if inner else None
    if t in ("String", "str") or re.fullmatch(r"Cow<(?:'\w+,\s*)?str>", t) or re.fullmatch(r"DateTime<\w+>", t):
        return "string"
    if t in INT_TYPES:
        return "bigint"
    if t in ("f32", "f64"):
        return "double"
    if t == "bool":
        return "boolean"
    if t in structs and not structs[t].flattened:
        parts = [(k, glue_type(v, structs, enums)) for k, v in structs[t].written.items()]
        if any(p is None for _, p in parts):
            return None
        return "struct<" + ",".join(f"{k}:{p}" for k, p in parts) + ">"
    if t in enums:  # unit enums, written as their (renamed) variant names
        return "string"
    return None


def split_top(text: str, sep: str = ",") -> list[str]:
    """`text` split at `sep` outside <>, (), [] and string literals."""
    out, depth, cur, quoted = [], 0, "", False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "<([":
            depth += 1
        elif not quoted and ch in ">)]":
            depth -= 1
        elif not quoted and ch == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def canonical_glue(t: str) -> str:
    """A Glue type with blanks removed, lowercased, and struct members in name order (the JSON
    SerDe matches members by name)."""
    t = re.sub(r"\s+", "", t).lower()
    m = re.fullmatch(r"array<(.+)>", t)
    if m:
        return f"array<{canonical_glue(m.group(1))}>"
    m = re.fullmatch(r"struct<(.+)>", t)
    if m:
        members = []
        for member in split_top(m.group(1)):
            name, _, mtype = member.partition(":")
            members.append(f"{name}:{canonical_glue(mtype)}")
        return "struct<" + ",".join(sorted(members)) + ">"
    return t


def rust_enum_values(text: str, name: str) -> list[str] | None:
    """The serde names of a unit enum's variants (rename_all and rename honoured)."""
    nc = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?enum\s+" + name + r"\s*\{([^}]*)\}", nc)
    if not m:
        return None
    rule_m = re.search(r'rename_all\s*=\s*"([^"]+)"', m.group(1))
    values = []
    for vm in re.finditer(r"((?:#\[[^\]]*\]\s*)*)([A-Z]\w*)\s*(?:,|$)", m.group(2)):
        rn = re.search(r'rename\s*=\s*"([^"]+)"', vm.group(1))
        variant = vm.group(2)
        if rn:
            values.append(rn.group(1))
        elif rule_m:
            values.append(_case(re.sub(r"(?<!^)(?=[A-Z])", "_", variant).lower(), rule_m.group(1)))
        else:
            values.append(variant)
    return values


def result_line_fields(structs: dict[str, RustStruct]) -> tuple[dict[str, str] | None, str]:
    """The keys of one result line -> their Rust types: RowResult's fields plus those of the
    struct that flattens a RowResult into a line (run_id); RowResult plus run_id when no such
    struct exists (yet)."""
    row = structs["RowResult"]
    wrappers = [s for s in structs.values() if any(bare_type(f) == "RowResult" for f in s.flattened)]
    if len(wrappers) > 1:
        return None, f"more than one struct flattens RowResult: {sorted(s.name for s in wrappers)}"
    if wrappers:
        w = wrappers[0]
        return {**w.written, **row.written}, f"{w.name}: its fields and RowResult's"
    return {"run_id": "String", **row.written}, "RowResult plus run_id"


def chrono_to_java(fmt: str) -> str | None:
    """A chrono date format as Athena's projection format (java.time), for the parts a day
    folder uses."""
    out, i = "", 0
    table = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%F": "yyyy-MM-dd"}
    while i < len(fmt):
        if fmt[i] == "%":
            piece = table.get(fmt[i : i + 2])
            if piece is None:
                return None
            out += piece
            i += 2
        else:
            out += fmt[i]
            i += 1
    return out


def rust_fn_body(text: str, name: str) -> str | None:
    nc = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"\bfn\s+" + name + r"\s*(?:<[^>]*>)?\s*\(", nc)
    if not m:
        return None
    start = nc.find("{", m.end())
    depth, i = 1, start + 1
    while i < len(nc) and depth:
        depth += {"{": 1, "}": -1}.get(nc[i], 0)
        i += 1
    return nc[start + 1 : i - 1]


def results_layout_from_fn(body: str) -> tuple[str | None, str | None, str]:
    """results_prefix's format!(...) as a layout: `<reports>` (the reports prefix, ending in
    '/'), `${destination}`, `${run_date}`; with the chrono format of the date."""
    fm = re.search(r'format!\(\s*"((?:[^"\\]|\\.)*)"', body)
    if not fm:
        return None, None, "results_prefix builds no format!(\"...\", ...) that agreement.py can read"
    depth, i = 1, body.index("(", fm.start()) + 1
    while i < len(body) and depth:
        depth += {"(": 1, ")": -1}.get(body[i], 0)
        i += 1
    args = split_top(body[fm.end() : i - 1].strip().removeprefix(","))
    out, date_format, positional = "", None, 0
    for piece in re.split(r"(\{\{|\}\}|\{[^{}]*\})", fm.group(1)):
        if piece in ("{{", "}}"):
            out += piece[0]
            continue
        if not piece.startswith("{"):
            out += piece
            continue
        name = piece[1:-1].split(":")[0].strip()
        if name == "":
            arg = args[positional] if positional < len(args) else ""
            positional += 1
        elif name.isdigit():
            arg = args[int(name)] if int(name) < len(args) else ""
        else:
            arg = name
        dm = re.search(r'\.format\(\s*"([^"]+)"\s*\)', arg)
        if "destination_prefix(" in arg:
            out += "<reports>${destination}/"  # destination_prefix: "<reports>/<destination>/"
        elif dm:
            out += "${run_date}"
            date_format = dm.group(1)
        elif arg == "destination":
            out += "${destination}"
        elif arg == "reports_prefix":
            out += "<reports>"
        else:
            return None, None, f"agreement.py cannot read the argument {arg!r} of results_prefix's format!"
    return out, date_format, "results_prefix in shared/src/report/mod.rs"


def doc_layout(text: str) -> list[str]:
    """The paths of the module doc's layout (`//! reports/...`) with ${destination} and
    ${run_date} for their placeholders, and <reports> for the reports prefix."""
    paths = []
    for line in text.splitlines():
        if not line.startswith("//!"):
            continue
        p = line[3:].strip()
        if p.startswith("reports/"):
            p = "<reports>" + p[len("reports/") :]
            paths.append(p.replace("<destination>", "${destination}").replace("<YYYY-MM-DD>", "${run_date}"))
    return paths


def template_text(tf: dict[str, Any], expr: Any) -> str | None:
    """A Terraform string with the locals it names spelled out where they are literals
    (`$${x}`, Terraform's escape, becomes `${x}`)."""
    if not isinstance(expr, str):
        return None
    m = re.fullmatch(r"\$\{local\.([a-z0-9_]+)\}", expr)
    if m and isinstance(one(tf["locals"].get(m.group(1))), str):
        expr = one(tf["locals"][m.group(1)])

    def literal(mm: re.Match[str]) -> str:
        v = resolve_literal(tf, mm.group(0))
        return v if isinstance(v, str) else mm.group(0)

    return re.sub(r"(?<!\$)\$\{local\.[a-z0-9_]+\}", literal, expr).replace("$${", "${")


def check_results(tf: dict[str, Any]) -> None:
    if not R.check(REPORT_RS.exists(), "shared/src/report/mod.rs exists (RowResult, KeptEdit, results_prefix)"):
        return
    text = REPORT_RS.read_text()
    structs = parse_rust_structs(text)
    if not R.check("RowResult" in structs and "KeptEdit" in structs, "report/mod.rs has the structs RowResult and KeptEdit"):
        return
    enums = set(re.findall(r"\benum\s+(\w+)", re.sub(r"//[^\n]*", "", text)))
    fields, label = result_line_fields(structs)
    if not R.check(fields is not None, "report/mod.rs says what one result line holds", label):
        return
    assert fields is not None
    R.check("run_id" in fields, f"every result line carries run_id ({label})", f"fields: {sorted(fields)}")

    table = tf["resource"].get("aws_glue_catalog_table", {}).get("results")
    db = tf["resource"].get("aws_glue_catalog_database", {}).get("results")
    if not R.check(table is not None and db is not None, "results.tf defines aws_glue_catalog_database.results and aws_glue_catalog_table.results"):
        return
    gate = "${var.results_table_enabled ? 1 : 0}"
    R.check(
        var_default(tf, "results_table_enabled") is True and one(table.get("count")) == gate and one(db.get("count")) == gate,
        "the results table and its database exist unless results_table_enabled is false (default true)",
        f"default {var_default(tf, 'results_table_enabled')}, counts {table.get('count')} {db.get('count')}",
    )
    R.check(
        one(db.get("name")) == "${var.results_database_name}" and var_default(tf, "results_database_name") == "pipefy_sync",
        "the Glue database is var.results_database_name, default pipefy_sync",
    )
    R.check(resolve_literal(tf, one(table.get("name"))) == "pipefy_sync_results", "the table is pipefy_sync_results", f"got {table.get('name')}")
    R.check(one(table.get("database_name")) == "${aws_glue_catalog_database.results[0].name}", "the table is in the module's results database")
    R.check(one(table.get("table_type")) == "EXTERNAL_TABLE", "the table is an EXTERNAL_TABLE (its data stays in S3)")
    sd = one(table.get("storage_descriptor", [{}])) or {}
    serde = one(sd.get("ser_de_info", [{}])) or {}
    R.check(
        one(serde.get("serialization_library")) == "org.openx.data.jsonserde.JsonSerDe",
        "the table reads JSON Lines with the OpenX JSON SerDe",
        f"got {serde.get('serialization_library')}",
    )
    R.check(
        one(sd.get("input_format")) == "org.apache.hadoop.mapred.TextInputFormat"
        and one(sd.get("output_format")) == "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        "the table's files are text (TextInputFormat / HiveIgnoreKeyTextOutputFormat)",
    )

    columns = [(one(c.get("name")), one(c.get("type"))) for c in sd.get("columns", [])]
    names = [n for n, _ in columns]
    R.check(len(names) == len(set(names)), "no column is defined twice", f"{names}")
    R.check(
        set(names) == set(fields),
        f"the table's columns are exactly the keys of a result line ({label})",
        f"only in Terraform: {sorted(set(names) - set(fields))}; only in the Rust: {sorted(set(fields) - set(names))}",
    )
    wrong = []
    for n, t in columns:
        if n not in fields:
            continue
        want = glue_type(fields[n], structs, enums)
        if want is None:
            wrong.append(f"{n}: agreement.py cannot map the Rust type {fields[n]} to a Glue type (teach glue_type)")
        elif canonical_glue(str(t)) != canonical_glue(want):
            wrong.append(f"{n}: Terraform says {t}, the Rust {fields[n]} is {want}")
    R.check(not wrong, "every column's type fits its Rust field (u64 is bigint, Vec<KeptEdit> is array<struct<...>> of KeptEdit's fields)", "; ".join(wrong))

    keys = [(one(k.get("name")), one(k.get("type"))) for k in table.get("partition_keys", [])]
    R.check(keys == [("destination", "string"), ("run_date", "string")], "the partition keys are destination and run_date, both strings", f"got {keys}")
    R.check(not {k for k, _ in keys} & set(names), "no partition key is also a column of the lines")

    params = one(table.get("parameters", [{}])) or {}
    R.check(params.get("projection.enabled") == "true", "partition projection is on (no crawler, no partitions to add)")
    R.check(params.get("projection.destination.type") == "enum", "destination is projected as an enum")
    R.check(
        params.get("projection.run_date.type") == "date"
        and params.get("projection.run_date.interval") == "1"
        and params.get("projection.run_date.interval.unit") == "DAYS",
        "run_date is projected as a date, one partition a day",
    )
    rng = str(params.get("projection.run_date.range", "")).split(",")
    R.check(
        len(rng) == 2 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", rng[0]) is not None and rng[1] == "NOW",
        "run_date's range runs from a yyyy-MM-dd date to NOW",
        f"got {params.get('projection.run_date.range')}",
    )

    # Where the lines are: the Rust's results_prefix (or, before it exists, the module doc's
    # layout) against storage.location.template.
    doc_paths = doc_layout(text)
    doc_results = [p for p in doc_paths if "/results/" in p and p.endswith(".jsonl")]
    body = rust_fn_body(text, "results_prefix")
    if body is not None:
        layout, date_format, source = results_layout_from_fn(body)
    elif len(doc_results) == 1:
        layout, date_format, source = doc_results[0].rsplit("/", 1)[0] + "/", "%Y-%m-%d", "the layout in report/mod.rs's module doc"
    else:
        layout, date_format, source = None, None, "report/mod.rs has no results_prefix and its module doc no single results/ line"
    if not R.check(layout is not None, "the result parts' folder can be read from the Rust", source):
        return
    assert layout is not None
    settings = SETTINGS_RS.read_text() if SETTINGS_RS.exists() else ""
    rp = re.search(r'reports_prefix:\s*"([^"]*)"', settings)
    report_prefix = resolve_literal(tf, "${local.report_prefix}")
    R.check(
        rp is not None and rp.group(1) == report_prefix,
        "the functions' reports prefix (lambda/settings.rs) is local.report_prefix",
        f"settings.rs: {rp.group(1) if rp else 'not found'}, Terraform: {report_prefix}",
    )
    reports = rp.group(1) if rp else str(report_prefix)
    want_template = "s3://${local.bucket_name}/" + layout.replace("<reports>", reports.rstrip("/") + "/" if reports.strip("/") else "")
    got_template = template_text(tf, params.get("storage.location.template"))
    R.check(
        got_template == want_template,
        f"storage.location.template is where the functions write the result parts ({source})",
        f"Terraform {got_template}, the Rust {want_template}",
    )
    java = chrono_to_java(date_format or "")
    R.check(
        java is not None and params.get("projection.run_date.format") == java,
        f"run_date's projection format is the Rust's date format ({date_format} is {java})",
        f"Terraform: {params.get('projection.run_date.format')}",
    )
    env = one(tf["locals"].get("function_environment")) or {}
    R.check(
        all(env.get(f, {}).get("PIPEFY_SYNC_BUCKET") == "${local.bucket_name}" for f in SYNC_FUNCTIONS),
        "the table reads the bucket the sync functions write (local.bucket_name)",
    )
    base = template_text(tf, one(sd.get("location")))
    R.check(
        base is not None and got_template is not None and got_template.startswith(base),
        "the table's location holds every projected partition",
        f"location {base}, template {got_template}",
    )
    # Result parts expire with the reports.
    rules = one(tf["resource"].get("aws_s3_bucket_lifecycle_configuration", {}).get("this", {}).get("rule", [])) or []
    rules = rules if isinstance(rules, list) else [rules]
    expiring = [
        template_text(tf, one(one(r.get("filter", [{}])).get("prefix")))
        for r in rules
        if (one(r.get("expiration", [{}])) or {}).get("days") is not None
    ]
    path = want_template.split("/", 3)[3]
    R.check(
        any(isinstance(p, str) and p and path.startswith(p) for p in expiring),
        "result parts expire with the reports (a lifecycle rule with days covers their folder)",
        f"expiring prefixes {expiring}, results {path}",
    )

    if doc_results:
        doc_dir = doc_results[0].rsplit("/", 1)[0] + "/"
        R.check(doc_dir == layout, "report/mod.rs's module doc shows the result parts where results_prefix puts them", f"doc {doc_dir}, code {layout}")
        R.check(doc_results[0].rsplit("/", 1)[1].startswith("<run-id>"), "a result part's name starts with its run id (a day's runs share one folder)", doc_results[0])
        others = [p for p in doc_paths if p not in doc_results and p.startswith(layout)]
        R.check(not others, "nothing but result parts lies in the results folders (Athena would read it as lines)", f"{others}")
    else:
        R.check(False, "report/mod.rs's module doc shows where the result parts go", f"layout lines: {doc_paths}")

    R.check("results_table" in tf["output"], "the module outputs results_table (database, table, an example query)")

    # The docs name every column and every action.
    actions = rust_enum_values(text, "RowAction") or []
    R.check(bool(actions), "report/mod.rs has the RowAction enum")
    if R.check(RESULTS_DOC.exists(), "docs/results.md exists"):
        doc = RESULTS_DOC.read_text()
        missing = [f for f in fields if f"`{f}`" not in doc] + [a for a in actions if f"`{a}`" not in doc]
        R.check(not missing, "docs/results.md names every field of a result line and every action", f"missing: {missing}")
        failure_rs = ROOT / "shared" / "src" / "failure.rs"
        codes = rust_enum_values(failure_rs.read_text(), "FailureCode") if failure_rs.exists() else None
        R.check(
            bool(codes) and all(f"`{c}`" in doc for c in codes or []),
            "docs/results.md lists every error_code (FailureCode in shared/src/failure.rs)",
            f"missing: {[c for c in codes or [] if f'`{c}`' not in doc] if codes else 'FailureCode not found'}",
        )


def check_results_enum(tmp: Path) -> None:
    """projection.destination.values, evaluated on destinations.tf: the destination names."""
    tf = load_tf(MODULE)
    table = tf["resource"].get("aws_glue_catalog_table", {}).get("results", {})
    expr = str((one(table.get("parameters", [{}])) or {}).get("projection.destination.values", ""))
    m = re.fullmatch(r"\$\{(.*)\}", expr, re.S)
    if not R.check(m is not None and "local.destinations" in expr, "projection.destination.values is computed from local.destinations", expr):
        return
    assert m is not None
    folders = [
        ("the example", EXAMPLE_DESTINATIONS),
        ("a hand-made folder", write_folder(tmp / "enum", {"zeta.yaml": dest_yaml("zeta"), "alpha.yml": dest_yaml("alpha"), "mid-1.yaml": dest_yaml("mid_1")})),
    ]
    for label, folder in folders:
        names = sorted(d["name"] for _, d in load_destination_docs(folder))
        try:
            got = tf_eval(folder, {"values": m.group(1)})["values"]
        except RuntimeError as e:
            R.check(False, f"projection.destination.values evaluates on {label}", str(e))
            continue
        R.check(
            isinstance(got, str) and sorted(got.split(",")) == names and "" not in got.split(","),
            f"projection.destination.values of {label} are its destination names",
            f"got {got!r}, files name {names}",
        )


# --------------------------------------------------------------------------------------
# Lifecycle events (events.tf): the bus, the grant, the environment


def policy_statements(tf: dict[str, Any]) -> list[tuple[str, dict[str, Any], str | None]]:
    """(policy document, statement, for_each of its dynamic block or None) of every
    aws_iam_policy_document of the module."""
    out = []
    for name, doc in tf["data"].get("aws_iam_policy_document", {}).items():
        for st in doc.get("statement", []):
            out.append((name, st, None))
        for dyn in doc.get("dynamic", []):
            block = dyn.get("statement")
            if isinstance(block, dict):
                for content in block.get("content", []):
                    out.append((name, content, str(one(block.get("for_each")))))
    return out


STUB_LOCALS = 'locals {\n  partition  = "aws"\n  region     = "eu-west-1"\n  account_id = "123456789012"\n}\n'


def check_events(tf: dict[str, Any]) -> None:
    events_tf = MODULE / "events.tf"
    if not R.check(events_tf.exists(), "infra/modules/pipefy-sync/events.tf exists (event_bus_name)"):
        return
    with events_tf.open() as fh:
        kinds = set(hcl2.load(fh))
    R.check(kinds <= {"variable", "locals"}, "events.tf is provider-free (variables and locals only)", f"blocks: {sorted(kinds)}")
    R.check(var_default(tf, "event_bus_name") is None, "event_bus_name defaults to null: no events")

    # The environment: the bus's ARN on the sync functions, nothing on notify.
    env = one(tf["locals"].get("function_environment")) or {}
    setters = {f for f, e in env.items() if "PIPEFY_SYNC_EVENT_BUS" in e}
    R.check(setters == set(SYNC_FUNCTIONS), "PIPEFY_SYNC_EVENT_BUS is set on sync-scheduled and sync-upload only", f"set on {sorted(setters)}")
    R.check(
        all(env.get(f, {}).get("PIPEFY_SYNC_EVENT_BUS") == "${local.event_bus_arn}" for f in SYNC_FUNCTIONS),
        "PIPEFY_SYNC_EVENT_BUS is local.event_bus_arn, the bus the roles may put events on",
    )
    fn = tf["resource"].get("aws_lambda_function", {}).get("this", {})
    variables = str(one(one(fn.get("environment", [{}])).get("variables")))
    R.check(
        re.search(r"if\s+v\s*!=\s*(None|null)\b", variables) is not None,
        "a null variable is left out of the environment (no bus: PIPEFY_SYNC_EVENT_BUS unset, not empty)",
        variables,
    )

    # The grant: one statement, on the sync functions' policies only, on the bus only.
    for name, pol in tf["resource"].get("aws_iam_role_policy", {}).items():
        R.check(
            re.fullmatch(r"\$\{data\.aws_iam_policy_document\.[a-z0-9_]+(\[each\.key\])?\.json\}", str(one(pol.get("policy")))) is not None,
            f"aws_iam_role_policy.{name} is an aws_iam_policy_document (so these checks see every grant)",
        )
    fpol = tf["resource"].get("aws_iam_role_policy", {}).get("function", {})
    R.check(
        one(fpol.get("policy")) == "${data.aws_iam_policy_document.function[each.key].json}" and one(fpol.get("role")) == "${aws_iam_role.function[each.key].id}",
        "each function's role gets the policy document built for that function",
    )

    def acts(st: dict[str, Any]) -> list[str]:
        a = one(st.get("actions", [[]]))
        return [a] if isinstance(a, str) else list(a or [])

    grants = [
        (doc, st, fe)
        for doc, st, fe in policy_statements(tf)
        if str(one(st.get("effect", ["Allow"]))) == "Allow" and any(a == "*" or a.lower().startswith("events:") for a in acts(st))
    ]
    if not R.check(len(grants) == 1, "exactly one IAM statement allows an events: action", f"{[(d, one(s.get('sid'))) for d, s, _ in grants]}"):
        return
    doc, st, for_each = grants[0]
    R.check(
        doc == "function" and for_each is not None and "contains(local.sync_functions,each.key)" in for_each.replace(" ", ""),
        "the PutEvents grant is in the functions' policy, for the sync functions only",
        f"data.aws_iam_policy_document.{doc}, for_each {for_each}",
    )
    R.check(
        for_each is not None and re.search(r"local\.event_bus_arn\s*!=\s*(None|null)\b", for_each) is not None,
        "the PutEvents grant exists only when a bus is set",
        f"for_each {for_each}",
    )
    R.check(acts(st) == ["events:PutEvents"], "the grant is events:PutEvents alone", f"{acts(st)}")
    res = one(st.get("resources", [[]]))
    R.check((res if isinstance(res, list) else [res]) == ["${local.event_bus_arn}"], "the grant's only resource is the bus (local.event_bus_arn)", f"{res}")
    lifecycle = LIFECYCLE_RS.read_text() if LIFECYCLE_RS.exists() else ""
    src = re.search(r'EVENT_SOURCE\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]+)"', lifecycle)
    cond = [one(c) if not isinstance(c, dict) else c for c in st.get("condition", [])]
    sources = [
        [resolve_literal(tf, v) for v in (one(c.get("values")) if isinstance(one(c.get("values")), list) else [one(c.get("values"))])]
        for c in cond
        if one(c.get("variable")) == "events:source" and one(c.get("test")) == "StringEquals"
    ]
    R.check(
        src is not None and sources == [[src.group(1)]],
        "the grant allows only the events' source the code sends (EVENT_SOURCE in lambda/lifecycle.rs)",
        f"code: {src.group(1) if src else 'EVENT_SOURCE not found'}, Terraform: {sources}",
    )

    # The example passes the bus through.
    example = load_tf(EXAMPLE)
    call = example["module"].get("pipefy_sync", {})
    R.check(
        one(call.get("event_bus_name")) == "${var.event_bus_name}" and var_default(example, "event_bus_name") is None,
        "the example passes event_bus_name through (default null)",
    )

    # events.tf evaluated: a name is this account's and region's bus, an ARN stays as given,
    # anything else is refused.
    if TERRAFORM is None:
        R.skip("event_bus_name evaluated (ARNs, validation)", "terraform is not installed")
        return
    files = {"events.tf": events_tf.read_text(), "stand_ins.tf": STUB_LOCALS}
    expr = {"arn": "local.event_bus_arn", "source": "local.event_source"}
    try:
        got = tf_console(files, {}, expr)
        R.check(got["arn"] is None, "no event_bus_name: no bus", f"{got}")
    except RuntimeError as e:
        R.check(False, "events.tf evaluates without event_bus_name", str(e))
    accepted = {
        "ops-bus": "arn:aws:events:eu-west-1:123456789012:event-bus/ops-bus",
        "default": "arn:aws:events:eu-west-1:123456789012:event-bus/default",
        "aws.partner/example.com/123/orders": "arn:aws:events:eu-west-1:123456789012:event-bus/aws.partner/example.com/123/orders",
        "arn:aws:events:us-east-2:210987654321:event-bus/central": "arn:aws:events:us-east-2:210987654321:event-bus/central",
        "arn:aws-us-gov:events:us-gov-west-1:210987654321:event-bus/central": "arn:aws-us-gov:events:us-gov-west-1:210987654321:event-bus/central",
    }
    for value, want in accepted.items():
        try:
            got = tf_console(files, {"event_bus_name": value}, expr)
            R.check(got["arn"] == want, f"event_bus_name {value} is the bus {want}", f"got {got['arn']}")
        except RuntimeError as e:
            R.check(False, f"event_bus_name {value} is accepted", str(e))
    for value in ["", "two words", "arn:aws:sqs:us-east-2:210987654321:queue", "arn:aws:events:us-east-2:210987654321:rule/r", "arn:aws:events:us-east-2:2109:event-bus/x"]:
        try:
            tf_console(files, {"event_bus_name": value}, expr)
            R.check(False, f"event_bus_name {value!r} is refused", "it was accepted")
        except RuntimeError as e:
            R.check("Invalid value for variable" in str(e), f"event_bus_name {value!r} is refused", str(e)[:300])


def main() -> None:
    tf = load_tf(MODULE)
    check_functions(tf)
    check_environment(tf)
    check_results(tf)
    check_events(tf)

    example = load_tf(EXAMPLE)
    call = example["module"].get("pipefy_sync", {})
    R.check(one(call.get("source")) == "../../modules/pipefy-sync", "the example deploys the module")
    R.check(one(call.get("destinations_dir")) == "${path.module}/destinations", "the example reads infra/examples/basic/destinations")

    structs = parse_rust_structs(CONFIG_RS.read_text()) if CONFIG_RS.exists() else {}
    R.check(bool(structs), "shared/src/config/mod.rs parses")
    docs = check_destination_files(structs)

    evaluated = None
    if TERRAFORM is None:
        R.skip("terraform console checks (S3 filters, schedules, IAM scopes, payloads, the results table's destinations)", "terraform is not installed")
    else:
        try:
            evaluated = tf_eval(EXAMPLE_DESTINATIONS, EVAL)
        except RuntimeError as e:
            R.check(False, "destinations.tf evaluates on the example folder", str(e))
        if evaluated is not None:
            check_example_evaluated(docs, evaluated)
        with tempfile.TemporaryDirectory(prefix="pipefy-sync-cases-") as tmp:
            check_handmade_folders(Path(tmp))
            check_results_enum(Path(tmp))
    check_payloads(tf, evaluated)
    finish()


if __name__ == "__main__":
    main()
