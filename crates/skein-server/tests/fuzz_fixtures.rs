//! Replays the checked-in fuzz inputs (`fuzz/fixtures/<target>/`: seeds, and every input a
//! fuzz run found a bug with) through the same functions the libFuzzer targets run
//! (`fuzz/fuzz_targets/drivers.rs`), so a plain `cargo test` keeps those bugs fixed without
//! nightly or cargo-fuzz.

#[path = "../../../fuzz/fuzz_targets/drivers.rs"]
mod drivers;

use std::path::PathBuf;

/// The files of `fuzz/fixtures/<target>/`, sorted; at least one.
fn fixtures(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/fixtures")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn decode_request_fixtures_replay() {
    for (path, data) in fixtures("decode_request") {
        eprintln!("{}", path.display());
        drivers::decode_request(&data);
    }
}

#[test]
fn tls_front_fixtures_replay() {
    for (path, data) in fixtures("tls_front") {
        eprintln!("{}", path.display());
        drivers::tls_front(&data);
    }
}

#[test]
fn sasl_front_fixtures_replay() {
    let dir = tempfile::tempdir().unwrap();
    let broker = drivers::open_broker(dir.path());
    for (path, data) in fixtures("sasl_front") {
        eprintln!("{}", path.display());
        drivers::sasl_front(&broker, &data);
    }
}
