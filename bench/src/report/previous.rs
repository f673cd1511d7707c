//! Sections a run skipped on request keep the figures of the report they
//! replace, marked as such: a partial run (`--no-lxc`, ...) must not wipe
//! what an earlier run measured.

/// How the line under a kept section's heading starts.
const KEPT: &str = "_Kept from an earlier run";

/// `new` with every section `## <heading>` named in `skipped` (heading,
/// the option that skipped it) replaced by the same section of `old`,
/// when `old` has it with figures; a line under the heading says so.
pub fn keep_skipped(new: &str, old: &str, skipped: &[(&str, &str)]) -> String {
    let old_sections = sections(old);
    let mut out = String::with_capacity(new.len() + old.len());
    for section in sections(new) {
        let kept = skipped.iter().find_map(|(heading, option)| {
            if section.heading != Some(*heading) {
                return None;
            }
            let previous = old_sections.iter().find(|s| s.heading == Some(*heading))?;
            if !previous.text.contains(super::TABLE_HEAD) {
                return None;
            }
            // The old section may have ended the file: it takes the line
            // breaks of the section it replaces.
            let body = previous.text.trim_end_matches('\n');
            let breaks = &section.text[section.text.trim_end_matches('\n').len()..];
            Some(format!("{}{breaks}", mark(body, option)))
        });
        out.push_str(kept.as_deref().unwrap_or(section.text));
    }
    out
}

/// A part of the report: the text before the first `## ` heading, or a
/// `## ` heading with everything up to the next one.
struct Section<'a> {
    heading: Option<&'a str>,
    text: &'a str,
}

fn sections(text: &str) -> Vec<Section<'_>> {
    let mut starts: Vec<usize> = text.match_indices("\n## ").map(|(at, _)| at + 1).collect();
    if text.starts_with("## ") {
        starts.insert(0, 0);
    }
    let mut out = Vec::with_capacity(starts.len() + 1);
    if starts.first() != Some(&0) {
        let end = starts.first().copied().unwrap_or(text.len());
        out.push(Section {
            heading: None,
            text: &text[..end],
        });
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let part = &text[start..end];
        let heading = part
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("## "))
            .map(str::trim);
        out.push(Section {
            heading,
            text: part,
        });
    }
    out
}

/// `section` with the kept line under its heading (once).
fn mark(section: &str, option: &str) -> String {
    if section.contains(KEPT) {
        return section.to_string();
    }
    let (heading, rest) = section.split_once('\n').unwrap_or((section, ""));
    format!(
        "{heading}\n\n{KEPT} (this run skipped it with `{option}`): its date, machine \
         load and binary may differ from the header's._\n{rest}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = super::super::TABLE_HEAD;

    #[test]
    fn keeps_skipped_sections_that_had_figures() {
        let old = format!(
            "# B\n\nold header\n\n## A\n\n{HEAD}| a | 1 |\n\n## Storage\n\n{HEAD}| s | 2 |\n\
             \n## Containers\n\nNot measured in this run:\n"
        );
        let new = format!(
            "# B\n\nnew header\n\n## A\n\n{HEAD}| a | 3 |\n\n## Storage\n\nNot measured in this run: \
             skipped\n\n## Containers\n\nNot measured in this run: skipped\n\n## Virtual machines\n\nnew\n"
        );
        let skipped = [
            ("Storage", "--no-storage"),
            ("Containers", "--no-lxc"),
            ("Virtual machines", "--no-qemu"),
        ];
        let text = keep_skipped(&new, &old, &skipped);
        assert!(text.starts_with("# B\n\nnew header\n\n## A\n\n"), "{text}");
        assert!(text.contains("| a | 3 |") && !text.contains("| a | 1 |"));
        assert!(text.contains(
            "## Storage\n\n_Kept from an earlier run (this run skipped it with `--no-storage`)"
        ));
        assert!(text.contains("| s | 2 |\n\n## Containers"), "{text}");
        // Nothing measured before: the new text stays.
        assert!(text.contains("## Containers\n\nNot measured in this run: skipped\n"));
        // Not in the old report at all: the new text stays.
        assert!(text.ends_with("## Virtual machines\n\nnew\n"));
        // A kept last section of the old report is followed by a blank line.
        let old_last = format!("# B\n\n## Storage\n\n{HEAD}| s | 2 |\n");
        let text = keep_skipped(&new, &old_last, &skipped);
        assert!(text.contains("| s | 2 |\n\n## Containers"), "{text}");
        // Kept twice: marked once.
        let again = keep_skipped(&new, &text, &skipped);
        assert_eq!(again.matches(KEPT).count(), 1, "{again}");
        assert_eq!(again, text);
    }

    #[test]
    fn without_skipped_sections_the_new_report_stays() {
        let new = "# B\n\n## A\n\nx\n";
        assert_eq!(keep_skipped(new, "## A\n\ny\n", &[]), new);
        assert_eq!(keep_skipped(new, "", &[("A", "--no-a")]), new);
    }
}
