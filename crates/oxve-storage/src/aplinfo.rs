//! The appliance index (`aplinfo.dat`): the list of container templates a
//! source offers, which `pveam update` downloads, `pveam available` and
//! `GET /nodes/{node}/aplinfo` list, and `pveam download` fetches from.
//!
//! The index is a series of RFC 822-like records separated by empty lines:
//! `Key: value` fields, where a line starting with white space continues
//! the field above it. `Description`'s first line is the appliance's
//! headline and its continuation lines the long description (a line of a
//! single `.` separates paragraphs). As upstream, each record also gets
//! `template` (the file name its `Location` ends in) and `source` (the
//! base URL of its index), and a relative `Location` becomes absolute.
//!
//! Which indexes a node reads is a node setting: [`SOURCES_FILE`] under the
//! node root, one index URL per line, upstream's two sources when absent.
//! Downloaded indexes are kept in [`INDEX_DIR`], one file per source,
//! replaced atomically and only by an index that parses strictly.

use crate::error::{Result, StorageError};
use regex::Regex;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The node's list of index sources, relative to the node root.
pub const SOURCES_FILE: &str = "etc/oxve/aplinfo-sources";

/// Where the node keeps downloaded indexes, relative to the node root.
pub const INDEX_DIR: &str = "var/lib/oxve/apl-info";

/// The sources of a node without a [`SOURCES_FILE`]: upstream's.
pub const DEFAULT_SOURCES: &[&str] = &[
    "http://download.proxmox.com/images/aplinfo-pve-9.dat.gz",
    "https://releases.turnkeylinux.org/pve/aplinfo.dat.gz",
];

/// One appliance of an index: every field of its record under its
/// lower-cased key, plus the derived `headline`, `template` and `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    fields: BTreeMap<String, String>,
}

/// A checksum an index gives for a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha512` or `md5`.
    pub algorithm: &'static str,
    /// Lower-case hex digits.
    pub hex: String,
}

impl Appliance {
    /// A field by its lower-cased key (`package`, `os`, `sha512sum`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// All fields, as `GET /nodes/{node}/aplinfo` returns them.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// The file name the template is stored under.
    pub fn template(&self) -> &str {
        self.get("template").unwrap_or_default()
    }

    pub fn section(&self) -> &str {
        self.get("section").unwrap_or_default()
    }

    /// The absolute URL of the template.
    pub fn location(&self) -> &str {
        self.get("location").unwrap_or_default()
    }

    /// `lxc` or `openvz`.
    pub fn kind(&self) -> &str {
        self.get("type").unwrap_or_default()
    }

    /// The checksum to verify a download with: SHA-512 where the index
    /// gives one, else MD5 — upstream's order of preference.
    pub fn checksum(&self) -> Option<Checksum> {
        [("sha512", "sha512sum"), ("md5", "md5sum")]
            .into_iter()
            .find_map(|(algorithm, key)| {
                self.get(key).map(|hex| Checksum {
                    algorithm,
                    hex: hex.trim().to_ascii_lowercase(),
                })
            })
    }
}

/// What an index holds: its appliances in file order, and the records
/// that were skipped (only when not parsing strictly).
#[derive(Debug, Default)]
pub struct Index {
    pub appliances: Vec<Appliance>,
    pub warnings: Vec<String>,
}

/// Parses index `text` downloaded from the directory `source` (the base
/// of relative `Location`s). Strictly (`pveam update` checking a fresh
/// download) the first bad record fails the whole index; otherwise bad
/// records are skipped with a warning, as upstream reads stored indexes.
pub fn parse(text: &str, source: &str, strict: bool) -> Result<Index> {
    let mut index = Index::default();
    let mut record: Vec<&str> = Vec::new();
    let lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    for line in lines.chain(std::iter::once("")) {
        if !line.is_empty() {
            record.push(line);
            continue;
        }
        if record.is_empty() {
            continue;
        }
        match parse_record(&record, source) {
            Ok(Some(appliance)) => index.appliances.push(appliance),
            Ok(None) => {}
            Err(message) if strict => return Err(StorageError::Other(message)),
            Err(message) => index.warnings.push(message),
        }
        record.clear();
    }
    Ok(index)
}

/// Upstream's version syntax: a digit, then Debian-version characters,
/// optionally `-<release>`.
static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d[a-zA-Z0-9.+\-:~]*(-\d+)?$").expect("static regex"));

