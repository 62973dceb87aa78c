//! Template functions beyond the core (`parameters`, `variables`, `concat`, `resourceId`,
//! `resourceGroup`, `subscription`, `if`) that real Application Gateway templates use to build
//! names and choose values: string, comparison, logical and collection functions that need
//! nothing but their arguments.
//!
//! Reference: "ARM template functions" (string, comparison, logical, array and object functions)
//! in the Azure Resource Manager documentation.

use super::json::{self, Node, Pos, Value};

/// The functions an error message lists as available.
pub const SUPPORTED: &str = "parameters, variables, concat, resourceId, resourceGroup, subscription, if, \
equals, not, and, or, bool, int, string, json, format, toLower, toUpper, replace, trim, contains, \
startsWith, endsWith, empty, length, coalesce, createArray, createObject, first, last, split, uniqueString, \
copyIndex, add, sub, mul, div, mod, min, max, true, false, null";

pub enum Error {
    /// No such function here.
    Unknown,
    /// The arguments do not fit the function.
    Args(String),
}

/// Functions whose value exists only during a deployment in Azure: they read deployed
/// resources, keys, the clock or fresh randomness.
pub fn needs_azure(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("list")
        || [
            "reference",
            "newguid",
            "utcnow",
            "deployment",
            "environment",
            "managementgroup",
            "tenant",
            "pickzones",
            "providers",
            "extensionresourceid",
        ]
        .contains(&n.as_str())
}

fn args_err<T>(m: impl Into<String>) -> Result<T, Error> {
    Err(Error::Args(m.into()))
}

fn text(v: &Value, which: &str) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => args_err(format!("{which} is {}, expected a string", other.kind())),
    }
}

fn boolean(v: &Value, which: &str) -> Result<bool, Error> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => args_err(format!("{which} is {}, expected a boolean", other.kind())),
    }
}

fn node(v: Value) -> Node {
    Node::new(v, Pos::default())
}

