//! The crate's modules form layers with no cycle: each top-level module uses only modules
//! below it. This reads the sources (test code and comments left out), collects every
//! `crate::<module>` path, and fails on a cycle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Names the crate root re-exports, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("PdkError", "error"),
    ("Result", "error"),
    ("Kong", "pdk"),
    ("Worker", "pdk"),
    ("Phase", "phase"),
    ("Phases", "phase"),
    ("Handler", "plugin"),
    ("Instance", "plugin"),
    ("Plugin", "plugin"),
    ("TypeMap", "transaction"),
];

/// The layers, bottom first: a module may use those of its own layer's predecessors only.
const LAYERS: &[&[&str]] = &[
    &["text"],
    &[
        "error", "phase", "entities", "schema", "counters", "redis", "timer", "outbound", "stats", "vault", "tracer",
        "cache",
    ],
    &["engine", "health"],
    &["dao", "model"],
    &["transaction", "api"],
    &["router", "pdk"],
    &["plugin"],
    &["registry"],
    &["executor"],
    &["runloop"],
    &["gateway"],
    &["admin"],
    &["testing", "cli"],
];

/// Source without comments, string literals (doc links in `#[doc = "..."]` are no
/// dependency) and `#[cfg(test)]` modules at the end of a file.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let text = text.replace("'\"'", "' '");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    // Blank out string literals, escapes included.
    let mut code = String::with_capacity(out.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in out.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            code.push(if c == '\n' { '\n' } else { ' ' });
        } else {
            if c == '"' {
                in_string = true;
            }
            code.push(c);
        }
    }
    code
}

/// The top-level modules `code` names through `crate::`.
fn uses(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names {
            if modules.contains(name) {
                out.insert(name.to_owned());
            } else if let Some((_, m)) = ROOT_ITEMS.iter().find(|(item, _)| *item == name) {
                out.insert((*m).to_owned());
            }
        }
    }
    out
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let name = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
            (!matches!(name.as_str(), "lib" | "bin")).then_some(name)
        })
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            files.push(file);
        }
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut used = BTreeSet::new();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            used.extend(uses(&code_of(&std::fs::read_to_string(&file).unwrap()), &modules));
        }
        used.remove(module);
        graph.insert(module.clone(), used);
    }
    graph
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let graph = module_graph();
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer: add it to LAYERS"));
            continue;
        };
        for dep in used {
            match layer_of(dep) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{module} uses {dep}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways dependencies:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    // Kahn's algorithm: whatever cannot be ordered sits on a cycle.
    let mut remaining = graph.clone();
    let mut order = Vec::new();
    while let Some(free) = remaining
        .iter()
        .find(|(_, deps)| deps.is_empty())
        .map(|(m, _)| m.clone())
    {
        remaining.remove(&free);
        for deps in remaining.values_mut() {
            deps.remove(&free);
        }
        order.push(free);
    }
    assert!(
        remaining.is_empty(),
        "modules on a cycle (each with what it still uses): {remaining:?}"
    );
    println!("bottom to top: {}", order.join(" → "));
}

#[test]
fn the_checker_reads_paths_not_comments_or_strings() {
    let modules: BTreeSet<String> = ["pdk", "registry", "router"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        uses(
            &code_of(
                "use crate::{Kong, registry::PluginMeta};\n// crate::router\n#[doc = \"crate::router\"]\nlet x = crate::pdk::Log;"
            ),
            &modules
        ),
        ["pdk", "registry"].iter().map(|s| s.to_string()).collect()
    );
}
