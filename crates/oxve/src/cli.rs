//! Shared command-line plumbing: errors, `--key value` option parsing
//! against a method's schema, and help texts derived from the schema.

use oxve_schema::api::Method;
use serde_json::{Map, Value};

/// A CLI failure: printed as one line on stderr.
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments (exit code 2).
    Usage(String),
    /// The node answered with an error, or could not be reached.
    Api(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Api(_) => 255,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Api(m) => write!(f, "{}", m.trim_end()),
        }
    }
}

/// Parsed `--key value` options plus the remaining positional arguments.
#[derive(Debug, Default)]
pub struct Parsed {
    pub options: Map<String, Value>,
    pub positional: Vec<String>,
}

/// Splits `args` into options and positional arguments. For options the
/// method's schema knows to be boolean, the value may be left out (`--force`).
/// Options given more than once become arrays.
pub fn parse_args(
    args: &[String],
    method: Option<&Method>,
    extra_flags: &[&str],
) -> Result<Parsed, CliError> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if let Some(name) = arg.strip_prefix("--").or_else(|| {
            arg.strip_prefix('-')
                .filter(|s| s.len() > 1 && !s.starts_with(char::is_numeric))
        }) {
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (name.to_string(), None),
            };
            let is_bool = extra_flags.contains(&name.as_str())
                || method
                    .and_then(|m| m.properties())
                    .and_then(|p| p.get(&name))
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str)
                    == Some("boolean");
            let value = if let Some(v) = inline {
                v
            } else if is_bool {
                match args.get(i + 1).map(String::as_str) {
                    Some(v @ ("0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off")) => {
                        i += 1;
                        v.to_string()
                    }
                    _ => "1".to_string(),
                }
            } else {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("option '--{name}' needs a value")))?
            };
            match parsed.options.get_mut(&name) {
                Some(Value::Array(list)) => list.push(Value::String(value)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value)]);
                }
                None => {
                    parsed.options.insert(name, Value::String(value));
                }
            }
        } else {
            parsed.positional.push(arg.clone());
        }
        i += 1;
    }
    Ok(parsed)
}

/// Whether `--help`/`-h`/`help` was asked for.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// One line per parameter of a method: `--name <type>` and whether it is
/// required, for `--help` texts.
pub fn describe_params(method: &Method, positional: &[&str]) -> String {
    let mut out = String::new();
    if let Some(props) = method.properties() {
        for (name, p) in props {
            if positional.contains(&name.as_str()) {
                continue;
            }
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("string");
            let mut line = format!("  --{name} <{ty}>");
            if let Some(Value::Array(e)) = p.get("enum") {
                let vals: Vec<String> = e
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect();
                line = format!("  --{name} <{}>", vals.join(" | "));
            }
            let mut facts = Vec::new();
            if let Some(Value::String(f)) = p.get("format") {
                facts.push(format!("format={f}"));
            } else if p.get("format").is_some_and(Value::is_object) {
                facts.push("property string".to_string());
            }
            for key in ["minimum", "maximum", "minLength", "maxLength", "pattern"] {
                if let Some(v) = p.get(key) {
                    facts.push(format!(
                        "{key}={}",
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    ));
                }
            }
            if !facts.is_empty() {
                line.push_str(&format!(" [{}]", facts.join(", ")));
            }
            if let Some(d) = p.get("default") {
                line.push_str(&format!(
                    " (default={})",
                    d.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| d.to_string())
                ));
            }
            if p.get("optional").and_then(Value::as_i64) != Some(1) {
                line.push_str(" (required)");
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
