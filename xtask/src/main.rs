//! `cargo xtask`: project automation. `cargo xtask codegen [--specs DIR]` regenerates the
//! Kafka codec in `crates/skein-protocol/src/generated/` from Kafka's JSON message specs.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask codegen [--specs DIR]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => {}
        _ => return usage(),
    }
    let mut specs = xtask::default_specs_dir();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--specs" => match rest.next() {
                Some(dir) => specs = PathBuf::from(dir),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let out_dir = xtask::workspace_root().join(xtask::GENERATED_DIR);
    let result = xtask::generate(&specs).and_then(|files| {
        xtask::write_files(&out_dir, &files)?;
        Ok(files.len())
    });
    match result {
        Ok(n) => {
            println!("wrote {n} files to {}", out_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("codegen failed: {e}");
            ExitCode::FAILURE
        }
    }
}
