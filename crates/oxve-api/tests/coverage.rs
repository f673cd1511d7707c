//! `docs/API-COVERAGE.md` must list exactly what this build implements.
//! `UPDATE_COVERAGE=1 cargo test -p oxve-api --test coverage` rewrites it.

use std::path::PathBuf;

#[test]
fn coverage_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/API-COVERAGE.md");
    let want = oxve_api::coverage::markdown();
    if std::env::var_os("UPDATE_COVERAGE").is_some() {
        std::fs::write(&path, &want).expect("write docs/API-COVERAGE.md");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/API-COVERAGE.md is stale: run `UPDATE_COVERAGE=1 cargo test -p oxve-api --test coverage`"
    );
}

#[test]
fn openapi_document_covers_every_method() {
    let doc = oxve_api::openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let methods: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        methods,
        oxve_schema::api::ApiSchema::embedded().methods().len()
    );
    assert!(paths.contains_key("/api2/json/nodes/{node}/tasks/{upid}/log"));
}
