//! Printing an argument vector as `qm showcmd` does: each argument shell-quoted
//! the String::ShellQuote way, and with `--pretty` every option on its own line.

/// Quotes one argument: bare when it only holds `[A-Za-z0-9_!%+,\-./:@^]`,
/// else wrapped in single quotes (an embedded `'` becomes `'\''`). An `=`
/// or an empty argument is always quoted.
pub fn shell_quote(arg: &str) -> String {
    let bare = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_!%+,-./:@^".contains(c));
    if bare {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The arguments quoted and joined with spaces (`qm showcmd`).
pub fn to_command_string(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `qm showcmd --pretty`: like [`to_command_string`], then every ` -` starts a
/// new line (` \`, newline, two spaces); the text ends with a newline.
///
/// ```
/// let args = ["/usr/bin/kvm", "-id", "100", "-machine", "type=pc"].map(String::from);
/// assert_eq!(
///     oxve_qemu::cmdline::pretty(&args),
///     "/usr/bin/kvm \\\n  -id 100 \\\n  -machine 'type=pc'\n"
/// );
/// ```
pub fn pretty(args: &[String]) -> String {
    let mut out = to_command_string(args).replace(" -", " \\\n  -");
    out.push('\n');
    out
}

/// Splits `args` like a shell would (quotes and backslashes), as upstream's
/// `split_args`.
pub(crate) fn split_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_shell_quote() {
        assert_eq!(shell_quote("kvm64,enforce,+sep"), "kvm64,enforce,+sep");
        assert_eq!(shell_quote("type=pc+pve0"), "'type=pc+pve0'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/var/run/x.pid"), "/var/run/x.pid");
        assert_eq!(shell_quote("{\"a\":1}"), "'{\"a\":1}'");
    }

    #[test]
    fn pretty_breaks_before_every_option() {
        let args: Vec<String> = ["kvm", "-a", "x=1", "-b"].map(String::from).into();
        assert_eq!(pretty(&args), "kvm \\\n  -a 'x=1' \\\n  -b\n");
    }
}
