//! VM configs: the text of `/etc/pve/qemu-server/<vmid>.conf`.
//!
//! A config is a main section, an optional `[PENDING]` section (pending
//! values plus the `delete:` list), the special sections `[special:cloudinit]`
//! and `[special:fleecing]`, and one section per snapshot (`[name]`). Each
//! section holds a description (its `#` comment lines, percent-encoded as
//! upstream) and `key: value` options.
//!
//! Parsing follows upstream's `parse_vm_config`: every value passes its
//! *type* check (type and format, not ranges, enumerations or patterns) and
//! is normalized as upstream normalizes it (`on` → `1`, `007` → `7`, quotes
//! around format-less strings dropped, `cdrom` renamed `ide2`). Problems are errors when parsing strictly; otherwise they
//! are warnings and their lines are skipped. Messages are upstream's,
//! prefixed `vm <vmid> - `.
//!
//! Writing is canonical as upstream's writer: description, options sorted
//! by key, then `[PENDING]`, the special sections and the snapshots, each
//! sorted by name — so a file upstream wrote round-trips byte for byte.
//! Checking values against the full option schema (ranges, enumerations,
//! patterns) is [`validate_section`]'s job.

use crate::ctconfig::ConfigProblem;
use crate::{format, propstring};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// One section of a VM config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmSection {
    /// The description (comment lines joined with `\n`), trailing white
    /// space removed as upstream stores it; empty when there is none.
    pub description: String,
    /// `key: value` options (in `[PENDING]` also `delete`, in snapshots
    /// also `snapstate`).
    pub props: BTreeMap<String, String>,
}

/// A whole VM config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmConfig {
    /// The current configuration.
    pub main: VmSection,
    /// `[PENDING]`; empty when nothing is pending.
    pub pending: VmSection,
    /// Snapshot sections by name.
    pub snapshots: BTreeMap<String, VmSection>,
    /// `[special:<name>]` sections (`cloudinit`, `fleecing`) by name.
    pub special: BTreeMap<String, VmSection>,
}

/// The special sections upstream knows.
pub const SPECIAL_SECTIONS: &[&str] = &["cloudinit", "fleecing"];

/// Characters of a description line that upstream percent-encodes: control
/// characters, `%`, `:` and everything beyond ASCII.
const DESCRIPTION_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b':');

/// Where the parser is: which section the lines belong to.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Main,
    Pending,
    Special(String),
    Snapshot(String),
    /// An unknown section: its lines are skipped.
    Skipped,
}

