//! The committed codec must be what `cargo xtask codegen` produces from the specs today.

use std::collections::BTreeSet;

#[test]
fn generated_code_is_up_to_date() {
    let specs = xtask::default_specs_dir();
    if !specs.is_dir() {
        eprintln!(
            "note: {} not found; skipping the generated-code staleness check",
            specs.display()
        );
        return;
    }
    let files = xtask::generate(&specs).expect("codegen");
    let temp = tempfile::tempdir().expect("temp dir");
    xtask::write_files(temp.path(), &files).expect("write generated files");

    let committed_dir = xtask::workspace_root().join(xtask::GENERATED_DIR);
    let list = |dir: &std::path::Path| -> BTreeSet<String> {
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
    let committed = list(&committed_dir);
    let mut stale: Vec<String> = fresh
        .symmetric_difference(&committed)
        .map(|n| format!("{n} (added or removed)"))
        .collect();
    for name in fresh.intersection(&committed) {
        let new = std::fs::read_to_string(temp.path().join(name)).unwrap();
        let old = std::fs::read_to_string(committed_dir.join(name)).unwrap();
        if new != old {
            stale.push(format!("{name} (changed)"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale; run `cargo xtask codegen`:\n  {}",
        stale.join("\n  ")
    );
}
