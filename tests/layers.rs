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
