//! The committed compact schema must be exactly what the generator makes of
//! upstream's `apidata.json`.

#[test]
fn committed_schema_matches_generator() {
    let source = oxve_schema::gen::shared_dir().join("pve-api/apidata.json");
    let Ok(apidata) = std::fs::read_to_string(&source) else {
        assert!(
            std::env::var("CI").is_err(),
            "{} is missing; CI must have ../shared",
            source.display()
        );
        eprintln!("skipping: {} not found", source.display());
        return;
    };
    let generated = oxve_schema::gen::generate(&apidata).expect("apidata.json parses");
    assert!(
        generated == oxve_schema::api::COMPACT_SCHEMA,
        "data/api-schema.json is stale: run `cargo run -p oxve-schema --bin gen-api-schema`"
    );
}
