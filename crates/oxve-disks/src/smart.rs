//! S.M.A.R.T. data: running `smartctl` through the [`HostView`] and
//! parsing its output — the attribute table of ATA disks, the free text
//! of NVMe and SAS disks.

use serde::{Serialize, Serializer};

use crate::{Error, HostView, Result};

/// The parsed output of `smartctl -H [-A -f brief]`, as upstream returns
/// it from `/nodes/{node}/disks/smart`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SmartData {
    /// The overall health assessment (`PASSED`, `FAILED!`, `OK`,
    /// `SMART Disabled`); `None` if smartctl did not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Which of [`attributes`](Self::attributes) and [`text`](Self::text)
    /// holds the data; `None` if smartctl printed no data section.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<SmartType>,
    /// The ATA attribute table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<SmartAttribute>,
    /// The data section of NVMe and SAS disks, one `\n`-terminated line
    /// each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Percent of rated life left, from the "Percentage Used" line of
    /// NVMe and SAS disks.
    #[serde(
        serialize_with = "serialize_opt_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub wearout: Option<f64>,
}

/// How smartctl presented the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmartType {
    /// An ATA attribute table.
    Ata,
    /// Free text (NVMe health log, SCSI/SAS pages).
    Text,
}

/// One row of the ATA attribute table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmartAttribute {
    /// The attribute number as smartctl prints it, right-aligned to three
    /// characters (`"  1"`, `"194"`).
    pub id: String,
    /// The attribute name from smartctl's drive database.
    pub name: String,
    /// The six flag characters of `-f brief` (`POSR-K`).
    pub flags: String,
    /// The same as [`normalized`](Self::normalized); upstream still sends
    /// it for older clients.
    pub value: u64,
    /// The normalized current value.
    pub normalized: u64,
    /// The worst normalized value seen.
    pub worst: u64,
    /// The failure threshold (0 where smartctl prints `---`).
    pub threshold: u64,
    /// When the attribute failed: `-`, `NOW` or `In_the_past`.
    pub fail: String,
    /// The raw value, as printed.
    pub raw: String,
}

/// Attribute names that give the percent of life left, most trusted
/// first; matched as substrings of the attribute name.
const WEAROUT_ATTRIBUTES: [&str; 13] = [
    "Media_Wearout_Indicator",
    "SSD_Life_Left",
    "Wear_Leveling_Count",
    "Perc_Write/Erase_Ct_BC",
    "Perc_Rated_Life_Remain",
    "Remaining_Lifetime_Perc",
    "Percent_Lifetime_Remain",
    "Lifetime_Left",
    "PCT_Life_Remaining",
    "Lifetime_Remaining",
    "Percent_Life_Remaining",
    "Percent_Lifetime_Used",
    "Perc_Rated_Life_Used",
];

impl SmartData {
    /// Parses the output of `smartctl -H [-A -f brief]`.
    pub fn parse(output: &str) -> SmartData {
        let mut data = SmartData::default();
        for line in output.lines() {
            if data.kind == Some(SmartType::Ata) {
                if let Some(attribute) = parse_attribute(line) {
                    data.attributes.push(attribute);
                    continue;
                }
            }
            if let Some(health) = health_result(line) {
                data.health = Some(health.to_string());
            } else if line.contains("Vendor Specific SMART Attributes with Thresholds:") {
                data.kind = Some(SmartType::Ata);
                data.text = None;
            } else if line.contains("=== START OF SMART DATA SECTION ===")
                || line.contains("=== START OF READ SMART DATA SECTION ===")
            {
                data.kind = Some(SmartType::Text);
            } else if data.kind == Some(SmartType::Text) {
                let text = data.text.get_or_insert_with(String::new);
                text.push_str(line);
                text.push('\n');
                if let Some(used) = percentage_used(line) {
                    data.wearout = Some(100.0 - used);
                }
            } else if line.contains("SMART Disabled") {
                data.health = Some("SMART Disabled".to_string());
            }
        }
        data
    }

