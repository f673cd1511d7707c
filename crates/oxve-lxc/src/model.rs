//! The typed view of a CT config section: what starting, creating and
//! setting up a container reads. Property strings are parsed with the
//! formats of the API schema, so the config and the API agree on syntax.

use crate::error::LxcError;
use oxve_schema::ctconfig::CtSection;
use serde_json::{Map, Value};

/// A mount point: `rootfs` or `mp<n>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountPoint {
    /// `rootfs` or `mp0`...
    pub key: String,
    /// A volume id (`local:100/vm-100-disk-0.raw`), a host directory
    /// (bind mount) or a block device.
    pub volume: String,
    /// Path inside the container (`/` for the rootfs).
    pub mp: String,
    pub ro: bool,
    pub backup: bool,
    pub quota: bool,
    pub acl: Option<bool>,
    pub size: Option<String>,
    pub mountoptions: Vec<String>,
}

/// What kind of source a mount point has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Device,
}

impl MountPoint {
    /// Volume, bind or device mount, by upstream's rule: an absolute path
    /// is a device under `/dev`, otherwise a bind mount.
    pub fn kind(&self) -> MountKind {
        if self.volume.starts_with("/dev/") {
            MountKind::Device
        } else if self.volume.starts_with('/') {
            MountKind::Bind
        } else {
            MountKind::Volume
        }
    }
}

/// A container NIC: `net<n>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Net {
    pub index: u32,
    pub name: String,
    pub bridge: Option<String>,
    pub hwaddr: Option<String>,
    pub ip: Option<String>,
    pub gw: Option<String>,
    pub ip6: Option<String>,
    pub gw6: Option<String>,
    pub tag: Option<u32>,
    pub trunks: Option<String>,
    pub rate: Option<f64>,
    pub mtu: Option<u32>,
    pub firewall: bool,
    pub link_down: bool,
}

/// `features`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub nesting: bool,
    pub keyctl: bool,
    pub fuse: bool,
    pub mknod: bool,
    pub force_rw_sys: bool,
    /// Allowed file system types for `mount` (`nfs;cifs`).
    pub mount: Vec<String>,
}

/// A passed-through device: `dev<n>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub index: u32,
    pub path: String,
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub deny_write: bool,
}

/// A container as its config describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct {
    pub vmid: u32,
    pub arch: String,
    pub hostname: String,
    pub ostype: Option<String>,
    pub memory: u64,
    pub swap: u64,
    pub cores: Option<u32>,
    pub cpulimit: f64,
    pub cpuunits: Option<u32>,
    pub unprivileged: bool,
    pub features: Features,
    pub rootfs: Option<MountPoint>,
    pub mps: Vec<MountPoint>,
    pub nets: Vec<Net>,
    pub devs: Vec<Device>,
    pub nameservers: Vec<String>,
    pub searchdomains: Vec<String>,
    pub tty: u32,
    pub console: bool,
    pub cmode: String,
    pub timezone: Option<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub lxc: Vec<(String, String)>,
    pub template: bool,
    pub protection: bool,
    pub lock: Option<String>,
    pub debug: bool,
}

/// The format sub-schema of a CT option from the schema's config method.
pub fn option_format(key: &str) -> Option<&'static Map<String, Value>> {
    let method = oxve_schema::api::ApiSchema::embedded().method(
        oxve_schema::api::Verb::Put,
        "/nodes/{node}/lxc/{vmid}/config",
    )?;
    let props = method.properties()?;
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let prop = if base.len() < key.len() {
        props.get(&format!("{base}[n]"))?
    } else {
        props.get(key)?
    };
    prop.get("format").and_then(Value::as_object)
}

/// Parses one property-string option (`net0`, `rootfs`, `features`, ...).
pub fn parse_option(key: &str, value: &str) -> Result<Map<String, Value>, LxcError> {
    let format = option_format(key)
        .ok_or_else(|| LxcError::Config(format!("{key}: not a property string option")))?;
    oxve_schema::propstring::parse(format, value)
        .map_err(|e| LxcError::Config(format!("unable to parse value of '{key}' - {e}")))
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    matches!(map.get(key), Some(Value::Bool(true)))
        || map.get(key).and_then(Value::as_i64) == Some(1)
}

