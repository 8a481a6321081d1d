//! The repository stands on its own: every reference to a section of its documents
//! (`docs/method.md#section` in the code, scripts, tests and documents, `docs/artefacts.md#...`,
//! `README.md#...`, `](#...)` inside a document) names a heading that exists, nothing cites the
//! specification we started from, and nothing points outside the repository.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Folders and files whose text is checked (build outputs, data and caches are not).
const CHECKED: [&str; 13] = [
    "src",
    "crates",
    "tests",
    "benches",
    "examples",
    "scripts",
    "docs",
    ".ci",
    "README.md",
    "CHANGELOG.md",
    "Cargo.toml",
    "build.rs",
    ".gitignore",
];

/// The method document, relative to the repository root.
const METHOD: &str = "docs/method.md";

/// GitHub's anchor of a Markdown heading's text: lower case, punctuation other than `-` and `_`
/// removed, spaces turned into `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading of a Markdown text (repeated headings get `-1`, `-2`, ... as on
/// GitHub); headings inside fenced code blocks do not count.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = anchor(&line[hashes..]);
            let mut name = base.clone();
            let mut n = 0;
            while seen.contains(&name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            seen.insert(name);
        }
    }
    seen
}

/// Every text file under the checked paths of `root`, but this one (which talks about references
/// without making any).
fn text_files(root: &Path) -> Vec<PathBuf> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        } else if std::fs::read_to_string(path).is_ok() {
            out.push(path.to_path_buf());
        }
    }
    let mut files = Vec::new();
    for name in CHECKED {
        walk(&root.join(name), &mut files);
    }
    let me = root.join(file!().trim_start_matches("./"));
    files.retain(|f| *f != me);
    files
}

/// The documents whose sections the repository links to, by file name, and their paths.
const DOCUMENTS: [(&str, &str); 4] = [
    ("method.md", METHOD),
    ("artefacts.md", "docs/artefacts.md"),
    ("benchmarks.md", "docs/benchmarks.md"),
    ("README.md", "README.md"),
];

/// `file:line: reference` for every `{document}#anchor` in `files` (e.g.
/// `docs/method.md#input-pre-processing`, and `](#anchor)` links inside a document) whose anchor is
/// not a heading of that document; `method` replaces the text of `docs/method.md`.
fn broken_references(root: &Path, files: &[PathBuf], method: &str) -> Vec<String> {
    let text_of = |path: &Path| {
        if *path == root.join(METHOD) {
            method.to_string()
        } else {
            std::fs::read_to_string(path).unwrap_or_default()
        }
    };
    let known: Vec<(&str, PathBuf, BTreeSet<String>)> = DOCUMENTS
        .iter()
        .map(|(name, path)| (*name, root.join(path), anchors(&text_of(&root.join(path)))))
        .collect();
    let mut broken = Vec::new();
    let mut check = |file: &Path, n: usize, anchors: &BTreeSet<String>, name: &str| {
        if !anchors.contains(name) {
            broken.push(format!("{}:{}: #{name}", file.display(), n + 1));
        }
    };
    for file in files {
        let text = text_of(file);
        let own = known.iter().find(|(_, path, _)| path == file);
        for (n, line) in text.lines().enumerate() {
            for (document, _, anchors) in &known {
                let marker = format!("{document}#");
                let mut rest = line;
                while let Some(at) = rest.find(&marker) {
                    let tail = &rest[at + marker.len()..];
                    let end = tail
                        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                        .unwrap_or(tail.len());
                    check(file, n, anchors, &tail[..end]);
                    rest = &tail[end..];
                }
            }
            if let Some((_, _, anchors)) = own {
                for (at, _) in line.match_indices("](#") {
                    let tail = &line[at + 3..];
                    check(
                        file,
                        n,
                        anchors,
                        &tail[..tail.find(')').unwrap_or(tail.len())],
                    );
                }
            }
        }
    }
    broken
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_method_reference_names_an_existing_section() {
    let method = std::fs::read_to_string(root().join(METHOD)).unwrap();
    let files = text_files(root());
    let citing = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains("docs/method.md#")
        })
        .count();
    assert!(citing > 30, "only {citing} files cite docs/method.md");
    let broken = broken_references(root(), &files, &method);
    assert!(
        broken.is_empty(),
        "references to missing sections:\n{}",
        broken.join("\n")
    );
}

#[test]
fn a_renamed_section_breaks_its_references() {
    let method = std::fs::read_to_string(root().join(METHOD)).unwrap();
    let heading = "## Input pre-processing";
    assert!(method.contains(heading), "{METHOD} lost `{heading}`");
    let renamed = method.replace(heading, "## Input perturbation");
    let broken = broken_references(root(), &text_files(root()), &renamed);
    assert!(
        broken.iter().any(|b| b.ends_with("#input-pre-processing")),
        "{broken:?}"
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    let text = "# Title\n## The regression detector\n### ViM (Wang et al. 2022)\n```\n## not a heading\n```\n## Metrics\n## Metrics\n";
    let names: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        names,
        [
            "metrics",
            "metrics-1",
            "the-regression-detector",
            "title",
            "vim-wang-et-al-2022"
        ]
    );
}

#[test]
fn nothing_cites_the_old_specification_or_points_outside_the_repository() {
    // Spelled in two halves so that this file does not match itself.
    let spec = ["SP", "EC"].concat();
    let outside = ["../sha", "red"].concat();
    let mut found = Vec::new();
    for file in text_files(root()) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let cites_spec = line
                .split(|c: char| !c.is_alphanumeric())
                .any(|word| word == spec);
            if cites_spec || line.contains(&outside) {
                found.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