/// A location ending in a container template's name (upstream's
/// `VZTMPL_EXT_RE_1`), which becomes the template's file name.
static TEMPLATE_FILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^.*/([^/]+\.(?:tar|tar\.gz|tar\.xz|tar\.zst|tar\.bz2))$")
        .expect("static regex")
});

/// Fields every listed appliance must have.
const REQUIRED: &[&str] = &["package", "type", "os", "version", "infopage"];

/// One record's fields; `None` for upstream's news pseudo-package, which is
/// not an appliance.
fn parse_record(lines: &[&str], source: &str) -> Result<Option<Appliance>, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    // Paragraphs of the long description.
    let mut description: Option<Vec<Vec<&str>>> = None;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let text = line.trim();
            match current.as_deref() {
                None => return Err(format!("unable to parse appliance record: {line}")),
                Some("description") => {
                    let paragraphs = description.get_or_insert_with(Vec::new);
                    if text == "." {
                        paragraphs.push(Vec::new());
                    } else if let Some(last) = paragraphs.last_mut() {
                        last.push(text);
                    } else {
                        paragraphs.push(vec![text]);
                    }
                }
                Some(key) => {
                    if let Some(value) = fields.get_mut(key) {
                        if !text.is_empty() {
                            value.push(' ');
                            value.push_str(text);
                        }
                    }
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("unable to parse appliance record: {line}"));
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("unable to parse appliance record: {line}"));
        }
        let value = value.trim();
        match key.as_str() {
            "description" => {
                fields.insert("headline".into(), value.into());
                description = Some(Vec::new());
            }
            _ if value.is_empty() => {
                return Err(format!("unable to parse appliance record: {line}"));
            }
            "version" if !VERSION.is_match(value) => {
                return Err(format!(
                    "unable to parse appliance record: version = '{value}'"
                ));
            }
            "type" if !matches!(value, "lxc" | "openvz") => {
                return Err(format!(
                    "unable to parse appliance record: unknown type '{value}'"
                ));
            }
            _ => {
                fields.insert(key.clone(), value.into());
            }
        }
        current = Some(key);
    }
    if let Some(paragraphs) = description {
        let text: Vec<String> = paragraphs
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.join(" "))
            .collect();
        fields.insert("description".into(), text.join("\n\n"));
    }
    if fields.get("package").map(String::as_str) == Some("pve-web-news") {
        return Ok(None);
    }
    fields
        .entry("section".into())
        .or_insert_with(|| "unknown".into());
    if REQUIRED.iter().any(|k| !fields.contains_key(*k)) {
        return Err("found incomplete appliance records".into());
    }
    let source = source.trim_end_matches('/');
    let (template, location) = match fields.get("location") {
        Some(location) => {
            let template = TEMPLATE_FILE
                .captures(location)
                .map(|c| c[1].to_string())
                .unwrap_or_else(|| location.clone());
            let location = if is_absolute_url(location) {
                location.clone()
            } else {
                format!("{source}/{location}")
            };
            (template, location)
        }
        None => {
            let os = &fields["os"];
            let arch = fields
                .get("architecture")
                .map(String::as_str)
                .unwrap_or("i386");
            let template = format!(
                "{os}-{}_{}_{arch}.tar.gz",
                fields["package"], fields["version"]
            )
            .replacen(&format!("{os}-{os}-"), &format!("{os}-"), 1);
            let location = format!("{source}/{}/{template}", fields["section"]);
            (template, location)
        }
    };
    fields.insert("location".into(), location);
    fields.insert("template".into(), template);
    fields.insert("source".into(), source.into());
    Ok(Some(Appliance { fields }))
}

/// `scheme://...`, as upstream tells an absolute location from a relative one.
fn is_absolute_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic())
    })
}

/// One index source of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The index's URL; a `.gz` one is decompressed after download.
    pub url: String,
    /// An OpenPGP keyring to verify the index's detached signature
    /// (`<index>.asc`, over the uncompressed index) with; without one the
    /// index is taken unsigned.
    pub keyring: Option<PathBuf>,
}

impl Source {
    /// The directory of the index: the base of relative `Location`s.
    pub fn base_url(&self) -> &str {
        self.url
            .rsplit_once('/')
            .map_or(&self.url, |(base, _)| base)
    }

