//! The layering of DESIGN.md, checked on the source: the cockpit (`src/tui`) and the REST API
//! (`src/api`) speak only the core's and the model's vocabulary. Nothing of theirs names the
//! store or the runtimes (nor reaches them through `Core::store()` / `Core::runtime()`, which
//! are not theirs to call), so the core stays the one place that decides. Test modules (after a
//! `#[cfg(test)]`) may build lower-level values to test with.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_front_ends_use_only_the_core_and_the_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        "crate::store",
        "crate::runtime",
        "crate::harness",
        ".store()",
        ".runtime()",
    ];
    let mut files = Vec::new();
    for front in ["tui", "api"] {
        sources(&root.join(front), &mut files);
    }
    assert!(files.len() > 10, "found the front ends' sources: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the front ends reach below the core:\n{}",
        found.join("\n")
    );
}

/// The crate modules a file's code names (`crate::X`), outside test modules and comments.
fn crate_modules_named(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut named = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let module: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            named.push((n + 1, module));
        }
    }
    named
}

/// The bottom of the stack: the model depends on nothing else of the crate, and the
/// configuration (read by every layer) on nothing but the model, so that an agent's spec and
/// the reserved-env rule are the same for everyone who uses them.
#[test]
fn the_model_and_the_configuration_sit_below_every_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (dir, allowed) in [
        ("model", &["model"][..]),
        ("config", &["model", "config"][..]),
    ] {
        let mut files = Vec::new();
        sources(&root.join(dir), &mut files);
        assert!(!files.is_empty(), "found {dir}'s sources");
        for file in &files {
            for (line, module) in crate_modules_named(file) {
                if !allowed.contains(&module.as_str()) {
                    found.push(format!("{}:{line}: crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the bottom layers reach up:\n{}",
        found.join("\n")
    );
}
