//! Snapshot tests over the corpus in `tests/corpus/`: every `*.yml` there must load (its
//! warnings, normalised YAML and resulting specs are snapshotted) and every
//! `tests/corpus/invalid/*.yml` must fail (its error message is snapshotted).
//!
//! Update snapshots with `INSTA_UPDATE=always cargo test -p shoal-compose` (or `cargo insta
//! review`) and review the diff.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use shoal_compose::{Loaded, load_str};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The environment the corpus is loaded with.
fn env() -> BTreeMap<String, String> {
    [("TAG", "1.2"), ("REPLICAS", "3"), ("FROM_SHELL", "shell"), ("BOTH", "shell"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const DOTENV: &str = "DOTENV_ONLY=from-dotenv\nBOTH=from-dotenv\nTAG=shell-wins-over-this\n";

fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn load_file(path: &Path) -> Result<Loaded, shoal_compose::ComposeError> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = fs::read_to_string(path).unwrap();
    load_str("app", &[(name, text)], &env(), Some(DOTENV))
}

pub fn render(loaded: &Loaded) -> String {
    let mut out = String::from("# warnings\n");
    for warning in &loaded.warnings {
        out.push_str(&format!("- {warning}\n"));
    }
    out.push_str("\n# normalized\n");
    out.push_str(&loaded.normalized_yaml);
    out.push_str("\n# specs\n");
    out.push_str(&serde_saphyr::to_string(&loaded.services).unwrap());
    out
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

#[test]
fn valid_corpus() {
    let files = yml_files(&corpus_dir());
    assert!(files.len() >= 10, "corpus missing: {files:?}");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loaded = load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        settings().bind(|| insta::assert_snapshot!(format!("valid-{name}"), render(&loaded)));
    }
}

#[test]
fn invalid_corpus() {
    let files = yml_files(&corpus_dir().join("invalid"));
    assert!(files.len() >= 30, "corpus missing: {files:?}");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let err = match load_file(&path) {
            Ok(loaded) => panic!("{} loaded but must fail:\n{}", path.display(), render(&loaded)),
            Err(e) => e.to_string(),
        };
        settings().bind(|| insta::assert_snapshot!(format!("invalid-{name}"), err));
    }
}

#[test]
fn merged_files() {
    let dir = corpus_dir().join("merge");
    let sources: Vec<(String, String)> = ["base.yml", "override.yml"]
        .iter()
        .map(|f| (f.to_string(), fs::read_to_string(dir.join(f)).unwrap()))
        .collect();
    let loaded = load_str("app", &sources, &env(), None).unwrap();
    settings().bind(|| insta::assert_snapshot!("merge-base-override", render(&loaded)));

    // An error in an override file names that file.
    let bad = ("bad-override.yml".to_string(), fs::read_to_string(dir.join("bad-override.yml")).unwrap());
    let err = load_str("app", &[sources[0].clone(), bad], &env(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad-override.yml:4:17: services.web.deploy.replicas: invalid type: string \"lots\", expected an integer"
    );
}
