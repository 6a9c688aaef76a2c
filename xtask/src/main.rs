//! `cargo xtask`: project automation. `cargo xtask codegen [--specs DIR] [--record-specs DIR]`
//! regenerates the Kafka codec in `crates/skein-protocol/src/generated/` from Kafka's JSON
//! message specs, and the KRaft metadata records in
//! `crates/skein-protocol/src/metadata_records/` from Kafka's metadata record specs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask codegen [--specs DIR] [--record-specs DIR]");
    ExitCode::from(2)
}

/// A generator: specs directory in, generated files out.
type Generator = fn(&Path) -> Result<xtask::GeneratedFiles, String>;

/// Generates one directory with `generate` and writes it; returns the number of files.
fn regenerate(specs: &Path, out: &str, generate: Generator) -> Result<(usize, PathBuf), String> {
    let out_dir = xtask::workspace_root().join(out);
    let files = generate(specs)?;
    xtask::write_files(&out_dir, &files)?;
    Ok((files.len(), out_dir))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => {}
        _ => return usage(),
    }
    let mut specs = xtask::default_specs_dir();
    let mut record_specs = xtask::default_record_specs_dir();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let target = match arg.as_str() {
            "--specs" => &mut specs,
            "--record-specs" => &mut record_specs,
            _ => return usage(),
        };
        match rest.next() {
            Some(dir) => *target = PathBuf::from(dir),
            None => return usage(),
        }
    }
    let jobs: [(&Path, &str, Generator); 2] = [
        (&specs, xtask::GENERATED_DIR, xtask::generate),
        (
            &record_specs,
            xtask::METADATA_RECORDS_DIR,
            xtask::generate_metadata_records,
        ),
    ];
    for (specs, out, generate) in jobs {
        match regenerate(specs, out, generate) {
            Ok((n, dir)) => println!("wrote {n} files to {}", dir.display()),
            Err(e) => {
                eprintln!("codegen failed ({}): {e}", specs.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
