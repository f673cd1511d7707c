//! Backup retention: upstream's `prune-backups` options and its marking
//! algorithm. Backups are grouped per guest (`qemu/100`, `lxc/100`); inside
//! a group, newest first, `keep-last` keeps the newest backups and each
//! `keep-<period>` rule keeps the newest backup of each of the next N
//! periods not already covered by an earlier rule. Protected backups are
//! always kept and cover nothing; backups whose names do not follow the
//! `vzdump-<type>-<vmid>-YYYY_MM_DD-HH_MM_SS.<ext>` scheme are never touched.
//!
//! The marking ([`plan`]) is pure and takes the time zone as a parameter,
//! so the tests run in UTC while the node uses local time, as upstream's
//! `localtime`/`timelocal` do.

use crate::content::Content;
use crate::error::{Result, StorageError};
use crate::plugin::{PathSuffix, StoragePlugin, VolumeInfo};
use crate::volume::VolumeId;
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::LazyLock;

/// The retention options of `prune-backups` (a property string), normalized
/// as upstream does: no positive count at all means keep everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneOptions {
    pub keep_all: bool,
    pub last: u64,
    pub hourly: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
    pub yearly: u64,
}

impl PruneOptions {
    /// Parses a `prune-backups` property string (`keep-last=3,keep-daily=7`).
    /// The error is the text for the `prune-backups` parameter.
    pub fn parse(text: &str) -> std::result::Result<PruneOptions, String> {
        oxve_schema::format::check_format("prune-backups", text)?;
        let format = oxve_schema::format::named_property_format("prune-backups")
            .ok_or("the prune-backups format is not registered")?;
        let values = oxve_schema::propstring::parse(format, text)?;
        let count = |key: &str| values.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        let opts = PruneOptions {
            keep_all: values.get("keep-all").and_then(|v| v.as_bool()) == Some(true),
            last: count("keep-last"),
            hourly: count("keep-hourly"),
            daily: count("keep-daily"),
            weekly: count("keep-weekly"),
            monthly: count("keep-monthly"),
            yearly: count("keep-yearly"),
        };
        let counts = opts.counts();
        if counts.iter().all(|(_, n)| *n == 0) {
            return Ok(PruneOptions {
                keep_all: true,
                ..PruneOptions::default()
            });
        }
        if opts.keep_all {
            return Err("keep-all cannot be set together with other options.".into());
        }
        Ok(opts)
    }

    /// The counts by option name, in the order the rules apply.
    fn counts(&self) -> [(&'static str, u64); 6] {
        [
            ("keep-last", self.last),
            ("keep-hourly", self.hourly),
            ("keep-daily", self.daily),
            ("keep-weekly", self.weekly),
            ("keep-monthly", self.monthly),
            ("keep-yearly", self.yearly),
        ]
    }
}

/// What pruning does with one backup (the API's `mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Keep,
    Remove,
    /// Protected: never removed, and covers no period.
    Protected,
    /// Not in the standard naming scheme: ignored.
    Renamed,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Keep => "keep",
            Mark::Remove => "remove",
            Mark::Protected => "protected",
            Mark::Renamed => "renamed",
        }
    }
}

/// One backup with its verdict, as `GET .../prunebackups` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneEntry {
    pub volid: String,
    pub ctime: i64,
    pub mark: Mark,
    /// `qemu`, `lxc`, `openvz` or `unknown`.
    pub guest_type: String,
    pub vmid: Option<u32>,
}

/// A calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Converts between epoch seconds and calendar time.
pub trait TimeZone {
    /// The epoch time of a calendar time; `None` if it is not a valid date.
    fn epoch(&self, t: &DateTime) -> Option<i64>;
    /// The calendar time of an epoch time.
    fn civil(&self, epoch: i64) -> Option<DateTime>;
}

/// The node's local time zone (upstream's `timelocal`/`localtime`).
pub struct Local;

/// Coordinated Universal Time, computed without the C library.
pub struct Utc;

/// What a backup's file name says (upstream's `archive_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// `qemu`, `lxc` or `openvz`.
    pub guest_type: String,
    /// Set for names in the standard scheme only.
    pub standard: Option<StandardName>,
}

/// The parts of a standard backup name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardName {
    pub vmid: u32,
    pub time: DateTime,
    /// `vzdump-qemu-100-2024_01_01-00_00_00.log`: the log written beside it.
    pub log_name: String,
}

