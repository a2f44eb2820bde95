//! The documentation points only at what the repository has: every relative link of the README and of `docs/`
//! (anchors included), every document a Markdown file or a source comment names (`docs/methods.md`,
//! `protocol.md`), and no path outside the repository where the project's private notes used to live.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories that hold no documentation of ours: build output, installed packages, data, fuzz inputs.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".git", "crmchat-data", "corpus", "artifacts"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) && !name.ends_with(".egg-info") && name != "__pycache__" {
                files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

fn repository_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(&root(), &mut out);
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (except `-` and `_`), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks), with GitHub's `-1`, `-2` for repeats.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// The targets of the inline links `[text](target)` of a Markdown text, code blocks and code spans excluded.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Code spans may hold `](` legitimately; drop them first.
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            links.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    links
}

/// Every document a text names: each token ending in the Markdown extension, with the path characters before it.
fn named_documents(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_path = |b: u8| b.is_ascii_alphanumeric() || b"_-./".contains(&b);
    let mut names = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find(".md") {
        let end = search + found + 3;
        search = end;
        if bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            continue; // `.mdx`, `.md_backup`
        }
        let mut start = end - 3;
        while start > 0 && is_path(bytes[start - 1]) {
            start -= 1;
        }
        if start > 0 && b"${".contains(&bytes[start - 1]) {
            continue; // a shell variable: `$root/clients/node/README.md`
        }
        let name = text[start..end].trim_start_matches("./").to_string();
        if name.len() > 3 && !name.starts_with('.') || name.starts_with("../") {
            names.push(name);
        }
    }
    names
}

/// Where a named document may be: next to the file that names it, from the repository's root, or (a bare
/// name) in `docs/`.
fn resolves(from: &Path, name: &str) -> bool {
    let dir = from.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join(name), root().join(name)];
    if !name.contains('/') {
        candidates.push(root().join("docs").join(name));
    }
    candidates.iter().any(|c| c.exists())
}

/// The comment text of a source file: `//` comments for Rust and JavaScript, `#` comments for shell, Python
/// and TOML.
fn comments(path: &Path, text: &str) -> Option<String> {
    let marker = match extension(path) {
        "rs" | "js" | "mjs" | "c" => "//",
        "sh" | "py" | "toml" => "#",
        "" if text.starts_with("#!") => "#",
        _ => return None,
    };
    Some(text.lines().filter_map(|l| l.find(marker).map(|at| &l[at..])).collect::<Vec<_>>().join("\n"))
}

#[test]
fn markdown_links_and_named_documents_resolve() {
    let mut broken = Vec::new();
    for path in repository_files().iter().filter(|p| extension(p) == "md") {
        let text = std::fs::read_to_string(path).unwrap();
        for link in markdown_links(&text) {
            if link.is_empty() || link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').map_or((link.as_str(), None), |(f, a)| (f, Some(a)));
            let target = if file.is_empty() { path.clone() } else { path.parent().unwrap().join(file) };
            if !target.exists() {
                broken.push(format!("{}: link ({link}): {} does not exist", relative(path), relative(&target)));
                continue;
            }
            if let Some(anchor) = anchor
                && extension(&target) == "md"
                && !anchors(&std::fs::read_to_string(&target).unwrap()).contains(anchor)
            {
                broken.push(format!(
                    "{}: link ({link}): no heading #{anchor} in {}",
                    relative(path),
                    relative(&target)
                ));
            }
        }
        for name in named_documents(&text) {
            if !resolves(path, &name) {
                broken.push(format!("{}: names {name}, which does not exist", relative(path)));
            }
        }
    }
    assert!(broken.is_empty(), "broken documentation references:\n{}", broken.join("\n"));
}

#[test]
fn documents_named_in_source_comments_exist() {
    let mut broken = Vec::new();
    for path in repository_files() {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(comments) = comments(&path, &text) else { continue };
        for name in named_documents(&comments) {
            if !resolves(&path, &name) {
                broken.push(format!("{}: a comment names {name}, which does not exist", relative(&path)));
            }
        }
    }
    assert!(broken.is_empty(), "comments naming documents that are not in the repository:\n{}", broken.join("\n"));
}

#[test]
fn nothing_points_outside_the_repository() {
    // Spelt in pieces so that this file does not match itself.
    let outside = [["..", "shared"].join("/"), ["", "work", "shared"].join("/")];
    let mut found = Vec::new();
    for path in repository_files() {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o.as_str())) {
                found.push(format!("{}:{}: {}", relative(&path), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "paths outside the repository:\n{}", found.join("\n"));
}

#[test]
fn the_checks_catch_what_they_should() {
    // The parsers this file relies on, on known input, so that a check that finds nothing is not a blind one.
    let md = "# Limits\n## Try it with curl\n```\n[x](nope.md)\n```\nsee [a](docs/a.md#limits) and `[b](c)`\n";
    assert_eq!(markdown_links(md), vec!["docs/a.md#limits"]);
    assert!(anchors(md).contains("try-it-with-curl") && anchors(md).contains("limits"));
    assert_eq!(slug("`imopenlines.crm.chat.user.delete`"), "imopenlinescrmchatuserdelete");
    let outside = format!("{}/spec/a.md", ["..", "shared"].join("/"));
    assert_eq!(
        named_documents(&format!("(protocol.md, Limits); see docs/methods.md, $root/x/README.md and {outside}.")),
        vec!["protocol.md", "docs/methods.md", outside.as_str()]
    );
    let here = root().join("src/lib.rs");
    assert!(resolves(&here, "protocol.md") && resolves(&here, "docs/methods.md") && resolves(&here, "README.md"));
    assert!(!resolves(&here, "fixtures.md") && !resolves(&here, &outside));
}
