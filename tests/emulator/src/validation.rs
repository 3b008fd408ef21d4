//! graphql-ruby's static validation of variables, run over every document before anything
//! executes (Pipefy runs graphql-ruby; async-graphql's own rules differ in wording and let
//! some mismatches through). Rules, messages and `extensions` follow graphql-ruby's
//! `StaticValidation` (`VariablesAreInputTypes`, `VariableUsagesAreAllowed`,
//! `VariablesAreUsedAndDefined`):
//!
//! - a variable's type must be an input type that exists (`variableRequiresValidType`);
//! - where a variable is used as an argument, an input-object field, or an item of a list
//!   literal given to one, its declared type must fit the declared type of that position
//!   (`variableMismatch`): same named type ("Type mismatch"), same list dimensions ("List
//!   dimension mismatch"), and no nullable variable where non-null is required
//!   ("Nullability mismatch") unless the variable has a non-null default value; a non-null
//!   variable at a nullable position is fine;
//! - every used variable is declared by its operation (`variableNotDefined`), every
//!   declared one is used (`variableNotUsed`), following fragment spreads.
//!
//! Also here: the guards that keep hostile documents from exhausting the stack or the CPU
//! before async-graphql sees them (bracket nesting of the text, and the size of each
//! operation once its fragments are inlined).

use std::collections::{HashMap, HashSet};
use std::fmt;

use async_graphql::parser::types::{
    BaseType, Directive, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
    TypeKind, TypeSystemDefinition,
};
use async_graphql::parser::{parse_schema, Pos, Positioned};
use async_graphql::{Name, Value as ConstValue};
use serde_json::{json, Value as Json};

/// Introspection and built-in definitions that async-graphql's SDL export leaves out.
const BUILTIN_SDL: &str = r#"
scalar String
scalar Int
scalar Float
scalar Boolean
scalar ID
directive @include(if: Boolean!) on FIELD | FRAGMENT_SPREAD | INLINE_FRAGMENT
directive @skip(if: Boolean!) on FIELD | FRAGMENT_SPREAD | INLINE_FRAGMENT
type __EmulatorQueryMeta { __schema: __Schema! __type(name: String!): __Type }
type __Schema { description: String types: [__Type!]! queryType: __Type! mutationType: __Type
  subscriptionType: __Type directives: [__Directive!]! }
type __Type { kind: __TypeKind! name: String description: String specifiedByURL: String
  fields(includeDeprecated: Boolean = false): [__Field!] interfaces: [__Type!]
  possibleTypes: [__Type!] enumValues(includeDeprecated: Boolean = false): [__EnumValue!]
  inputFields(includeDeprecated: Boolean = false): [__InputValue!] ofType: __Type isOneOf: Boolean }
type __Field { name: String! description: String args(includeDeprecated: Boolean = false): [__InputValue!]!
  type: __Type! isDeprecated: Boolean! deprecationReason: String }
type __InputValue { name: String! description: String type: __Type! defaultValue: String
  isDeprecated: Boolean! deprecationReason: String }
type __EnumValue { name: String! description: String isDeprecated: Boolean! deprecationReason: String }
type __Directive { name: String! description: String locations: [__DirectiveLocation!]!
  args(includeDeprecated: Boolean = false): [__InputValue!]! isRepeatable: Boolean! }
enum __TypeKind { SCALAR OBJECT INTERFACE UNION ENUM INPUT_OBJECT LIST NON_NULL }
enum __DirectiveLocation { QUERY MUTATION SUBSCRIPTION FIELD FRAGMENT_DEFINITION FRAGMENT_SPREAD
  INLINE_FRAGMENT VARIABLE_DEFINITION }
"#;

/// Root fields every schema has besides its own (`__typename` has no arguments).
const META_ROOT: &str = "__EmulatorQueryMeta";

/// Selection sets and values nested deeper than this (counting `{`, `[` and `(` of the
/// text) are refused before parsing: the parser recurses per level.
pub(crate) const MAX_TEXT_NESTING: usize = 128;

// ---------------------------------------------------------------- types