/// Calls function `name` (lowercase).
pub fn call(name: &str, args: Vec<Value>) -> Result<Value, Error> {
    let n = args.len();
    let want = |count: usize| -> Result<(), Error> {
        if n == count {
            Ok(())
        } else {
            args_err(format!("expects {count} argument(s), {n} given"))
        }
    };
    match name {
        "true" => want(0).map(|_| Value::Bool(true)),
        "false" => want(0).map(|_| Value::Bool(false)),
        "equals" => {
            want(2)?;
            Ok(Value::Bool(same(&args[0], &args[1])))
        }
        "not" => {
            want(1)?;
            Ok(Value::Bool(!boolean(&args[0], "the argument")?))
        }
        "and" | "or" => {
            if n < 2 {
                return args_err("expects at least two booleans");
            }
            let mut bools = Vec::new();
            for (i, a) in args.iter().enumerate() {
                bools.push(boolean(a, &format!("argument {}", i + 1))?);
            }
            Ok(Value::Bool(if name == "and" {
                bools.iter().all(|b| *b)
            } else {
                bools.iter().any(|b| *b)
            }))
        }
        "bool" => {
            want(1)?;
            match &args[0] {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::Int(i) => Ok(Value::Bool(*i != 0)),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
                other => args_err(format!("cannot convert {} to a boolean", show(other))),
            }
        }
        "int" => {
            want(1)?;
            match &args[0] {
                Value::Int(i) => Ok(Value::Int(*i)),
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(Value::Int)
                    .map_err(|_| Error::Args(format!("'{s}' is not an integer"))),
                other => args_err(format!("cannot convert {} to an integer", other.kind())),
            }
        }
        "string" => {
            want(1)?;
            Ok(Value::String(to_text(&args[0])))
        }
        "json" => {
            want(1)?;
            let t = text(&args[0], "the argument")?;
            json::parse(&t)
                .map(|n| n.value)
                .map_err(|e| Error::Args(format!("not JSON: {} at {}", e.message, e.pos)))
        }
        "format" => {
            if n == 0 {
                return args_err("expects a format string");
            }
            let f = text(&args[0], "the format string")?;
            format(&f, &args[1..])
                .map(Value::String)
                .map_err(Error::Args)
        }
        "tolower" | "toupper" | "trim" => {
            want(1)?;
            let t = text(&args[0], "the argument")?;
            Ok(Value::String(match name {
                "tolower" => t.to_lowercase(),
                "toupper" => t.to_uppercase(),
                _ => t.trim().to_string(),
            }))
        }
        "replace" => {
            want(3)?;
            let t = text(&args[0], "argument 1")?;
            let from = text(&args[1], "argument 2")?;
            let to = text(&args[2], "argument 3")?;
            if from.is_empty() {
                return args_err("the text to replace is empty");
            }
            Ok(Value::String(t.replace(&from, &to)))
        }
        "startswith" | "endswith" => {
            want(2)?;
            // ARM compares these without regard to case.
            let t = text(&args[0], "argument 1")?.to_lowercase();
            let p = text(&args[1], "argument 2")?.to_lowercase();
            Ok(Value::Bool(if name == "startswith" {
                t.starts_with(&p)
            } else {
                t.ends_with(&p)
            }))
        }
        "contains" => {
            want(2)?;
            match (&args[0], &args[1]) {
                (Value::String(s), Value::String(x)) => Ok(Value::Bool(s.contains(x.as_str()))),
                (Value::Array(items), x) => {
                    Ok(Value::Bool(items.iter().any(|i| same(&i.value, x))))
                }
                (Value::Object(members), Value::String(k)) => Ok(Value::Bool(
                    members.iter().any(|(m, _)| m.eq_ignore_ascii_case(k)),
                )),
                (a, b) => args_err(format!("cannot look for {} in {}", b.kind(), a.kind())),
            }
        }
        "empty" => {
            want(1)?;
            Ok(Value::Bool(match &args[0] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                other => return args_err(format!("empty() of {}", other.kind())),
            }))
        }
        "length" => {
            want(1)?;
            let len = match &args[0] {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                other => return args_err(format!("length() of {}", other.kind())),
            };
            Ok(Value::Int(len as i64))
        }
        "coalesce" => Ok(args
            .into_iter()
            .find(|a| !matches!(a, Value::Null))
            .unwrap_or(Value::Null)),
        "createarray" => Ok(Value::Array(args.into_iter().map(node).collect())),
        "null" => want(0).map(|_| Value::Null),
        "add" | "sub" | "mul" | "div" | "mod" => {
            want(2)?;
            let (Value::Int(a), Value::Int(b)) = (&args[0], &args[1]) else {
                return args_err("expects two integers");
            };
            let r = match name {
                "add" => a.checked_add(*b),
                "sub" => a.checked_sub(*b),
                "mul" => a.checked_mul(*b),
                // ARM's div and mod truncate toward zero, as i64 does.
                "div" => a.checked_div(*b),
                _ => a.checked_rem(*b),
            };
            r.map(Value::Int)
                .ok_or_else(|| Error::Args(format!("overflow or division by zero ({a}, {b})")))
        }
        "min" | "max" => {
            let mut ints = Vec::new();
            for a in &args {
                match a {
                    Value::Int(i) => ints.push(*i),
                    Value::Array(items) => {
                        for i in items {
                            match i.value {
                                Value::Int(x) => ints.push(x),
                                _ => return args_err("expects integers"),
                            }
                        }
                    }
                    _ => return args_err("expects integers"),
                }
            }
            let r = if name == "min" {
                ints.iter().min()
            } else {
                ints.iter().max()
            };
            r.map(|i| Value::Int(*i))
                .ok_or_else(|| Error::Args("expects at least one integer".into()))
        }
        "createobject" => {
            if !n.is_multiple_of(2) {
                return args_err("expects pairs of a key and a value");
            }
            let mut members = Vec::new();
            let mut it = args.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                members.push((text(&k, "a key")?, node(v)));
            }
            Ok(Value::Object(members))
        }
        "first" | "last" => {
            want(1)?;
            match &args[0] {
                Value::Array(a) => {
                    let pick = if name == "first" { a.first() } else { a.last() };
                    Ok(pick.map(|n| n.value.clone()).unwrap_or(Value::Null))
                }
                Value::String(s) => {
                    let c = if name == "first" {
                        s.chars().next()
                    } else {
                        s.chars().last()
                    };
                    Ok(Value::String(c.map(String::from).unwrap_or_default()))
                }
                other => args_err(format!("{name}() of {}", other.kind())),
            }
        }
        "split" => {
            want(2)?;
            let t = text(&args[0], "argument 1")?;
            let seps: Vec<String> = match &args[1] {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|i| text(&i.value, "a delimiter"))
                    .collect::<Result<_, _>>()?,
                other => return args_err(format!("the delimiter is {}", other.kind())),
            };
            let mut parts = vec![t];
            for sep in seps.iter().filter(|s| !s.is_empty()) {
                parts = parts
                    .iter()
                    .flat_map(|p| p.split(sep.as_str()).map(String::from).collect::<Vec<_>>())
                    .collect();
            }
            Ok(Value::Array(
                parts.into_iter().map(|p| node(Value::String(p))).collect(),
            ))
        }
        "uniquestring" => {
            if n == 0 {
                return args_err("expects at least one string");
            }
            let mut parts = Vec::new();
            for (i, a) in args.iter().enumerate() {
                parts.push(text(a, &format!("argument {}", i + 1))?);
            }
            Ok(Value::String(unique_string(&parts)))
        }
        _ => Err(Error::Unknown),
    }
}

