//! The capabilities document (`docs/STORAGE-CAPABILITIES.md`): per storage
//! type, what it holds and what it can do, rendered from the type table
//! ([`crate::types`]) and each plugin's [`Capabilities`], so the document
//! cannot drift from the code (a test compares it).

use crate::config::StorageConfig;
use crate::exec::RecordingRunner;
use crate::plugin::{Capabilities, Env};
use crate::plugins;
use crate::types::{StorageType, TypeInfo};
use std::fmt::Write;
use std::sync::Arc;

/// The capabilities of a driven type, from a plugin opened on a
/// placeholder definition (opening runs no tool).
pub fn of(kind: StorageType) -> Option<Capabilities> {
    let info = kind.info();
    if !info.driven {
        return None;
    }
    let mut section = format!("{}: capabilities\n", info.name);
    for key in info.fixed {
        let _ = writeln!(section, "\t{key} placeholder");
    }
    let def = StorageConfig::parse(&section).get("capabilities").ok()?;
    let env = Env {
        runner: Arc::new(RecordingRunner::new()),
        run_dir: std::env::temp_dir(),
        secret: None,
    };
    plugins::open(def, env).ok().map(|p| p.capabilities())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "—"
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "—".into()
    } else {
        items.join(", ")
    }
}

fn row(out: &mut String, info: &TypeInfo) {
    let contents: Vec<&str> = info.contents.iter().map(|c| c.as_str()).collect();
    let shared = if info.shared_by_nature {
        "always"
    } else {
        "with `shared 1`"
    };
    match of(info.kind) {
        Some(c) => {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                info.name,
                list(&contents),
                list(info.formats),
                yes_no(c.snapshots),
                yes_no(c.linked_clones),
                yes_no(c.resize),
                yes_no(c.rename),
                shared,
                list(c.export_formats),
                list(c.import_formats),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | not driven yet: the API answers 501 for it |||||||",
                info.name,
                list(&contents),
                list(info.formats),
            );
        }
    }
}

/// The whole document.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Storage capabilities\n\n\
         Generated from `crates/oxve-storage/src/types.rs` and each plugin's \
         `capabilities()`; a test keeps it current \
         (`UPDATE_CAPABILITIES=1 cargo test -p oxve-storage --test capabilities_doc` \
         rewrites it). Snapshots, clones, resize and rename are of disk images; \
         export and import are the volume stream formats of migration and \
         `pvesm export`/`import`.\n\n\
         | type | content | image formats | snapshots | linked clones | resize | rename | shared | export | import |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for info in StorageType::all() {
        row(&mut out, info);
    }
    out.push_str(
        "\nOn the directory-like types (`dir`, `nfs`, `cifs`) snapshots and linked \
         clones are those of qcow2 images; `btrfs` snapshots subvolumes (raw images \
         live in one), `lvmthin` and `zfspool` their thin volumes, `rbd` its images.\n\n\
         Tested against the real thing: `dir` and `btrfs` on the CI host; `lvm`, \
         `lvmthin`, `nfs`, `cifs` and `iscsi` inside the test host VM \
         (`tests/hostvm/storage-tests.sh`). `zfspool`, `rbd`, `cephfs` and \
         `iscsidirect` have golden tests of their exact commands only: the CI has \
         no ZFS, no Ceph cluster and no libiscsi tools.\n",
    );
    out
}
