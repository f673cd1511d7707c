//! Container configs: the text of `/etc/pve/lxc/<vmid>.conf`.
//!
//! A config is a main section, an optional `[pve:pending]` section and one
//! section per snapshot (`[name]`). Each section holds a description (the
//! `#` comment lines at its top, percent-encoded as upstream), `key: value`
//! options, `lxc.environment.runtime` variables and raw `lxc.*` keys in
//! file order. Writing is canonical as upstream's writer: description,
//! options sorted by key, environment, raw keys, then pending and the
//! snapshots sorted by name — so a file upstream wrote round-trips byte for
//! byte. Values stay text here; checking them against the schema is
//! [`validate_section`]'s job.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One section of a CT config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtSection {
    /// The description (comment lines), lines joined with `\n`, with a final
    /// `\n` per line as upstream keeps it; empty when there is none.
    pub description: String,
    /// `key: value` options.
    pub props: BTreeMap<String, String>,
    /// `lxc.environment.runtime` variables (`NAME=value`), in order.
    pub env: Vec<String>,
    /// Raw `lxc.*` keys, in file order.
    pub lxc: Vec<(String, String)>,
}

/// A whole CT config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtConfig {
    pub main: CtSection,
    /// `[pve:pending]`; empty when nothing is pending.
    pub pending: CtSection,
    pub snapshots: BTreeMap<String, CtSection>,
}

/// A problem in a config text: fatal when parsing strictly, a warning
/// otherwise (as upstream, which warns and skips the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem(pub String);

/// Raw `lxc.*` keys upstream accepts, and the ones it refuses with a reason.
const LXC_KEYS: &[&str] = &[
    "lxc.apparmor.profile",
    "lxc.apparmor.allow_incomplete",
    "lxc.apparmor.allow_nesting",
    "lxc.apparmor.raw",
    "lxc.selinux.context",
    "lxc.include",
    "lxc.arch",
    "lxc.uts.name",
    "lxc.signal.halt",
    "lxc.signal.reboot",
    "lxc.signal.stop",
    "lxc.init.cmd",
    "lxc.init.cwd",
    "lxc.init.uid",
    "lxc.init.gid",
    "lxc.init.groups",
    "lxc.pty.max",
    "lxc.console.logfile",
    "lxc.console.path",
    "lxc.tty.max",
    "lxc.devtty.dir",
    "lxc.hook.autodev",
    "lxc.autodev",
    "lxc.kmsg",
    "lxc.mount.fstab",
    "lxc.mount.entry",
    "lxc.mount.auto",
    "lxc.rootfs.mount",
    "lxc.cap.drop",
    "lxc.cap.keep",
    "lxc.seccomp.profile",
    "lxc.seccomp.notify.proxy",
    "lxc.seccomp.notify.cookie",
    "lxc.idmap",
    "lxc.hook.pre-start",
    "lxc.hook.pre-mount",
    "lxc.hook.mount",
    "lxc.hook.start",
    "lxc.hook.stop",
    "lxc.hook.post-stop",
    "lxc.hook.clone",
    "lxc.hook.destroy",
    "lxc.hook.version",
    "lxc.log.level",
    "lxc.log.file",
    "lxc.start.auto",
    "lxc.start.delay",
    "lxc.start.order",
    "lxc.group",
    "lxc.environment",
    "lxc.environment.runtime",
    "lxc.environment.hooks",
    "lxc.sysctl.fs.mqueue",
    "lxc.sysctl.kernel.msgmax",
    "lxc.sysctl.kernel.msgmnb",
    "lxc.sysctl.kernel.msgmni",
    "lxc.sysctl.kernel.sem",
    "lxc.sysctl.kernel.shmall",
    "lxc.sysctl.kernel.shmmax",
    "lxc.sysctl.kernel.shmmni",
    "lxc.sysctl.kernel.shm_rmid_forced",
];

/// Keys from before LXC 3.0 that upstream still accepts (with a warning).
const DEPRECATED_LXC_KEYS: &[&str] = &[
    "lxc.aa_profile",
    "lxc.aa_allow_incomplete",
    "lxc.console",
    "lxc.devttydir",
    "lxc.haltsignal",
    "lxc.rebootsignal",
    "lxc.stopsignal",
    "lxc.id_map",
    "lxc.init_cmd",
    "lxc.loglevel",
    "lxc.logfile",
    "lxc.mount",
    "lxc.network.type",
    "lxc.network.flags",
    "lxc.network.link",
    "lxc.network.mtu",
    "lxc.network.name",
    "lxc.network.hwaddr",
    "lxc.network.ipv4",
    "lxc.network.ipv4.gateway",
    "lxc.network.ipv6",
    "lxc.network.ipv6.gateway",
    "lxc.network.script.up",
    "lxc.network.script.down",
    "lxc.pts",
    "lxc.se_context",
    "lxc.seccomp",
    "lxc.tty",
    "lxc.utsname",
];