/// Parses a backup file name; `None` when it is not a `vzdump-<type>-`
/// archive at all (upstream's type `unknown`). A standard-looking name
/// with an impossible date is `None` as well, as upstream's `timelocal`
/// makes the whole lookup fail.
pub fn archive_info(file_name: &str) -> Option<ArchiveInfo> {
    static ARCHIVE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^vzdump-(lxc|openvz|qemu)-.+\.(tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2|xz))?)$")
            .expect("static regex")
    });
    static STANDARD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(vzdump-(lxc|openvz|qemu)-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2}))\.(.+)$")
            .expect("static regex")
    });
    let caps = ARCHIVE.captures(file_name)?;
    let guest_type = caps[1].to_string();
    let extension = &caps[2];
    let standard = match STANDARD.captures(file_name) {
        Some(s) if s[2] == guest_type && &s[10] == extension => {
            let num = |i: usize| s[i].parse::<u32>().unwrap_or(u32::MAX);
            let time = DateTime {
                year: i64::from(num(4)),
                month: num(5),
                day: num(6),
                hour: num(7),
                minute: num(8),
                second: num(9),
            };
            if !time.is_valid() {
                return None;
            }
            Some(StandardName {
                vmid: num(3),
                time,
                log_name: format!("{}.log", &s[1]),
            })
        }
        _ => None,
    };
    Some(ArchiveInfo {
        guest_type,
        standard,
    })
}

/// One backup as the storage lists it: what [`plan`] works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub volid: String,
    /// The file name (`vzdump-qemu-100-....vma.zst`).
    pub file_name: String,
    /// The file's time, used for names outside the standard scheme.
    pub ctime: i64,
    pub protected: bool,
}

impl Backup {
    /// The backup behind a content listing entry (`None` for other content).
    pub fn from_volume(v: &VolumeInfo) -> Option<Backup> {
        if v.content != Content::Backup {
            return None;
        }
        let file_name = v.volid.rsplit('/').next()?.to_string();
        Some(Backup {
            volid: v.volid.clone(),
            file_name,
            ctime: v.ctime.unwrap_or(0),
            protected: v.protected,
        })
    }
}

/// Marks `backups` (of `vmid` and `guest_type`, when given) by `opts`.
/// The result keeps the input's order.
pub fn plan(
    backups: &[Backup],
    opts: &PruneOptions,
    vmid: Option<u32>,
    guest_type: Option<&str>,
    tz: &dyn TimeZone,
) -> Vec<PruneEntry> {
    let mut entries: Vec<(PruneEntry, Option<Mark>)> = Vec::new();
    let mut groups: HashMap<(String, u32), Vec<usize>> = HashMap::new();
    for b in backups {
        // Upstream's listing filter for one guest: `-<vmid>-` inside the name.
        if let Some(id) = vmid {
            let needle = format!("-{id}-");
            let inside = b
                .file_name
                .match_indices(&needle)
                .any(|(pos, _)| pos > 0 && pos + needle.len() < b.file_name.len());
            if !inside {
                continue;
            }
        }
        let info = archive_info(&b.file_name);
        let kind = info
            .as_ref()
            .map_or("unknown".to_string(), |i| i.guest_type.clone());
        if guest_type.is_some_and(|t| t != kind) {
            continue;
        }
        let standard = info.and_then(|i| i.standard);
        let mut entry = PruneEntry {
            volid: b.volid.clone(),
            ctime: b.ctime,
            mark: Mark::Renamed,
            guest_type: kind.clone(),
            vmid: vmid.or_else(|| listed_vmid(&b.file_name)),
        };
        let mut mark = Some(Mark::Renamed);
        if let Some(std) = &standard {
            entry.vmid = Some(std.vmid);
            entry.ctime = tz.epoch(&std.time).unwrap_or(b.ctime);
            mark = None;
            groups
                .entry((kind, std.vmid))
                .or_default()
                .push(entries.len());
        }
        if b.protected {
            mark = Some(Mark::Protected);
        }
        entries.push((entry, mark));
    }
    for indices in groups.values() {
        mark_group(&mut entries, indices, opts, tz);
    }
    entries
        .into_iter()
        .map(|(mut e, mark)| {
            e.mark = mark.unwrap_or(Mark::Remove);
            e
        })
        .collect()
}

/// The guest id upstream's listing reads from any backup name: the first
/// `-<100..999999999>-` in it.
fn listed_vmid(file_name: &str) -> Option<u32> {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"-([1-9][0-9]{2,8})-.").expect("static regex"));
    RE.captures(file_name).and_then(|c| c[1].parse().ok())
}

