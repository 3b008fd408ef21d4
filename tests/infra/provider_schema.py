#!/usr/bin/env python3
"""infra/ against the AWS provider's real schema, at both ends of the allowed version range.

`terraform validate` needs the provider binary, which CI cannot download. The npm registry
carries the provider's schema in another form: @cdktf/provider-aws, the generated CDK for
Terraform bindings, one release per provider version. Its generated JavaScript names every
resource and data source type (`tfResourceType`), maps each argument and nested block to
its Terraform name (`synthesizeHclAttributes()` and the `<struct>ToHclTerraform()` mappers,
cross-checked against `synthesizeAttributes()` / `<struct>ToTerraform()`), and has one
getter per attribute an expression can read (`getStringAttribute('arn')`, complex
attributes as `new <Struct>OutputReference(this, "name")`).

Commands:
  provider_schema.py [check]  check every .tf under infra/ (what tests/infra/check.sh runs);
                              fetches a locked schema that is not cached yet
  provider_schema.py fetch    make sure both locked schemas are cached (scripts/setup-tools.sh)
  provider_schema.py lock     ask the npm registry again which releases match the range in
                              infra/'s required_providers, and rewrite the lock file

The lock (tests/infra/provider-schema.lock) pins two releases: the one for the LOWEST
provider version the range allows and the one for the NEWEST. For each, the package
version, the provider version and the tarball's integrity (sha512). `check` fails when the
lock no longer matches the range in infra/.

The cache (default .venv/provider-schema/, git-ignored; PROVIDER_SCHEMA_CACHE overrides)
holds one extracted schema JSON per release, a few MB each. The tarballs (30-40 MB) are
downloaded from the npm registry into a temporary folder, checked against the lock's integrity,
read once and deleted.

Checks, for each of the two versions:
  * every `resource`/`data` type exists (scoped data sources of `check` blocks included);
  * every argument and nested block, at every level, including `dynamic "x" { content {} }`,
    exists there; meta-arguments (count, for_each, depends_on, provider, lifecycle,
    provisioner, connection) are allowed; `timeouts` only where the schema has it;
    lifecycle's keys and its ignore_changes names;
  * the provider blocks' arguments and blocks;
  * every reference `aws_x.name.attr...` / `data.aws_x.name.attr...` in any expression
    names a resource declared in the same module and an attribute the schema has, nested
    attributes of blocks included (`logging_config[0].log_group`), and so does
    `v.attr` where `v` iterates over a resource (`for k, v in aws_x.name : ...`).

Before checking infra/, a self-test plants known mistakes in a hand-made module (misspelt
argument, misspelt nested block, misspelt argument inside dynamic content, misspelt
ignore_changes name, non-existent attribute, non-existent attribute through a for variable,
undeclared resource) and checks that exactly those are reported, and that a correct module
passes with the expected numbers of things checked. A self-test failure fails the script.
Exit status 1 on any problem.

Needs python-hcl2 (its grammar, with a transformer that keeps blocks apart from attributes
holding objects, and line numbers): the checkov virtualenv ships it. Fetching needs only the
registry (npm, when present, says which); `lock` needs npm.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LOCK = Path(__file__).resolve().parent / "provider-schema.lock"
CACHE = Path(os.environ.get("PROVIDER_SCHEMA_CACHE") or ROOT / ".venv" / "provider-schema")

PACKAGE = "@cdktf/provider-aws"
PROVIDER_SOURCE = "hashicorp/aws"
# Bump when the extracted JSON changes shape: older cache files are then fetched again.
SCHEMA_FORMAT = 1

SELF = "tests/infra/provider_schema.py"
HOW_TO_RELOCK = (
    f"run `.venv/bin/python {SELF} lock` (asks the npm registry for the releases of the lowest "
    "and newest allowed provider versions and rewrites tests/infra/provider-schema.lock), "
    "then `scripts/setup-tools.sh` (fetches them)"
)


class Failure(Exception):
    """A problem that stops the script: printed as FAIL with its message."""


# ======================================================================================
# Versions and constraints (Terraform's syntax)


def parse_version(text: str) -> tuple[int, ...]:
    m = re.fullmatch(r"v?(\d+(?:\.\d+)*)", text.strip())
    if not m:
        raise Failure(f"not a version: {text!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def pad(v: tuple[int, ...], n: int = 3) -> tuple[int, ...]:
    return v + (0,) * (n - len(v))


def vstr(v: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in v)


@dataclass(frozen=True)
class Constraint:
    op: str
    version: tuple[int, ...]

    def allows(self, v: tuple[int, ...]) -> bool:
        a, b = pad(v), pad(self.version)
        if self.op == "=":
            return a == b
        if self.op == "!=":
            return a != b
        if self.op == ">":
            return a > b
        if self.op == ">=":
            return a >= b
        if self.op == "<":
            return a < b
        if self.op == "<=":
            return a <= b
        # ~> x.y allows >= x.y and < (x+1); ~> x.y.z allows >= x.y.z and < x.(y+1)
        if len(self.version) == 1:
            return a >= b
        upper = self.version[:-2] + (self.version[-2] + 1,)
        return a >= b and a < pad(upper)

    def __str__(self) -> str:
        return f"{self.op} {vstr(self.version)}"


def parse_constraints(text: str) -> list[Constraint]:
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(=|!=|>=|<=|>|<|~>)?\s*(v?[0-9][0-9.]*)\s*", part)
        if not m:
            raise Failure(f"cannot read the version constraint {part.strip()!r} (in {text!r})")
        out.append(Constraint(m.group(1) or "=", parse_version(m.group(2))))
    return out


def canonical(constraints: Iterable[Constraint]) -> str:
    unique = sorted(set(constraints), key=lambda c: (pad(c.version), c.op))
    return ", ".join(str(c) for c in unique)


# ======================================================================================
# Terraform files, parsed with python-hcl2's grammar


@dataclass
class Attr:
    name: str
    value: Any
    line: int


@dataclass
class Block:
    type: str
    labels: list[str]
    items: list[Any]
    line: int

    def attrs(self) -> list[Attr]:
        return [i for i in self.items if isinstance(i, Attr)]

    def blocks(self, type_: str | None = None) -> list["Block"]:
        return [i for i in self.items if isinstance(i, Block) and (type_ is None or i.type == type_)]

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs() if a.name == name), None)


def _transformer() -> Any:
    try:
        from hcl2.parser import hcl2 as hcl2_parser  # type: ignore[import-not-found]
        from hcl2.transformer import DictTransformer  # type: ignore[import-not-found]
        from lark.visitors import v_args  # type: ignore[import-not-found]
    except ImportError as e:
        raise Failure(
            f"{e}: run this script with the checkov virtualenv's Python "
            f"(.venv/bin/python {SELF}), which has python-hcl2"
        ) from e

    class Tx(DictTransformer):  # type: ignore[misc, valid-type]
        """hcl2's own transformer renders expressions; this one keeps the structure: hcl2.loads
        cannot tell `x { ... }` from `x = [{ ... }]` and has no line numbers inside blocks."""

        def start(self, args: list[Any]) -> Any:
            return self.strip_new_line_tokens(args)[0]

        def body(self, args: list[Any]) -> list[Any]:
            return [a for a in self.strip_new_line_tokens(args) if isinstance(a, (Attr, Block))]

        @v_args(meta=True)
        def block(self, meta: Any, args: list[Any]) -> Block:
            args = self.strip_new_line_tokens(args)
            body = args[-1] if isinstance(args[-1], list) else []
            heads = args[:-1] if isinstance(args[-1], list) else args
            return Block(str(heads[0]), [str(self.strip_quotes(str(h))) for h in heads[1:]], body, meta.line)

        @v_args(meta=True)
        def attribute(self, meta: Any, args: list[Any]) -> Attr:
            return Attr(str(args[0]).strip('"'), self.to_string_dollar(args[1]), meta.line)

    return hcl2_parser.lark_parser, Tx


_PARSER: Any = None


def parse_tf(path: Path) -> list[Any]:
    global _PARSER
    if _PARSER is None:
        _PARSER = _transformer()
    lark_parser, tx = _PARSER
    try:
        return tx().transform(lark_parser.parse(path.read_text() + "\n"))
    except Exception as e:  # lark's errors carry the position
        raise Failure(f"{path}: cannot parse: {e}") from e


def tf_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)


def required_aws_constraints(root: Path) -> tuple[list[Constraint], list[str]]:
    """The hashicorp/aws version constraints of every required_providers block under root,
    and where each came from."""
    constraints: list[Constraint] = []
    seen: list[str] = []
    for path in tf_files(root):
        for top in parse_tf(path):
            if not (isinstance(top, Block) and top.type == "terraform"):
                continue
            for rp in top.blocks("required_providers"):
                for a in rp.attrs():
                    spec = a.value
                    if not isinstance(spec, dict):
                        continue
                    source = str(spec.get("source", "")).lower()
                    if source.removeprefix("registry.terraform.io/") != PROVIDER_SOURCE:
                        continue
                    version = spec.get("version")
                    where = f"{path.relative_to(ROOT)}:{a.line}"
                    if not version:
                        raise Failure(f"{where}: {PROVIDER_SOURCE} has no version constraint")
                    constraints.extend(parse_constraints(str(version)))
                    seen.append(f"{where} ({version})")
    if not constraints:
        raise Failure(f"no required_providers entry for {PROVIDER_SOURCE} under {root.relative_to(ROOT)}/")
    return constraints, seen


# ======================================================================================
# The lock


@dataclass
class Release:
    role: str  # "lowest" or "newest"
    package_version: str
    provider_version: str
    integrity: str

    @property
    def cache_file(self) -> Path:
        return CACHE / f"aws-{self.provider_version}_{PACKAGE.split('/')[-1]}-{self.package_version}.v{SCHEMA_FORMAT}.json"


def read_lock() -> tuple[str, list[Release]]:
    if not LOCK.exists():
        raise Failure(f"{LOCK.relative_to(ROOT)} is missing: {HOW_TO_RELOCK}")
    try:
        doc = json.loads(LOCK.read_text())
        releases = [Release(r["role"], r["package_version"], r["provider_version"], r["integrity"]) for r in doc["releases"]]
        constraints = doc["constraints"]
    except (ValueError, KeyError, TypeError) as e:
        raise Failure(f"{LOCK.relative_to(ROOT)} is not readable ({e}): {HOW_TO_RELOCK}") from e
    if [r.role for r in releases] != ["lowest", "newest"]:
        raise Failure(f"{LOCK.relative_to(ROOT)} must list the lowest, then the newest release: {HOW_TO_RELOCK}")
    return constraints, releases


def verified_lock() -> list[Release]:
    """The locked releases, after checking that they still fit infra/'s required_providers."""
    constraints, where = required_aws_constraints(INFRA)
    want = canonical(constraints)
    locked, releases = read_lock()
    if locked != want:
        raise Failure(
            f"the {PROVIDER_SOURCE} range in infra/ is now `{want}` ({'; '.join(where)}), "
            f"the lock was made for `{locked}`: {HOW_TO_RELOCK}"
        )
    for r in releases:
        v = parse_version(r.provider_version)
        if not all(c.allows(v) for c in constraints):
            raise Failure(f"the locked {r.role} provider version {r.provider_version} is outside `{want}`: {HOW_TO_RELOCK}")
    if pad(parse_version(releases[0].provider_version)) > pad(parse_version(releases[1].provider_version)):
        raise Failure(f"the lock's lowest provider version is above its newest: {HOW_TO_RELOCK}")
    return releases