    /// Whether the index is served gzip-compressed.
    pub fn compressed(&self) -> bool {
        self.url.ends_with(".gz")
    }

    /// Where the detached signature of the uncompressed index is.
    pub fn signature_url(&self) -> String {
        format!("{}.asc", self.url.strip_suffix(".gz").unwrap_or(&self.url))
    }

    /// The file name the index is stored under in [`INDEX_DIR`]: the URL
    /// without scheme and compression suffix, as one safe file name.
    pub fn stored_name(&self) -> String {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        rest.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Parses a sources file: one `<URL> [keyring=<absolute path>]` per line,
/// `#` comments and empty lines ignored.
pub fn parse_sources(text: &str) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |why: String| StorageError::Other(format!("{SOURCES_FILE} line {}: {why}", n + 1));
        let mut words = line.split_whitespace();
        let url = words.next().unwrap_or_default();
        let file = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path.rsplit('/').next().unwrap_or_default());
        if file.is_none_or(str::is_empty) {
            return Err(bad(format!(
                "'{url}' is not the http:// or https:// URL of an index file"
            )));
        }
        let mut source = Source {
            url: url.into(),
            keyring: None,
        };
        for word in words {
            match word.split_once('=') {
                Some(("keyring", path)) if path.starts_with('/') => {
                    source.keyring = Some(PathBuf::from(path));
                }
                Some(("keyring", path)) => {
                    return Err(bad(format!("keyring '{path}' is not an absolute path")));
                }
                _ => return Err(bad(format!("unknown option '{word}'"))),
            }
        }
        if sources
            .iter()
            .any(|s: &Source| s.stored_name() == source.stored_name())
        {
            return Err(bad(format!("'{url}' is listed twice")));
        }
        sources.push(source);
    }
    Ok(sources)
}

/// The node's sources: its [`SOURCES_FILE`], or [`DEFAULT_SOURCES`].
pub fn read_sources(root: &Path) -> Result<Vec<Source>> {
    let path = root.join(SOURCES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_sources(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DEFAULT_SOURCES
            .iter()
            .map(|url| Source {
                url: (*url).into(),
                keyring: None,
            })
            .collect()),
        Err(e) => Err(StorageError::io(
            format!("unable to read '{}'", path.display()),
            e,
        )),
    }
}

/// Where the downloaded index of `source` is kept.
pub fn index_path(root: &Path, source: &Source) -> PathBuf {
    root.join(INDEX_DIR).join(source.stored_name())
}

/// Every appliance the node's stored indexes offer, by template name (a
/// later source wins), and warnings about records or files skipped. A
/// source not downloaded yet is left out quietly.
pub fn load(root: &Path) -> Result<(BTreeMap<String, Appliance>, Vec<String>)> {
    let mut all = BTreeMap::new();
    let mut warnings = Vec::new();
    for source in read_sources(root)? {
        let path = index_path(root, &source);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("unable to open file '{}' - {e}", path.display()));
                continue;
            }
        };
        let index = parse(&text, source.base_url(), false)?;
        warnings.extend(
            index
                .warnings
                .into_iter()
                .map(|w| format!("{}: {w}", path.display())),
        );
        for appliance in index.appliances {
            all.insert(appliance.template().to_string(), appliance);
        }
    }
    Ok((all, warnings))
}

