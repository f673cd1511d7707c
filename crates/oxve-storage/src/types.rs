//! The storage types and, per type, what upstream allows: which options a
//! section may carry (fixed ones are required and never change), which
//! content and image formats it can hold, and the defaults. One table, so
//! that `storage.cfg` checks, the API and the capabilities document agree.

use crate::content::Content;
use crate::content::Content::*;

/// A storage type (`type` in the API, the section type in `storage.cfg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageType {
    Dir,
    Btrfs,
    Nfs,
    Cifs,
    CephFs,
    Lvm,
    LvmThin,
    ZfsPool,
    Rbd,
    Iscsi,
    IscsiDirect,
    /// ZFS over iSCSI: parsed, not yet driven.
    Zfs,
    /// Proxmox Backup Server: parsed, not yet driven (oxve's own backups come later).
    Pbs,
    /// ESXi import source: parsed, not yet driven.
    Esxi,
}

/// What one storage type allows.
#[derive(Debug)]
pub struct TypeInfo {
    pub kind: StorageType,
    pub name: &'static str,
    /// Options required when the storage is added and fixed afterwards.
    pub fixed: &'static [&'static str],
    /// Options that may be set, changed and deleted (in groups).
    pub options: &'static [&'static [&'static str]],
    /// Content types the storage can hold.
    pub contents: &'static [Content],
    /// `content` when none is given.
    pub default_content: &'static [Content],
    /// Image formats, the first being the default.
    pub formats: &'static [&'static str],
    /// Whether every node sees the same volumes without `shared`.
    pub shared_by_nature: bool,
    /// Whether oxve drives this type (the others only parse).
    pub driven: bool,
}

const COMMON: &[&str] = &["nodes", "disable", "content", "bwlimit"];
/// Options of every directory-like type.
const FILE_OPTS: &[&str] = &[
    "prune-backups",
    "max-protected-backups",
    "format",
    "mkdir",
    "create-base-path",
    "create-subdirs",
    "content-dirs",
    "preallocation",
];
const ALL_FILES: &[Content] = &[Images, Rootdir, Vztmpl, Iso, Backup, Snippets, Import];
const FILE_FORMATS: &[&str] = &["raw", "qcow2", "vmdk", "subvol"];

