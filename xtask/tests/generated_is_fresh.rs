//! The committed codec and metadata records must be what `cargo xtask codegen` produces from
//! the specs today.

use std::collections::BTreeSet;
use std::path::Path;

/// Regenerates from `specs` into a temporary directory and compares it with the committed
/// `committed` directory, file by file.
fn check_fresh(
    specs: &Path,
    committed: &str,
    generate: fn(&Path) -> Result<xtask::GeneratedFiles, String>,
) {
    if !specs.is_dir() {
        eprintln!(
            "note: {} not found; skipping the staleness check of {committed}",
            specs.display()
        );
        return;
    }
    let files = generate(specs).expect("codegen");
    let temp = tempfile::tempdir().expect("temp dir");
    xtask::write_files(temp.path(), &files).expect("write generated files");

    let committed_dir = xtask::workspace_root().join(committed);
    let list = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".rs"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let fresh = list(temp.path());
    let committed_files = list(&committed_dir);
    assert!(
        !fresh.is_empty(),
        "codegen produced no files for {committed}"
    );
    let mut stale: Vec<String> = fresh
        .symmetric_difference(&committed_files)
        .map(|n| format!("{n} (added or removed)"))
        .collect();
    for name in fresh.intersection(&committed_files) {
        let new = std::fs::read_to_string(temp.path().join(name)).unwrap();
        let old = std::fs::read_to_string(committed_dir.join(name)).unwrap();
        if new != old {
            stale.push(format!("{name} (changed)"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated code in {committed} is stale; run `cargo xtask codegen`:\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn generated_code_is_up_to_date() {
    check_fresh(
        &xtask::default_specs_dir(),
        xtask::GENERATED_DIR,
        xtask::generate,
    );
}

#[test]
fn generated_metadata_records_are_up_to_date() {
    check_fresh(
        &xtask::default_record_specs_dir(),
        xtask::METADATA_RECORDS_DIR,
        xtask::generate_metadata_records,
    );
}
