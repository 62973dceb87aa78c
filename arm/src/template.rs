//! The subset of the ARM template language that Application Gateway templates use: template
//! expressions (`"[...]"` strings) calling `parameters()`, `variables()`, `concat()`,
//! `resourceId()`, `resourceGroup()`, `subscription()`, `if()` (only the branch taken is
//! evaluated), `copyIndex()` and the argument-only functions of [`super::functions`], with
//! `.property` and `[index]` access; property and variable copy loops (what Bicep writes for
//! `[for ...]`); parameter `defaultValue`s; values from a parameters file (the
//! `deploymentParameters.json` format) or from the command line. Anything else — notably
//! `reference()` and `list*()`, whose values exist only during a deployment in Azure — is an
//! error naming the function and where it was called.
//!
//! Reference: "Template functions" and "Syntax and expressions in ARM templates" in the Azure
//! Resource Manager documentation.

use std::cell::RefCell;
use std::collections::HashMap;

use super::functions;
use super::json::{self, Node, Pos, Value};
use super::{ArmError, Source};

/// The subscription placeholder in the ids `resourceId()` builds; ids only need to name the
/// child they point to, which is all references are resolved by.
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// What `resourceGroup()` answers: a process has no resource group.
const RESOURCE_GROUP: &str = "wasmgate";
const LOCATION: &str = "local";

/// A template with its parameter values, evaluating expressions on demand.
pub struct Evaluator<'t> {
    template: &'t Node,
    /// The template's file, for error messages.
    file: String,
    /// Values given for parameters (file or command line), by lowercase name.
    supplied: HashMap<String, (Node, String)>,
    params: RefCell<HashMap<String, Node>>,
    vars: RefCell<HashMap<String, Node>>,
    /// Parameters and variables being evaluated, to report a cycle instead of recursing forever.
    in_progress: RefCell<Vec<String>>,
    /// The copy loops being expanded, innermost last: each loop's name and current index.
    loops: RefCell<Vec<(String, i64)>>,
    /// Accept what Azure Resource Manager refuses where the meaning is still clear.
    lenient: bool,
    /// Calls Azure Resource Manager refuses, met while evaluating: they fail the import even
    /// where their value is not imported, as they fail the deployment.
    refusals: RefCell<Vec<ArmError>>,
}

impl<'t> Evaluator<'t> {
    /// Checks the supplied parameter values against the template's declarations.
    /// `file_params` is a parsed parameters file; `sets` are `name=value` pairs from the command
    /// line, which win over the file.
    pub fn new(
        template: &'t Node,
        file: &str,
        file_params: Option<(&Node, &str)>,
        sets: &[(String, String)],
    ) -> Result<Self, ArmError> {
        let decls = template.get("parameters");
        let mut supplied = HashMap::new();
        if let Some((params, pfile)) = file_params {
            let Some(list) = params.get("parameters") else {
                return Err(ArmError::at(
                    pfile,
                    params.pos,
                    "",
                    "a parameters file needs a \"parameters\" object",
                ));
            };
            for (name, entry) in list.members() {
                let path = format!("parameters.{name}");
                let decl = decls.and_then(|d| d.get(name)).ok_or_else(|| {
                    ArmError::at(
                        pfile,
                        entry.pos,
                        &path,
                        "the template declares no parameter of this name",
                    )
                })?;
                if entry.get("reference").is_some() {
                    return Err(ArmError::at(
                        pfile,
                        entry.pos,
                        &format!("{path}.reference"),
                        "Key Vault references cannot be resolved outside Azure; pass the value with --set or in \"value\"",
                    ));
                }
                let value = entry.get("value").ok_or_else(|| {
                    ArmError::at(pfile, entry.pos, &path, "expected { \"value\": ... }")
                })?;
                check_type(decl, value, pfile, &format!("{path}.value"))?;
                supplied.insert(
                    name.to_ascii_lowercase(),
                    (value.clone(), pfile.to_string()),
                );
            }
        }
        for (name, text) in sets {
            let path = format!("--set {name}");
            let decl = decls.and_then(|d| d.get(name)).ok_or_else(|| {
                ArmError::at(
                    "command line",
                    Pos::default(),
                    &path,
                    "the template declares no parameter of this name",
                )
            })?;
            let value = coerce(decl, text)
                .map_err(|m| ArmError::at("command line", Pos::default(), &path, &m))?;
            check_type(decl, &value, "command line", &path)?;
            supplied.insert(
                name.to_ascii_lowercase(),
                (value, "command line".to_string()),
            );
        }
        Ok(Evaluator {
            template,
            file: file.to_string(),
            supplied,
            params: RefCell::new(HashMap::new()),
            vars: RefCell::new(HashMap::new()),
            in_progress: RefCell::new(Vec::new()),
            loops: RefCell::new(Vec::new()),
            lenient: false,
            refusals: RefCell::new(Vec::new()),
        })
    }

    /// With `lenient`, calls that Azure Resource Manager refuses are evaluated the way older
    /// templates meant them (`resourceId(<full id>, '/child/name')` appends the names).
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// The first call met so far that Azure Resource Manager refuses.
    pub fn refusal(&self) -> Option<ArmError> {
        self.refusals.borrow().first().cloned()
    }

    /// Every declared parameter has a value (supplied, or its `defaultValue`), as Azure Resource
    /// Manager requires before it evaluates anything; otherwise one error naming all of those
    /// without one.
    pub fn check_parameters(&self) -> Result<(), ArmError> {
        let Some(decls) = self.template.get("parameters") else {
            return Ok(());
        };
        let missing: Vec<String> = decls
            .members()
            .iter()
            .filter(|(name, decl)| {
                !self.supplied.contains_key(&name.to_ascii_lowercase())
                    && decl.get("defaultValue").is_none()
            })
            .map(|(name, decl)| format!("'{name}' (line {})", decl.pos.line))
            .collect();
        let (these, they) = match missing.len() {
            0 => return Ok(()),
            1 => ("parameter", "it has"),
            _ => ("parameters", "they have"),
        };
        Err(ArmError::at(
            &self.file,
            Pos::default(),
            "parameters",
            &format!(
                "no value for the {these} {}: {they} no defaultValue; give values with --parameters or --set",
                missing.join(", ")
            ),
        ))
    }