static TABLE: &[TypeInfo] = &[
    TypeInfo {
        kind: StorageType::Dir,
        name: "dir",
        fixed: &["path"],
        options: &[
            COMMON,
            FILE_OPTS,
            &["shared", "is_mountpoint", "snapshot-as-volume-chain"],
        ],
        contents: ALL_FILES,
        default_content: &[Images, Rootdir],
        formats: FILE_FORMATS,
        shared_by_nature: false,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Btrfs,
        name: "btrfs",
        fixed: &["path"],
        options: &[COMMON, FILE_OPTS, &["shared", "is_mountpoint", "nocow"]],
        contents: ALL_FILES,
        default_content: &[Images, Rootdir],
        formats: &["raw", "subvol"],
        shared_by_nature: false,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Nfs,
        name: "nfs",
        fixed: &["path", "server", "export"],
        options: &[COMMON, FILE_OPTS, &["options", "snapshot-as-volume-chain"]],
        contents: ALL_FILES,
        default_content: &[Images],
        formats: FILE_FORMATS,
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Cifs,
        name: "cifs",
        fixed: &["path", "server", "share"],
        options: &[
            COMMON,
            FILE_OPTS,
            &[
                "subdir",
                "username",
                "password",
                "domain",
                "smbversion",
                "options",
                "snapshot-as-volume-chain",
            ],
        ],
        contents: ALL_FILES,
        default_content: &[Images],
        formats: FILE_FORMATS,
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::CephFs,
        name: "cephfs",
        fixed: &[],
        options: &[
            COMMON,
            &[
                "path",
                "monhost",
                "subdir",
                "username",
                "keyring",
                "fs-name",
                "fuse",
                "options",
                "prune-backups",
                "max-protected-backups",
                "mkdir",
                "create-base-path",
                "create-subdirs",
                "content-dirs",
            ],
        ],
        contents: &[Vztmpl, Iso, Backup, Snippets, Import],
        default_content: &[Backup],
        formats: &[],
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Lvm,
        name: "lvm",
        fixed: &["vgname"],
        options: &[
            COMMON,
            &[
                "base",
                "shared",
                "saferemove",
                "saferemove-stepsize",
                "saferemove_throughput",
                "tagged_only",
                "snapshot-as-volume-chain",
            ],
        ],
        contents: &[Images, Rootdir],
        default_content: &[Images],
        formats: &["raw"],
        shared_by_nature: false,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::LvmThin,
        name: "lvmthin",
        fixed: &["vgname", "thinpool"],
        options: &[COMMON],
        contents: &[Images, Rootdir],
        default_content: &[Images, Rootdir],
        formats: &["raw"],
        shared_by_nature: false,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::ZfsPool,
        name: "zfspool",
        fixed: &["pool"],
        options: &[
            COMMON,
            &["blocksize", "sparse", "mountpoint", "zfs-base-path"],
        ],
        contents: &[Images, Rootdir],
        default_content: &[Images, Rootdir],
        formats: &["raw", "subvol"],
        shared_by_nature: false,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Rbd,
        name: "rbd",
        fixed: &[],
        options: &[
            COMMON,
            &[
                "pool",
                "data-pool",
                "namespace",
                "monhost",
                "username",
                "keyring",
                "krbd",
            ],
        ],
        contents: &[Images, Rootdir],
        default_content: &[Images],
        formats: &["raw"],
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Iscsi,
        name: "iscsi",
        fixed: &["portal", "target"],
        options: &[COMMON],
        contents: &[Images],
        default_content: &[Images],
        formats: &["raw"],
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::IscsiDirect,
        name: "iscsidirect",
        fixed: &["portal", "target"],
        options: &[&["nodes", "disable", "bwlimit"]],
        contents: &[Images],
        default_content: &[Images],
        formats: &["raw"],
        shared_by_nature: true,
        driven: true,
    },
    TypeInfo {
        kind: StorageType::Zfs,
        name: "zfs",
        fixed: &["portal", "target", "pool", "iscsiprovider"],
        options: &[
            COMMON,
            &[
                "blocksize",
                "sparse",
                "comstar_hg",
                "comstar_tg",
                "lio_tpg",
                "nowritecache",
                "zfs-base-path",
            ],
        ],
        contents: &[Images],
        default_content: &[Images],
        formats: &["raw"],
        shared_by_nature: true,
        driven: false,
    },
    TypeInfo {
        kind: StorageType::Pbs,
        name: "pbs",
        fixed: &["server", "datastore"],
        options: &[
            COMMON,
            &[
                "namespace",
                "username",
                "password",
                "encryption-key",
                "master-pubkey",
                "fingerprint",
                "port",
                "prune-backups",
                "max-protected-backups",
            ],
        ],
        contents: &[Backup],
        default_content: &[Backup],
        formats: &[],
        shared_by_nature: true,
        driven: false,
    },
    TypeInfo {
        kind: StorageType::Esxi,
        name: "esxi",
        fixed: &["server", "username"],
        options: &[&[
            "nodes",
            "disable",
            "content",
            "password",
            "skip-cert-verification",
        ]],
        contents: &[Import],
        default_content: &[Import],
        formats: &[],
        shared_by_nature: true,
        driven: false,
    },
];

/// Options whose values are secrets: kept in `priv/`, never in `storage.cfg`.
pub const SECRET_OPTIONS: &[&str] = &["password", "keyring", "encryption-key", "master-pubkey"];

impl StorageType {
    /// Every type, in the table's order.
    pub fn all() -> impl Iterator<Item = &'static TypeInfo> {
        TABLE.iter()
    }

    pub fn parse(name: &str) -> Option<StorageType> {
        TABLE.iter().find(|t| t.name == name).map(|t| t.kind)
    }

    pub fn info(self) -> &'static TypeInfo {
        TABLE
            .iter()
            .find(|t| t.kind == self)
            .expect("every type is in the table")
    }

    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// Whether volumes live as files under a path (dir-like plugins).
    pub fn is_file_based(self) -> bool {
        matches!(
            self,
            StorageType::Dir
                | StorageType::Btrfs
                | StorageType::Nfs
                | StorageType::Cifs
                | StorageType::CephFs
        )
    }
}

impl TypeInfo {
    /// Whether `key` may appear in a section of this type.
    pub fn allows(&self, key: &str) -> bool {
        self.fixed.contains(&key) || self.options.iter().any(|group| group.contains(&key))
    }

    /// The default image format, if the type holds images.
    pub fn default_format(&self) -> Option<&'static str> {
        self.formats.first().copied()
    }
}
