//! `storage.cfg`: the section-config file every node shares. Parsing keeps
//! the file's order so that an upstream-written file writes back byte for
//! byte; a section this code changes is rewritten in upstream's order
//! (`disable` first, then the keys sorted).

use crate::content::ContentSet;
use crate::error::{Result, StorageError};
use crate::types::{StorageType, SECRET_OPTIONS};
use oxve_schema::section::{Section, SectionConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One storage definition: its id, type and option lines as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDef {
    pub id: String,
    pub kind: StorageType,
    /// Options in file order; values as `storage.cfg` holds them.
    pub props: Vec<(String, String)>,
}

impl StorageDef {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean option: `1`, or a bare flag line, is true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "1" | "yes" | "on" | "true"))
    }

    /// The allowed content; the type's default when the option is absent.
    pub fn content(&self) -> ContentSet {
        match self.get("content") {
            Some(text) => ContentSet::parse(text).unwrap_or_default(),
            None => ContentSet::of(self.kind.info().default_content),
        }
    }

    /// The nodes the storage is restricted to (`None`: all nodes).
    pub fn nodes(&self) -> Option<Vec<String>> {
        self.get("nodes").map(|n| {
            n.split([',', ';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }

    /// Whether the storage is enabled and usable on `node`.
    pub fn enabled_on(&self, node: &str) -> bool {
        !self.flag("disable") && self.nodes().is_none_or(|n| n.iter().any(|x| x == node))
    }

    /// Whether every node sees the same volumes.
    pub fn shared(&self) -> bool {
        self.kind.info().shared_by_nature || self.flag("shared")
    }

    /// The directory of a file-based storage.
    pub fn path(&self) -> Option<PathBuf> {
        self.get("path").map(PathBuf::from)
    }

    /// The default image format: the `format` option or the type's default.
    pub fn default_format(&self) -> Option<&str> {
        self.get("format")
            .or_else(|| self.kind.info().default_format())
    }

    /// The definition as `GET /storage/{storage}` shows it: booleans as
    /// integers, `content` sorted, no secrets (they are never in here).
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("storage".into(), self.id.clone().into());
        out.insert("type".into(), self.kind.as_str().into());
        for (k, v) in &self.props {
            let value = match k.as_str() {
                "content" => self.content().to_string().into(),
                _ if is_boolean(k) => serde_json::Value::from(i64::from(self.flag(k))),
                "max-protected-backups" | "port" | "saferemove-stepsize" => v
                    .parse::<i64>()
                    .map(Into::into)
                    .unwrap_or_else(|_| v.clone().into()),
                _ => v.clone().into(),
            };
            out.insert(k.clone(), value);
        }
        if !out.contains_key("content") && !self.kind.info().default_content.is_empty() {
            out.insert("content".into(), self.content().to_string().into());
        }
        serde_json::Value::Object(out)
    }

    fn section(&self) -> Section {
        let mut s = Section::new(self.kind.as_str(), &self.id);
        s.props = self.props.clone();
        s
    }
}

/// Options that are booleans in the schema; stored as `1`/`0`.
pub fn is_boolean(key: &str) -> bool {
    matches!(
        key,
        "disable"
            | "shared"
            | "mkdir"
            | "create-base-path"
            | "create-subdirs"
            | "krbd"
            | "fuse"
            | "nocow"
            | "sparse"
            | "saferemove"
            | "tagged_only"
            | "nowritecache"
            | "skip-cert-verification"
            | "snapshot-as-volume-chain"
    )
}

/// The whole file. Sections of types oxve does not know are kept and
/// written back untouched, but not offered as storages.
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    sections: SectionConfig,
}

/// Per-option problems with a definition, keyed by option (the API turns
/// them into upstream's `errors` object).
pub type OptionErrors = BTreeMap<String, String>;

impl StorageConfig {
    pub fn parse(text: &str) -> StorageConfig {
        StorageConfig {
            sections: SectionConfig::parse(text),
        }
    }

    /// The file's text.
    pub fn write(&self) -> Result<String> {
        self.sections
            .write()
            .map_err(|e| StorageError::Other(e.to_string()))
    }

    /// Every storage of a known type, in file order.
    pub fn storages(&self) -> Vec<StorageDef> {
        self.sections.sections.iter().filter_map(to_def).collect()
    }

    /// The storage `id`.
    pub fn get(&self, id: &str) -> Result<StorageDef> {
        self.sections
            .get(id)
            .and_then(to_def)
            .ok_or_else(|| StorageError::NoSuchStorage(id.into()))
    }

    /// Adds a new storage. `props` are checked against the type's options.
    pub fn add(&mut self, def: StorageDef) -> Result<(), AddError> {
        if self.sections.get(&def.id).is_some() {
            return Err(AddError::Exists(def.id));
        }
        let mut errors = OptionErrors::new();
        let info = def.kind.info();
        for key in info.fixed {
            if def.get(key).is_none() {
                errors.insert(
                    (*key).into(),
                    "property is missing and it is not optional".into(),
                );
            }
        }
        check_keys(&def, &mut errors);
        if !errors.is_empty() {
            return Err(AddError::Options(errors));
        }
        self.sections.sections.push(upstream_order(def.section()));
        Ok(())
    }

    /// Sets and deletes options of storage `id`. Fixed options cannot change.
    pub fn update(
        &mut self,
        id: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<StorageDef, AddError> {
        let def = self.get(id).map_err(|_| AddError::Missing(id.into()))?;
        let info = def.kind.info();
        let mut errors = OptionErrors::new();
        for (k, v) in set {
            if info.fixed.contains(&k.as_str()) && def.get(k) != Some(v.as_str()) {
                errors.insert(
                    k.clone(),
                    format!("can't change value of fixed parameter '{k}'"),
                );
            }
        }
        for k in delete {
            if info.fixed.contains(&k.as_str()) {
                errors.insert(k.clone(), format!("can't delete fixed parameter '{k}'"));
            } else if set.iter().any(|(s, _)| s == k) {
                errors.insert(k.clone(), "cannot set and delete the same option".into());
            }
        }
        let mut new = def.clone();
        new.props.retain(|(k, _)| !delete.contains(k));
        for (k, v) in set {
            match new.props.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => new.props.push((k.clone(), v.clone())),
            }
        }
        check_keys(&new, &mut errors);
        if !errors.is_empty() {
            return Err(AddError::Options(errors));
        }
        if let Some(section) = self.sections.get_mut(id) {
            *section = upstream_order(new.section());
        }
        Ok(new)
    }

    /// Removes storage `id`.
    pub fn remove(&mut self, id: &str) -> Result<StorageDef> {
        let def = self.get(id)?;
        self.sections.remove(id);
        Ok(def)
    }
}

/// Why a definition could not be added or changed.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("storage ID '{0}' already defined")]
    Exists(String),
    #[error("storage '{0}' does not exist")]
    Missing(String),
    #[error("invalid storage options")]
    Options(OptionErrors),
}

fn to_def(s: &Section) -> Option<StorageDef> {
    Some(StorageDef {
        id: s.id.clone(),
        kind: StorageType::parse(&s.ty)?,
        props: s.props.clone(),
    })
}

fn check_keys(def: &StorageDef, errors: &mut OptionErrors) {
    let info = def.kind.info();
    for (k, v) in &def.props {
        if SECRET_OPTIONS.contains(&k.as_str()) {
            errors.insert(
                k.clone(),
                "secrets are kept in priv/, not in storage.cfg".into(),
            );
        } else if !info.allows(k) {
            errors.insert(
                k.clone(),
                format!("unexpected property for storage type '{}'", info.name),
            );
        } else if k == "content" {
            match ContentSet::parse(v) {
                Err(bad) => {
                    errors.insert(k.clone(), format!("invalid content type '{bad}'"));
                }
                Ok(set) => {
                    let bad: Vec<&str> = set
                        .iter()
                        .filter(|c| !info.contents.contains(c))
                        .map(|c| c.as_str())
                        .collect();
                    if !bad.is_empty() {
                        let allowed: Vec<&str> = info.contents.iter().map(|c| c.as_str()).collect();
                        errors.insert(
                            k.clone(),
                            format!(
                                "storage type '{}' does not support content '{}' (supported: {})",
                                info.name,
                                bad.join(","),
                                allowed.join(",")
                            ),
                        );
                    }
                }
            }
        } else if k == "format" && !info.formats.contains(&v.as_str()) {
            errors.insert(
                k.clone(),
                format!(
                    "storage type '{}' does not support format '{v}' (supported: {})",
                    info.name,
                    info.formats.join(",")
                ),
            );
        }
    }
}

/// Upstream writes `disable` first (as a bare flag), then the other keys
/// sorted; `content` sorted, `none` when empty.
fn upstream_order(mut s: Section) -> Section {
    let disabled = s
        .props
        .iter()
        .any(|(k, v)| k == "disable" && matches!(v.as_str(), "" | "1"));
    s.props.retain(|(k, _)| k != "disable");
    for (k, v) in s.props.iter_mut() {
        if k == "content" {
            if let Ok(set) = ContentSet::parse(v) {
                *v = set.to_string();
            }
        }
    }
    s.props.sort_by(|a, b| a.0.cmp(&b.0));
    if disabled {
        s.props.insert(0, ("disable".into(), String::new()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\nnfs: nas\n\tdisable\n\texport /srv/nfs\n\tpath /mnt/pve/nas\n\tserver 10.0.0.5\n\tcontent backup,iso\n\toptions vers=4.2\n\tprune-backups keep-last=3\n\npbs: backup\n\tdatastore main\n\tserver 10.0.0.6\n\tcontent backup\n\tfingerprint aa:bb\n\tusername backup@pbs\n\nmadeup: x\n\tfoo bar\n\n";

    #[test]
    fn round_trip_keeps_bytes() {
        let cfg = StorageConfig::parse(UPSTREAM);
        assert_eq!(cfg.write().unwrap(), UPSTREAM);
        let ids: Vec<String> = cfg.storages().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["local", "local-lvm", "nas", "backup"]);
        let nas = cfg.get("nas").unwrap();
        assert!(nas.flag("disable") && !nas.enabled_on("n1") && nas.shared());
        assert_eq!(
            cfg.get("local").unwrap().content().to_string(),
            "backup,iso,vztmpl"
        );
    }

    #[test]
    fn update_rewrites_section_in_upstream_order() {
        let mut cfg = StorageConfig::parse(UPSTREAM);
        cfg.update(
            "local",
            &[
                ("disable".into(), "1".into()),
                ("content".into(), "vztmpl,iso".into()),
            ],
            &[],
        )
        .unwrap();
        let text = cfg.write().unwrap();
        assert!(
            text.starts_with("dir: local\n\tdisable\n\tcontent iso,vztmpl\n\tpath /var/lib/vz\n\n"),
            "{text}"
        );
        let err = cfg
            .update("local", &[("path".into(), "/x".into())], &[])
            .unwrap_err();
        assert!(matches!(err, AddError::Options(e) if e.contains_key("path")));
    }

    #[test]
    fn add_checks_type_options() {
        let mut cfg = StorageConfig::parse(UPSTREAM);
        let def = |id: &str, kind, props: &[(&str, &str)]| StorageDef {
            id: id.into(),
            kind,
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let e = cfg
            .add(def("d2", StorageType::Dir, &[("thinpool", "x")]))
            .unwrap_err();
        let AddError::Options(e) = e else { panic!() };
        assert!(e.contains_key("path") && e.contains_key("thinpool"));
        let e = cfg
            .add(def(
                "l2",
                StorageType::LvmThin,
                &[("vgname", "v"), ("thinpool", "t"), ("content", "iso")],
            ))
            .unwrap_err();
        let AddError::Options(e) = e else { panic!() };
        assert!(
            e["content"].contains("does not support content 'iso'"),
            "{e:?}"
        );
        assert!(matches!(
            cfg.add(def("local", StorageType::Dir, &[("path", "/x")])),
            Err(AddError::Exists(_))
        ));
        cfg.add(def(
            "d3",
            StorageType::Dir,
            &[("path", "/srv/d3"), ("content", "iso")],
        ))
        .unwrap();
        assert!(cfg
            .write()
            .unwrap()
            .ends_with("dir: d3\n\tcontent iso\n\tpath /srv/d3\n\n"));
    }

    #[test]
    fn upstream_fixture_parses() {
        let shared = std::env::var("OXVE_SHARED")
            .unwrap_or_else(|_| format!("{}/../../../shared", env!("CARGO_MANIFEST_DIR")));
        let path =
            format!("{shared}/pve-fixtures/pve-container/src/test/snapshot-input/storage.cfg");
        let text = std::fs::read_to_string(&path).expect("upstream fixture (set OXVE_SHARED)");
        let cfg = StorageConfig::parse(&text);
        let local = cfg.get("local").unwrap();
        assert_eq!(local.path().unwrap(), PathBuf::from("/tmp/storage/"));
        assert_eq!(local.content().to_string(), "images,iso,rootdir,vztmpl");
        // Upstream indents with a tab when it writes; this file uses two spaces.
        assert_eq!(
            cfg.write().unwrap().replace('\t', "  ").trim_end(),
            text.trim_end()
        );
    }
}