/// A stable 13-character name from the arguments, in the alphabet and length of Azure's
/// `uniqueString()`. Azure's own hash is not published, so the value differs from the one a
/// deployment gets; templates use it only to make names unique, which this does as well.
fn unique_string(parts: &[String]) -> String {
    // FNV-1a, 64 bits, over the arguments separated by '-' as Azure joins them.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.join("-").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..13)
        .map(|i| ALPHABET[(h.rotate_right(i * 5) & 31) as usize] as char)
        .collect()
}

/// .NET composite formatting as `format()` uses it: `{0}` items and `{{` / `}}` escapes.
/// Format specifiers (`{0:N2}`) are refused rather than ignored.
fn format(f: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut item = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => item.push(ch),
                        None => return Err(format!("unclosed '{{' in the format string '{f}'")),
                    }
                }
                let index: usize = item.trim().parse().map_err(|_| {
                    format!("'{{{item}}}' in '{f}': only {{N}} items are supported (no alignment or format specifiers)")
                })?;
                let value = args.get(index).ok_or_else(|| {
                    format!(
                        "'{{{index}}}' in '{f}' but only {} value(s) given",
                        args.len()
                    )
                })?;
                out.push_str(&to_text(value));
            }
            '}' => return Err(format!("a lone '}}' in the format string '{f}'")),
            ch => out.push(ch),
        }
    }
    Ok(out)
}