impl VmConfig {
    /// Parses a config text of VM `vmid`. With `strict`, the first problem
    /// is an error; otherwise problems come back as warnings and their lines
    /// (or sections) are skipped. Messages are upstream's texts without
    /// their final newline.
    pub fn parse(
        vmid: u32,
        text: &str,
        strict: bool,
    ) -> Result<(VmConfig, Vec<ConfigProblem>), ConfigProblem> {
        let mut conf = VmConfig::default();
        let mut warnings = Vec::new();
        let mut problem = |msg: String| -> Result<(), ConfigProblem> {
            let msg = format!("vm {vmid} - {}", msg.strip_suffix('\n').unwrap_or(&msg));
            if strict {
                Err(ConfigProblem(msg))
            } else {
                warnings.push(ConfigProblem(msg));
                Ok(())
            }
        };
        let mut place = Place::Main;
        let mut seen_pending = false;
        // The options of the section being read, and its description so far.
        let mut current = VmSection::default();
        let mut descr: Option<String> = None;

        for line in text.split('\n') {
            if line.chars().all(is_perl_space) {
                continue;
            }
            if let Some(header) = section_header(line) {
                conf.store(&place, std::mem::take(&mut current), descr.take());
                place = match header {
                    Header::Pending => {
                        if std::mem::replace(&mut seen_pending, true) {
                            problem("duplicate section: pending\n".into())?;
                        }
                        Place::Pending
                    }
                    Header::Special(name) => {
                        if conf.special.contains_key(name) {
                            problem(format!("duplicate special section: {name}\n"))?;
                        }
                        Place::Special(name.to_string())
                    }
                    Header::Snapshot(name) => {
                        if conf.snapshots.contains_key(name) {
                            problem(format!("duplicate snapshot section: {name}\n"))?;
                        }
                        Place::Snapshot(name.to_string())
                    }
                    Header::Unknown(name) => {
                        problem(format!("skipping unknown section: '{name}'\n"))?;
                        Place::Skipped
                    }
                };
                // A later duplicate replaces the earlier section.
                conf.store(&place, VmSection::default(), None);
                continue;
            }
            if place == Place::Skipped {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let d = descr.get_or_insert_with(String::new);
                d.push_str(&decode_text(comment));
                d.push('\n');
                continue;
            }
            match classify_line(line) {
                Line::Description(text) => {
                    descr
                        .get_or_insert_with(String::new)
                        .push_str(&decode_text(text));
                }
                Line::Snapstate(state) => {
                    current.props.insert("snapstate".into(), state.into());
                }
                Line::Args(value) => {
                    current.props.insert("args".into(), value.into());
                }
                Line::Delete(value) => {
                    if place == Place::Pending {
                        current.props.insert("delete".into(), value.into());
                    } else {
                        problem("property 'delete' is only allowed in [PENDING]\n".into())?;
                    }
                }
                Line::Option(key, value) => {
                    if place == Place::Special("cloudinit".into()) {
                        // Informative only: upstream does not check it.
                        current.props.insert(key.into(), value.into());
                        continue;
                    }
                    let schema = match &place {
                        Place::Special(name) if name == "fleecing" => &*FLEECING_SCHEMA,
                        _ => &*CONFDESC,
                    };
                    match check_type(schema, key, value) {
                        Err(e) => problem(format!("unable to parse value of '{key}' - {e}"))?,
                        Ok(value) => {
                            // `cdrom` is an old alias of `ide2`. (Upstream's
                            // drive-path rewrite after this never applies: the
                            // drive formats it tests for are not names.)
                            let key = if key == "cdrom" { "ide2" } else { key };
                            current.props.insert(key.into(), value);
                        }
                    }
                }
                Line::Bad => problem(format!("unable to parse config: {line}\n"))?,
            }
        }
        conf.store(&place, current, descr);
        // Upstream drops a `snapstate` of the main section.
        conf.main.props.remove("snapstate");
        Ok((conf, warnings))
    }

    /// Puts a parsed section in its place; the description gets upstream's
    /// trim of trailing white space.
    fn store(&mut self, place: &Place, mut section: VmSection, descr: Option<String>) {
        if let Some(d) = descr {
            section.description = d.trim_end_matches(is_perl_space).to_string();
        }
        match place {
            Place::Main => self.main = section,
            Place::Pending => self.pending = section,
            Place::Special(name) => {
                self.special.insert(name.clone(), section);
            }
            Place::Snapshot(name) => {
                self.snapshots.insert(name.clone(), section);
            }
            Place::Skipped => {}
        }
    }

    /// What upstream's writer does to a config before writing it: drops
    /// `snapstate` of the main section, turns `cdrom` into `ide2` and the
    /// old `smp` into `sockets`, type-checks and normalizes every option of
    /// the main, pending and snapshot sections, and drops `unused<n>`
    /// entries whose volume a drive uses again. Fails with upstream's
    /// message on a value that does not pass.
    pub fn prepare_write(&mut self) -> Result<(), ConfigProblem> {
        let main = &mut self.main.props;
        main.remove("snapstate");
        if let Some(cdrom) = main.remove("cdrom") {
            if main.contains_key("ide2") {
                return Err(ConfigProblem("option ide2 conflicts with cdrom".into()));
            }
            main.insert("ide2".into(), cdrom);
        }
        if main.contains_key("sockets") {
            main.remove("smp");
        } else if let Some(smp) = main.remove("smp") {
            main.insert("sockets".into(), smp);
            main.remove("cores");
        }
        check_for_write(&mut self.main, false)?;
        check_for_write(&mut self.pending, true)?;
        for (name, snap) in &mut self.snapshots {
            if name.eq_ignore_ascii_case("pending") {
                return Err(ConfigProblem(format!(
                    "internal error: snapshot name '{name}' is forbidden"
                )));
            }
            check_for_write(snap, false)?;
        }
        let used: Vec<String> = self
            .main
            .props
            .iter()
            .filter(|(k, _)| is_drive_key(k))
            .filter_map(|(_, v)| drive_file(v).map(str::to_string))
            .collect();
        self.main
            .props
            .retain(|k, v| !(k.starts_with("unused") && used.contains(v)));
        Ok(())
    }

