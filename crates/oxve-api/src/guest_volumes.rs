//! Volume steps shared by container and VM snapshots, templates and
//! clones: opening a volume's storage, naming a guest's new disk, linked
//! clones and full copies, and re-parenting the snapshot chain.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_storage::{StorageError, StoragePlugin, VolumeId};
use std::collections::BTreeMap;

/// The storage plugin (activated) and volume name of `volid`.
pub fn open(node: &Node, volid: &str) -> ApiResult<(Box<dyn StoragePlugin>, String)> {
    let vol = VolumeId::parse(volid)?;
    let plugin = node.open_storage(&vol.storage)?;
    plugin.activate()?;
    Ok((plugin, vol.volname))
}

/// The first free disk name of `newid` of the same kind as `volname`,
/// tried until the storage accepts one (names are claimed atomically).
pub fn with_free_name(
    plugin: &dyn StoragePlugin,
    target: &dyn StoragePlugin,
    volname: &str,
    newid: u32,
    mut make: impl FnMut(&str) -> oxve_storage::Result<String>,
) -> ApiResult<String> {
    let vol = plugin.parse_volname(volname)?;
    let subvol = vol.format.as_deref() == Some("subvol");
    let prefix = if subvol { "subvol" } else { "vm" };
    let ext = match (&vol.format, target.def().kind.is_file_based()) {
        (Some(f), true) => format!(".{f}"),
        _ => String::new(),
    };
    for n in 0..10_000 {
        match make(&format!("{prefix}-{newid}-disk-{n}{ext}")) {
            Err(StorageError::AlreadyExists(_)) => continue,
            other => return Ok(other?),
        }
    }
    Err(ApiError::fail(format!(
        "no free disk name for guest {newid}"
    )))
}

/// A linked clone of base volume `volname` for guest `newid`.
pub fn linked_clone(plugin: &dyn StoragePlugin, volname: &str, newid: u32) -> ApiResult<String> {
    with_free_name(plugin, plugin, volname, newid, |name| {
        plugin.clone_image(volname, newid, name)
    })
}

/// A full copy of `volname` (as it is, or at `snapshot`) onto `dst`
/// for guest `newid`, under the first free disk name there.
pub fn full_copy(
    src: &dyn StoragePlugin,
    volname: &str,
    snapshot: Option<&str>,
    dst: &dyn StoragePlugin,
    newid: u32,
) -> ApiResult<String> {
    let file_based = dst.def().kind.is_file_based();
    with_free_name(src, dst, volname, newid, |name| {
        let target = if file_based {
            format!("{newid}/{name}")
        } else {
            name.to_string()
        };
        oxve_storage::copy::copy_volume_at(src, volname, snapshot, dst, &target)
    })
}

/// After snapshot `name` (whose parent was `parent`) is gone, the
/// sections that named it as their parent get its parent instead.
pub fn reparent<'a>(
    sections: impl Iterator<Item = &'a mut BTreeMap<String, String>>,
    name: &str,
    parent: Option<&str>,
) {
    for props in sections {
        if props.get("parent").map(String::as_str) == Some(name) {
            match parent {
                Some(p) => props.insert("parent".into(), p.to_string()),
                None => props.remove("parent"),
            };
        }
    }
}
