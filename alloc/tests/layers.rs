//! The layer check: every module of `alloc/src` imports (names
//! `crate::<module>`) only modules of layers below its own, as the table at
//! the top of `alloc/src/lib.rs` gives them, and every module is in the
//! table. Run with `--nocapture` to see the import graph it read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module → layer, from the rows `//! | N | `a`, `b` | ... |` of lib.rs.
fn layers() -> BTreeMap<String, u32> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else { continue };
        let mut cells = row.split(" | ");
        let (Some(layer), Some(modules)) = (cells.next(), cells.next()) else { continue };
        let Ok(layer) = layer.trim().parse::<u32>() else { continue };
        for module in modules.split(',') {
            let name = module.trim().trim_matches('`');
            assert!(layers.insert(name.to_string(), layer).is_none(), "{name} is in the table twice");
        }
    }
    assert!(!layers.is_empty(), "no layer table in lib.rs");
    layers
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`percpu/slow.rs` → `percpu`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The modules `code` names as `crate::<name>`, outside comments.
fn named_modules(code: &str, known: &BTreeMap<String, u32>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if known.contains_key(&name) {
                found.insert(name);
            }
        }
        // `use crate::{a, b::c}` names several.
        if let Some(group) = line.strip_prefix("use crate::{") {
            for part in group.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if known.contains_key(&name) {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn imports_only_look_down() {
    let layers = layers();
    let mut paths = Vec::new();
    files(&src(), &mut paths);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &paths {
        let module = module_of(path);
        if module == "lib" {
            continue;
        }
        assert!(
            layers.contains_key(&module),
            "module {module} ({}) is missing from lib.rs's layer table",
            path.display()
        );
        let code = fs::read_to_string(path).expect("source");
        let named = named_modules(&code, &layers);
        graph.entry(module.clone()).or_default().extend(named.into_iter().filter(|m| *m != module));
    }
    let mut climbs = Vec::new();
    let mut by_layer: Vec<_> = graph.iter().collect();
    by_layer.sort_by_key(|(m, _)| std::cmp::Reverse(layers[*m]));
    for (module, imports) in by_layer {
        let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
        println!("{:>2} {module:12} -> {}", layers[module], imports.join(", "));
        for imported in imports {
            if layers[imported] >= layers[module] {
                climbs.push(format!(
                    "{module} (layer {}) imports {imported} (layer {})",
                    layers[module], layers[imported]
                ));
            }
        }
    }
    assert!(climbs.is_empty(), "imports that do not look down:\n{}", climbs.join("\n"));
}
