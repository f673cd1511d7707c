//! A syntax check of systemd-like calendar events as PVE schedules use them
//! (`mon..fri 02:30`, `*/15`, `sat *-1..7 15:00`, `daily`). The full
//! semantics live with the scheduler; this only rejects malformed text.
const SPECIAL: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
    "semi-annually",
];
const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

pub(super) fn check(text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty calendar event".into());
    }
    if SPECIAL.contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let mut tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens
        .first()
        .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_alphabetic()))
    {
        check_weekdays(tokens.remove(0))?;
    }
    let mut seen_date = false;
    let mut seen_time = false;
    for token in tokens {
        if token.contains('-') && !seen_date && !seen_time {
            seen_date = true;
            check_components(token, '-', &[(0, 9999), (1, 12), (1, 31)], 3)?;
        } else if !seen_time {
            seen_time = true;
            check_components(token, ':', &[(0, 23), (0, 59), (0, 59)], 3)?;
        } else {
            return Err(format!("unexpected '{token}'"));
        }
    }
    Ok(())
}

fn check_weekdays(token: &str) -> Result<(), String> {
    for item in token.split(',') {
        for day in item.split("..") {
            let day = day.to_ascii_lowercase();
            if day.len() < 3 || !DAYS.iter().any(|d| day.starts_with(d)) {
                return Err(format!("invalid weekday '{item}'"));
            }
        }
    }
    Ok(())
}

fn check_components(
    token: &str,
    sep: char,
    ranges: &[(u32, u32)],
    max: usize,
) -> Result<(), String> {
    let parts: Vec<&str> = token.split(sep).collect();
    if parts.len() > max {
        return Err(format!("too many components in '{token}'"));
    }
    // A lone time component means minutes (`*/15`); a lone date part is a day.
    let offset = match (sep, parts.len()) {
        (':', 1) => 1,
        (':', _) => 0,
        (_, n) => max.saturating_sub(n),
    };
    for (i, part) in parts.iter().enumerate() {
        let (lo, hi) = ranges.get(i + offset).copied().unwrap_or((0, 59));
        for item in part.split(',') {
            check_item(item, lo, hi).map_err(|()| format!("invalid component '{part}'"))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, lo: u32, hi: u32) -> Result<(), ()> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        step.parse::<u32>().map_err(|_| ())?;
    }
    if range == "*" {
        return Ok(());
    }
    let num = |s: &str| -> Result<u32, ()> {
        let n: u32 = s.parse().map_err(|_| ())?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(())
        }
    };
    match range.split_once("..") {
        Some((a, b)) => {
            num(a)?;
            num(b)?;
        }
        None => {
            num(range)?;
        }
    }
    Ok(())
}