    /// The config text, canonical as upstream writes it.
    pub fn write(&self) -> String {
        let mut out = self.main.write();
        if !self.pending.is_empty() {
            out.push_str("\n[PENDING]\n");
            out.push_str(&self.pending.write());
        }
        for (name, section) in &self.special {
            if name == "cloudinit" && self.cloudinit_drive().is_none() {
                continue;
            }
            out.push_str(&format!("\n[special:{name}]\n"));
            out.push_str(&section.write());
        }
        for (name, snap) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            out.push_str(&snap.write());
        }
        out
    }

    /// The drive key of the main section's cloud-init drive, if any.
    pub fn cloudinit_drive(&self) -> Option<&str> {
        static CLOUDINIT: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
            regex::Regex::new(r"[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow|qcow2|qed|vmdk|cloop))?$")
                .ok()
        });
        let re = CLOUDINIT.as_ref()?;
        self.main
            .props
            .iter()
            .filter(|(k, _)| is_drive_key(k))
            .find(|(_, v)| drive_file(v).is_some_and(|f| re.is_match(f)))
            .map(|(k, _)| k.as_str())
    }

    /// The pending deletions: option name → whether it is forced (written
    /// `!name`), as upstream reads the `delete` list of `[PENDING]`.
    pub fn pending_deletes(&self) -> BTreeMap<String, bool> {
        parse_pending_delete(self.pending.get("delete").unwrap_or(""))
    }

    /// Marks `key` for deletion when the pending changes are applied.
    pub fn add_pending_delete(&mut self, key: &str, force: bool) {
        let mut deletes = self.pending_deletes();
        deletes.insert(key.to_string(), force);
        self.set_pending_deletes(&deletes);
    }

    /// Removes `key` from the pending deletions.
    pub fn remove_pending_delete(&mut self, key: &str) {
        let mut deletes = self.pending_deletes();
        if deletes.remove(key).is_some() {
            self.set_pending_deletes(&deletes);
        }
    }

    fn set_pending_deletes(&mut self, deletes: &BTreeMap<String, bool>) {
        if deletes.is_empty() {
            self.pending.props.remove("delete");
        } else {
            let list: Vec<String> = deletes
                .iter()
                .map(|(k, force)| if *force { format!("!{k}") } else { k.clone() })
                .collect();
            self.pending.props.insert("delete".into(), list.join(","));
        }
    }
}

impl VmSection {
    /// Whether the section holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.description.is_empty() && self.props.is_empty()
    }

    /// One option's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The section's text (without its header).
    pub fn write(&self) -> String {
        let mut out = String::new();
        // Perl's split drops trailing empty fields; there are none after
        // the trim upstream applies, but a caller may have set some.
        let descr = self.description.trim_end_matches('\n');
        if !descr.is_empty() {
            for line in descr.split('\n') {
                out.push('#');
                out.push_str(&utf8_percent_encode(line, DESCRIPTION_UNSAFE).to_string());
                out.push('\n');
            }
        }
        for (key, value) in &self.props {
            out.push_str(&format!("{key}: {value}\n"));
        }
        out
    }

    /// The options as a JSON object (description included), the shape of
    /// `GET /nodes/{node}/qemu/{vmid}/config`: integer and boolean options
    /// as JSON numbers, everything else as text.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in &self.props {
            out.insert(key.clone(), typed(key, value));
        }
        if !self.description.is_empty() {
            out.insert(
                "description".into(),
                Value::String(self.description.clone()),
            );
        }
        out
    }
}

/// The writer's check of one section (see [`VmConfig::prepare_write`]).
fn check_for_write(section: &mut VmSection, pending: bool) -> Result<(), ConfigProblem> {
    for (key, value) in section.props.iter_mut() {
        match key.as_str() {
            "snapstate" | "digest" => continue,
            "delete" if pending => continue,
            // Upstream's message has this spelling.
            "delete" => {
                return Err(ConfigProblem(
                    "propertry 'delete' is only allowed in [PENDING]".into(),
                ))
            }
            _ => {}
        }
        *value = check_type(&CONFDESC, key, value).map_err(|e| {
            ConfigProblem(format!(
                "unable to parse value of '{key}' - {}",
                e.trim_end_matches('\n')
            ))
        })?;
    }
    Ok(())
}