/// Checks a freshly downloaded index strictly and stores it for `source`,
/// replacing the previous one atomically. Returns how many appliances it
/// lists.
pub fn store(root: &Path, source: &Source, text: &str) -> Result<usize> {
    let count = parse(text, source.base_url(), true)?.appliances.len();
    let dir = root.join(INDEX_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| StorageError::io(format!("unable to create '{}'", dir.display()), e))?;
    let target = index_path(root, source);
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        source.stored_name(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StorageError::io(
            format!("unable to store '{}'", target.display()),
            e,
        ));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index in the shape of the published ones: a news record, system
    /// templates with relative locations, one with an absolute location and
    /// a paragraph break, one without a location.
    const INDEX: &str = "\
Package: pve-web-news
Version: 1.0
Type: lxc
Description: news
 Nothing new today.

Package: alpine-3.21-default
Version: 20250108
Type: lxc
OS: alpine
Section: system
Maintainer: Template Team <templates@example.org>
Architecture: amd64
Location: system/alpine-3.21-default_20250108_amd64.tar.xz
md5sum: 0123456789ABCDEF0123456789abcdef
sha512sum: AA11bb22
Infopage: https://alpinelinux.example.org
Description: Alpine Linux 3.21
 A security-oriented, lightweight Linux distribution.

Package: debian-13-standard
Version: 13.1-2
Type: lxc
OS: debian-13
Section: system
Maintainer: Template Team <templates@example.org>
Architecture: amd64
Location: system/debian-13-standard_13.1-2_amd64.tar.zst
md5sum: ffeeddccbbaa99887766554433221100
Infopage: https://www.debian.example.org
Description: Debian 13 (standard)
 A small Debian system
 with the usual tools.

Package: mailserver
Version: 18.0-1
Type: lxc
OS: debian-12
Section: turnkeylinux
Certified: yes
Architecture: amd64
Location: https://mirror.example.org/images/debian-12-turnkey-mailserver_18.0-1_amd64.tar.gz
Infopage: https://www.example.org/mailserver
ManageUrl: https://__IPADDRESS__:12321/
sha512sum: 00ff
Description: Mail Server
 A mail server with webmail.
 .
 Includes spam filtering.

Package: busybox-tiny
Version: 1.36-1
Type: openvz
OS: busybox
Section: system
Infopage: https://busybox.example.org
Description: BusyBox
";

    fn parsed() -> Vec<Appliance> {
        let index = parse(INDEX, "http://dl.example.org/images/", true).unwrap();
        assert!(index.warnings.is_empty());
        index.appliances
    }

    #[test]
    fn fields_of_a_record() {
        let all = parsed();
        assert_eq!(all.len(), 4, "the news record is not an appliance");
        let alpine = &all[0];
        assert_eq!(alpine.get("package"), Some("alpine-3.21-default"));
        assert_eq!(alpine.get("os"), Some("alpine"));
        assert_eq!(
            alpine.get("maintainer"),
            Some("Template Team <templates@example.org>")
        );
        assert_eq!(alpine.get("headline"), Some("Alpine Linux 3.21"));
        assert_eq!(
            alpine.get("description"),
            Some("A security-oriented, lightweight Linux distribution.")
        );
        assert_eq!(
            alpine.template(),
            "alpine-3.21-default_20250108_amd64.tar.xz"
        );
        assert_eq!(
            alpine.location(),
            "http://dl.example.org/images/system/alpine-3.21-default_20250108_amd64.tar.xz"
        );
        assert_eq!(alpine.get("source"), Some("http://dl.example.org/images"));
        assert_eq!(alpine.kind(), "lxc");
        assert_eq!(
            alpine.checksum(),
            Some(Checksum {
                algorithm: "sha512",
                hex: "aa11bb22".into()
            })
        );
    }

    #[test]
    fn continuation_and_paragraphs() {
        let all = parsed();
        assert_eq!(
            all[1].get("description"),
            Some("A small Debian system with the usual tools.")
        );
        assert_eq!(
            all[1].checksum(),
            Some(Checksum {
                algorithm: "md5",
                hex: "ffeeddccbbaa99887766554433221100".into()
            })
        );
        let mail = &all[2];
        assert_eq!(
            mail.get("description"),
            Some("A mail server with webmail.\n\nIncludes spam filtering.")
        );
        assert_eq!(mail.get("manageurl"), Some("https://__IPADDRESS__:12321/"));
        assert_eq!(mail.get("certified"), Some("yes"));
        assert_eq!(mail.section(), "turnkeylinux");
        assert_eq!(
            mail.template(),
            "debian-12-turnkey-mailserver_18.0-1_amd64.tar.gz"
        );
        assert!(mail
            .location()
            .starts_with("https://mirror.example.org/images/"));
    }

    #[test]
    fn template_name_without_location() {
        let busybox = &parsed()[3];
        assert_eq!(
            busybox.template(),
            "busybox-tiny_1.36-1_i386.tar.gz",
            "os-os- collapses"
        );
        assert_eq!(
            busybox.location(),
            "http://dl.example.org/images/system/busybox-tiny_1.36-1_i386.tar.gz"
        );
        assert_eq!(busybox.get("description"), Some(""));
        assert_eq!(busybox.checksum(), None);
    }

    #[test]
    fn crlf_and_extra_blank_lines() {
        let text = INDEX
            .replace('\n', "\r\n")
            .replace("\r\n\r\n", "\r\n\r\n\r\n");
        let index = parse(&text, "http://dl.example.org/images", true).unwrap();
        assert_eq!(index.appliances, parsed());
    }

    #[test]
    fn bad_records_fail_strictly_and_are_skipped_otherwise() {
        let cases = [
            ("Version: v1", "version = 'v1'"),
            ("Type: qemu", "unknown type 'qemu'"),
            (
                "no colon here",
                "unable to parse appliance record: no colon here",
            ),
            (
                "Maintainer:",
                "unable to parse appliance record: Maintainer:",
            ),
        ];
        for (line, message) in cases {
            let text = format!(
                "Package: a\nVersion: 1.0\nType: lxc\nOS: debian-12\nInfopage: x\n{line}\n\n\
                 Package: b\nVersion: 2.0\nType: lxc\nOS: debian-12\nInfopage: y\n"
            );
            let err = parse(&text, "http://h", true).unwrap_err().to_string();
            assert!(err.contains(message), "{line}: {err}");
            let lenient = parse(&text, "http://h", false).unwrap();
            assert_eq!(lenient.appliances.len(), 1, "{line}");
            assert_eq!(lenient.appliances[0].get("package"), Some("b"));
            assert_eq!(lenient.warnings.len(), 1);
        }
        let err = parse("Package: a\nVersion: 1.0\nType: lxc\n", "http://h", true).unwrap_err();
        assert_eq!(err.to_string(), "found incomplete appliance records");
        let err = parse(" leading\n", "http://h", true).unwrap_err();
        assert!(err.to_string().contains("unable to parse"), "{err}");
    }

    #[test]
    fn sources_file() {
        let text = "# sources\n\nhttp://127.0.0.1:8080/idx/aplinfo.dat.gz\n\
                    https://h.example.org/pve/aplinfo.dat keyring=/etc/oxve/keys.gpg # signed\n";
        let sources = parse_sources(text).unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].base_url(), "http://127.0.0.1:8080/idx");
        assert!(sources[0].compressed());
        assert_eq!(
            sources[0].signature_url(),
            "http://127.0.0.1:8080/idx/aplinfo.dat.asc"
        );
        assert_eq!(sources[0].stored_name(), "127.0.0.1_8080_idx_aplinfo.dat");
        assert_eq!(
            sources[1].keyring.as_deref(),
            Some(Path::new("/etc/oxve/keys.gpg"))
        );
        assert!(!sources[1].compressed());
        for bad in [
            "ftp://h/aplinfo.dat",
            "http://h/",
            "http://h",
            "http://h/a.dat keyring=rel.gpg",
            "http://h/a.dat proxy=x",
            "http://h/a.dat\nhttp://h/a.dat.gz",
        ] {
            let err = parse_sources(bad).unwrap_err().to_string();
            assert!(err.starts_with(SOURCES_FILE), "{bad}: {err}");
        }
        assert_eq!(DEFAULT_SOURCES.len(), 2);
    }

    #[test]
    fn store_replaces_only_with_a_valid_index() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read_sources(root.path()).unwrap().len(), 2, "defaults");
        std::fs::create_dir_all(root.path().join("etc/oxve")).unwrap();
        std::fs::write(
            root.path().join(SOURCES_FILE),
            "http://dl.example.org/images/aplinfo.dat.gz\n",
        )
        .unwrap();
        let source = &read_sources(root.path()).unwrap()[0];
        assert!(
            load(root.path()).unwrap().0.is_empty(),
            "not downloaded yet"
        );
        assert_eq!(store(root.path(), source, INDEX).unwrap(), 4);
        let err = store(root.path(), source, "Package: x\n").unwrap_err();
        assert_eq!(err.to_string(), "found incomplete appliance records");
        let (all, warnings) = load(root.path()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            [
                "alpine-3.21-default_20250108_amd64.tar.xz",
                "busybox-tiny_1.36-1_i386.tar.gz",
                "debian-12-turnkey-mailserver_18.0-1_amd64.tar.gz",
                "debian-13-standard_13.1-2_amd64.tar.zst",
            ]
        );
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join(INDEX_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["dl.example.org_images_aplinfo.dat"]);
    }
}
