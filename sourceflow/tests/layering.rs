//! The core's imports point one way: each module of `src/` imports only from the layers below
//! its own, and the write side and the read side never import each other. ARCHITECTURE.md at
//! the workspace root draws the layers; this test keeps the code and the drawing in step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up. A module may import from its own top-level module (its folder) and
/// from any layer with a lower rank; modules of equal rank do not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("base", 0),
    ("codec", 1),
    ("store", 2),
    ("context", 3),
    ("routes", 4),
    ("registry", 4),
    ("signals", 5),
    ("write", 6),
    ("read", 6),
    ("flow", 7),
    ("testing", 8),
    ("private", 8),
    ("lib", 9),
];

fn rank(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, rank)| *rank)
        .unwrap_or_else(|| panic!("module `{module}` is not in the layer table of this test"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`write` for `src/write/command.rs`).
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file under src");
    let first = relative.components().next().expect("a path");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The top-level modules a line of code names through `crate::`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.push(name);
        }
        rest = after;
    }
    found
}

/// Imports of `src/` that point up or sideways, keyed by edge, with where they are.
fn wrong_imports(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    assert!(files.len() > 10, "found the sources");
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let from = top_module(src, file);
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue; // docs may link anywhere
            }
            for to in crate_paths(code) {
                if to == from || rank(&to) < rank(&from) {
                    continue;
                }
                let place = format!(
                    "{}:{}",
                    file.strip_prefix(src).unwrap().display(),
                    number + 1
                );
                wrong
                    .entry(format!("{from} -> {to}"))
                    .or_default()
                    .push(place);
            }
        }
    }
    wrong
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = wrong_imports(&src);
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways (see ARCHITECTURE.md):\n{wrong:#?}"
    );
}

#[test]
fn a_write_side_import_of_the_read_side_is_caught() {
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("write")).unwrap();
    std::fs::create_dir_all(dir.join("base")).unwrap();
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
        .iter()
        .enumerate()
    {
        std::fs::write(
            dir.join("base").join(format!("{name}.rs")),
            format!("// {i}"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("write").join("command.rs"),
        "use crate::base::error::Error;\nuse crate::read::ReadSide;\n",
    )
    .unwrap();
    let wrong = wrong_imports(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        wrong.keys().collect::<Vec<_>>(),
        ["write -> read"],
        "{wrong:#?}"
    );
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sourceflow-layering-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