    /// The value of parameter `name`: supplied, else its default.
    pub fn parameter(&self, name: &str, at: Pos, path: &str) -> Result<Node, ArmError> {
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.params.borrow().get(&key) {
            return Ok(v.clone());
        }
        let Some((decl_name, decl)) = self.template.get("parameters").and_then(|p| {
            p.members()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
        }) else {
            return Err(self.error(at, path, &format!("no parameter named '{name}'")));
        };
        let decl_path = format!("parameters.{decl_name}");
        let value = if let Some((v, _)) = self.supplied.get(&key) {
            v.clone()
        } else if let Some(default) = decl.get("defaultValue") {
            let v = self.guarded(&format!("parameter '{decl_name}'"), at, path, || {
                self.eval(default, &format!("{decl_path}.defaultValue"))
            })?;
            check_type(decl, &v, &self.file, &format!("{decl_path}.defaultValue"))?;
            v
        } else {
            return Err(self.error(
                decl.pos,
                &decl_path,
                "no value: the parameter has no defaultValue; give one with --parameters or --set",
            ));
        };
        if let Some(allowed) = decl.get("allowedValues").and_then(Node::as_array)
            && !allowed.iter().any(|a| same_value(&a.value, &value.value))
        {
            return Err(self.error(
                decl.pos,
                &decl_path,
                &format!("{} is not one of the allowedValues", show(&value.value)),
            ));
        }
        self.params.borrow_mut().insert(key, value.clone());
        Ok(value)
    }