def npm() -> str:
    exe = shutil.which("npm")
    if not exe:
        raise Failure(f"npm is not installed: the AWS provider schema comes from the npm package {PACKAGE} (install Node.js)")
    return exe


def relock() -> None:
    """Pick the releases for the lowest and newest provider versions infra/ allows."""
    constraints, where = required_aws_constraints(INFRA)
    print(f"{PROVIDER_SOURCE} in infra/: {canonical(constraints)}  ({'; '.join(where)})")
    proc = subprocess.run(
        [npm(), "view", f"{PACKAGE}@>=0.0.0", "version", "cdktf.provider.version", "dist.integrity", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise Failure(f"npm view {PACKAGE} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    rows = json.loads(proc.stdout)
    rows = rows if isinstance(rows, list) else [rows]
    candidates = []
    for row in rows:
        pv = row.get("cdktf.provider.version")
        if not pv or not re.fullmatch(r"\d+(\.\d+)*", pv) or not re.fullmatch(r"\d+\.\d+\.\d+", row["version"]):
            continue
        if all(c.allows(parse_version(pv)) for c in constraints):
            candidates.append((pad(parse_version(pv)), parse_version(row["version"]), row))
    if not candidates:
        raise Failure(f"no release of {PACKAGE} carries a provider version within {canonical(constraints)}")

    def pick(pv: tuple[int, ...]) -> dict[str, Any]:
        # Of the releases for one provider version, the newest package (fixes to the bindings).
        return max((c for c in candidates if c[0] == pv), key=lambda c: c[1])[2]

    chosen = [("lowest", pick(min(c[0] for c in candidates))), ("newest", pick(max(c[0] for c in candidates)))]
    doc = {
        "about": (
            f"The {PACKAGE} releases whose schema {SELF} checks infra/ against: the lowest and "
            f"the newest {PROVIDER_SOURCE} version that infra/'s required_providers allow. "
            f"Written by `{SELF} lock`."
        ),
        "package": PACKAGE,
        "constraints": canonical(constraints),
        "releases": [
            {
                "role": role,
                "package_version": row["version"],
                "provider_version": row["cdktf.provider.version"],
                "integrity": row["dist.integrity"],
            }
            for role, row in chosen
        ],
    }
    LOCK.write_text(json.dumps(doc, indent=2) + "\n")
    for role, row in chosen:
        print(f"{role}: {PACKAGE}@{row['version']} = {PROVIDER_SOURCE} {row['cdktf.provider.version']}")
    print(f"wrote {LOCK.relative_to(ROOT)}")


# ======================================================================================
# Schema extraction from the package's generated JavaScript

# A top-level function or class of tsc's output starts at column 0 and ends at the first
# "}" alone at column 0.
TOP = re.compile(r"^(?:function (\w+)\(struct\) \{|class (\w+) extends ([\w.]+) \{)$", re.M)
# One entry of `const attrs = { ... }` in a *ToHclTerraform function or synthesizeHclAttributes.
HCL_ENTRY = re.compile(
    r'^(\s+)(?:"([^"]+)"|(\w+)): \{\n'
    r"\s+value: (.*),\n"
    r"\s+isBlock: (true|false),\n"
    r'\s+type: "(\w+)",\n'
    r'\s+storageClassType: "(\w+)",\n'
    r"\s+\},?$",
    re.M,
)
GETTER = re.compile(r"^    get (\w+)\(\) \{\n        return (.*);\n    \}$", re.M)
ATTRIBUTE_CALL = re.compile(r"\bthis\.(?:get\w*Attribute|interpolationForAttribute)\('([^']+)'\)")
COMPLEX_FIELD = re.compile(r'\bthis\._(\w+) = new (\w+)\(this, "([^"]+)"')
MAPPER = re.compile(r"(?<![\w.])(?:\w+_1\.)?([a-z]\w*?)To(?:Hcl)?Terraform\b")
ROOT_TYPE = re.compile(r'^(\w+)\.tfResourceType = "([^"]+)";$', re.M)
ROOT_KINDS = {"cdktf.TerraformResource": "resource", "cdktf.TerraformDataSource": "data", "cdktf.TerraformProvider": "provider"}


class LayoutError(Failure):
    pass


def method_body(segment: str, name: str) -> str | None:
    m = re.search(rf"^    {name}\(\) \{{\n(.*?)^    \}}$", segment, re.M | re.S)
    return m.group(1) if m else None


def returned_keys(body: str) -> set[str]:
    """Keys of the object literal a *ToTerraform function (or synthesizeAttributes) returns."""
    m = re.search(r"^( +)return \{\n(.*?)^\1\};$", body, re.M | re.S)
    if not m:
        return set()
    indent = len(m.group(1)) + 4
    return {k1 or k2 for k1, k2 in re.findall(rf'^ {{{indent}}}(?:"([^"]+)"|(\w+)): ', m.group(2), re.M)}


def hcl_entries(body: str, where: str) -> list[tuple[str, bool, str | None]]:
    """(terraform name, is a block, struct of its mapper) for each entry of `const attrs`."""
    out = []
    for m in HCL_ENTRY.finditer(body):
        name = m.group(2) or m.group(3)
        mapper = next((x for x in MAPPER.findall(m.group(4))), None)
        struct = mapper[0].upper() + mapper[1:] if mapper else None
        out.append((name, m.group(5) == "true", struct))
    if body.count("isBlock:") != len(out):
        raise LayoutError(f"{where}: read {len(out)} of {body.count('isBlock:')} attribute entries")
    return out


@dataclass
class DirParts:
    """What one lib/<name>/ folder's files define (a big resource's structs are split over
    lib/<name>/index-structs/*.js)."""

    hcl: dict[str, list[tuple[str, bool, str | None]]] = field(default_factory=dict)  # struct -> entries
    tf: dict[str, set[str]] = field(default_factory=dict)  # struct -> terraform names
    getters: dict[str, dict[str, str | None]] = field(default_factory=dict)  # class -> name -> class
    elements: dict[str, str] = field(default_factory=dict)  # List/Map class -> OutputReference class
    roots: dict[str, str] = field(default_factory=dict)  # class -> kind
    root_hcl: dict[str, list[tuple[str, bool, str | None]]] = field(default_factory=dict)
    root_tf: dict[str, set[str]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # class -> tfResourceType
    generator_version: set[str] = field(default_factory=set)


def read_js(parts: DirParts, name: str, text: str) -> None:
    text = re.sub(r"^//# sourceMappingURL=.*$", "", text, flags=re.M)
    for m in ROOT_TYPE.finditer(text):
        parts.types[m.group(1)] = m.group(2)
    parts.generator_version.update(re.findall(r"providerVersion: '([^']+)'", text))
    for m in TOP.finditer(text):
        end = text.find("\n}\n", m.end())
        if end < 0:
            raise LayoutError(f"{name}: no end for {m.group(1) or m.group(2)}")
        segment = text[m.end():end + 1]
        fn, cls, base = m.group(1), m.group(2), m.group(3)
        if fn:
            if fn.endswith("ToHclTerraform"):
                struct = fn[0].upper() + fn[1:-len("ToHclTerraform")]
                parts.hcl[struct] = hcl_entries(segment, f"{name} {fn}")
            elif fn.endswith("ToTerraform"):
                struct = fn[0].upper() + fn[1:-len("ToTerraform")]
                parts.tf[struct] = returned_keys(segment)
            continue
        fields = {f: (c, n) for f, c, n in COMPLEX_FIELD.findall(segment)}
        got: dict[str, str | None] = {}
        for g in GETTER.finditer(segment):
            getter, expr = g.group(1), g.group(2)
            call = ATTRIBUTE_CALL.search(expr)
            own = re.fullmatch(r"this\._(\w+)(\.internalValue)?", expr)
            if call:
                got[call.group(1)] = None
            elif own and own.group(1) in fields and not own.group(2):
                c, n = fields[own.group(1)]
                got[n] = c
            elif own:
                continue  # `fooInput`: what was set, not an attribute
            elif getter not in ("internalValue", "fqn"):
                raise LayoutError(f"{name} {cls}.{getter}: unknown getter form `{expr}`")
        parts.getters[cls] = got
        if base in ("cdktf.ComplexList", "cdktf.ComplexMap"):
            el = re.search(r"\bnew (\w+OutputReference)\(", segment)
            if not el:
                raise LayoutError(f"{name} {cls}: no element class")
            parts.elements[cls] = el.group(1)
        elif base in ROOT_KINDS:
            parts.roots[cls] = ROOT_KINDS[base]
            hcl = method_body(segment, "synthesizeHclAttributes")
            tfm = method_body(segment, "synthesizeAttributes")
            if hcl is None or tfm is None:
                raise LayoutError(f"{name} {cls}: no synthesizeHclAttributes/synthesizeAttributes")
            parts.root_hcl[cls] = hcl_entries(hcl, f"{name} {cls}.synthesizeHclAttributes")
            parts.root_tf[cls] = returned_keys(tfm)


def assemble(folder: str, parts: DirParts) -> tuple[str, str, dict[str, Any]]:
    """One type's entry: (kind, terraform type, {"root": struct, "structs": {...}})."""
    if len(parts.roots) != 1:
        raise LayoutError(f"lib/{folder}: {len(parts.roots)} resource classes")
    (root, kind), = parts.roots.items()
    tftype = parts.types.get(root)
    if not tftype:
        raise LayoutError(f"lib/{folder}: no tfResourceType for {root}")

    def struct_of_class(cls: str | None) -> str | None:
        if cls is None:
            return None
        cls = parts.elements.get(cls, cls)
        if not cls.endswith("OutputReference"):
            raise LayoutError(f"lib/{folder}: attribute class {cls} is not an OutputReference")
        return cls[: -len("OutputReference")]

    structs: dict[str, dict[str, Any]] = {}
    todo = [root]
    while todo:
        s = todo.pop()
        if s in structs:
            continue
        if s == root:
            entries, tf_names, getters = parts.root_hcl[root], parts.root_tf[root], parts.getters[root]
        else:
            entries = parts.hcl.get(s)
            tf_names = parts.tf.get(s)
            getters = parts.getters.get(s + "OutputReference")
            if entries is None and getters is None:
                raise LayoutError(f"lib/{folder}: struct {s} has neither a mapper nor an OutputReference class")
        node: dict[str, Any] = {}
        if entries is not None:
            names = {e[0] for e in entries}
            if tf_names is not None and names != tf_names:
                raise LayoutError(f"lib/{folder} {s}: HCL and JSON mappers disagree: {sorted(names ^ tf_names)}")
            node["args"] = sorted(e[0] for e in entries if not e[1])
            node["blocks"] = {}
            for name, is_block, mapper in entries:
                if is_block:
                    if mapper is None or (mapper not in parts.hcl and mapper + "OutputReference" not in parts.getters):
                        raise LayoutError(f"lib/{folder} {s}: block {name} has no mapper")
                    node["blocks"][name] = mapper
                    todo.append(mapper)
        attrs: dict[str, str | None] = {}
        if getters is not None:
            for name, cls in getters.items():
                attrs[name] = struct_of_class(cls)
                if attrs[name]:
                    todo.append(attrs[name])
        else:  # a block without an OutputReference class (the provider's): its own names
            attrs = {a: None for a in node.get("args", [])}
            attrs.update(node.get("blocks", {}))
        node["attrs"] = dict(sorted(attrs.items()))
        structs[s] = node
    return kind, tftype, {"root": root, "structs": structs}


def extract(tarball: Path, release: Release) -> dict[str, Any]:
    dirs: dict[str, DirParts] = {}
    package_json: dict[str, Any] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if member.name == "package/package.json":
                package_json = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                continue
            m = re.fullmatch(r"package/lib/([^/]+)/(?:index-structs/)?\w+\.js", member.name)
            if not m:
                continue
            text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            read_js(dirs.setdefault(m.group(1), DirParts()), member.name, text)
    got_provider = package_json.get("cdktf", {}).get("provider", {}).get("version")
    if package_json.get("name") != PACKAGE or package_json.get("version") != release.package_version:
        raise Failure(f"{tarball.name} is not {PACKAGE}@{release.package_version}")
    if got_provider != release.provider_version:
        raise Failure(
            f"{PACKAGE}@{release.package_version} says it binds provider {got_provider}, the lock says "
            f"{release.provider_version}: {HOW_TO_RELOCK}"
        )
    schema: dict[str, Any] = {
        "format": SCHEMA_FORMAT,
        "package": PACKAGE,
        "package_version": release.package_version,
        "provider_version": release.provider_version,
        "integrity": release.integrity,
        "resource": {},
        "data": {},
        "provider": {},
    }
    for folder, parts in sorted(dirs.items()):
        if not parts.roots:
            continue  # lib/index.js, lib/lazy-index.js
        if parts.generator_version - {release.provider_version}:
            raise Failure(
                f"lib/{folder} was generated from provider {sorted(parts.generator_version)}, not {release.provider_version}"
            )
        kind, tftype, entry = assemble(folder, parts)
        if tftype in schema[kind]:
            raise LayoutError(f"{kind} {tftype} is defined twice")
        schema[kind][tftype] = entry
    if not schema["resource"] or not schema["data"] or "aws" not in schema["provider"]:
        raise LayoutError(f"{tarball.name}: no resources, data sources or provider found")
    return schema


def sri(path: Path) -> str:
    h = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def registry() -> str:
    """The npm registry: npm's own setting when npm is here, else the environment's, else
    the public one."""
    for var in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        if os.environ.get(var):
            return os.environ[var]
    exe = shutil.which("npm")
    if exe:
        proc = subprocess.run([exe, "config", "get", "registry"], capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip().startswith("http"):
            return proc.stdout.strip()
    return "https://registry.npmjs.org/"


def fetch_one(release: Release) -> None:
    """Download the locked release's tarball from the npm registry into a temporary folder
    (no npm needed), check its integrity, extract the schema into the cache, delete the
    tarball."""
    import urllib.error
    import urllib.request

    spec = f"{PACKAGE}@{release.package_version}"
    CACHE.mkdir(parents=True, exist_ok=True)
    url = f"{registry().rstrip('/')}/{PACKAGE}/-/{PACKAGE.split('/')[-1]}-{release.package_version}.tgz"
    print(f"provider-schema: fetching {spec} (aws {release.provider_version}) from {url} (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="provider-schema-") as tmp:
        t0 = time.monotonic()
        tarball = Path(tmp) / f"{release.package_version}.tgz"
        try:
            with urllib.request.urlopen(url, timeout=300) as resp, tarball.open("wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"downloading {url} failed, so the provider schema cannot be checked: {e}") from e
        downloaded = time.monotonic() - t0
        size = tarball.stat().st_size
        got = sri(tarball)
        if got != release.integrity:
            raise Failure(f"{spec}: the tarball's integrity is {got}, the lock pins {release.integrity}")
        t1 = time.monotonic()
        schema = extract(tarball, release)
        fd, tmp_json = tempfile.mkstemp(dir=CACHE, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(schema, out, separators=(",", ":"), sort_keys=True)
        os.chmod(tmp_json, 0o644)
        os.replace(tmp_json, release.cache_file)
        print(
            f"provider-schema: {spec} (aws {release.provider_version}): {size / 1e6:.1f} MB downloaded in "
            f"{downloaded:.1f} s, integrity ok; schema extracted in {time.monotonic() - t1:.1f} s: "
            f"{len(schema['resource'])} resources, {len(schema['data'])} data sources -> "
            f"{release.cache_file.relative_to(ROOT) if release.cache_file.is_relative_to(ROOT) else release.cache_file} "
            f"({release.cache_file.stat().st_size / 1e6:.1f} MB); tarball deleted",
            file=sys.stderr,
        )


def load_schema(release: Release) -> dict[str, Any]:
    """The cached schema of a locked release, fetched first when it is missing or stale."""
    path = release.cache_file
    for _ in (1, 2):
        if not path.exists():
            fetch_one(release)
        try:
            schema = json.loads(path.read_text())
        except ValueError:
            schema = {}
        if (schema.get("format"), schema.get("package_version"), schema.get("provider_version"), schema.get("integrity")) == (
            SCHEMA_FORMAT, release.package_version, release.provider_version, release.integrity
        ):
            return schema
        path.unlink()  # damaged, or not what the lock pins: fetched again
    raise Failure(f"{path} does not hold the schema of {PACKAGE}@{release.package_version} even after fetching it")


def prune_cache(keep: list[Release]) -> None:
    """Schemas of releases the lock no longer names go."""
    wanted = {r.cache_file.name for r in keep}
    for p in CACHE.glob("aws-*.json"):
        if p.name not in wanted:
            p.unlink()


# ======================================================================================
# Expressions: where references are


def expression_code(text: str) -> str:
    """The expression parts of a value as hcl2 renders it (a template: literal text with
    ${...} interpolations, whose expressions hold "strings" of their own), with all literal
    text blanked, ${ as " (" and its } as ")": references can then be found by a pattern,
    and brackets matched, without string contents getting in the way."""
    out = list(text)
    stack: list[str] = ["top"]  # "top"/'"'/"'": template text; "${": interpolation; "{": brace
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        frame = stack[-1]
        if frame in ("top", '"', "'"):
            if text.startswith("$${", i) or text.startswith("%%{", i):
                out[i:i + 3] = "   "
                i += 3
                continue
            if text.startswith("${", i) or text.startswith("%{", i):
                out[i:i + 2] = " ("
                stack.append("${")
                i += 2
                continue
            if c == "\\" and i + 1 < n:
                out[i:i + 2] = "  "
                i += 2
                continue
            out[i] = " "
            if c == frame:
                stack.pop()
            i += 1
            continue
        if c in "\"'":
            out[i] = " "
            stack.append(c)
        elif c == "{":
            stack.append("{")
        elif c == "}" and len(stack) > 1:
            if frame == "${":
                out[i] = ")"
            stack.pop()
        i += 1
    return "".join(out)


REFERENCE = re.compile(r"(?<![\w.\-])(data\.)?(aws_[a-z0-9_]+)\.([A-Za-z_][\w\-]*)")
FOR_OVER_RESOURCE = re.compile(
    r"[\[{]\s*for\s+(\w+)(?:\s*,\s*(\w+))?\s+in\s+(data\.)?(aws_[a-z0-9_]+)\.([A-Za-z_][\w\-]*)\s*:"
)


def traversal(code: str, i: int) -> tuple[list[str], int]:
    """The steps after position i: ".name" -> "name", "[...]" / ".*" / ".0" -> "[]"."""
    steps: list[str] = []
    n = len(code)
    while i < n:
        if code[i] == ".":
            m = re.match(r"\.([A-Za-z_][\w\-]*)", code[i:])
            if m:
                steps.append(m.group(1))
                i += m.end()
                continue
            m = re.match(r"\.(\*|\d+)", code[i:])
            if m:
                steps.append("[]")
                i += m.end()
                continue
            break
        if code[i] == "[":
            depth, j = 0, i
            while j < n:
                if code[j] in "([{":
                    depth += 1
                elif code[j] in ")]}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            steps.append("[]")
            i = j + 1
            continue
        break
    return steps, i


def closing(code: str, i: int) -> int:
    depth = 0
    for j in range(i, len(code)):
        if code[j] in "([{":
            depth += 1
        elif code[j] in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


@dataclass
class Ref:
    kind: str  # "resource" or "data"
    type: str
    name: str
    steps: list[str]  # after the resource name; instance keys included
    text: str
    via: str | None = None  # the for variable it was read through


def references(value: Any) -> Iterator[Ref]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from references(k)
            yield from references(v)
        return
    if isinstance(value, list):
        for v in value:
            yield from references(v)
        return
    if not isinstance(value, str):
        return
    code = expression_code(value)
    for m in REFERENCE.finditer(code):
        steps, end = traversal(code, m.end())
        kind = "data" if m.group(1) else "resource"
        yield Ref(kind, m.group(2), m.group(3), steps, code[m.start():end].replace(" ", ""))
    for m in FOR_OVER_RESOURCE.finditer(code):
        var = m.group(2) or m.group(1)
        kind = "data" if m.group(3) else "resource"
        scope_end = closing(code, m.start())
        for v in re.finditer(rf"(?<![\w.\-]){re.escape(var)}\.", code[m.end():scope_end]):
            steps, end = traversal(code, m.end() + v.end() - 1)
            text = code[m.end() + v.start():end].replace(" ", "")
            yield Ref(kind, m.group(4), m.group(5), steps, text, via=var)


# ======================================================================================
# The check


RESOURCE_META = {"count", "for_each", "depends_on", "provider"}
RESOURCE_META_BLOCKS = {"lifecycle", "provisioner", "connection"}
DATA_META_BLOCKS = {"lifecycle"}
LIFECYCLE_ATTRS = {
    "resource": {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by"},
    "data": set(),
}
LIFECYCLE_BLOCKS = {"precondition", "postcondition"}
PROVIDER_META = {"alias", "version"}
DYNAMIC_ATTRS = {"for_each", "iterator", "labels"}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    address: str
    message: str


@dataclass
class Counts:
    resources: int = 0
    data: int = 0
    providers: int = 0
    arguments: int = 0
    blocks: int = 0
    references: int = 0


class Checker:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.problems: list[Problem] = []
        self.counts = Counts()

    def problem(self, file: str, line: int, address: str, message: str) -> None:
        self.problems.append(Problem(file, line, address, message))

    def struct(self, kind: str, tftype: str, name: str | None = None) -> dict[str, Any]:
        entry = self.schema[kind][tftype]
        return entry["structs"][name or entry["root"]]

    # --- bodies ---------------------------------------------------------------------

    def check_body(self, items: list[Any], kind: str, tftype: str, struct_name: str | None,
                   where: tuple[str, str], path: str, top: bool) -> None:
        file, address = where
        node = self.struct(kind, tftype, struct_name)
        args, blocks = set(node.get("args", [])), node.get("blocks", {})
        label = f"{tftype}{path}"
        meta = (PROVIDER_META if kind == "provider" else RESOURCE_META) if top else set()
        meta_blocks = {"resource": RESOURCE_META_BLOCKS, "data": DATA_META_BLOCKS}.get(kind, set()) if top else set()
        for item in items:
            if isinstance(item, Attr):
                if item.name in meta:
                    continue
                self.counts.arguments += 1
                if item.name in args:
                    continue
                if item.name in blocks:
                    self.problem(file, item.line, address,
                                 f'"{item.name}" is a block of {label}, not an argument (write {item.name} {{ ... }})')
                else:
                    self.problem(file, item.line, address, f'{label} has no argument "{item.name}"')
                continue
            b: Block = item
            if b.type in meta_blocks:
                if b.type == "lifecycle":
                    self.check_lifecycle(b, kind, node, where, tftype)
                continue
            if b.type == "dynamic":
                name = b.labels[0] if b.labels else ""
                self.counts.blocks += 1
                for a in b.attrs():
                    if a.name not in DYNAMIC_ATTRS:
                        self.problem(file, a.line, address, f'dynamic "{name}" has no argument "{a.name}"')
                if name not in blocks:
                    what = "an argument, and dynamic only makes blocks" if name in args else "not one"
                    self.problem(file, b.line, address, f'{label} has no block "{name}" (dynamic "{name}": {what})')
                    continue
                for content in b.blocks("content"):
                    self.check_body(content.items, kind, tftype, blocks[name], where, f"{path}.{name}", False)
                for other in b.blocks():
                    if other.type != "content":
                        self.problem(file, other.line, address, f'dynamic "{name}" has no block "{other.type}"')
                continue
            self.counts.blocks += 1
            if b.type in blocks:
                self.check_body(b.items, kind, tftype, blocks[b.type], where, f"{path}.{b.type}", False)
            elif b.type in args:
                self.problem(file, b.line, address, f'"{b.type}" is an argument of {label}, not a block (write {b.type} = ...)')
            else:
                self.problem(file, b.line, address, f'{label} has no block "{b.type}"')

    def check_lifecycle(self, b: Block, kind: str, node: dict[str, Any], where: tuple[str, str], tftype: str) -> None:
        file, address = where
        for a in b.attrs():
            if a.name not in LIFECYCLE_ATTRS[kind]:
                self.problem(file, a.line, address, f'lifecycle has no argument "{a.name}"')
            elif a.name == "ignore_changes":
                known = {"all", *node.get("args", []), *node.get("blocks", {})}
                for raw in a.value if isinstance(a.value, list) else [a.value]:
                    first = re.search(r"[A-Za-z_][\w\-]*", expression_code(str(raw)))
                    if first and first.group(0) not in known:
                        self.problem(file, a.line, address,
                                     f'lifecycle.ignore_changes: {tftype} has no argument "{first.group(0)}"')
        for inner in b.blocks():
            if inner.type not in LIFECYCLE_BLOCKS:
                self.problem(file, inner.line, address, f'lifecycle has no block "{inner.type}"')

    # --- references -----------------------------------------------------------------

    def check_reference(self, ref: Ref, declared: set[tuple[str, str, str]], file: str, line: int, address: str) -> None:
        self.counts.references += 1
        prefix = "data." if ref.kind == "data" else ""
        target = f"{prefix}{ref.type}.{ref.name}"
        if ref.type not in self.schema[ref.kind]:
            what = "data source" if ref.kind == "data" else "resource type"
            self.problem(file, line, address, f"{ref.text}: there is no {what} {ref.type}")
            return
        if (ref.kind, ref.type, ref.name) not in declared:
            self.problem(file, line, address, f"{ref.text}: {target} is not declared in this module")
            return
        steps = list(ref.steps)
        if ref.via is None:
            while steps and steps[0] == "[]":  # instance keys: [each.key], ["notify"], [*]
                steps.pop(0)
        struct: str | None = None
        label = ref.type
        first = True
        while steps:
            step = steps.pop(0)
            if step == "[]":
                continue
            node = self.struct(ref.kind, ref.type, struct)
            names = dict(node["attrs"])
            for a in node.get("args", []):
                names.setdefault(a, None)
            for k, v in node.get("blocks", {}).items():
                names.setdefault(k, v)
            if step not in names:
                via = f" ({ref.via} iterates over {target})" if ref.via and first else ""
                self.problem(file, line, address, f'{ref.text}: {label} has no attribute "{step}"{via}')
                return
            struct = names[step]
            label = f"{label}.{step}"
            first = False
            if struct is None:
                return

    # --- modules --------------------------------------------------------------------

    def check_module(self, folder: Path, display_root: Path) -> None:
        files = sorted(folder.glob("*.tf"))
        parsed = [(str(p.relative_to(display_root)), parse_tf(p)) for p in files]

        def declarations(tops: list[Any]) -> Iterator[Block]:
            for b in tops:
                if isinstance(b, Block) and b.type in ("resource", "data") and len(b.labels) == 2:
                    yield b
                elif isinstance(b, Block) and b.type == "check":  # scoped data sources
                    yield from (d for d in b.blocks("data") if len(d.labels) == 2)

        declared = {(b.type, b.labels[0], b.labels[1]) for _, tops in parsed for b in declarations(tops)}
        for file, tops in parsed:
            for b in declarations(tops):
                if not self.is_aws(b):
                    continue
                kind, tftype = b.type, b.labels[0]
                if kind == "resource":
                    self.counts.resources += 1
                else:
                    self.counts.data += 1
                if tftype not in self.schema[kind]:
                    what = "data source" if kind == "data" else "resource type"
                    self.problem(file, b.line, self.address(b), f"there is no {what} {tftype}")
                else:
                    self.check_body(b.items, kind, tftype, None, (file, self.address(b)), "", True)
            for b in tops:
                if not isinstance(b, Block) or b.type in ("moved", "removed"):
                    continue  # moved and removed name addresses that need not exist any more
                address = self.address(b)
                if b.type == "provider" and b.labels == ["aws"]:
                    self.counts.providers += 1
                    self.check_body(b.items, "provider", "aws", None, (file, address), "", True)
                for attr, line in self.all_attrs(b):
                    for ref in references(attr.value):
                        self.check_reference(ref, declared, file, line, address)

    @staticmethod
    def is_aws(b: Block) -> bool:
        provider = b.attr("provider")
        if provider is not None:
            return bool(re.fullmatch(r"\$\{aws(\.\w+)?\}|aws(\.\w+)?", str(provider.value)))
        return b.labels[0].startswith("aws_")

    @staticmethod
    def address(b: Block) -> str:
        if b.type == "resource" and len(b.labels) == 2:
            return ".".join(b.labels)
        if b.type in ("locals", "terraform"):
            return b.type
        return ".".join([b.type, *b.labels])

    @classmethod
    def all_attrs(cls, b: Block) -> Iterator[tuple[Attr, int]]:
        for item in b.items:
            if isinstance(item, Attr):
                yield item, item.line
            else:
                yield from cls.all_attrs(item)

    def check_tree(self, root: Path, display_root: Path) -> None:
        for folder in sorted({p.parent for p in tf_files(root)}):
            self.check_module(folder, display_root)


# ======================================================================================
# Self-test: planted mistakes must be found, a correct module must pass

SELFTEST_BAD = """\
resource "aws_s3_bucket" "good" {
  bucket = "x"
}

resource "aws_s3_bucket" "bad" {
  buckt = "x"
}

resource "aws_s3_bucket_versioning" "bad" {
  bucket = aws_s3_bucket.good.id

  versioning_configuraton {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_notification" "bad" {
  bucket = aws_s3_bucket.good.id

  dynamic "lambda_function" {
    for_each = ["a"]
    content {
      lambda_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:f"
      events              = ["s3:ObjectCreated:*"]
      filter_prefx        = lambda_function.value
    }
  }
}

resource "aws_s3_bucket" "bad_lifecycle" {
  bucket = "y"

  lifecycle {
    ignore_changes = [tagz]
  }
}

output "bad_attribute" {
  value = aws_s3_bucket.good.arnn
}

output "bad_through_for" {
  value = { for k, b in aws_s3_bucket.good : k => b.bucket_domain_nam }
}

output "undeclared" {
  value = aws_s3_bucket.missing.arn
}
"""

# (file, address, the name the message must quote)
SELFTEST_EXPECTED = {
    ("bad.tf", "aws_s3_bucket.bad", "buckt"),
    ("bad.tf", "aws_s3_bucket_versioning.bad", "versioning_configuraton"),
    ("bad.tf", "aws_s3_bucket_notification.bad", "filter_prefx"),
    ("bad.tf", "aws_s3_bucket.bad_lifecycle", "tagz"),
    ("bad.tf", "output.bad_attribute", "arnn"),
    ("bad.tf", "output.bad_through_for", "bucket_domain_nam"),
    ("bad.tf", "output.undeclared", "aws_s3_bucket.missing"),
}

SELFTEST_GOOD = """\
provider "aws" {
  region = "eu-west-1"

  default_tags {
    tags = { a = "b" }
  }
}

data "aws_caller_identity" "current" {}

check "scoped" {
  data "aws_caller_identity" "scoped" {}

  assert {
    condition     = data.aws_caller_identity.scoped.account_id != ""
    error_message = "no account"
  }
}

data "aws_iam_policy_document" "p" {
  statement {
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.b["one"].arn}/*", "arn:aws:s3:::x.aws_s3_bucket.nothing/*"]

    principals {
      type        = "AWS"
      identifiers = [data.aws_caller_identity.current.account_id]
    }
  }

  dynamic "statement" {
    for_each = { x = 1 }
    content {
      actions   = ["s3:ListBucket"]
      resources = [for k, v in aws_s3_bucket.b : v.arn]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [statement.key]
      }
    }
  }
}

resource "aws_s3_bucket" "b" {
  for_each = toset(["one", "two"])
  bucket   = "b-${each.key}"
  tags     = { Name = "aws_s3_bucket.not_a_reference.arn", Note = "see aws_s3_bucket.nothing.arn" }

  lifecycle {
    prevent_destroy = false
    ignore_changes  = [tags]

    precondition {
      condition     = length(each.key) > 0
      error_message = "x"
    }
  }
}

resource "aws_lambda_function" "f" {
  count         = 1
  function_name = "f"
  role          = "arn:aws:iam::123456789012:role/r"
  handler       = "bootstrap"
  runtime       = "provided.al2023"
  filename      = "f.zip"

  logging_config {
    log_format = "JSON"
  }

  timeouts {
    create = "10m"
  }

  depends_on = [aws_s3_bucket.b]
}

output "ok" {
  value = {
    arns      = [for b in aws_s3_bucket.b : b.arn]
    log_group = aws_lambda_function.f[0].logging_config[0].log_group
    splat     = aws_lambda_function.f[*].arn
    policy    = data.aws_iam_policy_document.p.json
    first     = aws_s3_bucket.b["one"].bucket
  }
}
"""

# What the checker must see in SELFTEST_GOOD: the strings that only look like references
# are not counted, the for variables' attributes are.
SELFTEST_GOOD_COUNTS = Counts(resources=2, data=3, providers=1, arguments=20, blocks=7, references=12)


def self_test(schema: dict[str, Any]) -> list[str]:
    """Returns what went wrong (empty: the checker catches the planted mistakes)."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="provider-schema-selftest-") as tmp:
        bad, good = Path(tmp) / "bad", Path(tmp) / "good"
        bad.mkdir()
        good.mkdir()
        (bad / "bad.tf").write_text(SELFTEST_BAD)
        (good / "good.tf").write_text(SELFTEST_GOOD)

        checker = Checker(schema)
        checker.check_tree(bad, bad)
        matched = set()
        for want in SELFTEST_EXPECTED:
            hits = [p for p in checker.problems if p.file == want[0] and p.address == want[1] and want[2] in p.message]
            if len(hits) != 1:
                failures.append(f"planted mistake {want[2]!r} in {want[1]}: reported {len(hits)} times (want 1)")
            matched.update(hits)
        for p in checker.problems:
            if p not in matched:
                failures.append(f"unexpected report on the planted module: {p.address}: {p.message}")
        caught = sorted(matched, key=lambda p: p.line)

        checker_good = Checker(schema)
        checker_good.check_tree(good, good)
        for p in checker_good.problems:
            failures.append(f"false report on the correct module: {p.file}:{p.line} {p.address}: {p.message}")
        if checker_good.counts != SELFTEST_GOOD_COUNTS:
            failures.append(f"the correct module was read as {checker_good.counts}, not {SELFTEST_GOOD_COUNTS}")
    if not failures:
        print(f"self-test (aws {schema['provider_version']}): the {len(caught)} planted mistakes are reported, "
              "the correct module passes:")
        for p in caught:
            print(f"    {p.file}:{p.line} {p.address}: {p.message}")
    return failures


# ======================================================================================


def check() -> int:
    releases = verified_lock()
    schemas = [load_schema(r) for r in releases]
    prune_cache(releases)
    failed = False
    for schema in schemas:
        failures = self_test(schema)
        for f in failures:
            print(f"FAIL: self-test (aws {schema['provider_version']}): {f}")
        failed = failed or bool(failures)
    if failed:
        print("FAIL: the provider schema checker does not catch the mistakes it was built for")
        return 1

    by_problem: dict[Problem, list[str]] = {}
    for r, schema in zip(releases, schemas):
        checker = Checker(schema)
        checker.check_tree(INFRA, ROOT)
        c = checker.counts
        print(
            f"aws {schema['provider_version']} ({PACKAGE}@{schema['package_version']}, {r.role} allowed): "
            f"{c.resources} resources, {c.data} data sources, {c.providers} provider blocks, "
            f"{c.arguments} arguments, {c.blocks} blocks, {c.references} references checked, "
            f"{len(set(checker.problems))} problems"
        )
        for p in dict.fromkeys(checker.problems):
            by_problem.setdefault(p, []).append(schema["provider_version"])
    if by_problem:
        for p, versions in sorted(by_problem.items(), key=lambda kv: (kv[0].file, kv[0].line)):
            print(f"FAIL: {p.file}:{p.line} {p.address}: {p.message} (provider {', '.join(versions)})")
        return 1
    print(f"ok: infra/ fits the AWS provider schema of {' and '.join(s['provider_version'] for s in schemas)}")
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    try:
        if command == "check":
            return check()
        if command == "fetch":
            # What the lock pins, whatever infra/ says now: `check` reports a moved range.
            _, releases = read_lock()
            for r in releases:
                if not r.cache_file.exists():
                    fetch_one(r)
            prune_cache(releases)
            return 0
        if command == "lock":
            relock()
            return 0
        print(f"usage: {SELF} [check | fetch | lock]", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"FAIL: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