/// A value as `string()` writes it.
fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => String::new(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| json_text(&i.value))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Object(_) => json_text(v),
    }
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Object(members) => format!(
            "{{{}}}",
            members
                .iter()
                .map(|(k, n)| format!("{k:?}:{}", json_text(&n.value)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => to_text(other),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        other => other.kind().to_string(),
    }
}

/// `equals()`: the same value; strings compare with case.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(&p.value, &q.value))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .any(|(k2, v2)| k.eq_ignore_ascii_case(k2) && same(&v.value, &v2.value))
                })
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn ok(name: &str, args: Vec<Value>) -> Value {
        match call(name, args) {
            Ok(v) => v,
            Err(Error::Args(m)) => panic!("{name}: {m}"),
            Err(Error::Unknown) => panic!("{name}: unknown"),
        }
    }

    #[test]
    fn format_items_and_escapes() {
        assert_eq!(
            ok("format", vec![s("{0}-pip-{1}"), s("gw"), Value::Int(2)]),
            s("gw-pip-2")
        );
        assert_eq!(ok("format", vec![s("{{x}} {0}"), s("y")]), s("{x} y"));
        for bad in ["{1}", "{0:N2}", "{0", "a}b"] {
            assert!(
                matches!(call("format", vec![s(bad), s("v")]), Err(Error::Args(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(ok("equals", vec![s("a"), s("a")]), Value::Bool(true));
        assert_eq!(ok("equals", vec![s("a"), s("A")]), Value::Bool(false));
        assert_eq!(
            ok("equals", vec![Value::Int(1), s("1")]),
            Value::Bool(false)
        );
        assert_eq!(
            ok("and", vec![Value::Bool(true), Value::Bool(false)]),
            Value::Bool(false)
        );
        assert_eq!(
            ok("or", vec![Value::Bool(true), Value::Bool(false)]),
            Value::Bool(true)
        );
        assert_eq!(ok("not", vec![Value::Bool(true)]), Value::Bool(false));
        assert!(matches!(call("not", vec![s("x")]), Err(Error::Args(_))));
        assert_eq!(ok("bool", vec![s("True")]), Value::Bool(true));
        assert_eq!(ok("int", vec![s(" 443")]), Value::Int(443));
        assert_eq!(ok("string", vec![Value::Int(8080)]), s("8080"));
        assert_eq!(ok("string", vec![Value::Bool(true)]), s("True"));
    }

    #[test]
    fn numbers() {
        let i = Value::Int;
        assert_eq!(ok("add", vec![i(100), i(2)]), i(102));
        assert_eq!(ok("sub", vec![i(1), i(2)]), i(-1));
        assert_eq!(ok("mul", vec![i(3), i(4)]), i(12));
        assert_eq!(ok("div", vec![i(-7), i(2)]), i(-3));
        assert_eq!(ok("mod", vec![i(7), i(3)]), i(1));
        assert_eq!(ok("max", vec![i(7), i(30), i(3)]), i(30));
        assert!(matches!(call("div", vec![i(1), i(0)]), Err(Error::Args(_))));
        assert!(matches!(
            call("add", vec![i(1), s("2")]),
            Err(Error::Args(_))
        ));
    }

    #[test]
    fn strings_and_collections() {
        assert_eq!(ok("tolower", vec![s("AbC")]), s("abc"));
        assert_eq!(ok("toupper", vec![s("AbC")]), s("ABC"));
        assert_eq!(ok("replace", vec![s("a.b.c"), s("."), s("-")]), s("a-b-c"));
        assert_eq!(
            ok("startswith", vec![s("Https"), s("http")]),
            Value::Bool(true)
        );
        assert_eq!(ok("contains", vec![s("abc"), s("b")]), Value::Bool(true));
        assert_eq!(ok("empty", vec![s("")]), Value::Bool(true));
        assert_eq!(ok("length", vec![s("abc")]), Value::Int(3));
        assert_eq!(ok("coalesce", vec![Value::Null, s("x")]), s("x"));
        let parts = ok("split", vec![s("a,b"), s(",")]);
        assert_eq!(ok("last", vec![parts.clone()]), s("b"));
        assert_eq!(ok("first", vec![parts]), s("a"));
    }

    #[test]
    fn unique_strings_are_stable_and_distinct() {
        let a = ok("uniquestring", vec![s("/subscriptions/x/resourceGroups/a")]);
        let b = ok("uniquestring", vec![s("/subscriptions/x/resourceGroups/b")]);
        assert_eq!(
            a,
            ok("uniquestring", vec![s("/subscriptions/x/resourceGroups/a")])
        );
        assert_ne!(a, b);
        let Value::String(text) = a else { panic!() };
        assert_eq!(text.len(), 13);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
    }

    #[test]
    fn deployment_time_functions_are_known_as_such() {
        for f in ["reference", "listKeys", "listSecrets", "utcNow", "newGuid"] {
            assert!(needs_azure(f), "{f}");
            assert!(matches!(
                call(&f.to_lowercase(), vec![]),
                Err(Error::Unknown)
            ));
        }
        assert!(!needs_azure("format"));
    }
}