    /// The value of variable `name`.
    pub fn variable(&self, name: &str, at: Pos, path: &str) -> Result<Node, ArmError> {
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.vars.borrow().get(&key) {
            return Ok(v.clone());
        }
        let found = self.template.get("variables").and_then(|p| {
            p.members()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name) && !k.eq_ignore_ascii_case("copy"))
        });
        let Some((decl_name, decl)) = found else {
            // A variable made by a copy loop: `"variables": { "copy": [ { "name": ... } ] }`.
            let entry = self
                .template
                .get("variables")
                .and_then(|v| v.get("copy"))
                .and_then(Node::as_array)
                .and_then(|loops| {
                    loops.iter().enumerate().find(|(_, e)| {
                        e.get("name")
                            .and_then(Node::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    })
                });
            let Some((i, entry)) = entry else {
                return Err(self.error(at, path, &format!("no variable named '{name}'")));
            };
            let value = self.guarded(&format!("variable '{name}'"), at, path, || {
                self.copy_loop(entry, &format!("variables.copy[{i}]"), "variables", None)
                    .map(|(_, v)| v)
            })?;
            self.vars.borrow_mut().insert(key, value.clone());
            return Ok(value);
        };
        let value = self.guarded(&format!("variable '{decl_name}'"), at, path, || {
            self.eval(decl, &format!("variables.{decl_name}"))
        })?;
        self.vars.borrow_mut().insert(key, value.clone());
        Ok(value)
    }

    fn guarded(
        &self,
        what: &str,
        at: Pos,
        path: &str,
        f: impl FnOnce() -> Result<Node, ArmError>,
    ) -> Result<Node, ArmError> {
        if self.in_progress.borrow().iter().any(|w| w == what) {
            let chain = self.in_progress.borrow().join(" -> ");
            return Err(self.error(
                at,
                path,
                &format!("{what} refers to itself ({chain} -> {what})"),
            ));
        }
        self.in_progress.borrow_mut().push(what.to_string());
        let r = f();
        self.in_progress.borrow_mut().pop();
        r
    }

    /// Evaluates every expression inside `node`; `path` names `node` in errors.
    pub fn eval(&self, node: &Node, path: &str) -> Result<Node, ArmError> {
        self.eval_in(node, path, None)
    }

    /// Like [`Evaluator::eval`], but an expression whose evaluation fails keeps its text and its
    /// error is added to `failed`: the caller decides whether the value mattered (a failing
    /// expression in a part that is not imported, such as `reference()` in a tag, does not).
    /// Syntax errors still fail here.
    pub fn eval_deferred(
        &self,
        node: &Node,
        path: &str,
        failed: &mut Vec<ArmError>,
    ) -> Result<Node, ArmError> {
        self.eval_in(node, path, Some(failed))
    }

    fn eval_in(
        &self,
        node: &Node,
        path: &str,
        mut failed: Option<&mut Vec<ArmError>>,
    ) -> Result<Node, ArmError> {
        let value = match &node.value {
            Value::String(s) => match expression_text(s) {
                Expr::Literal(lit) => Value::String(lit),
                Expr::Code(code) => {
                    // A syntax error fails the import wherever it is, as it fails the deployment
                    // in Azure; only evaluation errors are deferred.
                    let ast = self.parse_expression(code, node.pos, path)?;
                    return match (self.run(&ast, node.pos, path), failed) {
                        (Err(e), Some(list)) => {
                            list.push(e);
                            Ok(node.clone())
                        }
                        (r, _) => r.map(|v| Node::new(v, node.pos)),
                    };
                }
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, n) in items.iter().enumerate() {
                    out.push(self.eval_in(n, &format!("{path}[{i}]"), failed.as_deref_mut())?);
                }
                Value::Array(out)
            }
            Value::Object(members) => {
                let mut out = Vec::with_capacity(members.len());
                for (k, n) in members {
                    // A property copy loop (what Bicep writes for `[for ...]`): `copy` lists the
                    // array properties to build, each from `count` evaluations of `input`.
                    if k.eq_ignore_ascii_case("copy") && matches!(n.value, Value::Array(_)) {
                        let copy_path = join(path, k);
                        for (i, entry) in n.as_array().unwrap_or_default().iter().enumerate() {
                            let epath = format!("{copy_path}[{i}]");
                            match self.copy_loop(entry, &epath, path, failed.as_deref_mut()) {
                                Ok(member) => out.push(member),
                                Err(e) => match failed.as_deref_mut() {
                                    Some(list) => list.push(e),
                                    None => return Err(e),
                                },
                            }
                        }
                        continue;
                    }
                    out.push((
                        k.clone(),
                        self.eval_in(n, &join(path, k), failed.as_deref_mut())?,
                    ));
                }
                Value::Object(out)
            }
            other => other.clone(),
        };
        Ok(Node::new(value, node.pos))
    }

    /// One entry of a `copy` array, `{ "name", "count", "input" }` at `epath`: the property
    /// `name` with `count` evaluations of `input`, `copyIndex('name')` counting from 0. Items
    /// are named in errors as the property they become (`{owner}.name[i]`).
    fn copy_loop(
        &self,
        entry: &Node,
        epath: &str,
        owner: &str,
        mut failed: Option<&mut Vec<ArmError>>,
    ) -> Result<(String, Node), ArmError> {
        let field = |key: &str| {
            entry.get(key).ok_or_else(|| {
                self.error(
                    entry.pos,
                    epath,
                    &format!(
                        "a copy loop needs \"name\", \"count\" and \"input\"; \"{key}\" is missing"
                    ),
                )
            })
        };
        let name_node = self.eval(field("name")?, &join(epath, "name"))?;
        let Some(name) = name_node.as_str().map(str::to_string) else {
            return Err(self.error(
                name_node.pos,
                &join(epath, "name"),
                "the loop's name must be a string",
            ));
        };
        let count_node = self.eval(field("count")?, &join(epath, "count"))?;
        let count = match count_node.value {
            Value::Int(n) if (0..=800).contains(&n) => n,
            // Azure's limit on a copy loop's count.
            _ => {
                return Err(self.error(
                    count_node.pos,
                    &join(epath, "count"),
                    &format!(
                        "the count must be an integer from 0 to 800, found {}",
                        show(&count_node.value)
                    ),
                ));
            }
        };
        let input = field("input")?;
        let target = join(owner, &name);
        let mut items = Vec::new();
        for i in 0..count {
            self.loops.borrow_mut().push((name.clone(), i));
            let r = self.eval_in(input, &format!("{target}[{i}]"), failed.as_deref_mut());
            self.loops.borrow_mut().pop();
            items.push(r?);
        }
        Ok((name, Node::new(Value::Array(items), entry.pos)))
    }

    /// Runs `f` as iteration `index` of the resource copy loop `name`, so `copyIndex()` and
    /// `copyIndex('name')` answer `index`.
    pub fn in_loop<T>(&self, name: &str, index: i64, f: impl FnOnce() -> T) -> T {
        self.loops.borrow_mut().push((name.to_string(), index));
        let r = f();
        self.loops.borrow_mut().pop();
        r
    }

    /// Evaluates one expression (the text between the brackets).
    pub fn eval_expression(&self, code: &str, pos: Pos, path: &str) -> Result<Node, ArmError> {
        let ast = self.parse_expression(code, pos, path)?;
        let value = self.run(&ast, pos, path)?;
        Ok(Node::new(value, pos))
    }

    fn parse_expression(&self, code: &str, pos: Pos, path: &str) -> Result<Ast, ArmError> {
        let tokens = lex(code).map_err(|(at, m)| self.expr_error(pos, path, at, &m))?;
        let mut p = ExprParser { tokens, at: 0 };
        let ast = p
            .expr()
            .map_err(|(at, m)| self.expr_error(pos, path, at, &m))?;
        if p.at < p.tokens.len() {
            let at = p.tokens[p.at].1;
            return Err(self.expr_error(pos, path, at, "unexpected text after the expression"));
        }
        Ok(ast)
    }

    fn run(&self, ast: &Ast, pos: Pos, path: &str) -> Result<Value, ArmError> {
        match ast {
            Ast::Str(s) => Ok(Value::String(s.clone())),
            Ast::Int(i) => Ok(Value::Int(*i)),
            Ast::Bool(b) => Ok(Value::Bool(*b)),
            Ast::Null => Ok(Value::Null),
            Ast::Property(base, name, at) => {
                let v = self.run(base, pos, path)?;
                let Value::Object(members) = &v else {
                    return Err(self.expr_error(
                        pos,
                        path,
                        *at,
                        &format!("'.{name}' needs an object, found {}", v.kind()),
                    ));
                };
                members
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, n)| n.value.clone())
                    .ok_or_else(|| {
                        self.expr_error(
                            pos,
                            path,
                            *at,
                            &format!("the object has no property '{name}'"),
                        )
                    })
            }
            Ast::Index(base, index, at) => {
                let v = self.run(base, pos, path)?;
                let i = self.run(index, pos, path)?;
                match (&v, &i) {
                    (Value::Array(items), Value::Int(n)) => usize::try_from(*n)
                        .ok()
                        .and_then(|n| items.get(n))
                        .map(|n| n.value.clone())
                        .ok_or_else(|| {
                            self.expr_error(
                                pos,
                                path,
                                *at,
                                &format!("index {n} is outside the array of {}", items.len()),
                            )
                        }),
                    (Value::Object(members), Value::String(name)) => members
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, n)| n.value.clone())
                        .ok_or_else(|| {
                            self.expr_error(
                                pos,
                                path,
                                *at,
                                &format!("the object has no property '{name}'"),
                            )
                        }),
                    _ => Err(self.expr_error(
                        pos,
                        path,
                        *at,
                        &format!("cannot index {} with {}", v.kind(), i.kind()),
                    )),
                }
            }
            // `if` evaluates only the branch it takes, so the other may use what cannot be
            // evaluated here (such as `reference()` behind a condition that is false).
            Ast::Call(name, args, at) if name.eq_ignore_ascii_case("if") => {
                let [cond, yes, no] = &args[..] else {
                    return Err(self.expr_error(
                        pos,
                        path,
                        *at,
                        "if(): expects a condition and two values",
                    ));
                };
                match self.run(cond, pos, path)? {
                    Value::Bool(true) => self.run(yes, pos, path),
                    Value::Bool(false) => self.run(no, pos, path),
                    other => Err(self.expr_error(
                        pos,
                        path,
                        *at,
                        &format!(
                            "if(): the condition is {}, expected a boolean",
                            other.kind()
                        ),
                    )),
                }
            }
            Ast::Call(name, args, at) => {
                let values = args
                    .iter()
                    .map(|a| self.run(a, pos, path))
                    .collect::<Result<Vec<_>, _>>()?;
                self.call(name, values, pos, path, *at)
            }
        }
    }

    fn call(
        &self,
        name: &str,
        args: Vec<Value>,
        pos: Pos,
        path: &str,
        at: usize,
    ) -> Result<Value, ArmError> {
        let fail = |m: &str| self.expr_error(pos, path, at, &format!("{name}(): {m}"));
        let one_string = |args: &[Value]| match args {
            [Value::String(s)] => Ok(s.clone()),
            _ => Err(fail("expects one string argument")),
        };
        match name.to_ascii_lowercase().as_str() {
            "parameters" => {
                let n = one_string(&args)?;
                Ok(self.parameter(&n, pos, path)?.value)
            }
            "variables" => {
                let n = one_string(&args)?;
                Ok(self.variable(&n, pos, path)?.value)
            }
            "concat" => concat(args).map_err(|m| fail(&m)),
            "resourceid" => {
                let segmented = args
                    .iter()
                    .filter(|a| matches!(a, Value::String(s) if s.contains('/')))
                    .count();
                if segmented != 1 && !self.lenient {
                    let shown: Vec<String> = args
                        .iter()
                        .map(|a| match a {
                            Value::String(s) => s.clone(),
                            other => show(other),
                        })
                        .collect();
                    // Azure Resource Manager's own words for this refusal.
                    let e = fail(&format!(
                        "Azure Resource Manager refuses the call: \"function requires exactly one multi-segmented argument which must be resource type including resource provider namespace. Current function arguments '{}'.\"{}",
                        shown.join(","),
                        if segmented > 1 {
                            " (--lenient imports it, appending the names to the id given first)"
                        } else {
                            ""
                        }
                    ));
                    self.refusals.borrow_mut().push(e.clone());
                    return Err(e);
                }
                resource_id(&args).map_err(|m| fail(&m))
            }
            "resourcegroup" => {
                if !args.is_empty() {
                    return Err(fail("takes no arguments"));
                }
                let s = |v: &str| Node::new(Value::String(v.to_string()), pos);
                Ok(Value::Object(vec![
                    (
                        "id".into(),
                        s(&format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")),
                    ),
                    ("name".into(), s(RESOURCE_GROUP)),
                    ("type".into(), s("Microsoft.Resources/resourceGroups")),
                    ("location".into(), s(LOCATION)),
                ]))
            }
            "copyindex" => {
                let loops = self.loops.borrow();
                let (name, offset) = match &args[..] {
                    [] => (None, 0),
                    [Value::Int(o)] => (None, *o),
                    [Value::String(n)] => (Some(n.as_str()), 0),
                    [Value::String(n), Value::Int(o)] => (Some(n.as_str()), *o),
                    _ => return Err(fail("expects an optional loop name and an optional offset")),
                };
                let found = match name {
                    None => loops.last(),
                    Some(n) => loops.iter().rev().find(|(l, _)| l.eq_ignore_ascii_case(n)),
                };
                match found {
                    Some((_, i)) => Ok(Value::Int(i + offset)),
                    None => Err(fail(&match name {
                        Some(n) => format!("not inside a copy loop named '{n}'"),
                        None => "not inside a copy loop".to_string(),
                    })),
                }
            }
            "subscription" => {
                if !args.is_empty() {
                    return Err(fail("takes no arguments"));
                }
                let s = |v: &str| Node::new(Value::String(v.to_string()), pos);
                Ok(Value::Object(vec![
                    ("id".into(), s(&format!("/subscriptions/{SUBSCRIPTION}"))),
                    ("subscriptionId".into(), s(SUBSCRIPTION)),
                    ("tenantId".into(), s(SUBSCRIPTION)),
                    ("displayName".into(), s(RESOURCE_GROUP)),
                ]))
            }
            other => functions::call(other, args).map_err(|e| match e {
                functions::Error::Args(m) => fail(&m),
                functions::Error::Unknown => {
                    let why = if functions::needs_azure(other) {
                        "it reads deployed resources or the deployment's time, which exist only in Azure".to_string()
                    } else {
                        format!("not supported (supported: {})", functions::SUPPORTED)
                    };
                    self.expr_error(
                        pos,
                        path,
                        at,
                        &format!("the template function '{name}' cannot be evaluated: {why}"),
                    )
                }
            }),
        }
    }

    fn error(&self, pos: Pos, path: &str, message: &str) -> ArmError {
        ArmError::at(&self.file, pos, path, message)
    }

    fn expr_error(&self, pos: Pos, path: &str, at: usize, message: &str) -> ArmError {
        // `at` counts characters from the opening bracket's successor.
        ArmError::at(
            &self.file,
            pos,
            path,
            &format!("{message} (character {} of the expression)", at + 2),
        )
    }
}

