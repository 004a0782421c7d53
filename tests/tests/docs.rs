//! The README and docs/: every relative link resolves, to a file that
//! exists and, with a `#fragment`, to a heading in it (GitHub's anchors);
//! the README stays a front page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vmm_tests::repo_root;

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .iter()
        .filter_map(|l| {
            let h = l.trim_start_matches('#');
            (l.starts_with('#') && h.starts_with(' ')).then(|| anchor(h))
        })
        .collect()
}

/// The `](target)` links of `text`'s prose, without inline code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Inline code spans hold examples, not links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// What is wrong with `link` in `doc`, if anything.
fn broken(doc: &Path, link: &str) -> Option<String> {
    if link.contains("://") || link.starts_with("mailto:") {
        return None;
    }
    let (file, fragment) = match link.split_once('#') {
        Some((f, frag)) => (f, Some(frag)),
        None => (link, None),
    };
    let target = if file.is_empty() {
        doc.to_path_buf()
    } else {
        doc.parent().unwrap().join(file)
    };
    if !target.exists() {
        return Some(format!("{link}: {} does not exist", target.display()));
    }
    if let Some(frag) = fragment {
        let text = std::fs::read_to_string(&target).ok()?;
        if !anchors(&text).contains(frag) {
            return Some(format!(
                "{link}: no heading #{frag} in {}",
                target.display()
            ));
        }
    }
    None
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut problems = Vec::new();
    let mut count = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for link in links(&text) {
            count += 1;
            if let Some(p) = broken(&doc, &link) {
                problems.push(format!("{}: {p}", doc.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(count > 30, "only {count} links found: the scan is broken");
}

#[test]
fn the_checker_finds_a_missing_file_and_a_missing_heading() {
    let readme = repo_root().join("README.md");
    assert!(broken(&readme, "docs/api.md").is_none());
    assert!(broken(&readme, "docs/api.md#endpoints").is_none());
    assert!(broken(&readme, "docs/nope.md").is_some());
    assert!(broken(&readme, "docs/api.md#no-such-heading").is_some());
    assert_eq!(
        anchor("Config files (Firecracker's layout)"),
        "config-files-firecrackers-layout"
    );
    assert_eq!(
        links("see [a](x.md#y) and `[b](not-a-link)`"),
        vec!["x.md#y"]
    );
}

#[test]
fn the_readme_is_a_front_page_and_every_doc_is_listed() {
    let text = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; the reference belongs in docs/"
    );
    for doc in documents().iter().skip(1) {
        let name = doc.file_name().unwrap().to_string_lossy();
        assert!(
            text.contains(&format!("(docs/{name})")),
            "README.md does not link docs/{name}"
        );
    }
}
