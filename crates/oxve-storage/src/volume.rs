//! Volume ids (`local:iso/debian.iso`) and volume names, parsed into typed
//! values at the edge so that no plugin handles a raw string it has not
//! checked. A name that could leave the storage (`..`, absolute paths,
//! white space, control characters) never parses.

use crate::content::Content;
use crate::error::{Result, StorageError};
use regex::Regex;
use std::fmt;
use std::sync::LazyLock;

/// `storage:volname`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeId {
    pub storage: String,
    pub volname: String,
}

impl VolumeId {
    /// Parses `storage:volname`; the storage id must be a valid id.
    pub fn parse(volid: &str) -> Result<VolumeId> {
        let (storage, volname) = volid
            .split_once(':')
            .ok_or_else(|| StorageError::bad_volume(volid, "expected 'storage:volume'"))?;
        if !is_storage_id(storage) {
            return Err(StorageError::bad_volume(volid, "invalid storage ID"));
        }
        check_safe(volname)?;
        Ok(VolumeId {
            storage: storage.into(),
            volname: volname.into(),
        })
    }

    pub fn new(storage: &str, volname: &str) -> VolumeId {
        VolumeId {
            storage: storage.into(),
            volname: volname.into(),
        }
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.storage, self.volname)
    }
}

/// Whether `id` is a storage id (upstream's `pve-storage-id`).
pub fn is_storage_id(id: &str) -> bool {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$").expect("static regex"));
    RE.is_match(&id.to_ascii_lowercase())
}

/// A parsed volume name: what it holds and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolName {
    pub content: Content,
    /// The file or volume name (`vm-100-disk-0.qcow2`, `debian.iso`).
    pub name: String,
    /// The owning guest, when the name says.
    pub vmid: Option<u32>,
    /// For a linked clone: the base image's owner and name.
    pub base: Option<(u32, String)>,
    /// Whether this is a base (template) image.
    pub is_base: bool,
    /// `raw`, `qcow2`, `vmdk`, `subvol` for images; `raw` for files.
    pub format: Option<String>,
}

impl VolName {
    fn file(content: Content, name: &str, vmid: Option<u32>) -> VolName {
        VolName {
            content,
            name: name.into(),
            vmid,
            base: None,
            is_base: false,
            format: Some("raw".into()),
        }
    }
}

/// Rejects names that could escape a storage's directory or confuse a tool.
fn check_safe(volname: &str) -> Result<()> {
    if volname.is_empty() {
        return Err(StorageError::bad_volume(volname, "empty name"));
    }
    if volname.starts_with('/') {
        return Err(StorageError::bad_volume(volname, "absolute path"));
    }
    if volname.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StorageError::bad_volume(
            volname,
            "white space or control character",
        ));
    }
    if volname
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(StorageError::bad_volume(
            volname,
            "empty, '.' or '..' path component",
        ));
    }
    Ok(())
}

/// Whether `name` is a safe single file name (uploads, downloads).
pub fn check_file_name(name: &str) -> Result<()> {
    check_safe(name)?;
    if name.contains('/') || name.starts_with('.') {
        return Err(StorageError::bad_volume(
            name,
            "a file name must not contain '/' or start with '.'",
        ));
    }
    Ok(())
}

static IMAGE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(vm|base|subvol|basevol)-(\d+)-[^/\s]+\.(raw|qcow2|vmdk|subvol)$")
        .expect("static regex")
});
static ISO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^iso/([^/]+\.(?:iso|img))$").expect("static regex"));
static VZTMPL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^vztmpl/([^/]+\.tar\.(?:gz|xz|zst|bz2))$").expect("static regex")
});
static BACKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^backup/([^/]+\.(?:tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2|xz))?))$")
        .expect("static regex")
});
static BACKUP_OWNER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^vzdump-(?:openvz|lxc|qemu)-(\d+)-").expect("static regex"));
static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^import/((?:[^/]+\.ova/)?[^/]+\.(?:ova|ovf|qcow2|raw|vmdk|img))$")
        .expect("static regex")
});

/// The extensions a file of each uploadable content type may have.
pub fn file_name_matches(content: Content, name: &str) -> bool {
    let volname = format!("{}/{name}", content_prefix(content));
    match content {
        Content::Iso => ISO.is_match(&volname),
        Content::Vztmpl => VZTMPL.is_match(&volname),
        Content::Backup => BACKUP.is_match(&volname),
        Content::Import => IMPORT.is_match(&volname),
        Content::Snippets => check_file_name(name).is_ok(),
        Content::Images | Content::Rootdir => false,
    }
}