/// `path.key`, or `key` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

enum Expr<'a> {
    Literal(String),
    Code(&'a str),
}

/// Whether a JSON string is an expression: `[...]`, except `[[` which escapes a literal `[`.
fn expression_text(s: &str) -> Expr<'_> {
    if let Some(rest) = s.strip_prefix("[[") {
        return Expr::Literal(format!("[{rest}"));
    }
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(code) => Expr::Code(code),
        None => Expr::Literal(s.to_string()),
    }
}

/// Parameter types ARM declares, checked against supplied values and defaults.
fn check_type(decl: &Node, value: &Node, file: &str, path: &str) -> Result<(), ArmError> {
    let Some(ty) = decl.get("type").and_then(Node::as_str) else {
        return Ok(());
    };
    let ok = match ty.to_ascii_lowercase().as_str() {
        "string" | "securestring" => matches!(value.value, Value::String(_)),
        "int" => matches!(value.value, Value::Int(_)),
        "bool" => matches!(value.value, Value::Bool(_)),
        "array" => matches!(value.value, Value::Array(_)),
        "object" | "secureobject" => matches!(value.value, Value::Object(_)),
        _ => {
            return Err(ArmError::at(
                file,
                decl.pos,
                path,
                &format!("unknown parameter type '{ty}'"),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ArmError::at(
            file,
            value.pos,
            path,
            &format!("expected a value of type {ty}, found {}", value.kind()),
        ))
    }
}

/// A command-line value read as the parameter's declared type.
fn coerce(decl: &Node, text: &str) -> Result<Node, String> {
    let ty = decl
        .get("type")
        .and_then(Node::as_str)
        .unwrap_or("string")
        .to_ascii_lowercase();
    let pos = Pos::default();
    match ty.as_str() {
        "int" => text
            .parse::<i64>()
            .map(|i| Node::new(Value::Int(i), pos))
            .map_err(|_| format!("expected an integer, found {text:?}")),
        "bool" => match text {
            "true" => Ok(Node::new(Value::Bool(true), pos)),
            "false" => Ok(Node::new(Value::Bool(false), pos)),
            _ => Err(format!("expected true or false, found {text:?}")),
        },
        "array" | "object" | "secureobject" => {
            json::parse(text).map_err(|e| format!("expected JSON ({} at {})", e.message, e.pos))
        }
        _ => Ok(Node::new(Value::String(text.to_string()), pos)),
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // ARM compares allowed string values without regard to case.
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(&p.value, &q.value))
        }
        _ => a == b,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.kind().to_string(),
    }
}