/// Whether a raw `lxc.*` key may appear in a CT config; `Err` says why not.
pub fn check_lxc_key(key: &str) -> Result<(), String> {
    match key {
        "lxc.rootfs.path" => Err("lxc.rootfs.path is auto generated from rootfs".into()),
        "lxc.rootfs.options" => Err("lxc.rootfs.options is not supported, please use mount \
                                     point options in the \"rootfs\" key"
            .into()),
        _ if LXC_KEYS.contains(&key)
            || DEPRECATED_LXC_KEYS.contains(&key)
            || key.starts_with("lxc.limit.")
            || key.starts_with("lxc.cgroup.")
            || key.starts_with("lxc.cgroup2.")
            || key.starts_with("lxc.prlimit.")
            || key.starts_with("lxc.net.") =>
        {
            Ok(())
        }
        _ => Err("unable to parse config".into()),
    }
}

/// Characters of a description line that upstream percent-encodes: control
/// characters, `%`, `:` and everything beyond ASCII.
const DESCRIPTION_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b':');

impl CtConfig {
    /// Parses a config text. With `strict`, the first problem is an error;
    /// otherwise problems come back as warnings and their lines are skipped.
    pub fn parse(
        text: &str,
        strict: bool,
    ) -> Result<(CtConfig, Vec<ConfigProblem>), ConfigProblem> {
        let mut conf = CtConfig::default();
        let mut warnings = Vec::new();
        let mut section: Option<String> = None; // None: main; Some("") : pending
        let mut current = CtSection::default();
        let mut problem = |msg: String| -> Result<(), ConfigProblem> {
            if strict {
                Err(ConfigProblem(msg))
            } else {
                warnings.push(ConfigProblem(msg));
                Ok(())
            }
        };
        for line in text.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(name) = section_header(line) {
                conf.store(section.take(), std::mem::take(&mut current));
                section = Some(name);
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                current.description.push_str(&decode_text(comment));
                current.description.push('\n');
                continue;
            }
            if line.starts_with("lxc.") {
                let Some((key, value)) = split_lxc_line(line) else {
                    problem(format!("unable to parse config: {line}"))?;
                    continue;
                };
                if key == "lxc.environment.runtime" {
                    current.env.push(value.to_string());
                    continue;
                }
                match check_lxc_key(key) {
                    Ok(()) => current.lxc.push((key.to_string(), value.to_string())),
                    Err(why) if why == "unable to parse config" => {
                        problem(format!("unable to parse config: {line}"))?
                    }
                    Err(why) => problem(format!("{key}: {why}"))?,
                }
                continue;
            }
            let Some((key, value)) = split_option_line(line) else {
                problem(format!("unable to parse config: {line}"))?;
                continue;
            };
            match key {
                "description" => current.description.push_str(&decode_text(value)),
                "delete" if section.as_deref() != Some("") => {
                    problem("property 'delete' is only allowed in [pve:pending]".into())?
                }
                _ => {
                    current.props.insert(key.to_string(), value.to_string());
                }
            }
        }
        conf.store(section, current);
        Ok((conf, warnings))
    }

    fn store(&mut self, section: Option<String>, s: CtSection) {
        match section {
            None => self.main = s,
            Some(name) if name.is_empty() => self.pending = s,
            Some(name) => {
                self.snapshots.insert(name, s);
            }
        }
    }

    /// The config text, canonical as upstream writes it.
    pub fn write(&self) -> String {
        let mut out = self.main.write();
        if !self.pending.is_empty() {
            out.push_str("\n[pve:pending]\n");
            out.push_str(&self.pending.write());
        }
        for (name, snap) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            out.push_str(&snap.write());
        }
        out
    }
}

impl CtSection {
    /// Whether the section holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.description.is_empty()
            && self.props.is_empty()
            && self.env.is_empty()
            && self.lxc.is_empty()
    }

    /// One option's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The section's text (without its header).
    pub fn write(&self) -> String {
        let mut out = String::new();
        for line in self.description.split('\n').filter(|l| !l.is_empty()) {
            out.push('#');
            out.push_str(&utf8_percent_encode(line, DESCRIPTION_UNSAFE).to_string());
            out.push('\n');
        }
        for (key, value) in &self.props {
            out.push_str(&format!("{key}: {value}\n"));
        }
        for var in &self.env {
            out.push_str(&format!("lxc.environment.runtime: {var}\n"));
        }
        for (key, value) in &self.lxc {
            out.push_str(&format!("{key}: {value}\n"));
        }
        out
    }

    /// The options as a JSON object (description included), the shape of
    /// `GET /nodes/{node}/lxc/{vmid}/config`; raw keys come as `lxc`
    /// pairs as upstream returns them.
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
        if !self.env.is_empty() {
            out.insert("env".into(), Value::String(self.env.join("\0")));
        }
        if !self.lxc.is_empty() {
            let pairs = self
                .lxc
                .iter()
                .map(|(k, v)| {
                    Value::Array(vec![Value::String(k.clone()), Value::String(v.clone())])
                })
                .collect();
            out.insert("lxc".into(), Value::Array(pairs));
        }
        out
    }
}