/// The volume-name prefix of a file content type (`iso/`, `vztmpl/`).
pub fn content_prefix(content: Content) -> &'static str {
    match content {
        Content::Images => "images",
        Content::Rootdir => "rootdir",
        Content::Vztmpl => "vztmpl",
        Content::Iso => "iso",
        Content::Backup => "backup",
        Content::Snippets => "snippets",
        Content::Import => "import",
    }
}

/// Parses an image file name (`vm-100-disk-0.qcow2`): (owner, format, is base).
pub fn parse_image_file(name: &str) -> Result<(u32, String, bool)> {
    let caps = IMAGE_NAME
        .captures(name)
        .ok_or_else(|| StorageError::bad_volume(name, "unable to parse volume filename"))?;
    let vmid = parse_vmid(name, &caps[2])?;
    let is_base = matches!(&caps[1], "base" | "basevol");
    Ok((vmid, caps[3].to_string(), is_base))
}

fn parse_vmid(volname: &str, digits: &str) -> Result<u32> {
    digits
        .parse()
        .map_err(|_| StorageError::bad_volume(volname, "guest id out of range"))
}

/// Parses the volume name of a file-based storage (dir, nfs, cifs, cephfs,
/// btrfs): `100/vm-100-disk-0.qcow2`, `100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2`,
/// `iso/x.iso`, `vztmpl/x.tar.zst`, `backup/vzdump-...`, `snippets/x`, `import/x.ova`.
pub fn parse_file_volname(volname: &str) -> Result<VolName> {
    check_safe(volname)?;
    let parts: Vec<&str> = volname.split('/').collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [basevmid, basename, vmid, name] if all_digits(basevmid) && all_digits(vmid) => {
            parse_image_file(basename)?;
            let (owner, format, is_base) = parse_image_file(name)?;
            let vmid = parse_vmid(volname, vmid)?;
            check_owner(volname, vmid, owner)?;
            Ok(VolName {
                content: Content::Images,
                name: (*name).into(),
                vmid: Some(vmid),
                base: Some((parse_vmid(volname, basevmid)?, (*basename).into())),
                is_base,
                format: Some(format),
            })
        }
        [vmid, name] if all_digits(vmid) => {
            let (owner, format, is_base) = parse_image_file(name)?;
            let vmid = parse_vmid(volname, vmid)?;
            check_owner(volname, vmid, owner)?;
            Ok(VolName {
                content: Content::Images,
                name: (*name).into(),
                vmid: Some(vmid),
                base: None,
                is_base,
                format: Some(format),
            })
        }
        _ => parse_file_content(volname),
    }
}

/// An image `100/vm-101-disk-0.raw` would be listed under 100 but claim
/// 101 — upstream refuses such names and so do we.
fn check_owner(volname: &str, dir_vmid: u32, name_vmid: u32) -> Result<()> {
    if dir_vmid == name_vmid {
        Ok(())
    } else {
        Err(StorageError::bad_volume(
            volname,
            format!("image of guest {name_vmid} in the directory of guest {dir_vmid}"),
        ))
    }
}

fn parse_file_content(volname: &str) -> Result<VolName> {
    if let Some(c) = ISO.captures(volname) {
        return Ok(VolName::file(Content::Iso, &c[1], None));
    }
    if let Some(c) = VZTMPL.captures(volname) {
        return Ok(VolName::file(Content::Vztmpl, &c[1], None));
    }
    if let Some(c) = BACKUP.captures(volname) {
        let owner = BACKUP_OWNER
            .captures(&c[1])
            .and_then(|o| o[1].parse::<u32>().ok());
        return Ok(VolName::file(Content::Backup, &c[1], owner));
    }
    if let Some(c) = IMPORT.captures(volname) {
        let mut v = VolName::file(Content::Import, &c[1], None);
        v.format = c[1].rsplit('.').next().map(str::to_string);
        return Ok(v);
    }
    if let Some(name) = volname.strip_prefix("snippets/") {
        if !name.contains('/') {
            return Ok(VolName::file(Content::Snippets, name, None));
        }
    }
    if let Some(id) = volname.strip_prefix("rootdir/") {
        if let Ok(vmid) = id.parse::<u32>() {
            let mut v = VolName::file(Content::Rootdir, id, Some(vmid));
            v.format = None;
            return Ok(v);
        }
    }
    Err(StorageError::bad_volume(
        volname,
        "not an image, iso, vztmpl, backup, snippets or import volume",
    ))
}

