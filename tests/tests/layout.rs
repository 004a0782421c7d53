//! The repository's shape: no production source file over 600 lines (its
//! tests, after `#[cfg(test)]`, and test-only files aside), so that each
//! module stays one thing a reader can hold.

use std::path::{Path, PathBuf};

use vmm_tests::repo_root;

const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lines of `text` before its first `#[cfg(test)]` item.
fn production_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .count()
}

#[test]
fn no_production_file_is_over_600_lines() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["arch/src", "devices/src", "vmm"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "tests.rs" && name != "testing.rs"
        })
        .filter_map(|p| {
            let n = production_lines(&std::fs::read_to_string(p).unwrap());
            (n > MAX_LINES).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(files.len() > 50, "only {} files found", files.len());
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn the_count_stops_at_the_tests() {
    assert_eq!(production_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(production_lines("a\nb\n"), 2);
}
