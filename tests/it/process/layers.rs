//! The shape of the crate: no import cycle between top-level modules, and the simulator
//! reached only by the command line (the daemon talks to it over sockets, never in-process).
//!
//! Read from the `crate::` paths in the source, comments left out, so a new cycle fails here
//! the moment it is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let deps = g.entry(top.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for name in crate_paths(code) {
                    if name != top {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    g
}

/// The top-level modules named by `crate::x` and `crate::{x, y::z}` in a line of code.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 0 of the group: `a::{b, c}` is one item, `a`.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.extend(first_segment(&item));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn first_segment(item: &str) -> Option<String> {
    let name = item.trim().split("::").next().unwrap_or("").trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A cycle in the graph, if there is one, as the path that closes it.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_cycle_between_top_level_modules() {
    let g = graph();
    assert!(g.len() > 10, "the source was read: {g:?}");
    if let Some(c) = cycle(&g) {
        panic!(
            "import cycle between top-level modules: {}\nthe graph: {g:#?}",
            c.join(" -> ")
        );
    }
}

#[test]
fn only_the_command_line_reaches_the_simulator() {
    let g = graph();
    let users: Vec<_> = g
        .iter()
        .filter(|(m, deps)| *m != "cli" && *m != "sim" && deps.contains("sim"))
        .map(|(m, _)| m.clone())
        .collect();
    assert!(
        users.is_empty(),
        "modules importing the simulator: {users:?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    assert_eq!(
        crate_paths("use crate::{coder::Client, config, phases::{self, Phase}};"),
        ["coder", "config", "phases"]
    );
    assert_eq!(crate_paths("let x = crate::naming::parse(a);"), ["naming"]);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// The phase modules: files of `src/phases` that define a `PhaseDef`.
fn phase_modules() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/phases");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "mod.rs"))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("PhaseDef {"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Where `code` names a particular phase: a `Phase::Variant`, or a phase's module.
fn names_a_phase(code: &str, modules: &[String]) -> Option<String> {
    if let Some(at) = code.find("Phase::")
        && code[at + "Phase::".len()..].starts_with(|c: char| c.is_ascii_uppercase())
    {
        return Some(
            code[at..]
                .split(|c: char| !c.is_alphanumeric() && c != ':')
                .next()?
                .to_string(),
        );
    }
    modules
        .iter()
        .map(|m| format!("phases::{m}::"))
        .find(|p| code.contains(p.as_str()))
}

/// What runs a walk (`src/runner/`) names no phase: it reads what a phase needs from the
/// registry (`PhaseDef`), so adding a phase never touches it.
#[test]
fn the_runner_names_no_phase() {
    let modules = phase_modules();
    assert!(
        modules.len() >= 10 && modules.contains(&"build".to_string()),
        "the phase modules were found: {modules:?}"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runner");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(what) = names_a_phase(code, &modules) {
                found.push(format!("{}:{}: {what}", path.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "the runner names phases: {found:#?}");
    // And the check itself sees one when it is there.
    assert_eq!(
        names_a_phase("if phase == Phase::Stop {", &modules).as_deref(),
        Some("Phase::Stop")
    );
    assert_eq!(
        names_a_phase("let h = phases::autostart::Herd::new(n);", &modules).as_deref(),
        Some("phases::autostart::")
    );
    assert_eq!(names_a_phase("phases::stages::fetch(c)", &modules), None);
}