    /// Percent of rated life left (100 = new), if the data tells: the
    /// "Percentage Used" of NVMe and SAS disks, else the first known
    /// wear attribute of an ATA SSD.
    pub fn wearout(&self) -> Option<f64> {
        if self.wearout.is_some() {
            return self.wearout;
        }
        WEAROUT_ATTRIBUTES.iter().find_map(|register| {
            self.attributes
                .iter()
                .find(|attribute| attribute.name.contains(register))
                .map(|attribute| attribute.normalized as f64)
        })
    }
}

/// Runs `smartctl` on `devpath` (a `/dev/...` block device) and parses its
/// output; with `health_only`, only the health assessment is asked for.
///
/// Fails if `devpath` is not a block device, smartctl is not installed or
/// does not finish, or its exit status has a fatal bit set. Upstream's
/// API answers `health: UNKNOWN` in all these cases.
pub fn get_smart_data(host: &dyn HostView, devpath: &str, health_only: bool) -> Result<SmartData> {
    if !devpath.starts_with("/dev/") || !host.is_block_device(devpath) {
        return Err(Error::NotABlockDevice(devpath.to_string()));
    }
    let output = host.smartctl(devpath, health_only).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing("smartctl")
        } else {
            Error::Smart(err)
        }
    })?;
    // Bits 0 and 1 are fatal (bad command line, device open failed); the
    // others report disk findings, which the parsed data already shows.
    if let Some(code) = output.exit_code.filter(|code| code & 0b11 != 0) {
        return Err(Error::SmartExitCode(code));
    }
    Ok(SmartData::parse(&output.stdout))
}

/// Resolves `path` (e.g. a `/dev/disk/by-id/` link) to the block device
/// it names, which must live under `/dev`.
pub fn verify_blockdev_path(host: &dyn HostView, path: &str) -> Result<String> {
    let resolved = host.canonical_path(path);
    if !resolved.starts_with("/dev/") || !host.is_block_device(&resolved) {
        return Err(Error::NotABlockDevice(path.to_string()));
    }
    Ok(resolved)
}

/// Serializes a percentage as an integer when it is one, so `69` is not
/// sent as `69.0`.
pub(crate) fn serialize_percent<S: Serializer>(
    value: f64,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
        serializer.serialize_i64(value as i64)
    } else {
        serializer.serialize_f64(value)
    }
}

fn serialize_opt_percent<S: Serializer>(
    value: &Option<f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serialize_percent(*value, serializer),
        None => serializer.serialize_none(),
    }
}

/// The health verdict of a line like `SMART overall-health self-assessment
/// test result: PASSED` (ATA, NVMe) or `SMART Health Status: OK` (SCSI).
fn health_result(line: &str) -> Option<&str> {
    ["Health Status: ", "self-assessment test result: "]
        .iter()
        .filter_map(|marker| line.find(marker).map(|at| at + marker.len()))
        .min()
        .map(|start| &line[start..])
}

/// One row of `smartctl -A -f brief`:
/// `ID# ATTRIBUTE_NAME FLAGS VALUE WORST THRESH FAIL RAW_VALUE`, where the
/// id is right-aligned in three columns and the raw value runs to the end
/// of the line.
fn parse_attribute(line: &str) -> Option<SmartAttribute> {
    let id = line.get(..3)?;
    let id_ok = id.bytes().take(2).all(|b| b == b' ' || b.is_ascii_digit())
        && id.as_bytes()[2].is_ascii_digit();
    if !id_ok {
        return None;
    }
    let mut rest = &line[3..];
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start();
        if trimmed.len() == rest.len() {
            return None; // fields are separated by whitespace
        }
        let end = trimmed.find(char::is_whitespace)?; // and followed by more
        let (token, tail) = trimmed.split_at(end);
        rest = tail;
        Some(token)
    };
    let name = field()?;
    let flags = field()?;
    let value = field()?;
    let worst = field()?;
    let threshold = field()?;
    let fail = field()?;
    let raw = rest.trim_start();

    if flags.chars().count() != 6 {
        return None;
    }
    let normalized = parse_digits(value)?;
    let worst = parse_digits(worst)?;
    let threshold = if threshold == "---" {
        0
    } else {
        leading_number(threshold)
    };
    Some(SmartAttribute {
        id: id.to_string(),
        name: name.to_string(),
        flags: flags.to_string(),
        value: normalized,
        normalized,
        worst,
        threshold,
        fail: fail.to_string(),
        raw: raw.to_string(),
    })
}