/// Upstream's reading of a `delete` list: entries split on `,`, `;` and
/// white space, a leading `!` marks a forced deletion; the last mention of
/// a key wins.
pub fn parse_pending_delete(list: &str) -> BTreeMap<String, bool> {
    list.split(|c: char| c == ',' || c == ';' || is_perl_space(c))
        .filter(|e| !e.is_empty())
        .map(|e| match e.strip_prefix('!') {
            Some(key) => (key.to_string(), true),
            None => (e.to_string(), false),
        })
        .collect()
}

/// Checks a section's options against the full VM option schema (the
/// option properties of `GET /nodes/{node}/qemu/{vmid}/config`: every key
/// a config may hold, with ranges, enumerations and patterns). Returns
/// per-key errors. `delete`, `snapstate` and `digest` are not options.
pub fn validate_section(section: &VmSection) -> Result<(), crate::validate::ParamErrors> {
    let mut input = Map::new();
    for (key, value) in &section.props {
        if matches!(key.as_str(), "delete" | "snapstate" | "digest") {
            continue;
        }
        input.insert(key.clone(), Value::String(value.clone()));
    }
    crate::validate::validate_params(&VALIDATION_SCHEMA, &input).map(|_| ())
}

/// [`CONFDESC`] as an object schema for [`validate_section`].
static VALIDATION_SCHEMA: LazyLock<Value> = LazyLock::new(
    || serde_json::json!({"additionalProperties": 0, "properties": Value::Object(CONFDESC.clone())}),
);

/// Upstream's option schema (`$confdesc`): the properties of the VM config
/// as `GET /nodes/{node}/qemu/{vmid}/config` returns them, without the
/// `digest` that the API adds.
static CONFDESC: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let mut props = crate::api::ApiSchema::embedded()
        .method(crate::api::Verb::Get, "/nodes/{node}/qemu/{vmid}/config")
        .and_then(|m| m.returns.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    props.remove("digest");
    props
});

/// The schema of `[special:fleecing]`.
static FLEECING_SCHEMA: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let mut m = Map::new();
    m.insert(
        "fleecing-images".into(),
        serde_json::json!({"type": "string", "format": "pve-volume-id-list", "optional": 1}),
    );
    m
});

/// The schema of option `key`: a plain entry, or an indexed one
/// (`net[n]`) within upstream's limits.
fn option_schema<'a>(schema: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(s) = schema.get(key) {
        return Some(s);
    }
    let digits_at = key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (name, index) = key.split_at(digits_at);
    let index: u32 = index.parse().ok()?;
    if index.to_string() != key[digits_at..] {
        return None;
    }
    let (_, max) = crate::validate::INDEXED_LIMITS
        .iter()
        .find(|(n, _)| *n == name)?;
    (index < *max)
        .then(|| schema.get(&format!("{name}[n]")))
        .flatten()
}

/// Upstream's `check_type`: the value's type and format, normalized.
/// Errors end with a newline as upstream's do.
fn check_type(schema: &Map<String, Value>, key: &str, value: &str) -> Result<String, String> {
    let Some(prop) = option_schema(schema, key) else {
        return Err(format!("unknown setting '{key}'\n"));
    };
    if value.contains(['\n', '\r']) {
        return Err("property contains a line feed\n".into());
    }
    let ty = prop.get("type").and_then(Value::as_str).unwrap_or("");
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match ty {
        "boolean" => match value.to_ascii_lowercase().as_str() {
            "1" | "on" | "yes" | "true" => Ok("1".into()),
            "0" | "off" | "no" | "false" => Ok("0".into()),
            _ => Err(format!("type check ('boolean') failed - got '{value}'\n")),
        },
        "integer" if all_digits(value) => Ok(match value.parse::<u64>() {
            Ok(n) => n.to_string(),
            Err(_) => value.to_string(),
        }),
        "integer" => Err(format!("type check ('integer') failed - got '{value}'\n")),
        "number" => {
            let (int, frac) = value.split_once('.').unwrap_or((value, "1"));
            if all_digits(int) && all_digits(frac) {
                Ok(value.to_string())
            } else {
                Err(format!("type check ('number') failed - got '{value}'\n"))
            }
        }
        "string" => {
            let checked = match prop.get("format") {
                Some(Value::String(name)) => format::check_format(name, value).map(|_| ()),
                Some(Value::Object(sub)) => propstring::parse(sub, value).map(|_| ()),
                _ => {
                    let unquoted = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    return Ok(unquoted.to_string());
                }
            };
            checked.map(|()| value.to_string()).map_err(|e| {
                if e.ends_with('\n') {
                    e
                } else {
                    e + "\n"
                }
            })
        }
        _ => Err("internal error".into()),
    }
}