/// A type reference as graphql-ruby walks it: one wrapper at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    fn from_ast(t: &Type) -> TypeRef {
        let base = match &t.base {
            BaseType::Named(n) => TypeRef::Named(n.to_string()),
            BaseType::List(inner) => TypeRef::List(Box::new(TypeRef::from_ast(inner))),
        };
        if t.nullable {
            base
        } else {
            TypeRef::NonNull(Box::new(base))
        }
    }

    fn is_non_null(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    fn wraps(&self) -> bool {
        !matches!(self, TypeRef::Named(_))
    }

    fn of_type(&self) -> Option<&TypeRef> {
        match self {
            TypeRef::Named(_) => None,
            TypeRef::List(t) | TypeRef::NonNull(t) => Some(t),
        }
    }

    fn named(&self) -> &str {
        match self {
            TypeRef::Named(n) => n,
            TypeRef::List(t) | TypeRef::NonNull(t) => t.named(),
        }
    }

    fn list_dimension(&self) -> usize {
        match self {
            TypeRef::Named(_) => 0,
            TypeRef::List(t) => 1 + t.list_dimension(),
            TypeRef::NonNull(t) => t.list_dimension(),
        }
    }

    fn non_null(self) -> TypeRef {
        match self {
            t @ TypeRef::NonNull(_) => t,
            t => TypeRef::NonNull(Box::new(t)),
        }
    }

    fn nullable(self) -> TypeRef {
        match self {
            TypeRef::NonNull(t) => *t,
            t => t,
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRef::Named(n) => f.write_str(n),
            TypeRef::List(t) => write!(f, "[{t}]"),
            TypeRef::NonNull(t) => write!(f, "{t}!"),
        }
    }
}

