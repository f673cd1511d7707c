//! Printing API answers as upstream's CLI does: text tables with box
//! borders (or without, `--noborder`), JSON, pretty JSON or YAML.

use crate::cli::CliError;
use serde_json::Value;

/// `--output-format` and the table switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputOptions {
    pub format: Format,
    pub noborder: bool,
    pub noheader: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
    JsonPretty,
    Yaml,
}

impl OutputOptions {
    /// Takes `--output-format`, `--noborder` and `--noheader` out of the options.
    pub fn take(options: &mut serde_json::Map<String, Value>) -> Result<OutputOptions, CliError> {
        let mut out = OutputOptions::default();
        if let Some(v) = options.remove("output-format") {
            out.format = match v.as_str().unwrap_or("") {
                "text" => Format::Text,
                "json" => Format::Json,
                "json-pretty" => Format::JsonPretty,
                "yaml" => Format::Yaml,
                other => {
                    return Err(CliError::Usage(format!(
                        "invalid --output-format '{other}' (text, json, json-pretty, yaml)"
                    )))
                }
            };
        }
        out.noborder = flag(options.remove("noborder"));
        out.noheader = flag(options.remove("noheader"));
        Ok(out)
    }
}

fn flag(v: Option<Value>) -> bool {
    matches!(
        v.as_ref().and_then(Value::as_str),
        Some("1" | "true" | "yes" | "on")
    )
}

/// Prints `data`; `columns` is the order of table columns when known.
pub fn print(data: &Value, opts: OutputOptions, columns: &[String]) {
    match opts.format {
        Format::Json => println!("{data}"),
        Format::JsonPretty => {
            println!("{}", serde_json::to_string_pretty(data).unwrap_or_default())
        }
        Format::Yaml => print!("{}", yaml(data, 0, true)),
        Format::Text => print!("{}", text(data, opts, columns)),
    }
}

/// The text form: scalars as they are, objects as a key/value table,
/// arrays of objects as a table with a column per property.
pub fn text(data: &Value, opts: OutputOptions, columns: &[String]) -> String {
    match data {
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut cols: Vec<String> = columns
                .iter()
                .filter(|c| items.iter().any(|i| i.get(c.as_str()).is_some()))
                .cloned()
                .collect();
            for item in items {
                for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            if items.is_empty() {
                return String::new();
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| cols.iter().map(|c| cell(i.get(c.as_str()))).collect())
                .collect();
            table(&cols, &rows, opts)
        }
        Value::Array(items) => items
            .iter()
            .map(|i| format!("{}\n", cell(Some(i))))
            .collect(),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let rows: Vec<Vec<String>> = keys
                .into_iter()
                .map(|k| vec![k.clone(), cell(map.get(k))])
                .collect();
            table(&["key".to_string(), "value".to_string()], &rows, opts)
        }
        other => format!("{}\n", cell(Some(other))),
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

fn table(cols: &[String], rows: &[Vec<String>], opts: OutputOptions) -> String {
    let width = |i: usize| {
        let header = if opts.noheader {
            0
        } else {
            cols[i].chars().count()
        };
        rows.iter()
            .map(|r| r[i].lines().map(|l| l.chars().count()).max().unwrap_or(0))
            .max()
            .unwrap_or(0)
            .max(header)
    };
    let widths: Vec<usize> = (0..cols.len()).map(width).collect();
    let numeric: Vec<bool> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .all(|r| r[i].is_empty() || r[i].parse::<f64>().is_ok())
        })
        .collect();
    let fmt_row = |cells: &[String], sep: &str, edge: (&str, &str)| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if numeric[i] {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        format!("{}{}{}\n", edge.0, parts.join(sep), edge.1)
    };
    let mut out = String::new();
    if opts.noborder {
        if !opts.noheader {
            out.push_str(fmt_row(cols, " ", ("", "")).trim_end());
            out.push('\n');
        }
        for r in rows {
            out.push_str(fmt_row(r, " ", ("", "")).trim_end());
            out.push('\n');
        }
        return out;
    }
    let line = |l: &str, m: &str, r: &str, fill: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    out.push_str(&line("┌", "┬", "┐", "─"));
    if !opts.noheader {
        let header: Vec<String> = cols.to_vec();
        let parts: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(&format!("│ {} │\n", parts.join(" │ ")));
        out.push_str(&line("╞", "╪", "╡", "═"));
    }
    for (n, r) in rows.iter().enumerate() {
        out.push_str(&fmt_row(r, " │ ", ("│ ", " │")));
        if n + 1 < rows.len() {
            out.push_str(&line("├", "┼", "┤", "─"));
        }
    }
    out.push_str(&line("└", "┴", "┘", "─"));
    out
}

/// A small YAML writer for API answers (scalars, lists, maps).
fn yaml(v: &Value, indent: usize, top: bool) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Array(items) if !items.is_empty() => {
            let mut out = if top {
                "---\n".to_string()
            } else {
                "\n".to_string()
            };
            for item in items {
                let inner = yaml(item, indent + 2, false);
                let inner = inner.trim_start_matches('\n');
                out.push_str(&format!("{pad}- {}", inner.trim_start()));
                if !inner.ends_with('\n') {
                    out.push('\n');
                }
            }
            out
        }
        Value::Object(map) if !map.is_empty() => {
            let mut out = if top {
                "---\n".to_string()
            } else {
                "\n".to_string()
            };
            for (k, val) in map {
                let inner = yaml(val, indent + 2, false);
                if inner.starts_with('\n') {
                    out.push_str(&format!("{pad}{k}:{inner}"));
                } else {
                    out.push_str(&format!("{pad}{k}: {inner}"));
                }
            }
            out
        }
        Value::Array(_) => format!("{}[]\n", if top { "--- " } else { "" }),
        Value::Object(_) => format!("{}{{}}\n", if top { "--- " } else { "" }),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || "@._-/+".contains(c))
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off"
                );
            let scalar = if plain {
                s.clone()
            } else {
                format!("'{}'", s.replace('\'', "''"))
            };
            format!("{}{scalar}\n", if top { "--- " } else { "" })
        }
        other => format!("{}{}\n", if top { "--- " } else { "" }, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_have_upstream_borders() {
        let data = json!([{"userid": "root@pam", "enable": 1}]);
        let t = text(
            &data,
            OutputOptions::default(),
            &["userid".into(), "enable".into()],
        );
        assert_eq!(
            t,
            "┌──────────┬────────┐\n│ userid   │ enable │\n╞══════════╪════════╡\n│ root@pam │      1 │\n└──────────┴────────┘\n"
        );
    }

    #[test]
    fn yaml_of_nested_values() {
        let y = yaml(&json!({"a": [1, "x y"], "b": {"c": true}}), 0, true);
        assert_eq!(y, "---\na:\n  - 1\n  - 'x y'\nb:\n  c: true\n");
    }
}
