//! The JSON shape of an answer, for holding the simulator's answers against a real coderd's:
//! every path in it (`latest_build.job.status`, `resources[].agents[].apps[]`) with the JSON
//! types seen there.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Path → the JSON types seen at it.
pub type Shape = BTreeMap<String, BTreeSet<&'static str>>;

pub fn shape(v: &Value) -> Shape {
    let mut out = Shape::new();
    walk(v, String::new(), &mut out);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(v: &Value, path: String, out: &mut Shape) {
    out.entry(path.clone()).or_default().insert(kind(v));
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(v, p, out);
            }
        }
        Value::Array(a) => {
            for e in a {
                walk(e, format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Where `sim` differs from `real`, each line naming `what` and the path: fields only one
/// of them sends, and fields whose JSON types differ. Paths under an array that is empty on
/// the other side, or under a field that is null there, are not compared (nothing to see);
/// nor is null against a value (`deadline`, `most_recently_seen`: state, not shape).
pub fn differences(what: &str, real: &Shape, sim: &Shape) -> Vec<String> {
    let seen_in = |other: &Shape, path: &str| {
        if path.ends_with("[]") {
            return false; // an empty array is not a missing element
        }
        // The nearest enclosing array element or object must have been seen, non-null.
        let mut p = path;
        while let Some(i) = p.rfind(['.', '[']) {
            p = &p[..i];
            if let Some(t) = other.get(p) {
                return t.contains("object") || t.contains("array");
            }
            if p.ends_with("[]") {
                return other.contains_key(p);
            }
        }
        true
    };
    let mut out = Vec::new();
    for (path, types) in real {
        match sim.get(path) {
            None if seen_in(sim, path) => out.push(format!(
                "{what}: coderd sends `{path}` ({}), the simulator does not",
                join(types)
            )),
            Some(t)
                if non_null(t) != non_null(types)
                    && !non_null(t).is_empty()
                    && !non_null(types).is_empty() =>
            {
                out.push(format!(
                    "{what}: `{path}` is {} from coderd, {} from the simulator",
                    join(types),
                    join(t)
                ))
            }
            _ => {}
        }
    }
    for (path, types) in sim {
        if !real.contains_key(path) && seen_in(real, path) {
            out.push(format!(
                "{what}: the simulator sends `{path}` ({}), coderd does not",
                join(types)
            ));
        }
    }
    out
}

fn non_null<'a>(t: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
    t.iter().copied().filter(|k| *k != "null").collect()
}

/// `text` with every UUID in it written `{uuid}`, so that two servers' messages about their
/// own workspaces compare.
pub fn without_ids(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let cand = text
            .get(i..i + 36)
            .filter(|c| uuid::Uuid::parse_str(c).is_ok());
        match cand {
            Some(_) => {
                out.push_str("{uuid}");
                i += 36;
            }
            None => {
                let ch = text[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn join(t: &BTreeSet<&str>) -> String {
    t.iter().copied().collect::<Vec<_>>().join("|")
}