/// graphql-ruby's `non_null_levels_match`: every non-null level the position requires is
/// non-null in the variable; a non-null variable level may stand where nullable is asked.
fn non_null_levels_match(arg: &TypeRef, var: &TypeRef) -> bool {
    if arg.is_non_null() && !var.is_non_null() {
        return false;
    }
    if arg.wraps() && var.wraps() {
        let var = if var.is_non_null() && !arg.is_non_null() {
            match var.of_type() {
                Some(v) => v,
                None => return true,
            }
        } else {
            var
        };
        return match (arg.of_type(), var.of_type()) {
            (Some(a), Some(v)) => non_null_levels_match(a, v),
            _ => true,
        };
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Scalar,
    Enum,
    InputObject,
    Output,
}

#[derive(Clone, Debug)]
struct InputDef {
    ty: TypeRef,
    has_default: bool,
}

#[derive(Clone, Debug)]
struct FieldDef {
    args: HashMap<String, InputDef>,
    ty: TypeRef,
}

/// The schema as the validator needs it, read from the schema's own SDL.
#[derive(Debug, Default)]
pub(crate) struct TypeTable {
    kinds: HashMap<String, Kind>,
    fields: HashMap<String, HashMap<String, FieldDef>>,
    input_fields: HashMap<String, HashMap<String, InputDef>>,
    directives: HashMap<String, HashMap<String, InputDef>>,
    enums: HashMap<String, Vec<String>>,
    query: String,
    mutation: String,
    subscription: String,
}

fn input_defs(
    defs: &[Positioned<async_graphql::parser::types::InputValueDefinition>],
) -> HashMap<String, InputDef> {
    defs.iter()
        .map(|d| {
            (
                d.node.name.node.to_string(),
                InputDef {
                    ty: TypeRef::from_ast(&d.node.ty.node),
                    has_default: d.node.default_value.is_some(),
                },
            )
        })
        .collect()
}

impl TypeTable {
    /// Reads `sdl` (the schema's export) plus the built-in and introspection definitions.
    /// A part that does not parse is skipped with a warning (then its usages are not
    /// type-checked, but still counted as used).
    pub(crate) fn from_sdl(sdl: &str) -> TypeTable {
        let mut t = TypeTable {
            query: "Query".into(),
            mutation: "Mutation".into(),
            subscription: "Subscription".into(),
            ..TypeTable::default()
        };
        for text in [BUILTIN_SDL, sdl] {
            match parse_schema(text) {
                Ok(doc) => t.add(doc.definitions),
                Err(e) => tracing::warn!(error = %e, "schema SDL not understood by the validator"),
            }
        }
        t
    }

    fn add(&mut self, defs: Vec<TypeSystemDefinition>) {
        for d in defs {
            match d {
                TypeSystemDefinition::Schema(s) => {
                    if let Some(q) = &s.node.query {
                        self.query = q.node.to_string();
                    }
                    if let Some(m) = &s.node.mutation {
                        self.mutation = m.node.to_string();
                    }
                    if let Some(m) = &s.node.subscription {
                        self.subscription = m.node.to_string();
                    }
                }
                TypeSystemDefinition::Directive(dd) => {
                    self.directives.insert(
                        dd.node.name.node.to_string(),
                        input_defs(&dd.node.arguments),
                    );
                }
                TypeSystemDefinition::Type(td) => {
                    let name = td.node.name.node.to_string();
                    let (kind, fields) = match &td.node.kind {
                        TypeKind::Scalar => (Kind::Scalar, None),
                        TypeKind::Enum(e) => {
                            self.enums.insert(
                                name.clone(),
                                e.values
                                    .iter()
                                    .map(|v| v.node.value.node.to_string())
                                    .collect(),
                            );
                            (Kind::Enum, None)
                        }
                        TypeKind::Union(_) => (Kind::Output, None),
                        TypeKind::Object(o) => (Kind::Output, Some(&o.fields)),
                        TypeKind::Interface(i) => (Kind::Output, Some(&i.fields)),
                        TypeKind::InputObject(io) => {
                            self.input_fields
                                .entry(name.clone())
                                .or_default()
                                .extend(input_defs(&io.fields));
                            (Kind::InputObject, None)
                        }
                    };
                    self.kinds.insert(name.clone(), kind);
                    if let Some(fields) = fields {
                        let map = self.fields.entry(name).or_default();
                        for f in fields {
                            map.insert(
                                f.node.name.node.to_string(),
                                FieldDef {
                                    args: input_defs(&f.node.arguments),
                                    ty: TypeRef::from_ast(&f.node.ty.node),
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    fn field(&self, parent: &str, name: &str) -> Option<&FieldDef> {
        if let Some(f) = self.fields.get(parent).and_then(|m| m.get(name)) {
            return Some(f);
        }
        if parent == self.query && name.starts_with("__") {
            return self.fields.get(META_ROOT).and_then(|m| m.get(name));
        }
        None
    }

    fn root(&self, ty: OperationType) -> &str {
        match ty {
            OperationType::Query => &self.query,
            OperationType::Mutation => &self.mutation,
            OperationType::Subscription => &self.subscription,
        }
    }
}

// ---------------------------------------------------------------- scanning

/// Where a variable stands and what that position declares.
#[derive(Clone, Debug)]
struct Check {
    /// The argument's (or input field's) declared type.
    expected: TypeRef,
    expected_has_default: bool,
    /// The argument or input field name, as graphql-ruby names it in messages.
    arg: String,
    /// Depth of the list literal the variable stands in directly (0: the whole value).
    wrap: usize,
}

#[derive(Clone, Debug)]
struct Usage {
    var: String,
    pos: Pos,
    path: Vec<String>,
    /// None where graphql-ruby does not type-check the usage (unknown argument, nested
    /// list literal); the variable still counts as used.
    check: Option<Check>,
}

/// What one operation or fragment definition contains.
#[derive(Debug, Default)]
struct Scan {
    usages: Vec<Usage>,
    spreads: Vec<String>,
}

/// Converts an argument value (whose variable-bearing type async-graphql does not export)
/// to a `ConstValue` where each variable is an enum value named `$name`: no enum literal can
/// contain `$`, so a marker cannot be confused with a value of the document.
macro_rules! marked {
    ($value:expr) => {
        $value
            .clone()
            .into_const_with(|name| Ok::<_, ()>(ConstValue::Enum(Name::new(format!("${name}")))))
            .ok()
    };
}

fn var_of(v: &ConstValue) -> Option<&str> {
    match v {
        ConstValue::Enum(n) => n.as_str().strip_prefix('$'),
        _ => None,
    }
}

/// graphql-ruby's `depth_of_array`.
fn depth_of_array(v: &ConstValue) -> usize {
    match v {
        ConstValue::List(items) => 1 + items.iter().map(depth_of_array).max().unwrap_or(0),
        _ => 0,
    }
}

/// Deepest recursion of the walkers below (the parser already stops selection sets at 64
/// and the text guard stops values at [`MAX_TEXT_NESTING`]).
const MAX_WALK: usize = 200;

struct Scanner<'t> {
    table: &'t TypeTable,
    out: Scan,
}

impl Scanner<'_> {
    fn selection_set(
        &mut self,
        set: &SelectionSet,
        parent: Option<&str>,
        path: &[String],
        depth: usize,
    ) {
        if depth > MAX_WALK {
            return;
        }
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let mut p = path.to_vec();
                    p.push(f.response_key().node.to_string());
                    let def = parent.and_then(|t| self.table.field(t, f.name.node.as_str()));
                    for (name, value) in &f.arguments {
                        let arg = def.and_then(|d| d.args.get(name.node.as_str()));
                        if let Some(v) = marked!(value.node) {
                            self.argument(name.node.as_str(), name.pos, &v, arg, &p, 0);
                        }
                    }
                    self.directives(&f.directives, &p);
                    let child = def.map(|d| d.ty.named().to_string());
                    self.selection_set(&f.selection_set.node, child.as_deref(), &p, depth + 1);
                }
                Selection::InlineFragment(i) => {
                    let i = &i.node;
                    let cond = i
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.to_string());
                    let mut p = path.to_vec();
                    p.push(match &cond {
                        Some(c) => format!("... on {c}"),
                        None => "...".to_string(),
                    });
                    self.directives(&i.directives, &p);
                    let parent = cond.as_deref().or(parent);
                    self.selection_set(&i.selection_set.node, parent, &p, depth + 1);
                }
                Selection::FragmentSpread(s) => {
                    let s = &s.node;
                    let mut p = path.to_vec();
                    p.push(format!("... {}", s.fragment_name.node));
                    self.directives(&s.directives, &p);
                    self.out.spreads.push(s.fragment_name.node.to_string());
                }
            }
        }
    }

    fn directives(&mut self, dirs: &[Positioned<Directive>], path: &[String]) {
        for d in dirs {
            let defs = self.directives_of(d.node.name.node.as_str());
            for (name, value) in &d.node.arguments {
                let arg = defs
                    .as_ref()
                    .and_then(|m| m.get(name.node.as_str()))
                    .cloned();
                if let Some(v) = marked!(value.node) {
                    self.argument(name.node.as_str(), name.pos, &v, arg.as_ref(), path, 0);
                }
            }
        }
    }

    fn directives_of(&self, name: &str) -> Option<HashMap<String, InputDef>> {
        self.table.directives.get(name).cloned()
    }

    /// graphql-ruby's `on_argument`: the variables standing directly in the value (or
    /// directly in a list literal that is the value) are checked against this position;
    /// input objects inside are visited field by field.
    fn argument(
        &mut self,
        name: &str,
        pos: Pos,
        value: &ConstValue,
        def: Option<&InputDef>,
        path: &[String],
        depth: usize,
    ) {
        if depth > MAX_WALK {
            return;
        }
        let mut p = path.to_vec();
        p.push(name.to_string());
        let check = |wrap| {
            def.map(|d| Check {
                expected: d.ty.clone(),
                expected_has_default: d.has_default,
                arg: name.to_string(),
                wrap,
            })
        };
        match value {
            ConstValue::List(items) => {
                let wrap = depth_of_array(value);
                for item in items {
                    if let Some(var) = var_of(item) {
                        self.out.usages.push(Usage {
                            var: var.to_string(),
                            pos,
                            path: p.clone(),
                            check: check(wrap),
                        });
                    }
                }
            }
            v => {
                if let Some(var) = var_of(v) {
                    self.out.usages.push(Usage {
                        var: var.to_string(),
                        pos,
                        path: p.clone(),
                        check: check(0),
                    });
                }
            }
        }
        let ty = def.map(|d| d.ty.named().to_string());
        self.nested(value, ty.as_deref(), pos, &p, depth, false);
    }

    /// Input objects inside a value (at any list depth) and the variables graphql-ruby
    /// only counts: those in lists nested in lists.
    fn nested(
        &mut self,
        value: &ConstValue,
        ty: Option<&str>,
        pos: Pos,
        path: &[String],
        depth: usize,
        in_nested_list: bool,
    ) {
        if depth > MAX_WALK {
            return;
        }
        match value {
            ConstValue::Object(map) => {
                let fields = ty.and_then(|t| self.table.input_fields.get(t));
                for (k, v) in map {
                    let def = fields.and_then(|f| f.get(k.as_str())).cloned();
                    self.argument(k.as_str(), pos, v, def.as_ref(), path, depth + 1);
                }
            }
            ConstValue::List(items) => {
                for item in items {
                    match item {
                        ConstValue::List(_) => {
                            self.nested(item, ty, pos, path, depth + 1, true);
                        }
                        other => {
                            if in_nested_list {
                                if let Some(var) = var_of(other) {
                                    self.out.usages.push(Usage {
                                        var: var.to_string(),
                                        pos,
                                        path: path.to_vec(),
                                        check: None,
                                    });
                                }
                            }
                            if let ConstValue::Object(_) = other {
                                self.nested(other, ty, pos, path, depth + 1, false);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- errors

fn error(message: String, pos: Pos, path: &[String], extensions: Json) -> Json {
    json!({
        "message": message,
        "locations": [{"line": pos.line, "column": pos.column}],
        "path": path,
        "extensions": extensions,
    })
}

/// graphql-ruby's `validate_usage`: the error kind and the variable type as printed.
fn usage_mismatch(
    var_ty: &TypeRef,
    var_has_default: bool,
    c: &Check,
) -> Option<(&'static str, TypeRef)> {
    let mut var_ty = var_ty.clone();
    if var_has_default {
        // A non-null default makes a nullable variable count as non-null.
        var_ty = var_ty.non_null();
    }
    let mut arg_ty = c.expected.clone();
    if arg_ty.is_non_null() && c.expected_has_default {
        // A non-null argument with a default value accepts a nullable variable.
        arg_ty = arg_ty.nullable();
    }
    let var_inner = var_ty.named().to_string();
    for _ in 0..c.wrap {
        // The list literal is present: it satisfies both a nullable and a non-null list.
        var_ty = TypeRef::NonNull(Box::new(TypeRef::List(Box::new(var_ty))));
    }
    let kind = if var_inner != arg_ty.named() {
        "Type mismatch"
    } else if var_ty.list_dimension() != arg_ty.list_dimension() {
        "List dimension mismatch"
    } else if !non_null_levels_match(&arg_ty, &var_ty) {
        "Nullability mismatch"
    } else {
        return None;
    };
    Some((kind, var_ty))
}

struct VarDef {
    ty: TypeRef,
    has_default: bool,
    pos: Pos,
}

/// The static-validation errors of a document's variables, in graphql-ruby's order: type
/// and usage errors as met in the document, then unused and undeclared variables. Each
/// error is `{message, locations, path, extensions: {code, ...}}` (no `correlation_id`).
pub(crate) fn validate_variables(doc: &ExecutableDocument, table: &TypeTable) -> Vec<Json> {
    let scan_set = |set: &SelectionSet, parent: Option<&str>, path: Vec<String>| {
        let mut s = Scanner {
            table,
            out: Scan::default(),
        };
        s.selection_set(set, parent, &path, 0);
        s.out
    };
    let mut fragments: HashMap<&str, Scan> = HashMap::new();
    for (name, f) in &doc.fragments {
        let on = f.node.type_condition.node.on.node.as_str();
        let path = vec![format!("fragment {name}")];
        let mut scan = scan_set(&f.node.selection_set.node, Some(on), path.clone());
        let mut s = Scanner {
            table,
            out: Scan::default(),
        };
        s.directives(&f.node.directives, &path);
        scan.usages.extend(s.out.usages);
        fragments.insert(name.as_str(), scan);
    }
    let mut ops: Vec<_> = doc.operations.iter().collect();
    ops.sort_by_key(|(_, op)| (op.pos.line, op.pos.column));

    let mut errors = Vec::new();
    let mut unused = Vec::new();
    let mut undefined = Vec::new();
    let mut checked: HashSet<(&str, usize)> = HashSet::new();
    // Bounds the work on absurd documents (thousands of operations sharing big fragments).
    let mut work = 0usize;
    let mut total = 0usize;
    let mut truncated = false;
    'ops: for (name, op) in ops {
        let op = &op.node;
        let keyword = match op.ty {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        };
        let (op_path, op_label) = match name {
            Some(n) => (format!("{keyword} {n}"), n.to_string()),
            None => (keyword.to_string(), format!("anonymous {keyword}")),
        };
        let mut defs: Vec<(String, VarDef)> = Vec::new();
        for d in &op.variable_definitions {
            let vname = d.node.name.node.to_string();
            let ty = TypeRef::from_ast(&d.node.var_type.node);
            let base = ty.named().to_string();
            match table.kinds.get(&base) {
                None => push_capped(
                    &mut total,
                    &mut errors,
                    error(
                        format!("{base} isn't a defined input type (on ${vname})"),
                        d.pos,
                        std::slice::from_ref(&op_path),
                        json!({"code": "variableRequiresValidType", "typeName": base, "variableName": vname}),
                    ),
                ),
                Some(Kind::Output) => push_capped(
                    &mut total,
                    &mut errors,
                    error(
                        format!("{base} isn't a valid input type (on ${vname})"),
                        d.pos,
                        std::slice::from_ref(&op_path),
                        json!({"code": "variableRequiresValidType", "typeName": base, "variableName": vname}),
                    ),
                ),
                Some(Kind::Scalar | Kind::Enum | Kind::InputObject) => {}
            }
            let has_default = d
                .node
                .default_value
                .as_ref()
                .is_some_and(|v| !matches!(v.node, ConstValue::Null));
            defs.push((
                vname,
                VarDef {
                    ty,
                    has_default,
                    pos: d.pos,
                },
            ));
        }
        let mut own = Scanner {
            table,
            out: Scan::default(),
        };
        own.directives(&op.directives, std::slice::from_ref(&op_path));
        let root = table.root(op.ty).to_string();
        let body = scan_set(&op.selection_set.node, Some(&root), vec![op_path.clone()]);
        own.out.usages.extend(body.usages);
        own.out.spreads.extend(body.spreads);

        // The operation's own scan, then each fragment it reaches, once.
        let mut scans: Vec<(String, Option<&str>, &Scan)> = vec![(op_path.clone(), None, &own.out)];
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = own.out.spreads.iter().map(String::as_str).rev().collect();
        while let Some(f) = stack.pop() {
            work += 1;
            if !seen.insert(f) {
                continue;
            }
            if let Some((fname, scan)) = fragments.get_key_value(f) {
                scans.push((format!("fragment {fname}"), Some(fname), scan));
                stack.extend(scan.spreads.iter().map(String::as_str).rev());
            }
        }
        let by_name: HashMap<&str, &VarDef> = defs.iter().map(|(n, d)| (n.as_str(), d)).collect();
        let mut used: HashSet<&str> = HashSet::new();
        let mut reported_undefined: HashSet<&str> = HashSet::new();
        for (_, fragment, scan) in &scans {
            work += 1;
            for (i, u) in scan.usages.iter().enumerate() {
                work += 1;
                if work > MAX_WORK {
                    truncated = true;
                    break 'ops;
                }
                used.insert(u.var.as_str());
                let Some(def) = by_name.get(u.var.as_str()) else {
                    if reported_undefined.insert(u.var.as_str()) {
                        let by = fragment
                            .map(str::to_string)
                            .unwrap_or_else(|| op_label.clone());
                        push_capped(
                            &mut total,
                            &mut undefined,
                            error(
                                format!("Variable ${} is used by {by} but not declared", u.var),
                                u.pos,
                                &u.path,
                                json!({"code": "variableNotDefined", "variableName": u.var}),
                            ),
                        );
                    }
                    continue;
                };
                let Some(c) = &u.check else { continue };
                // A fragment's usages are checked against the first operation reaching it.
                if let Some(f) = fragment {
                    if !checked.insert((f, i)) {
                        continue;
                    }
                }
                if !table.kinds.contains_key(def.ty.named()) {
                    continue;
                }
                if let Some((kind, shown)) = usage_mismatch(&def.ty, def.has_default, c) {
                    push_capped(
                        &mut total,
                        &mut errors,
                        error(
                            format!(
                                "{kind} on variable ${} and argument {} ({shown} / {})",
                                u.var, c.arg, c.expected
                            ),
                            u.pos,
                            &u.path,
                            json!({
                                "code": "variableMismatch",
                                "variableName": u.var,
                                "typeName": shown.to_string(),
                                "argumentName": c.arg,
                                "errorMessage": kind,
                            }),
                        ),
                    );
                }
            }
        }
        for (vname, def) in &defs {
            if !used.contains(vname.as_str()) {
                push_capped(
                    &mut total,
                    &mut unused,
                    error(
                        format!("Variable ${vname} is declared by {op_label} but not used"),
                        def.pos,
                        std::slice::from_ref(&op_path),
                        json!({"code": "variableNotUsed", "variableName": vname}),
                    ),
                );
            }
        }
    }
    errors.extend(unused);
    errors.extend(undefined);
    if truncated && errors.is_empty() {
        push_capped(
            &mut total,
            &mut errors,
            json!({
                "message": "Query is too large to validate",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }),
        );
    }
    errors
}

fn push_capped(total: &mut usize, to: &mut Vec<Json>, e: Json) {
    if *total < MAX_ERRORS {
        *total += 1;
        to.push(e);
    }
}

/// Usages and fragment visits [`validate_variables`] may look at.
const MAX_WORK: usize = 1_000_000;
/// Errors reported at most (graphql-ruby's `validate_max_errors` in spirit).
const MAX_ERRORS: usize = 100;

// ---------------------------------------------------------------- variable values

/// One problem of a variable value, as graphql-ruby lists them.
struct Problem {
    path: Vec<Json>,
    explanation: String,
}

fn show(v: &Json) -> String {
    v.to_string()
}

impl TypeTable {
    /// graphql-ruby's input validation of a JSON variable value against `ty`.
    fn value_problems(
        &self,
        ty: &TypeRef,
        v: Option<&Json>,
        path: &mut Vec<Json>,
        out: &mut Vec<Problem>,
        depth: usize,
    ) {
        if depth > MAX_WALK || out.len() >= 20 {
            return;
        }
        let problem = |path: &Vec<Json>, explanation: String| Problem {
            path: path.clone(),
            explanation,
        };
        match ty {
            TypeRef::NonNull(inner) => match v {
                None | Some(Json::Null) => {
                    out.push(problem(path, "Expected value to not be null".into()))
                }
                some => self.value_problems(inner, some, path, out, depth + 1),
            },
            _ if matches!(v, None | Some(Json::Null)) => {}
            TypeRef::List(item) => match v {
                Some(Json::Array(items)) => {
                    for (i, x) in items.iter().enumerate() {
                        path.push(json!(i));
                        self.value_problems(item, Some(x), path, out, depth + 1);
                        path.pop();
                    }
                }
                // A single value stands for a list of one.
                some => self.value_problems(item, some, path, out, depth + 1),
            },
            TypeRef::Named(name) => {
                let Some(v) = v else { return };
                match self.kinds.get(name) {
                    Some(Kind::InputObject) => {
                        let Json::Object(m) = v else {
                            out.push(problem(
                                path,
                                format!("Expected {} to be a key-value object.", show(v)),
                            ));
                            return;
                        };
                        let fields = self.input_fields.get(name);
                        for k in m.keys() {
                            if fields.is_none_or(|f| !f.contains_key(k)) {
                                path.push(json!(k));
                                out.push(problem(path, format!("Field is not defined on {name}")));
                                path.pop();
                            }
                        }
                        let mut defs: Vec<(&String, &InputDef)> =
                            fields.map(|f| f.iter().collect()).unwrap_or_default();
                        defs.sort_by_key(|(k, _)| k.as_str());
                        for (k, def) in defs {
                            if def.has_default && !m.contains_key(k) {
                                continue;
                            }
                            path.push(json!(k));
                            self.value_problems(&def.ty, m.get(k), path, out, depth + 1);
                            path.pop();
                        }
                    }
                    Some(Kind::Enum) => {
                        let values = self.enums.get(name).cloned().unwrap_or_default();
                        if !v.as_str().is_some_and(|s| values.iter().any(|x| x == s)) {
                            out.push(problem(
                                path,
                                format!("Expected {} to be one of: {}", show(v), values.join(", ")),
                            ));
                        }
                    }
                    _ => {
                        let ok = match name.as_str() {
                            "String" => v.is_string(),
                            "Boolean" => v.is_boolean(),
                            "Float" => v.is_number(),
                            "Int" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                            "ID" => v.is_string() || v.is_i64() || v.is_u64(),
                            "DateTime" => v.is_string(),
                            // UndefinedInput and any other custom scalar take anything.
                            _ => true,
                        };
                        if !ok {
                            out.push(problem(
                                path,
                                format!("Could not coerce value {} to {name}", show(v)),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// graphql-ruby's variable coercion, run when the document is statically valid: each
/// variable of the operation that will run must fit its declared type (a missing one has
/// its default or is null). Errors are `Variable $x of type T was provided invalid value`
/// with `extensions: {value, problems: [{path, explanation}]}` (and a `code`, which
/// graphql-ruby does not give: `argumentLiteralsIncompatible`, as for literals).
pub(crate) fn validate_values(
    doc: &ExecutableDocument,
    op_name: Option<&str>,
    variables: &Json,
    table: &TypeTable,
) -> Vec<Json> {
    let op = match (&doc.operations, op_name) {
        (async_graphql::parser::types::DocumentOperations::Single(op), _) => op,
        (async_graphql::parser::types::DocumentOperations::Multiple(m), Some(n)) => {
            match m.get(n) {
                Some(op) => op,
                None => return Vec::new(),
            }
        }
        (async_graphql::parser::types::DocumentOperations::Multiple(m), None) if m.len() == 1 => {
            match m.values().next() {
                Some(op) => op,
                None => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    let mut errors = Vec::new();
    for d in &op.node.variable_definitions {
        let name = d.node.name.node.as_str();
        let ty = TypeRef::from_ast(&d.node.var_type.node);
        if !table.kinds.contains_key(ty.named()) {
            continue;
        }
        let given = variables.get(name);
        if given.is_none() && d.node.default_value.is_some() {
            continue;
        }
        let mut problems = Vec::new();
        table.value_problems(&ty, given, &mut Vec::new(), &mut problems, 0);
        if problems.is_empty() {
            continue;
        }
        let problems: Vec<Json> = problems
            .into_iter()
            .map(|p| json!({"path": p.path, "explanation": p.explanation}))
            .collect();
        errors.push(json!({
            "message": format!("Variable ${name} of type {ty} was provided invalid value"),
            "locations": [{"line": d.pos.line, "column": d.pos.column}],
            "extensions": {
                "value": given.cloned().unwrap_or(Json::Null),
                "problems": problems,
                "code": "argumentLiteralsIncompatible",
            },
        }));
    }
    errors
}

// ---------------------------------------------------------------- size guards

/// How deeply the text nests, outside strings and comments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Nesting {
    /// All of `{`, `[` and `(`.
    pub total: usize,
    /// `{` that open selection sets (not inside arguments): roughly the field depth.
    pub selections: usize,
}

/// One pass over the text, no recursion.
pub(crate) fn nesting(text: &str) -> Nesting {
    let b = text.as_bytes();
    let mut stack: Vec<u8> = Vec::new();
    let mut selections = 0usize;
    let mut parens = 0usize;
    let mut out = Nesting::default();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                if b[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 2;
                } else {
                    i += 1;
                    while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
            }
            c @ (b'{' | b'[' | b'(') => {
                let sel = c == b'{' && parens == 0;
                stack.push(if sel { b's' } else { c });
                match c {
                    b'(' => parens += 1,
                    _ if sel => {
                        selections += 1;
                        out.selections = out.selections.max(selections);
                    }
                    _ => {}
                }
                out.total = out.total.max(stack.len());
            }
            b'}' | b']' | b')' => match stack.pop() {
                Some(b's') => selections = selections.saturating_sub(1),
                Some(b'(') => parens = parens.saturating_sub(1),
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    out
}

/// The size of a document once fragment spreads are inlined, computed in linear time
/// (memoised per fragment, saturating) where inlining itself can be exponential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Fields of the largest operation: a lower bound of its complexity.
    pub fields: u64,
    /// Fields of all operations together: what validating the document walks.
    pub total_fields: u64,
    /// Nesting of fields (`{ card { id } }` is 2).
    pub depth: usize,
    /// Nesting of selection sets including fragments, as async-graphql's recursion check
    /// counts it (the operation's own set is 0).
    pub nesting: usize,
}

fn shape_of(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    memo: &mut HashMap<String, Shape>,
    active: &mut HashSet<String>,
    guard: usize,
) -> Shape {
    let mut out = Shape::default();
    if guard > MAX_WALK {
        return out;
    }
    for item in &set.items {
        let (child, own_field) = match &item.node {
            Selection::Field(f) => {
                let set = &f.node.selection_set.node;
                let c = if set.items.is_empty() {
                    Shape::default()
                } else {
                    let c = shape_of(set, doc, memo, active, guard + 1);
                    Shape {
                        nesting: c.nesting + 1,
                        ..c
                    }
                };
                (c, true)
            }
            Selection::InlineFragment(i) => {
                let c = shape_of(&i.node.selection_set.node, doc, memo, active, guard + 1);
                (
                    Shape {
                        nesting: c.nesting + 1,
                        ..c
                    },
                    false,
                )
            }
            Selection::FragmentSpread(sp) => {
                let name = sp.node.fragment_name.node.to_string();
                let c = if let Some(m) = memo.get(&name) {
                    *m
                } else if !active.insert(name.clone()) {
                    Shape::default() // a cycle: validation reports it
                } else {
                    let c = doc
                        .fragments
                        .get(sp.node.fragment_name.node.as_str())
                        .map(|f| shape_of(&f.node.selection_set.node, doc, memo, active, guard + 1))
                        .unwrap_or_default();
                    active.remove(&name);
                    memo.insert(name, c);
                    c
                };
                (
                    Shape {
                        nesting: c.nesting + 1,
                        ..c
                    },
                    false,
                )
            }
        };
        out.fields = out
            .fields
            .saturating_add(child.fields)
            .saturating_add(u64::from(own_field));
        out.depth = out.depth.max(child.depth + usize::from(own_field));
        out.nesting = out.nesting.max(child.nesting);
    }
    out
}

/// The largest [`Shape`] over the document's operations.
pub(crate) fn shape(doc: &ExecutableDocument) -> Shape {
    let mut memo = HashMap::new();
    let mut out = Shape::default();
    for (_, op) in doc.operations.iter() {
        let s = shape_of(
            &op.node.selection_set.node,
            doc,
            &mut memo,
            &mut HashSet::new(),
            0,
        );
        out.fields = out.fields.max(s.fields);
        out.total_fields = out.total_fields.saturating_add(s.fields);
        out.depth = out.depth.max(s.depth);
        out.nesting = out.nesting.max(s.nesting);
    }
    out
}
