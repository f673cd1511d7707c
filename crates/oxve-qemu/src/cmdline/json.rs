//! Compact JSON with sorted object keys, as upstream prints `-blockdev` and
//! `-object` values (`to_json(..., {canonical => 1})`).

use serde_json::Value;

/// Serializes `value` compactly with object keys in byte order, whatever
/// order the map keeps them in.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_level() {
        let v = json!({"b": {"z": 1, "a": [true, "x"]}, "a": null});
        assert_eq!(canonical(&v), r#"{"a":null,"b":{"a":[true,"x"],"z":1}}"#);
    }
}
