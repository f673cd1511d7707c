//! Regenerates `crates/oxve-schema/data/api-schema.json` from upstream's
//! `apidata.json`: `cargo run -p oxve-schema --bin gen-api-schema [APIDATA]`.
//! Without an argument it reads `$OXVE_SHARED/pve-api/apidata.json`, or
//! `../shared/pve-api/apidata.json` next to the workspace.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let input = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| oxve_schema::gen::shared_dir().join("pve-api/apidata.json"));
    let output = manifest.join("data/api-schema.json");
    let text = match std::fs::read_to_string(&input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", input.display());
            return ExitCode::FAILURE;
        }
    };
    match oxve_schema::gen::generate(&text) {
        Ok(compact) => match std::fs::write(&output, compact) {
            Ok(()) => {
                println!("wrote {}", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", output.display());
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{} is not valid JSON: {e}", input.display());
            ExitCode::FAILURE
        }
    }
}