/// A number made only of ASCII digits.
fn parse_digits(token: &str) -> Option<u64> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// The number a token starts with, 0 if none (smartctl prints numbers
/// here; anything else counts as no threshold).
fn leading_number(token: &str) -> u64 {
    let digits = token.bytes().take_while(u8::is_ascii_digit).count();
    token[..digits].parse().unwrap_or(0)
}

/// The percent of a `Percentage Used: 31%` (NVMe) or `Percentage used
/// endurance indicator: 0%` (SAS) line, case-insensitively.
fn percentage_used(line: &str) -> Option<f64> {
    let lower = line.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("percentage used") {
        let start = from + found + "percentage used".len();
        let mut rest = &lower[start..];
        rest = rest.strip_prefix(" endurance indicator").unwrap_or(rest);
        if let Some(number) = rest.strip_prefix(':').and_then(percent_value) {
            return Some(number);
        }
        from = start;
    }
    None
}

/// `<spaces>12%` or `<spaces>0.5%` → the number.
fn percent_value(text: &str) -> Option<f64> {
    let text = text.trim_start();
    let int_len = text.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let mut len = int_len;
    if let Some(after_dot) = text[int_len..].strip_prefix('.') {
        let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if frac_len > 0 {
            len += 1 + frac_len;
        }
    }
    if !text[len..].starts_with('%') {
        return None;
    }
    text[..len].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_rows() {
        let row =
            "190 Airflow_Temperature_Cel -O-RCK   045   036   045    NOW  55 (147 229 55 24 0)";
        let attr = parse_attribute(row).expect("a row");
        assert_eq!(attr.id, "190");
        assert_eq!(attr.fail, "NOW");
        assert_eq!(attr.raw, "55 (147 229 55 24 0)");
        assert_eq!((attr.normalized, attr.worst, attr.threshold), (45, 36, 45));

        let dashes = "168 Unknown_Attribute       -O--CK   100   100   ---    -    5";
        assert_eq!(parse_attribute(dashes).map(|a| a.threshold), Some(0));

        assert!(
            parse_attribute("ID# ATTRIBUTE_NAME FLAGS VALUE WORST THRESH FAIL RAW_VALUE").is_none()
        );
        assert!(parse_attribute("  1 Raw_Read_Error_Rate POSR-- 117 099 006 -").is_none());
        assert!(parse_attribute("  1 Raw_Read_Error_Rate POSR- 117 099 006 - 0").is_none());
    }

    #[test]
    fn percentage_used_lines() {
        assert_eq!(
            percentage_used("Percentage Used:                    31%"),
            Some(31.0)
        );
        assert_eq!(
            percentage_used("Percentage used endurance indicator: 0.5%"),
            Some(0.5)
        );
        assert_eq!(percentage_used("Percentage Used: n/a"), None);
    }

    #[test]
    fn text_before_the_table_is_dropped_and_disabled_smart_is_health() {
        let out = "=== START OF READ SMART DATA SECTION ===\nfoo\n\
            Vendor Specific SMART Attributes with Thresholds:\n";
        let data = SmartData::parse(out);
        assert_eq!(data.kind, Some(SmartType::Ata));
        assert_eq!(data.text, None);

        let disabled =
            SmartData::parse("SMART support is: Disabled\nSMART Disabled. Use option -s\n");
        assert_eq!(disabled.health.as_deref(), Some("SMART Disabled"));
        assert_eq!(disabled.kind, None);
    }

    #[test]
    fn fractional_wearout_stays_fractional() {
        let data = SmartData::parse("=== START OF SMART DATA SECTION ===\nPercentage Used: 0.5%\n");
        let json = serde_json::to_value(&data).expect("serializable");
        assert_eq!(json["wearout"], serde_json::json!(99.5));
    }
}