fn int(map: &Map<String, Value>, key: &str) -> Option<u32> {
    map.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// Parses `rootfs` or `mp<n>`.
pub fn parse_mount_point(key: &str, value: &str) -> Result<MountPoint, LxcError> {
    let m = parse_option(key, value)?;
    let mp = if key == "rootfs" {
        "/".to_string()
    } else {
        text(&m, "mp").ok_or_else(|| LxcError::Config(format!("{key}: missing mount path 'mp'")))?
    };
    let mountoptions = text(&m, "mountoptions")
        .map(|o| o.split(';').map(str::to_string).collect())
        .unwrap_or_default();
    Ok(MountPoint {
        key: key.to_string(),
        volume: text(&m, "volume").unwrap_or_default(),
        mp,
        ro: flag(&m, "ro"),
        backup: flag(&m, "backup"),
        quota: flag(&m, "quota"),
        acl: m.get("acl").map(|_| flag(&m, "acl")),
        size: text(&m, "size"),
        mountoptions,
    })
}

/// Parses `net<n>`.
pub fn parse_net(index: u32, value: &str) -> Result<Net, LxcError> {
    let m = parse_option(&format!("net{index}"), value)?;
    Ok(Net {
        index,
        name: text(&m, "name").unwrap_or_else(|| format!("eth{index}")),
        bridge: text(&m, "bridge"),
        hwaddr: text(&m, "hwaddr"),
        ip: text(&m, "ip"),
        gw: text(&m, "gw"),
        ip6: text(&m, "ip6"),
        gw6: text(&m, "gw6"),
        tag: int(&m, "tag"),
        trunks: text(&m, "trunks"),
        rate: m.get("rate").and_then(Value::as_f64),
        mtu: int(&m, "mtu"),
        firewall: flag(&m, "firewall"),
        link_down: flag(&m, "link_down"),
    })
}

/// Indexed keys (`net0`, `mp3`) of a section with their index, in order.
fn indexed<'a>(
    section: &'a CtSection,
    prefix: &'a str,
) -> impl Iterator<Item = (u32, &'a str)> + 'a {
    let mut items: Vec<(u32, &str)> = section
        .props
        .iter()
        .filter_map(move |(k, v)| {
            let idx = k.strip_prefix(prefix)?;
            (!idx.is_empty() && idx.chars().all(|c| c.is_ascii_digit()))
                .then(|| idx.parse().ok().map(|i| (i, v.as_str())))
                .flatten()
        })
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter()
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split([' ', ',', ';'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Ct {
    /// The typed container of a config's main section.
    pub fn from_section(vmid: u32, s: &CtSection) -> Result<Ct, LxcError> {
        let num = |key: &str, default: u64| -> Result<u64, LxcError> {
            s.get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| LxcError::Config(format!("{key}: '{v}' is not a number")))
                })
                .unwrap_or(Ok(default))
        };
        let bool_of = |key: &str, default: bool| {
            s.get(key)
                .and_then(oxve_schema::format::parse_boolean)
                .unwrap_or(default)
        };
        let features = match s.get("features") {
            Some(v) => {
                let m = parse_option("features", v)?;
                Features {
                    nesting: flag(&m, "nesting"),
                    keyctl: flag(&m, "keyctl"),
                    fuse: flag(&m, "fuse"),
                    mknod: flag(&m, "mknod"),
                    force_rw_sys: flag(&m, "force_rw_sys"),
                    mount: list(text(&m, "mount").as_deref()),
                }
            }
            None => Features::default(),
        };
        let rootfs = s
            .get("rootfs")
            .map(|v| parse_mount_point("rootfs", v))
            .transpose()?;
        let mps = indexed(s, "mp")
            .map(|(i, v)| parse_mount_point(&format!("mp{i}"), v))
            .collect::<Result<_, _>>()?;
        let nets = indexed(s, "net")
            .map(|(i, v)| parse_net(i, v))
            .collect::<Result<_, _>>()?;
        let devs = indexed(s, "dev")
            .map(|(i, v)| {
                let m = parse_option(&format!("dev{i}"), v)?;
                Ok(Device {
                    index: i,
                    path: text(&m, "path").unwrap_or_default(),
                    mode: text(&m, "mode"),
                    uid: int(&m, "uid"),
                    gid: int(&m, "gid"),
                    deny_write: flag(&m, "deny-write"),
                })
            })
            .collect::<Result<_, LxcError>>()?;
        Ok(Ct {
            vmid,
            arch: s.get("arch").unwrap_or("amd64").to_string(),
            hostname: s
                .get("hostname")
                .map(str::to_string)
                .unwrap_or_else(|| format!("CT{vmid}")),
            ostype: s.get("ostype").map(str::to_string),
            memory: num("memory", 512)?,
            swap: num("swap", 512)?,
            cores: s.get("cores").and_then(|v| v.parse().ok()),
            cpulimit: s
                .get("cpulimit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            cpuunits: s.get("cpuunits").and_then(|v| v.parse().ok()),
            unprivileged: bool_of("unprivileged", false),
            features,
            rootfs,
            mps,
            nets,
            devs,
            nameservers: list(s.get("nameserver")),
            searchdomains: list(s.get("searchdomain")),
            tty: num("tty", 2)? as u32,
            console: bool_of("console", true),
            cmode: s.get("cmode").unwrap_or("tty").to_string(),
            timezone: s.get("timezone").map(str::to_string),
            entrypoint: s.get("entrypoint").map(str::to_string),
            env: s.env.clone(),
            lxc: s.lxc.clone(),
            template: bool_of("template", false),
            protection: bool_of("protection", false),
            lock: s.get("lock").map(str::to_string),
            debug: bool_of("debug", false),
        })
    }

    /// The values of a raw `lxc.*` key (`lxc.idmap`), in order.
    pub fn raw_values(&self, key: &str) -> Vec<&str> {
        self.lxc
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every mount point, rootfs first, then `mp<n>` by index.
    pub fn mount_points(&self) -> impl Iterator<Item = &MountPoint> {
        self.rootfs.iter().chain(self.mps.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points_and_nics() {
        let (conf, _) = oxve_schema::ctconfig::CtConfig::parse(
            "hostname: a\nrootfs: local:100/vm-100-disk-0.raw,size=8G\nmp1: /srv/data,mp=/data,ro=1\nmp0: local:subvol-100-disk-1,mp=/mnt/x,backup=1\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,tag=5\nunprivileged: 1\nfeatures: nesting=1,mount=nfs;cifs\n",
            true,
        )
        .unwrap();
        let ct = Ct::from_section(100, &conf.main).unwrap();
        assert!(ct.unprivileged);
        assert!(ct.features.nesting);
        assert_eq!(ct.features.mount, vec!["nfs", "cifs"]);
        let rootfs = ct.rootfs.as_ref().unwrap();
        assert_eq!(
            (rootfs.volume.as_str(), rootfs.size.as_deref()),
            ("local:100/vm-100-disk-0.raw", Some("8G"))
        );
        let mps: Vec<_> = ct
            .mps
            .iter()
            .map(|m| (m.key.as_str(), m.mp.as_str(), m.kind()))
            .collect();
        assert_eq!(
            mps,
            vec![
                ("mp0", "/mnt/x", MountKind::Volume),
                ("mp1", "/data", MountKind::Bind)
            ]
        );
        assert_eq!(ct.nets[0].tag, Some(5));
        assert_eq!(ct.nets[0].ip.as_deref(), Some("dhcp"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse_net(0, "name=eth0,tag=9999").unwrap_err().to_string();
        assert!(err.contains("net0"), "{err}");
    }
}
