//! The layout rules of the repository, checked: crates under `crates/`
//! depend on no service, the trainer does not know the producer, the data
//! contract links no libtorch, no source file outside tests passes 700
//! lines, every Rust file opens with a `//!` line, and the README stays
//! short with every relative link resolving inside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Workspace packages: name → (manifest directory relative to the root,
/// names of their normal dependencies).
fn packages() -> BTreeMap<String, (String, Vec<String>)> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = root().canonicalize().unwrap();
    let mut map = BTreeMap::new();
    for p in doc["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        let dir = manifest.parent().unwrap().strip_prefix(&root).unwrap();
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        map.insert(
            p["name"].as_str().unwrap().to_owned(),
            (dir.to_string_lossy().into_owned(), deps),
        );
    }
    map
}

/// Every package `name` reaches through normal dependencies, itself
/// included (workspace packages are followed, outside ones only named).
fn reach(pkgs: &BTreeMap<String, (String, Vec<String>)>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone())
            && let Some((_, deps)) = pkgs.get(&n)
        {
            todo.extend(deps.iter().cloned());
        }
    }
    seen
}

#[test]
fn crates_depend_on_no_service_and_the_contract_links_no_torch() {
    let pkgs = packages();
    assert!(pkgs.len() >= 12, "{:?}", pkgs.keys());
    for (name, (dir, deps)) in &pkgs {
        if !dir.starts_with("crates/") {
            continue;
        }
        for d in deps {
            if let Some((ddir, _)) = pkgs.get(d) {
                assert!(
                    !ddir.starts_with("services/"),
                    "{name} ({dir}) depends on the service {d} ({ddir})"
                );
            }
        }
    }
    let trainer = reach(&pkgs, "pretext-trainer");
    assert!(
        !trainer.contains("pretext-producer"),
        "the trainer reaches the producer: {trainer:?}"
    );
    for lean in ["pretext-core", "pretext-datasets", "pretext-producer"] {
        let r = reach(&pkgs, lean);
        assert!(
            !r.contains("tch") && !r.contains("torch-sys") && !r.contains("pretext-model"),
            "{lean} reaches libtorch: {r:?}"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "fuzz") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn source_files_say_their_role_and_stay_under_700_lines() {
    let root = root();
    let mut files = Vec::new();
    for top in ["crates", "services", "tests"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(files.len() > 100, "{} files", files.len());
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} does not open with a `//!` line saying its role",
            f.display()
        );
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let is_test = rel.starts_with("tests/")
            || rel.contains("/tests/")
            || rel.ends_with("/tests.rs")
            || rel.ends_with("_tests.rs");
        let lines = text.lines().count();
        if !is_test && lines > 700 {
            long.push(format!("{rel}: {lines}"));
        }
    }
    assert!(long.is_empty(), "over 700 lines: {long:?}");
}

#[test]
fn the_readme_is_short_and_its_links_stay_inside_the_repository() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.len() <= 12_000,
        "README.md is {} bytes",
        readme.len()
    );
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut checked = 0;
    for c in link.captures_iter(&readme) {
        let target = &c[1];
        assert!(
            !target.contains("://") && !target.starts_with("mailto:"),
            "README links outside the repository: {target}"
        );
        let path = target.split('#').next().unwrap();
        if path.is_empty() {
            continue;
        }
        let full = root.join(path).canonicalize();
        assert!(full.is_ok(), "README link {target} does not resolve");
        assert!(
            full.unwrap().starts_with(root.canonicalize().unwrap()),
            "README link {target} leaves the repository"
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} links found");
    let letter = regex::Regex::new(r"\bmachine [A-F]\b").unwrap();
    assert!(!letter.is_match(&readme), "README names machines by letter");
}