fn concat(args: Vec<Value>) -> Result<Value, String> {
    if args.is_empty() {
        return Err("expects at least one argument".into());
    }
    if args.iter().all(|a| matches!(a, Value::Array(_))) {
        let mut out = Vec::new();
        for a in args {
            if let Value::Array(items) = a {
                out.extend(items);
            }
        }
        return Ok(Value::Array(out));
    }
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        match a {
            Value::String(x) => s.push_str(x),
            Value::Int(x) => s.push_str(&x.to_string()),
            Value::Bool(x) => s.push_str(&x.to_string()),
            other => {
                return Err(format!(
                    "argument {} is {}; concat joins strings or arrays",
                    i + 1,
                    other.kind()
                ));
            }
        }
    }
    Ok(Value::String(s))
}

/// `resourceId([subscriptionId], [resourceGroupName], resourceType, name1, name2, ...)`: the
/// resource type is the first argument with a `/`; each of its segments after the namespace
/// takes one name.
fn resource_id(args: &[Value]) -> Result<Value, String> {
    let strings = args
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Value::String(s) => Ok(s.as_str()),
            other => Err(format!(
                "argument {} is {}, expected a string",
                i + 1,
                other.kind()
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // `resourceId(<id of the gateway>, '/sslCertificates/cert')`, which templates written for
    // the 2017 API use: Azure appends the names to the id given.
    if let Some(first) = strings.first()
        && first.starts_with("/subscriptions/")
    {
        let mut id = first.trim_end_matches('/').to_string();
        for n in &strings[1..] {
            for seg in n.split('/').filter(|s| !s.is_empty()) {
                id.push('/');
                id.push_str(seg);
            }
        }
        return Ok(Value::String(id));
    }
    let Some(type_at) = strings.iter().position(|s| s.contains('/')) else {
        return Err("no resource type (such as 'Microsoft.Network/applicationGateways') among the arguments".into());
    };
    let (subscription, group) =
        match &strings[..type_at] {
            [] => (SUBSCRIPTION, RESOURCE_GROUP),
            [group] => (SUBSCRIPTION, *group),
            [sub, group] => (*sub, *group),
            _ => return Err(
                "at most a subscription id and a resource group name may precede the resource type"
                    .into(),
            ),
        };
    // Azure accepts a type written with a trailing slash ('Microsoft.Network/virtualNetworks/').
    let mut segments = strings[type_at].trim_end_matches('/').split('/');
    let namespace = segments.next().unwrap_or_default();
    let types: Vec<&str> = segments.collect();
    let names = &strings[type_at + 1..];
    if types.iter().any(|t| t.is_empty()) || namespace.is_empty() {
        return Err(format!("'{}' is not a resource type", strings[type_at]));
    }
    if names.len() != types.len() {
        return Err(format!(
            "the type '{}' needs {} resource name(s), {} given",
            strings[type_at],
            types.len(),
            names.len()
        ));
    }
    let mut id =
        format!("/subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}");
    for (t, n) in types.iter().zip(names) {
        id.push_str(&format!("/{t}/{n}"));
    }
    Ok(Value::String(id))
}

// ---- expression syntax ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Open,
    Close,
    Comma,
    Dot,
    LBracket,
    RBracket,
}

/// Tokens with the character offset where each starts.
fn lex(code: &str) -> Result<Vec<(Token, usize)>, (usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let token = match c {
            ' ' | '\t' | '\r' | '\n' => {
                i += 1;
                continue;
            }
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '.' => Token::Dot,
            '[' => Token::LBracket,
            ']' => Token::RBracket,
            '\'' => {
                // A single-quoted string; '' is a quote inside it.
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err((start, "unterminated string".into())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                Token::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut j = i + 1;
                while chars.get(j).is_some_and(char::is_ascii_digit) {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let n = text
                    .parse::<i64>()
                    .map_err(|_| (start, format!("'{text}' is not an integer")))?;
                i = j - 1;
                Token::Int(n)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                i = j - 1;
                Token::Ident(text)
            }
            other => return Err((start, format!("unexpected character '{other}'"))),
        };
        out.push((token, start));
        i += 1;
    }
    Ok(out)
}

#[derive(Debug)]
enum Ast {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
    Call(String, Vec<Ast>, usize),
    Property(Box<Ast>, String, usize),
    Index(Box<Ast>, Box<Ast>, usize),
}

struct ExprParser {
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl ExprParser {
    fn offset(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map(|t| t.1)
            .unwrap_or(0)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), (usize, String)> {
        let at = self.offset();
        match self.next() {
            Some(t) if t == want => Ok(()),
            _ => Err((at, format!("expected {what}"))),
        }
    }

    fn expr(&mut self) -> Result<Ast, (usize, String)> {
        let at = self.offset();
        let mut ast = match self.next() {
            Some(Token::Str(s)) => Ast::Str(s),
            Some(Token::Int(i)) => Ast::Int(i),
            Some(Token::Ident(name))
                if ["true", "false", "null"].contains(&name.as_str())
                    && self.tokens.get(self.at).map(|t| &t.0) != Some(&Token::Open) =>
            {
                match name.as_str() {
                    "true" => Ast::Bool(true),
                    "false" => Ast::Bool(false),
                    _ => Ast::Null,
                }
            }
            Some(Token::Ident(name)) => {
                self.expect(Token::Open, &format!("'(' after '{name}'"))?;
                let mut args = Vec::new();
                if self.tokens.get(self.at).map(|t| &t.0) == Some(&Token::Close) {
                    self.at += 1;
                } else {
                    loop {
                        args.push(self.expr()?);
                        let here = self.offset();
                        match self.next() {
                            Some(Token::Comma) => {}
                            Some(Token::Close) => break,
                            _ => {
                                return Err((
                                    here,
                                    format!("expected ',' or ')' in the call of '{name}'"),
                                ));
                            }
                        }
                    }
                }
                Ast::Call(name, args, at)
            }
            _ => {
                return Err((
                    at,
                    "expected a function call, a 'string' or a number".into(),
                ));
            }
        };
        loop {
            let at = self.offset();
            match self.tokens.get(self.at).map(|t| &t.0) {
                Some(Token::Dot) => {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Ident(name)) => ast = Ast::Property(Box::new(ast), name, at),
                        _ => return Err((at, "expected a property name after '.'".into())),
                    }
                }
                Some(Token::LBracket) => {
                    self.at += 1;
                    let index = self.expr()?;
                    self.expect(Token::RBracket, "']'")?;
                    ast = Ast::Index(Box::new(ast), Box::new(index), at);
                }
                _ => return Ok(ast),
            }
        }
    }
}

/// A parsed template file, for the entry points.
pub fn parse_file(source: &Source) -> Result<Node, ArmError> {
    json::parse(&source.text).map_err(|e| ArmError::at(&source.name, e.pos, "", &e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{
  "parameters": {
    "gatewayName": { "type": "string", "defaultValue": "[concat('gw-', resourceGroup().name)]" },
    "port": { "type": "int", "defaultValue": 80 },
    "Backends": { "type": "array", "defaultValue": ["10.0.0.4", "10.0.0.5"] },
    "tier": { "type": "string", "defaultValue": "Standard_v2", "allowedValues": ["Standard_v2", "WAF_v2"] },
    "required": { "type": "string" },
    "flag": { "type": "bool", "defaultValue": false },
    "settings": { "type": "object", "defaultValue": { "Timeout": 30, "hosts": ["a", "b"] } },
    "loopA": { "type": "string", "defaultValue": "[parameters('loopB')]" },
    "loopB": { "type": "string", "defaultValue": "[parameters('loopA')]" }
  },
  "variables": {
    "gwId": "[resourceId('Microsoft.Network/applicationGateways', parameters('gatewayName'))]",
    "portId": "[concat(variables('GWID'), '/frontendPorts/', 'port_', parameters('port'))]",
    "nested": { "list": ["[parameters('backends')[1]]", "[[literal]"] },
    "selfA": "[variables('selfB')]",
    "selfB": "[variables('selfA')]"
  }
}"#;

    fn eval_with(expr: &str, sets: &[(&str, &str)]) -> Result<Value, ArmError> {
        let t = json::parse(TEMPLATE).unwrap();
        let sets: Vec<(String, String)> = sets
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let ev = Evaluator::new(&t, "t.json", None, &sets)?;
        let node = Node::new(Value::String(expr.to_string()), Pos { line: 7, col: 3 });
        ev.eval(&node, "x").map(|n| n.value)
    }

    fn eval(expr: &str) -> Result<Value, ArmError> {
        eval_with(expr, &[])
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(eval("plain").unwrap(), s("plain"));
        assert_eq!(
            eval("[[not an expression]").unwrap(),
            s("[not an expression]")
        );
        assert_eq!(eval("['it''s']").unwrap(), s("it's"));
        assert_eq!(eval("[ concat( 'a' , 'b' ) ]").unwrap(), s("ab"));
    }

    #[test]
    fn parameters_defaults_and_case() {
        assert_eq!(
            eval("[parameters('GATEWAYNAME')]").unwrap(),
            s("gw-wasmgate")
        );
        assert_eq!(eval("[PARAMETERS('port')]").unwrap(), Value::Int(80));
        assert_eq!(eval("[parameters('backends')[0]]").unwrap(), s("10.0.0.4"));
        assert_eq!(
            eval("[parameters('settings').timeout]").unwrap(),
            Value::Int(30)
        );
        assert_eq!(
            eval("[parameters('settings')['hosts'][1]]").unwrap(),
            s("b")
        );
        assert_eq!(eval("[parameters('flag')]").unwrap(), Value::Bool(false));
    }

    #[test]
    fn command_line_values_take_the_declared_type() {
        assert_eq!(
            eval_with("[parameters('port')]", &[("port", "8080")]).unwrap(),
            Value::Int(8080)
        );
        assert_eq!(
            eval_with("[parameters('flag')]", &[("flag", "true")]).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval_with(
                "[parameters('backends')[0]]",
                &[("backends", "[\"127.0.0.1\"]")]
            )
            .unwrap(),
            s("127.0.0.1")
        );
        assert_eq!(
            eval_with("[parameters('required')]", &[("required", "x")]).unwrap(),
            s("x")
        );
        let e = eval_with("[parameters('port')]", &[("port", "eighty")]).unwrap_err();
        assert!(
            e.to_string().contains("--set port: expected an integer"),
            "{e}"
        );
        let e = eval_with("[parameters('port')]", &[("nope", "1")]).unwrap_err();
        assert!(e.to_string().contains("declares no parameter"), "{e}");
        let e = eval_with("[parameters('backends')]", &[("backends", "{\"a\": 1}")]).unwrap_err();
        assert!(
            e.to_string().contains("expected a value of type array"),
            "{e}"
        );
    }

    #[test]
    fn parameters_file() {
        let t = json::parse(TEMPLATE).unwrap();
        let p = json::parse(
            r#"{"$schema": "x", "contentVersion": "1.0.0.0", "parameters": {"Required": {"value": "from-file"}, "port": {"value": 81}}}"#,
        )
        .unwrap();
        let sets = vec![("port".to_string(), "82".to_string())];
        let ev = Evaluator::new(&t, "t.json", Some((&p, "p.json")), &sets).unwrap();
        let at = Pos::default();
        assert_eq!(
            ev.parameter("required", at, "x").unwrap().value,
            s("from-file")
        );
        // The command line wins over the file.
        assert_eq!(ev.parameter("port", at, "x").unwrap().value, Value::Int(82));

        let bad = json::parse(r#"{"parameters": {"port": {"value": "80"}}}"#).unwrap();
        let e = Evaluator::new(&t, "t.json", Some((&bad, "p.json")), &[])
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("p.json:1:"), "{e}");
        assert!(
            e.to_string()
                .contains("parameters.port.value: expected a value of type int"),
            "{e}"
        );

        let kv = json::parse(r#"{"parameters": {"required": {"reference": {"keyVault": {}}}}}"#)
            .unwrap();
        let e = Evaluator::new(&t, "t.json", Some((&kv, "p.json")), &[])
            .err()
            .unwrap();
        assert!(e.to_string().contains("Key Vault"), "{e}");

        let unknown = json::parse(r#"{"parameters": {"other": {"value": 1}}}"#).unwrap();
        let e = Evaluator::new(&t, "t.json", Some((&unknown, "p.json")), &[])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("parameters.other: the template declares no parameter"),
            "{e}"
        );

        let shapeless = json::parse(r#"{"port": {"value": 1}}"#).unwrap();
        assert!(Evaluator::new(&t, "t.json", Some((&shapeless, "p.json")), &[]).is_err());
    }

    #[test]
    fn missing_and_disallowed_parameters() {
        let e = eval("[parameters('required')]").unwrap_err();
        assert!(
            e.to_string().contains("parameters.required: no value"),
            "{e}"
        );
        let e = eval_with("[parameters('tier')]", &[("tier", "Basic")]).unwrap_err();
        assert!(
            e.to_string().contains("not one of the allowedValues"),
            "{e}"
        );
        assert_eq!(
            eval_with("[parameters('tier')]", &[("tier", "waf_v2")]).unwrap(),
            s("waf_v2")
        );
        let e = eval("[parameters('nothing')]").unwrap_err();
        assert!(
            e.to_string().contains("no parameter named 'nothing'"),
            "{e}"
        );
        let e = eval("[parameters('loopA')]").unwrap_err();
        assert!(e.to_string().contains("refers to itself"), "{e}");
    }

    #[test]
    fn variables() {
        assert_eq!(
            eval("[variables('portId')]").unwrap(),
            s(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wasmgate/providers/Microsoft.Network/applicationGateways/gw-wasmgate/frontendPorts/port_80"
            )
        );
        let Value::Object(m) = eval("[variables('nested')]").unwrap() else {
            panic!()
        };
        let list = m[0].1.as_array().unwrap();
        assert_eq!(list[0].value, s("10.0.0.5"));
        assert_eq!(list[1].value, s("[literal]"));
        let e = eval("[variables('selfA')]").unwrap_err();
        assert!(e.to_string().contains("refers to itself"), "{e}");
        let e = eval("[variables('none')]").unwrap_err();
        assert!(e.to_string().contains("no variable named 'none'"), "{e}");
    }

    #[test]
    fn concat_forms() {
        assert_eq!(
            eval("[concat('a', 1, parameters('flag'))]").unwrap(),
            s("a1false")
        );
        let Value::Array(a) =
            eval("[concat(parameters('backends'), parameters('backends'))]").unwrap()
        else {
            panic!()
        };
        assert_eq!(a.len(), 4);
        let e = eval("[concat('a', parameters('settings'))]").unwrap_err();
        assert!(e.to_string().contains("argument 2 is an object"), "{e}");
        assert!(eval("[concat()]").is_err());
    }

    #[test]
    fn resource_ids() {
        assert_eq!(
            eval("[resourceId('Microsoft.Network/applicationGateways/backendAddressPools', 'gw', 'pool')]").unwrap(),
            s("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wasmgate/providers/Microsoft.Network/applicationGateways/gw/backendAddressPools/pool")
        );
        assert_eq!(
            eval("[resourceId('sub', 'rg', 'Microsoft.Network/publicIPAddresses', 'ip')]").unwrap(),
            s(
                "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/ip"
            )
        );
        let e =
            eval("[resourceId('Microsoft.Network/applicationGateways/probes', 'gw')]").unwrap_err();
        assert!(
            e.to_string().contains("needs 2 resource name(s), 1 given"),
            "{e}"
        );
        let e = eval("[resourceId('gw', 'pool')]").unwrap_err();
        assert!(
            e.to_string()
                .contains("function requires exactly one multi-segmented argument"),
            "{e}"
        );
        let e = eval("[resourceId(1, 'Microsoft.Network/x', 'y')]").unwrap_err();
        assert!(e.to_string().contains("argument 1 is a number"), "{e}");
    }

    #[test]
    fn functions_real_templates_use() {
        assert_eq!(
            eval("[format('{0}-pip', parameters('gatewayName'))]").unwrap(),
            s("gw-wasmgate-pip")
        );
        assert_eq!(
            eval("[if(equals(parameters('port'), 80), 'http', reference('x').y)]").unwrap(),
            s("http"),
            "the branch not taken is not evaluated"
        );
        assert!(eval("[if(true, reference('x'), 'b')]").is_err());
        assert!(eval("[if('yes', 'a', 'b')]").is_err());
        assert_eq!(eval("[if(false, 'a', 'b')]").unwrap(), s("b"));
        assert_eq!(
            eval("[toLower(concat('A', string(parameters('port'))))]").unwrap(),
            s("a80")
        );
        assert_eq!(
            eval("[subscription().subscriptionId]").unwrap(),
            s(SUBSCRIPTION)
        );
        let Value::String(u) = eval("[uniqueString(resourceGroup().id)]").unwrap() else {
            panic!()
        };
        assert_eq!(u.len(), 13);
    }

    /// Evaluates `node_json` (a JSON value) in a template with `params` and `vars` sections.
    fn eval_node(params: &str, vars: &str, node_json: &str) -> Result<Node, ArmError> {
        let t = json::parse(&format!(
            "{{ \"parameters\": {params}, \"variables\": {vars} }}"
        ))
        .unwrap();
        let ev = Evaluator::new(&t, "t.json", None, &[])?;
        ev.eval(&json::parse(node_json).unwrap(), "resources[0].properties")
    }

    #[test]
    fn property_copy_loops_build_arrays() {
        let n = eval_node(
            r#"{ "ports": { "type": "array", "defaultValue": [80, 8080] } }"#,
            "{}",
            r#"{ "sku": "x", "copy": [ { "name": "frontendPorts", "count": "[length(parameters('ports'))]",
                 "input": { "name": "[format('port{0}', copyIndex('frontendPorts', 1))]",
                            "properties": { "port": "[parameters('ports')[copyIndex('frontendPorts')]]" } } },
               { "name": "probes", "count": 0, "input": { "name": "[reference('none')]" } } ] }"#,
        )
        .unwrap();
        assert!(n.get("copy").is_none());
        let ports = n.get("frontendPorts").and_then(Node::as_array).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[1].get("name").unwrap().as_str(), Some("port2"));
        assert_eq!(
            ports[1]
                .get("properties")
                .unwrap()
                .get("port")
                .unwrap()
                .value,
            Value::Int(8080)
        );
        // A count of zero never evaluates the input.
        assert_eq!(
            n.get("probes").and_then(Node::as_array).map(<[_]>::len),
            Some(0)
        );
        // Errors inside an item name the item as the array it becomes.
        let e = eval_node(
            "{}",
            "{}",
            r#"{ "copy": [ { "name": "frontendPorts", "count": 1, "input": { "name": "[copyIndex('other')]" } } ] }"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("resources[0].properties.frontendPorts[0].name: copyIndex(): not inside a copy loop named 'other'"),
            "{text}"
        );
        for (bad, expected) in [
            (
                r#"{ "copy": [ { "name": "a", "count": -1, "input": 1 } ] }"#,
                "copy[0].count: the count must be an integer from 0 to 800",
            ),
            (
                r#"{ "copy": [ { "name": "a", "input": 1 } ] }"#,
                "copy[0]: a copy loop needs \"name\", \"count\" and \"input\"; \"count\" is missing",
            ),
            (
                r#"{ "x": "[copyIndex()]" }"#,
                "copyIndex(): not inside a copy loop",
            ),
        ] {
            let e = eval_node("{}", "{}", bad).unwrap_err();
            assert!(e.to_string().contains(expected), "{e}");
        }
    }

    #[test]
    fn variable_copy_loops() {
        let n = eval_node(
            r#"{ "sites": { "type": "array", "defaultValue": ["a", "b"] } }"#,
            r#"{ "copy": [ { "name": "hosts", "count": "[length(parameters('sites'))]",
                 "input": "[concat(parameters('sites')[copyIndex('hosts')], '.contoso.com')]" } ],
                 "first": "[variables('hosts')[0]]" }"#,
            r#""[concat(variables('first'), ' ', variables('hosts')[1])]""#,
        )
        .unwrap();
        assert_eq!(n.value, s("a.contoso.com b.contoso.com"));
        let e = eval_node("{}", r#"{ "copy": [] }"#, r#""[variables('copy')]""#).unwrap_err();
        assert!(e.to_string().contains("no variable named 'copy'"), "{e}");
    }

    #[test]
    fn resource_ids_written_the_older_ways() {
        // A trailing slash after the type, as many quickstarts write it.
        assert_eq!(
            eval(
                "[resourceId('Microsoft.Network/applicationGateways/httpListeners/', 'gw', 'l1')]"
            )
            .unwrap(),
            s(&format!(
                "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/applicationGateways/gw/httpListeners/l1"
            ))
        );
    }

    fn eval_lenient(expr: &str, lenient: bool) -> Result<Value, ArmError> {
        let t = json::parse(TEMPLATE).unwrap();
        let ev = Evaluator::new(&t, "t.json", None, &[])?.lenient(lenient);
        let node = Node::new(Value::String(expr.to_string()), Pos { line: 7, col: 3 });
        let r = ev.eval(&node, "x").map(|n| n.value);
        assert_eq!(
            r.as_ref().err(),
            ev.refusal().as_ref(),
            "a refusal is recorded"
        );
        r
    }

    #[test]
    fn resource_ids_arm_refuses_are_refused_with_its_reason_unless_lenient() {
        // The gateway's own id first, then the child's path (2017-era templates): Azure
        // Resource Manager refuses it; leniently, the names are appended to the id.
        let expr = "[resourceId(resourceId('Microsoft.Network/applicationGateways', 'gw'), '/sslCertificates/c1')]";
        let id = format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/applicationGateways/gw"
        );
        assert_eq!(
            eval_lenient(expr, false).unwrap_err().to_string(),
            format!(
                "t.json:7:3: x: resourceId(): Azure Resource Manager refuses the call: \"function requires exactly one multi-segmented argument which must be resource type including resource provider namespace. Current function arguments '{id},/sslCertificates/c1'.\" (--lenient imports it, appending the names to the id given first) (character 2 of the expression)"
            )
        );
        assert_eq!(
            eval_lenient(expr, true).unwrap(),
            s(&format!("{id}/sslCertificates/c1"))
        );
        // A name holding the child's path is refused too (ARM counts the segments' arguments).
        let e = eval_lenient(
            "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet/backend')]",
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "Current function arguments 'Microsoft.Network/virtualNetworks/subnets,vnet/backend'."
            ),
            "{e}"
        );
    }

    #[test]
    fn every_parameter_without_a_value_is_named_at_once() {
        let t = json::parse(
            r#"{ "parameters": {
                "certData1": { "type": "securestring" },
                "name": { "type": "string", "defaultValue": "gw" },
                "certPassword1": { "type": "securestring" },
                "port": { "type": "int" } } }"#,
        )
        .unwrap();
        let sets = [("port".to_string(), "80".to_string())];
        let e = Evaluator::new(&t, "t.json", None, &sets)
            .unwrap()
            .check_parameters()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.json: parameters: no value for the parameters 'certData1' (line 2), 'certPassword1' (line 4): they have no defaultValue; give values with --parameters or --set"
        );
        let all = [
            ("certData1".to_string(), "x".to_string()),
            ("certPassword1".to_string(), "y".to_string()),
            ("port".to_string(), "80".to_string()),
        ];
        Evaluator::new(&t, "t.json", None, &all)
            .unwrap()
            .check_parameters()
            .expect("every parameter has a value");
    }

    #[test]
    fn resource_group() {
        assert_eq!(eval("[resourceGroup().location]").unwrap(), s("local"));
        assert_eq!(eval("[resourceGroup()['name']]").unwrap(), s("wasmgate"));
        let e = eval("[resourceGroup().nothing]").unwrap_err();
        assert!(e.to_string().contains("no property 'nothing'"), "{e}");
        assert!(eval("[resourceGroup('x')]").is_err());
    }

    #[test]
    fn unsupported_functions_and_syntax_errors_name_the_position() {
        let e = eval("[reference(resourceGroup().id).vaultUri]").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("t.json:7:3: x: "), "{text}");
        assert!(
            text.contains("'reference' cannot be evaluated: it reads deployed resources"),
            "{text}"
        );
        assert!(text.contains("character 2 of the expression"), "{text}");
        let e = eval("[concat('a', substring('{0}', 'b'))]").unwrap_err();
        assert!(
            e.to_string()
                .contains("'substring' cannot be evaluated: not supported (supported"),
            "{e}"
        );
        assert!(e.to_string().contains("character 14"), "{e}");
        for bad in [
            "[concat('a']",
            "[concat('a' 'b')]",
            "['open]",
            "[parameters('a').]",
            "[#]",
            "[concat('a'))]",
            "[parameters]",
        ] {
            assert!(eval(bad).is_err(), "{bad} should fail");
        }
        let e = eval("[parameters('backends')[5]]").unwrap_err();
        assert!(
            e.to_string().contains("index 5 is outside the array of 2"),
            "{e}"
        );
        let e = eval("[parameters('port').x]").unwrap_err();
        assert!(
            e.to_string().contains("needs an object, found a number"),
            "{e}"
        );
        let e = eval("[parameters(1)]").unwrap_err();
        assert!(
            e.to_string()
                .contains("parameters(): expects one string argument"),
            "{e}"
        );
    }
}
