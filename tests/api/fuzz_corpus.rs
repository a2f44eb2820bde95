//! Replays the committed cargo-fuzz seed corpus (`fuzz/corpus/<target>/*`) through the fuzz targets' own harness
//! (`fuzz/src/lib.rs`): no input may panic. CI runs no open-ended fuzzing; `cargo fuzz run <target>` does.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 12, "a seed corpus of a dozen inputs at least in {}", dir.display());
    files
}

/// Runs `f` on every input, reporting the file of the first panic.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
}

#[test]
fn params_parse_str_corpus() {
    replay("params_parse_str", harness::params_parse_str);
}

#[test]
fn batch_command_corpus() {
    let dir = tempfile::Builder::new().prefix("crmchat-fuzz-replay-").tempdir().unwrap();
    let batch = harness::BatchHarness::new(dir.path());
    replay("batch_command", |data| harness::batch_command(&batch, data));
}

/// Every corpus directory belongs to a target the replay knows.
#[test]
fn corpus_directories_are_known_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut names: Vec<String> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["batch_command", "params_parse_str"]);
}