/// Whether `key` is a drive option (the ones upstream's `foreach_volume`
/// visits: `ide0`, `scsi1`, `virtio2`, `sata3`, `efidisk0`, `tpmstate0`).
pub fn is_drive_key(key: &str) -> bool {
    let name = key.trim_end_matches(|c: char| c.is_ascii_digit());
    (name.len() < key.len() && matches!(name, "ide" | "scsi" | "virtio" | "sata"))
        || key == "efidisk0"
        || key == "tpmstate0"
}

/// The `file` of a drive property string: the value without a key, or
/// `file=`/`volume=`.
pub fn drive_file(value: &str) -> Option<&str> {
    value
        .split(',')
        .find_map(|part| match part.split_once('=') {
            None => Some(part),
            Some(("file" | "volume", f)) => Some(f),
            Some(_) => None,
        })
}

/// A section header line.
enum Header<'a> {
    Pending,
    Special(&'a str),
    Snapshot(&'a str),
    Unknown(&'a str),
}

fn section_header(line: &str) -> Option<Header<'_>> {
    let inner = line
        .trim_end_matches(is_perl_space)
        .strip_prefix('[')?
        .strip_suffix(']')?;
    if inner.contains(']') {
        return None;
    }
    if inner.eq_ignore_ascii_case("pending") {
        return Some(Header::Pending);
    }
    if let Some(name) = inner
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("special:"))
        .map(|_| &inner[8..])
    {
        if SPECIAL_SECTIONS.contains(&name) {
            return Some(Header::Special(name));
        }
    }
    let mut chars = inner.chars();
    let snapshot = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && inner.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    Some(if snapshot {
        Header::Snapshot(inner)
    } else {
        Header::Unknown(inner)
    })
}

/// The kinds of lines within a section, as upstream tells them apart (in
/// its order: `description`, `snapstate`, `args`, `delete`, any option).
enum Line<'a> {
    Description(&'a str),
    Snapstate(&'a str),
    Args(&'a str),
    Delete(&'a str),
    Option(&'a str, &'a str),
    Bad,
}

fn classify_line(line: &str) -> Line<'_> {
    let trimmed = line.trim_end_matches(is_perl_space);
    if let Some(rest) = line.strip_prefix("description:") {
        let value = rest.trim_matches(is_perl_space);
        if !value.is_empty() {
            return Line::Description(value);
        }
    }
    // Upstream's snapstate pattern is not anchored at the line start.
    for state in ["prepare", "delete"] {
        if let Some(head) = trimmed.strip_suffix(state) {
            if head.trim_end_matches(is_perl_space).ends_with("snapstate:") {
                return Line::Snapstate(state);
            }
        }
    }
    for (prefix, kind) in [("args:", 0), ("delete:", 1)] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let value = rest.trim_matches(is_perl_space);
            if !value.is_empty() {
                return if kind == 0 {
                    Line::Args(value)
                } else {
                    Line::Delete(value)
                };
            }
        }
    }
    let Some((key, rest)) = line.split_once(':') else {
        return Line::Bad;
    };
    let letters = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let valid_key = letters.starts_with(|c: char| c.is_ascii_lowercase())
        && letters
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-');
    if !valid_key || rest.is_empty() {
        return Line::Bad;
    }
    let value = rest.trim_matches(is_perl_space);
    if !value.is_empty() {
        return Line::Option(key, value);
    }
    // All white space: Perl's `\s*(.+?)\s*$` leaves the last character.
    let last = rest.len() - rest.chars().next_back().map_or(0, char::len_utf8);
    Line::Option(key, &rest[last..])
}

/// Perl's `\s` on ASCII text.
fn is_perl_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn decode_text(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Integer and boolean options, which the API returns as JSON numbers.
fn typed(key: &str, value: &str) -> Value {
    let ty = option_schema(&CONFDESC, key)
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    if matches!(ty, Some("integer" | "boolean")) {
        if let Ok(i) = value.parse::<i64>() {
            return Value::from(i);
        }
    }
    Value::String(value.to_string())
}

#[cfg(test)]
#[path = "vmconfig_tests.rs"]
mod tests;
