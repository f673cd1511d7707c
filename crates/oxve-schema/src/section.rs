//! The section-config grammar of `/etc/pve` files such as `domains.cfg`
//! and `storage.cfg` (upstream's `PVE::SectionConfig`):
//!
//! ```text
//! dir: local
//!     path /var/lib/vz
//!     content iso,vztmpl,backup
//!     disable
//!
//! ```
//!
//! A section starts with `<type>: <id>`, its properties follow as lines
//! indented by white space (a tab when upstream writes them) (`\t<key> <value>`, or a bare `\t<key>` flag),
//! and a blank line ends it. Lines starting with `#` are comments and are
//! skipped, as upstream skips them. Sections and their properties keep the
//! file's order, so that [`SectionConfig::write`] reproduces a file that
//! upstream wrote byte for byte. Interpreting values (types, defaults,
//! which keys a type allows) is the job of the code that owns the file.

use std::fmt;

/// One section: `type: id` and its property lines in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The section type (`dir`, `pam`, `pve`, ...).
    pub ty: String,
    /// The section id (`local`, `pam`, ...).
    pub id: String,
    /// Property lines in order; a flag line (`\tdisable`) has an empty
    /// value. A key may repeat (array properties).
    pub props: Vec<(String, String)>,
}

impl Section {
    /// A section without properties.
    pub fn new(ty: impl Into<String>, id: impl Into<String>) -> Self {
        Section {
            ty: ty.into(),
            id: id.into(),
            props: Vec::new(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.props
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`: replaces the first occurrence (dropping any
    /// further ones) or appends a new line.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.props.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.props[i].1 = value;
                let mut seen = 0;
                self.props.retain(|(k, _)| {
                    if k == key {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.props.push((key.to_string(), value)),
        }
    }

    /// Removes every line of `key`; returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.props.len();
        self.props.retain(|(k, _)| k != key);
        self.props.len() != before
    }
}

/// A problem found while parsing; upstream warns and skips such lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SectionWarning {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong, in upstream's words where it has them.
    pub message: String,
}

/// Errors of [`SectionConfig::write`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// A key or value holds a line break, which the format cannot carry.
    #[error("property '{0}' contains a line feed")]
    LineFeed(String),
    /// A type, id or key is empty or holds white space.
    #[error("invalid section {what} '{value}'")]
    InvalidName {
        /// `type`, `id` or `key`.
        what: &'static str,
        /// The offending text.
        value: String,
    },
}

/// A parsed section-config file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionConfig {
    /// Sections in file order.
    pub sections: Vec<Section>,
    /// Lines that were skipped (not part of `sections`).
    pub warnings: Vec<SectionWarning>,
}

impl SectionConfig {
    /// Parses a file's text. Never fails: malformed lines are skipped and
    /// reported in [`SectionConfig::warnings`], as upstream warns.
    pub fn parse(text: &str) -> SectionConfig {
        let mut cfg = SectionConfig::default();
        let mut current: Option<Section> = None;
        for (i, line) in text.split('\n').enumerate() {
            let lineno = i + 1;
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.is_empty() {
                cfg.sections.extend(current.take());
                continue;
            }
            match current.as_mut() {
                Some(section) => match parse_property(line) {
                    Some(prop) => section.props.push(prop),
                    None => cfg.warnings.push(SectionWarning {
                        line: lineno,
                        message: format!("syntax error: {line}"),
                    }),
                },
                None => match parse_header(line) {
                    Some((ty, id)) => current = Some(Section::new(ty, id)),
                    None => cfg.warnings.push(SectionWarning {
                        line: lineno,
                        message: format!("syntax error - expected header, got: {line}"),
                    }),
                },
            }
        }
        cfg.sections.extend(current);
        cfg
    }

    /// Writes the file as upstream does: each section's header, its
    /// property lines (`\t<key> <value>`, `\t<key>` for an empty value) and
    /// a blank line.
    pub fn write(&self) -> Result<String, SectionError> {
        let mut out = String::new();
        for section in &self.sections {
            check_name("type", &section.ty)?;
            check_name("id", &section.id)?;
            out.push_str(&format!("{}: {}\n", section.ty, section.id));
            for (key, value) in &section.props {
                check_name("key", key)?;
                if value.contains(['\n', '\r']) {
                    return Err(SectionError::LineFeed(key.clone()));
                }
                if value.is_empty() {
                    out.push_str(&format!("\t{key}\n"));
                } else {
                    out.push_str(&format!("\t{key} {value}\n"));
                }
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// The section with `id`.
    pub fn get(&self, id: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.id == id)
    }

    /// The section with `id`, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Section> {
        self.sections.iter_mut().find(|s| s.id == id)
    }

    /// Removes and returns the section with `id`.
    pub fn remove(&mut self, id: &str) -> Option<Section> {
        let i = self.sections.iter().position(|s| s.id == id)?;
        Some(self.sections.remove(i))
    }
}

impl fmt::Display for SectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.write() {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(fmt::Error),
        }
    }
}

/// `^(\S+):\s*(\S+)\s*$`
fn parse_header(line: &str) -> Option<(&str, &str)> {
    let (ty, rest) = line.split_once(':')?;
    let id = rest.trim();
    let valid = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    (valid(ty) && valid(id)).then_some((ty, id))
}

/// `^\s+(\S+)(\s+(.*\S))?\s*$`
fn parse_property(line: &str) -> Option<(String, String)> {
    if !line.starts_with(char::is_whitespace) {
        return None;
    }
    let body = line.trim();
    if body.is_empty() {
        return None;
    }
    match body.split_once(char::is_whitespace) {
        Some((k, v)) => Some((k.to_string(), v.trim_start().to_string())),
        None => Some((body.to_string(), String::new())),
    }
}

fn check_name(what: &'static str, value: &str) -> Result<(), SectionError> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(SectionError::InvalidName {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAINS: &str = "pam: pam\n\tcomment Linux PAM standard authentication\n\n\
                           pve: pve\n\tcomment Proxmox VE authentication server\n\n";

    #[test]
    fn round_trips_domains() {
        let cfg = SectionConfig::parse(DOMAINS);
        assert!(cfg.warnings.is_empty());
        assert_eq!(cfg.sections.len(), 2);
        assert_eq!(cfg.sections[0].ty, "pam");
        assert_eq!(
            cfg.get("pve").and_then(|s| s.get("comment")),
            Some("Proxmox VE authentication server")
        );
        assert_eq!(cfg.write().unwrap(), DOMAINS);
    }

    #[test]
    fn keeps_flags_and_repeated_keys() {
        let text = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\tdisable\n\n\
                    pbs: backup\n\tnamespace a b\n\tuser x\n\tuser y\n\n";
        let cfg = SectionConfig::parse(text);
        let local = cfg.get("local").unwrap();
        assert_eq!(local.get("disable"), Some(""));
        assert_eq!(cfg.get("backup").unwrap().get("namespace"), Some("a b"));
        let users: Vec<&str> = cfg.get("backup").unwrap().get_all("user").collect();
        assert_eq!(users, ["x", "y"]);
        assert_eq!(cfg.write().unwrap(), text);
    }

    #[test]
    fn skips_comments_and_reports_garbage() {
        let text = "# comment\nnot a header\ndir: local\n# inside\n\tpath /x\nbroken\n\n";
        let cfg = SectionConfig::parse(text);
        assert_eq!(cfg.sections.len(), 1);
        assert_eq!(cfg.sections[0].props, [("path".into(), "/x".into())]);
        assert_eq!(cfg.warnings.len(), 2);
        assert_eq!(cfg.warnings[0].line, 2);
    }

    #[test]
    fn edits_and_refuses_line_feeds() {
        let mut cfg = SectionConfig::parse(DOMAINS);
        let pam = cfg.get_mut("pam").unwrap();
        pam.set("tfa", "type=oath");
        pam.set("comment", "PAM");
        assert!(pam.remove("tfa"));
        assert_eq!(
            cfg.write().unwrap(),
            DOMAINS.replace("Linux PAM standard authentication", "PAM")
        );
        cfg.sections[0].set("comment", "a\nb");
        assert_eq!(
            cfg.write().unwrap_err(),
            SectionError::LineFeed("comment".into())
        );
        assert!(cfg.remove("pam").is_some());
        assert_eq!(cfg.sections.len(), 1);
    }

    #[test]
    fn missing_final_blank_line_still_parses() {
        let cfg = SectionConfig::parse("dir: local\n\tpath /var/lib/vz");
        assert_eq!(
            cfg.get("local").and_then(|s| s.get("path")),
            Some("/var/lib/vz")
        );
    }
}