/// A period a backup falls in, for one rule.
type PeriodId = (i64, i64, i64, i64);

fn mark_group(
    entries: &mut [(PruneEntry, Option<Mark>)],
    indices: &[usize],
    opts: &PruneOptions,
    tz: &dyn TimeZone,
) {
    if opts.keep_all || opts.counts().iter().all(|(_, n)| *n == 0) {
        for &i in indices {
            if matches!(entries[i].1, None | Some(Mark::Remove)) {
                entries[i].1 = Some(Mark::Keep);
            }
        }
        return;
    }
    let mut order = indices.to_vec();
    // Newest first; a stable sort keeps the listing order among equals.
    order.sort_by(|a, b| entries[*b].0.ctime.cmp(&entries[*a].0.ctime));
    let civil = |ctime: i64| tz.civil(ctime);
    let rules: [(u64, &dyn Fn(i64) -> PeriodId); 6] = [
        (opts.last, &|t| (t, 0, 0, 0)),
        (opts.hourly, &|t| {
            civil(t).map_or((t, 0, 0, 0), |c| {
                (c.year, c.month.into(), c.day.into(), c.hour.into())
            })
        }),
        (opts.daily, &|t| {
            civil(t).map_or((t, 0, 0, 0), |c| (c.year, c.month.into(), c.day.into(), 0))
        }),
        (opts.weekly, &|t| {
            civil(t).map_or((t, 0, 0, 0), |c| {
                let (year, week) = iso_week(c.year, c.month, c.day);
                (year, week.into(), 0, 0)
            })
        }),
        (opts.monthly, &|t| {
            civil(t).map_or((t, 0, 0, 0), |c| (c.year, c.month.into(), 0, 0))
        }),
        (opts.yearly, &|t| {
            civil(t).map_or((t, 0, 0, 0), |c| (c.year, 0, 0, 0))
        }),
    ];
    for (count, period) in rules {
        if count == 0 {
            continue;
        }
        let covered: HashSet<PeriodId> = order
            .iter()
            .filter(|&&i| entries[i].1 == Some(Mark::Keep))
            .map(|&i| period(entries[i].0.ctime))
            .collect();
        let mut newly: HashSet<PeriodId> = HashSet::new();
        for &i in &order {
            let id = period(entries[i].0.ctime);
            if entries[i].1.is_some() || covered.contains(&id) {
                continue;
            }
            if newly.contains(&id) {
                entries[i].1 = Some(Mark::Remove);
            } else {
                if newly.len() as u64 >= count {
                    break;
                }
                newly.insert(id);
                entries[i].1 = Some(Mark::Keep);
            }
        }
    }
}

/// How a line of a prune run is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Prunes the backups of a storage (upstream's `prune_backups`): `opts`
/// overrides the storage's `prune-backups`; with `dry_run` nothing is
/// removed. Removal goes on past a failing backup and fails at the end.
pub fn prune_backups(
    plugin: &dyn StoragePlugin,
    opts: Option<&PruneOptions>,
    vmid: Option<u32>,
    guest_type: Option<&str>,
    dry_run: bool,
    log: &mut dyn FnMut(Level, String),
) -> Result<Vec<PruneEntry>> {
    let opts = storage_options(plugin, opts)?;
    plugin.activate()?;
    let backups: Vec<Backup> = plugin
        .list_volumes(Some(Content::Backup), None)?
        .iter()
        .filter_map(Backup::from_volume)
        .collect();
    let entries = plan(&backups, &opts, vmid, guest_type, &Local);
    if dry_run {
        return Ok(entries);
    }
    let mut failed = false;
    for e in entries.iter().filter(|e| e.mark == Mark::Remove) {
        log(Level::Info, format!("removing backup '{}'", e.volid));
        let removed = VolumeId::parse(&e.volid)
            .and_then(|id| plugin.path(&id.volname))
            .and_then(|path| remove_archive(&path, log));
        if let Err(err) = removed {
            log(
                Level::Error,
                format!("error when removing backup '{}' - {err}", e.volid),
            );
            failed = true;
        }
    }
    if failed {
        return Err(StorageError::Other(
            "error pruning backups - check log".into(),
        ));
    }
    Ok(entries)
}

