//! `docs/API-COVERAGE.md`: every schema method and whether this build
//! implements it. A test regenerates it and fails when the file is stale.

use crate::handlers::Registry;
use oxve_schema::api::ApiSchema;

/// The coverage document's text.
pub fn markdown() -> String {
    let schema = ApiSchema::embedded();
    let registry = Registry::build();
    let total = schema.methods().len();
    let done = schema
        .methods()
        .iter()
        .filter(|m| registry.is_implemented(m))
        .count();
    let mut out = String::new();
    out.push_str("# API coverage\n\n");
    out.push_str("Generated from the API schema and the handler registry by `cargo test -p oxve-api --test coverage` (set `UPDATE_COVERAGE=1` to rewrite). Do not edit by hand.\n\n");
    out.push_str(&format!(
        "{done} of {total} methods are implemented. Every other method is routed, authenticated, validated and permission-checked, then answers HTTP 501 `Method '<VERB> <path>' not implemented`.\n\n"
    ));
    out.push_str("| method | path | upstream name | implemented |\n|---|---|---|---|\n");
    let mut methods: Vec<_> = schema.methods().iter().collect();
    methods.sort_by(|a, b| a.path.cmp(&b.path).then(a.method.cmp(&b.method)));
    for m in methods {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            m.method.as_str(),
            m.path,
            m.name,
            if registry.is_implemented(m) {
                "yes"
            } else {
                "501"
            }
        ));
    }
    out
}
