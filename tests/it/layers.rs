//! The host's dependency rule (docs/ARCHITECTURE.md, "Layers"), checked on the source:
//! every module imports only from its own layer or the layers below it, and the
//! modules of one layer import each other without a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom-up; every top-level module of `src/` is in exactly one.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "time",
            "error",
            "settings_source",
            "graph",
            "config",
            "outbox",
            "telemetry",
        ],
    ),
    ("contract", &["plugin"]),
    ("services", &["server", "runtime", "auth", "webhooks"]),
    (
        "composition",
        &["settings", "state", "api", "host", "testing", "cli", "lib"],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`src/api/host.rs` → `api`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the other top-level modules its code names through `crate::` (a
/// `crate::{…}` or `crate::Name` import is from the crate root, `lib`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let from = module_of(&src, &file);
        // Code only: a doc link is not a dependency.
        let text: String = std::fs::read_to_string(&file)
            .expect("read source")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let targets = graph.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let to = if name.is_empty() || name.starts_with(|c: char| c.is_ascii_uppercase()) {
                "lib".to_owned()
            } else {
                name
            };
            if to != from {
                targets.insert(to);
            }
        }
    }
    graph
}

#[test]
fn every_module_is_in_a_layer() {
    let unplaced: Vec<String> = imports()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "place these modules in a layer (here and in docs/ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn imports_never_point_up() {
    let mut up = Vec::new();
    for (from, targets) in imports() {
        let Some(lf) = layer_of(&from) else { continue };
        for to in targets {
            if layer_of(&to).is_some_and(|lt| lt > lf) {
                up.push(format!(
                    "{from} ({}) imports {to} ({})",
                    LAYERS[lf].0,
                    LAYERS[layer_of(&to).unwrap_or(lf)].0
                ));
            }
        }
    }
    assert!(up.is_empty(), "imports that point up a layer: {up:#?}");
}

#[test]
fn modules_do_not_import_each_other_in_a_circle() {
    let graph = imports();
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other: {}", circle.join(" -> "));
        }
    }
}