/// Parses the volume name of a block storage (lvm, lvmthin, zfspool, rbd):
/// `vm-100-disk-0`, `base-100-disk-0`, `base-100-disk-0/vm-101-disk-0`,
/// `subvol-100-disk-0` (zfs). `formats` says which format a plain name has.
pub fn parse_block_volname(volname: &str, default_format: &str) -> Result<VolName> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(?:((?:base|basevol)-(\d+)-[^/\s]+)/)?((vm|base|subvol|basevol)-(\d+)-[^/\s]+)$",
        )
        .expect("static regex")
    });
    check_safe(volname)?;
    let c = RE.captures(volname).ok_or_else(|| {
        StorageError::bad_volume(volname, "expected vm-<vmid>-<name> or base-<vmid>-<name>")
    })?;
    let kind = &c[4];
    let format = if kind.starts_with("subvol") || kind == "basevol" {
        "subvol"
    } else {
        default_format
    };
    let base = match (c.get(1), c.get(2)) {
        (Some(name), Some(id)) => Some((parse_vmid(volname, id.as_str())?, name.as_str().into())),
        _ => None,
    };
    Ok(VolName {
        content: Content::Images,
        name: c[3].to_string(),
        vmid: Some(parse_vmid(volname, &c[5])?),
        base,
        is_base: matches!(kind, "base" | "basevol"),
        format: Some(format.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        let v = VolumeId::parse("local:iso/debian.iso").unwrap();
        assert_eq!(
            (v.storage.as_str(), v.volname.as_str()),
            ("local", "iso/debian.iso")
        );
        assert_eq!(v.to_string(), "local:iso/debian.iso");
        for bad in [
            "nocolon",
            "1bad:iso/x.iso",
            "local:",
            "local:/etc/passwd",
            "local:iso/../x.iso",
            "local:iso/a b.iso",
        ] {
            assert!(VolumeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_volnames() {
        let v = parse_file_volname("100/vm-100-disk-0.qcow2").unwrap();
        assert_eq!(
            (v.vmid, v.format.as_deref(), v.is_base),
            (Some(100), Some("qcow2"), false)
        );
        let v = parse_file_volname("100/base-100-disk-0.qcow2/101/vm-101-disk-1.qcow2").unwrap();
        assert_eq!(v.base, Some((100, "base-100-disk-0.qcow2".into())));
        assert_eq!(
            (v.vmid, v.name.as_str()),
            (Some(101), "vm-101-disk-1.qcow2")
        );
        assert!(
            parse_file_volname("100/base-100-disk-0.raw")
                .unwrap()
                .is_base
        );
        assert_eq!(
            parse_file_volname("iso/Debian.ISO").unwrap().content,
            Content::Iso
        );
        assert_eq!(
            parse_file_volname("vztmpl/debian-12.tar.zst")
                .unwrap()
                .content,
            Content::Vztmpl
        );
        let b = parse_file_volname("backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst").unwrap();
        assert_eq!((b.content, b.vmid), (Content::Backup, Some(100)));
        assert_eq!(
            parse_file_volname("snippets/user.yaml").unwrap().content,
            Content::Snippets
        );
        let i = parse_file_volname("import/appliance.ova/disk1.vmdk").unwrap();
        assert_eq!(
            (i.content, i.format.as_deref()),
            (Content::Import, Some("vmdk"))
        );
        for bad in [
            "100/vm-101-disk-0.raw",
            "100/../../etc/shadow",
            "iso/x.exe",
            "snippets/../x",
            "100/vm-100-disk-0.exe",
            "vztmpl/x.tar",
            "100/vm-100-disk-0.raw/../x",
        ] {
            assert!(parse_file_volname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_volnames() {
        let v = parse_block_volname("vm-100-disk-0", "raw").unwrap();
        assert_eq!(
            (v.vmid, v.format.as_deref(), v.base),
            (Some(100), Some("raw"), None)
        );
        let v = parse_block_volname("base-100-disk-0/vm-101-disk-0", "raw").unwrap();
        assert_eq!(v.base, Some((100, "base-100-disk-0".into())));
        assert_eq!(
            parse_block_volname("subvol-100-disk-0", "raw")
                .unwrap()
                .format
                .as_deref(),
            Some("subvol")
        );
        for bad in [
            "vm-x-disk-0",
            "../vm-100-disk-0",
            "vm-100-disk-0/vm-100-disk-1",
            "foo",
        ] {
            assert!(parse_block_volname(bad, "raw").is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_file_names() {
        assert!(file_name_matches(Content::Iso, "debian-12.iso"));
        assert!(!file_name_matches(Content::Iso, "debian-12.tar"));
        assert!(file_name_matches(Content::Vztmpl, "alpine.tar.xz"));
        assert!(file_name_matches(Content::Snippets, "user-data.yaml"));
        assert!(!file_name_matches(Content::Snippets, "../user-data.yaml"));
        assert!(!file_name_matches(Content::Snippets, ".hidden"));
        assert!(file_name_matches(Content::Import, "disk.qcow2"));
    }
}