/// The options to prune `plugin` with: `over`, or the storage's own.
pub fn storage_options(
    plugin: &dyn StoragePlugin,
    over: Option<&PruneOptions>,
) -> Result<PruneOptions> {
    let def = plugin.def();
    if !def.content().contains(Content::Backup) {
        return Err(StorageError::Other(format!(
            "storage '{}' does not support backups",
            def.id
        )));
    }
    if let Some(o) = over {
        return Ok(*o);
    }
    let text = def.get("prune-backups").ok_or_else(|| {
        StorageError::Other(format!(
            "no prune-backups options configured for storage '{}'",
            def.id
        ))
    })?;
    PruneOptions::parse(text).map_err(|message| StorageError::Option {
        key: "prune-backups".into(),
        message: format!("storage '{}': {message}", def.id),
    })
}

/// Removes a backup archive and its log and notes (upstream's
/// `archive_remove`); a protected archive is refused. A missing archive is
/// not an error; a companion that cannot be removed is a warning.
pub fn remove_archive(path: &Path, log: &mut dyn FnMut(Level, String)) -> Result<()> {
    if path.with_extension_suffix(".protected").exists() {
        return Err(StorageError::Other(format!(
            "cannot remove protected archive '{}'",
            path.display()
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StorageError::io(
                format!("removing archive {} failed", path.display()),
                e,
            ))
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(std) = archive_info(&name).and_then(|i| i.standard) else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    for (kind, companion) in [
        ("log", dir.join(&std.log_name)),
        ("notes", path.with_extension_suffix(".notes")),
    ] {
        match std::fs::remove_file(&companion) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log(Level::Warn, format!("Removing {kind} file failed: {e}")),
        }
    }
    Ok(())
}

// ---- calendar ----

impl DateTime {
    /// Whether the fields name a real moment (upstream's `timelocal` dies otherwise).
    fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// ISO 8601 week-numbering year and week of a date (`strftime` `%G`, `%V`).
pub fn iso_week(year: i64, month: u32, day: u32) -> (i64, u32) {
    let days = days_from_civil(year, month, day);
    // 1970-01-01 was a Thursday; Monday = 1 ... Sunday = 7.
    let weekday = (days + 3).rem_euclid(7) + 1;
    let ordinal = days - days_from_civil(year, 1, 1) + 1;
    let week = (ordinal - weekday + 10) / 7;
    if week < 1 {
        return (year - 1, weeks_in_year(year - 1));
    }
    if week > i64::from(weeks_in_year(year)) {
        return (year + 1, 1);
    }
    (year, week as u32)
}

/// 53 when the year starts on a Thursday (or a Wednesday in a leap year).
fn weeks_in_year(year: i64) -> u32 {
    let jan1 = (days_from_civil(year, 1, 1) + 3).rem_euclid(7) + 1;
    if jan1 == 4 || (jan1 == 3 && is_leap(year)) {
        53
    } else {
        52
    }
}

impl TimeZone for Utc {
    fn epoch(&self, t: &DateTime) -> Option<i64> {
        if !t.is_valid() {
            return None;
        }
        let days = days_from_civil(t.year, t.month, t.day);
        Some(
            days * 86_400
                + i64::from(t.hour) * 3600
                + i64::from(t.minute) * 60
                + i64::from(t.second),
        )
    }

    fn civil(&self, epoch: i64) -> Option<DateTime> {
        let (year, month, day) = civil_from_days(epoch.div_euclid(86_400));
        let secs = epoch.rem_euclid(86_400) as u32;
        Some(DateTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        })
    }
}

impl TimeZone for Local {
    fn epoch(&self, t: &DateTime) -> Option<i64> {
        if !t.is_valid() {
            return None;
        }
        // SAFETY: `tm` is a plain C struct for which all-zero bytes are valid.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = i32::try_from(t.year - 1900).ok()?;
        tm.tm_mon = t.month as i32 - 1;
        tm.tm_mday = t.day as i32;
        tm.tm_hour = t.hour as i32;
        tm.tm_min = t.minute as i32;
        tm.tm_sec = t.second as i32;
        // Let the C library decide whether daylight saving time applies.
        tm.tm_isdst = -1;
        // SAFETY: `tm` is a valid, initialized struct tm owned by this frame.
        let epoch = unsafe { libc::mktime(&mut tm) };
        (epoch != -1 || (t.year, t.month, t.day) == (1969, 12, 31)).then_some(epoch)
    }

    fn civil(&self, epoch: i64) -> Option<DateTime> {
        let time: libc::time_t = epoch;
        // SAFETY: as above, all-zero bytes are a valid struct tm.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the call; localtime_r is re-entrant.
        let ok = unsafe { libc::localtime_r(&time, &mut tm) };
        if ok.is_null() {
            return None;
        }
        Some(DateTime {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
        })
    }
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
