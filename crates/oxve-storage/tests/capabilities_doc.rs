//! `docs/STORAGE-CAPABILITIES.md` must say what the code does.

use std::path::PathBuf;

#[test]
fn capabilities_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/STORAGE-CAPABILITIES.md");
    let want = oxve_storage::capabilities::render_markdown();
    if std::env::var_os("UPDATE_CAPABILITIES").is_some() {
        std::fs::write(&path, &want).expect("write docs/STORAGE-CAPABILITIES.md");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/STORAGE-CAPABILITIES.md is stale: run \
         `UPDATE_CAPABILITIES=1 cargo test -p oxve-storage --test capabilities_doc`"
    );
}

#[test]
fn every_driven_type_has_capabilities() {
    for info in oxve_storage::types::StorageType::all() {
        assert_eq!(
            oxve_storage::capabilities::of(info.kind).is_some(),
            info.driven,
            "{}",
            info.name
        );
    }
}