/// Keys whose values the API returns as JSON numbers.
const NUMERIC_KEYS: &[&str] = &[
    "cores",
    "cpulimit",
    "cpuunits",
    "memory",
    "swap",
    "tty",
    "snaptime",
    "onboot",
    "protection",
    "template",
    "unprivileged",
    "console",
    "debug",
];

fn typed(key: &str, value: &str) -> Value {
    if NUMERIC_KEYS.contains(&key) {
        if let Ok(i) = value.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = value.parse::<f64>() {
            return Value::from(f);
        }
    }
    Value::String(value.to_string())
}

/// `[pve:pending]` → `Some("")`, `[name]` → `Some(name)`.
fn section_header(line: &str) -> Option<String> {
    let inner = line.trim_end().strip_prefix('[')?.strip_suffix(']')?;
    if inner.eq_ignore_ascii_case("pve:pending") {
        return Some(String::new());
    }
    let mut chars = inner.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && inner.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| inner.to_string())
}

/// `lxc.key: value` or `lxc.key = value`.
fn split_lxc_line(line: &str) -> Option<(&str, &str)> {
    let end = line
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c)))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
    Some((key, value.trim()))
}

/// `key: value` with a key of `[a-z][a-z_]*\d*` and a non-empty value.
fn split_option_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let letters = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let valid = letters.starts_with(|c: char| c.is_ascii_lowercase())
        && letters.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let value = value.trim();
    (valid && !value.is_empty()).then_some((key, value))
}

fn decode_text(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Checks a section's options against the CT option schema (the parameters
/// of `PUT /nodes/{node}/lxc/{vmid}/config`). Returns per-key errors.
pub fn validate_section(section: &CtSection) -> Result<(), crate::validate::ParamErrors> {
    let Some(method) = crate::api::ApiSchema::embedded()
        .method(crate::api::Verb::Put, "/nodes/{node}/lxc/{vmid}/config")
    else {
        return Ok(());
    };
    let mut input = Map::new();
    for (key, value) in &section.props {
        if matches!(
            key.as_str(),
            "snaptime" | "parent" | "lock" | "vmstate" | "snapstate"
        ) {
            continue;
        }
        input.insert(key.clone(), Value::String(value.clone()));
    }
    let mut props = method.parameters.clone();
    if let Some(p) = props.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("node");
        p.remove("vmid");
    }
    crate::validate::validate_params(&props, &input).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_is_percent_encoded_as_upstream() {
        let mut s = CtSection {
            description: "a: 100% ok\nzwei\n".into(),
            ..Default::default()
        };
        s.props.insert("memory".into(), "512".into());
        assert_eq!(s.write(), "#a%3A 100%25 ok\n#zwei\nmemory: 512\n");
        let (c, w) = CtConfig::parse(&s.write(), true).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.main, s);
    }

    #[test]
    fn refused_lxc_keys_say_why() {
        let err = CtConfig::parse("lxc.rootfs.path: /x\n", true).unwrap_err();
        assert_eq!(
            err.0,
            "lxc.rootfs.path: lxc.rootfs.path is auto generated from rootfs"
        );
        let (c, w) = CtConfig::parse("memory: 1\nlxc.bogus: 1\n", false).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(c.main.get("memory"), Some("1"));
    }

    #[test]
    fn delete_only_in_pending() {
        assert!(CtConfig::parse("delete: swap\n", true).is_err());
        let (c, _) = CtConfig::parse("memory: 1\n\n[pve:pending]\ndelete: swap\n", true).unwrap();
        assert_eq!(c.pending.get("delete"), Some("swap"));
        assert_eq!(c.write(), "memory: 1\n\n[pve:pending]\ndelete: swap\n");
    }

    #[test]
    fn env_and_raw_keys_keep_order() {
        let text = "hostname: a\nlxc.environment.runtime: A=1\nlxc.environment.runtime: B=2\nlxc.mount.entry: /x y none bind 0 0\nlxc.cap.drop: \n";
        let (c, w) = CtConfig::parse(text, true).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.main.env, vec!["A=1", "B=2"]);
        assert_eq!(c.write(), text);
    }
}
