//! Tests of the prune rules. The cases follow the intent of upstream's
//! `prune_backups_test.pm` (two guests, a protected and a renamed backup,
//! an lxc backup beside the qemu ones, week and year boundaries) with data
//! of our own, in UTC.

use super::*;
use crate::exec::SystemRunner;
use crate::plugin::Env;
use crate::StorageConfig;
use std::sync::Arc;

const STORE: &str = "bk";
const GUESTS: [u32; 2] = [200, 4711];

/// The newest backup of the default list: Wednesday 2025-01-01 16:42:07 UTC,
/// so "yesterday" is in the same ISO week but another month and year.
const NOW: &str = "2025_01_01-16_42_07";

fn utc(name_time: &str) -> i64 {
    let n: Vec<u32> = name_time
        .split(['_', '-'])
        .map(|p| p.parse().unwrap())
        .collect();
    Utc.epoch(&DateTime {
        year: n[0].into(),
        month: n[1],
        day: n[2],
        hour: n[3],
        minute: n[4],
        second: n[5],
    })
    .unwrap()
}

fn backup(file_name: &str, protected: bool) -> Backup {
    Backup {
        volid: format!("{STORE}:backup/{file_name}"),
        file_name: file_name.into(),
        // The file time differs from the name: names decide for standard ones.
        ctime: 1_000,
        protected,
    }
}

/// Per guest: six qemu backups (one protected), one lxc, one renamed.
const QEMU_TIMES: [&str; 6] = [
    "2023_06_18-15_42_07",
    "2024_12_31-15_42_07",
    "2024_12_31-15_42_37", // protected
    "2024_12_31-15_43_07",
    "2025_01_01-15_42_07",
    NOW,
];

fn default_list() -> Vec<Backup> {
    let mut out = Vec::new();
    for id in GUESTS {
        for (i, t) in QEMU_TIMES.iter().enumerate() {
            out.push(backup(&format!("vzdump-qemu-{id}-{t}.vma.zst"), i == 2));
        }
        out.push(backup(&format!("vzdump-lxc-{id}-{NOW}.tar.zst"), false));
        out.push(backup(&format!("vzdump-{id}-renamed.tar.zst"), false));
    }
    out
}

/// The expected result for `guests`: five marks for the unprotected qemu
/// backups (oldest first), one for the lxc backup; `None` leaves a type out.
fn expected(
    guests: &[u32],
    qemu: Option<[&str; 5]>,
    lxc: Option<&str>,
    renamed: bool,
) -> Vec<(String, &'static str, i64, String, Option<u32>)> {
    let mut out = Vec::new();
    for &id in guests {
        if let Some(marks) = qemu {
            let mut marks = marks.iter();
            for (i, t) in QEMU_TIMES.iter().enumerate() {
                let mark = if i == 2 {
                    "protected"
                } else {
                    marks.next().unwrap()
                };
                out.push((
                    format!("{STORE}:backup/vzdump-qemu-{id}-{t}.vma.zst"),
                    "qemu",
                    utc(t),
                    mark.to_string(),
                    Some(id),
                ));
            }
        }
        if let Some(mark) = lxc {
            out.push((
                format!("{STORE}:backup/vzdump-lxc-{id}-{NOW}.tar.zst"),
                "lxc",
                utc(NOW),
                mark.to_string(),
                Some(id),
            ));
        }
        if renamed {
            out.push((
                format!("{STORE}:backup/vzdump-{id}-renamed.tar.zst"),
                "unknown",
                1_000,
                "renamed".to_string(),
                Some(id),
            ));
        }
    }
    out.sort();
    out
}

fn run(
    list: &[Backup],
    keep: &str,
    vmid: Option<u32>,
    kind: Option<&str>,
) -> Vec<(String, &'static str, i64, String, Option<u32>)> {
    let opts = PruneOptions::parse(keep).unwrap();
    let mut got: Vec<_> = plan(list, &opts, vmid, kind, &Utc)
        .into_iter()
        .map(|e| {
            let kind: &'static str = match e.guest_type.as_str() {
                "qemu" => "qemu",
                "lxc" => "lxc",
                "openvz" => "openvz",
                _ => "unknown",
            };
            (e.volid, kind, e.ctime, e.mark.as_str().to_string(), e.vmid)
        })
        .collect();
    got.sort();
    got
}

#[test]
fn default_list_cases() {
    let one = [GUESTS[0]];
    let all = GUESTS;
    #[allow(clippy::type_complexity)]
    let cases: &[(
        &str,
        &str,
        Option<u32>,
        Option<&str>,
        &[u32],
        Option<[&str; 5]>,
        Option<&str>,
        bool,
    )] = &[
        (
            "last=3",
            "keep-last=3",
            None,
            None,
            &all,
            Some(["remove", "remove", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "weekly=2",
            "keep-weekly=2",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "remove", "remove", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "daily=weekly=monthly=1",
            "keep-hourly=0,keep-daily=1,keep-weekly=1,keep-monthly=1",
            None,
            None,
            &all,
            Some(["keep", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "hourly=4",
            "keep-hourly=4,keep-daily=0",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "remove", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "yearly=2",
            "keep-hourly=0,keep-daily=0,keep-weekly=0,keep-monthly=0,keep-yearly=2",
            None,
            None,
            &all,
            Some(["remove", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "last=2,hourly=2",
            "keep-last=2,keep-hourly=2",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "remove", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "last=1,monthly=2",
            "keep-last=1,keep-monthly=2",
            None,
            None,
            &all,
            Some(["keep", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "monthly=3",
            "keep-monthly=3",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "last=daily=weekly=1",
            "keep-last=1,keep-daily=1,keep-weekly=1",
            None,
            None,
            &all,
            Some(["keep", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "last=daily=weekly=1, zeros",
            "keep-hourly=0,keep-last=1,keep-daily=1,keep-weekly=1,keep-monthly=0,keep-yearly=0",
            None,
            None,
            &all,
            Some(["keep", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "daily=2",
            "keep-daily=2",
            Some(one[0]),
            None,
            &one,
            Some(["remove", "remove", "keep", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "weekly=monthly=1",
            "keep-weekly=1,keep-monthly=1",
            None,
            None,
            &all,
            Some(["keep", "remove", "remove", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "weekly=yearly=1",
            "keep-weekly=1,keep-yearly=1",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "remove", "remove", "remove", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "weekly=yearly=1, qemu only",
            "keep-weekly=1,keep-yearly=1",
            Some(one[0]),
            Some("qemu"),
            &one,
            Some(["keep", "remove", "remove", "remove", "keep"]),
            None,
            false,
        ),
        (
            "last=1, lxc only",
            "keep-last=1",
            Some(one[0]),
            Some("lxc"),
            &one,
            None,
            Some("keep"),
            false,
        ),
        (
            "nothing given keeps all",
            "",
            None,
            None,
            &all,
            Some(["keep", "keep", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "all zero keeps all",
            "keep-last=0,keep-hourly=0,keep-daily=0,keep-weekly=0,keep-monthly=0,keep-yearly=0",
            None,
            None,
            &all,
            Some(["keep", "keep", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "keep-all=0 alone keeps all",
            "keep-all=0",
            None,
            None,
            &all,
            Some(["keep", "keep", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
        (
            "keep-all",
            "keep-all=1",
            Some(one[0]),
            None,
            &one,
            Some(["keep", "keep", "keep", "keep", "keep"]),
            Some("keep"),
            true,
        ),
    ];
    let list = default_list();
    for (what, keep, vmid, kind, guests, qemu, lxc, renamed) in cases {
        assert_eq!(
            run(&list, keep, *vmid, *kind),
            expected(guests, *qemu, *lxc, *renamed),
            "{what}"
        );
    }
}

#[test]
fn years_before_2000_and_after_2038() {
    let list = [
        backup("vzdump-lxc-321-1970_01_02-03_04_05.tar.zst", false),
        backup("vzdump-lxc-321-2069_12_31-23_59_00.tar.zst", false),
    ];
    let got = run(&list, "keep-yearly=1", None, None);
    assert_eq!(
        got.iter().map(|g| (g.2, g.3.as_str())).collect::<Vec<_>>(),
        [
            (utc("1970_01_02-03_04_05"), "remove"),
            (utc("2069_12_31-23_59_00"), "keep")
        ]
    );
    assert_eq!(got[0].2, 86_400 + 3 * 3600 + 4 * 60 + 5);
}

#[test]
fn names_without_a_guest_id_are_renamed() {
    let got = run(
        &[backup("vzdump-lxc-novmid.tar.gz", false)],
        "keep-last=1",
        None,
        None,
    );
    assert_eq!(
        got,
        [(
            format!("{STORE}:backup/vzdump-lxc-novmid.tar.gz"),
            "lxc",
            1_000,
            "renamed".to_string(),
            None
        )]
    );
    // An impossible date makes the whole name unknown, as upstream's timelocal dies.
    let got = run(
        &[backup("vzdump-qemu-100-2024_02_30-00_00_00.vma", false)],
        "keep-last=1",
        None,
        None,
    );
    assert_eq!((got[0].1, got[0].3.as_str()), ("unknown", "renamed"));
    // A guest id below 100 is not the standard scheme.
    let got = run(
        &[backup("vzdump-qemu-99-2024_02_03-00_00_00.vma", false)],
        "keep-last=1",
        None,
        None,
    );
    assert_eq!((got[0].1, got[0].3.as_str()), ("qemu", "renamed"));
}

#[test]
fn a_period_kept_by_one_rule_is_covered_for_the_next() {
    let list = [
        backup("vzdump-qemu-7654-2024_12_25-12_18_21.vma.zst", false),
        backup("vzdump-qemu-7654-2024_12_31-12_18_21.vma.zst", false),
        backup("vzdump-qemu-7654-2025_01_01-12_18_21.vma.zst", false),
    ];
    let marks: Vec<String> = run(
        &list,
        "keep-daily=1,keep-weekly=1,keep-monthly=1",
        None,
        None,
    )
    .into_iter()
    .map(|g| g.3)
    .collect();
    // December is covered by the backup weekly kept on the 25th.
    assert_eq!(marks, ["keep", "remove", "keep"]);
}

#[test]
fn week_boundary() {
    // Thursday, Friday, then Monday of the next ISO week.
    let list = [
        backup("vzdump-qemu-7654-2023_11_09-12_18_21.vma.zst", false),
        backup("vzdump-qemu-7654-2023_11_10-12_18_21.vma.zst", false),
        backup("vzdump-qemu-7654-2023_11_13-12_18_21.vma.zst", false),
    ];
    let marks: Vec<String> = run(&list, "keep-daily=1,keep-weekly=1", None, None)
        .into_iter()
        .map(|g| g.3)
        .collect();
    assert_eq!(marks, ["remove", "keep", "keep"]);
}

#[test]
fn protected_backups_neither_count_nor_cover() {
    let list = [
        backup("vzdump-qemu-300-2025_03_01-00_00_00.vma.zst", false),
        backup("vzdump-qemu-300-2025_03_02-00_00_00.vma.zst", false),
        backup("vzdump-qemu-300-2025_03_03-00_00_00.vma.zst", true),
    ];
    let marks: Vec<String> = run(&list, "keep-daily=1", None, None)
        .into_iter()
        .map(|g| g.3)
        .collect();
    assert_eq!(marks, ["remove", "keep", "protected"]);
    // A renamed backup that is protected says protected.
    let got = run(
        &[backup("vzdump-qemu-300-manual.vma.zst", true)],
        "keep-last=1",
        None,
        None,
    );
    assert_eq!(got[0].3, "protected");
}

#[test]
fn groups_are_per_type_and_guest() {
    let list = [
        backup("vzdump-qemu-300-2025_03_01-00_00_00.vma.zst", false),
        backup("vzdump-lxc-300-2025_03_02-00_00_00.tar.zst", false),
        backup("vzdump-qemu-301-2025_03_03-00_00_00.vma.zst", false),
        backup("vzdump-openvz-300-2025_03_04-00_00_00.tgz", false),
        backup("vzdump-qemu-300-2025_03_05-00_00_00.vma", false),
    ];
    let got = run(&list, "keep-last=1", None, None);
    let by_name: Vec<(&str, &str)> = got
        .iter()
        .map(|g| (g.0.rsplit('/').next().unwrap(), g.3.as_str()))
        .collect();
    assert_eq!(
        by_name,
        [
            ("vzdump-lxc-300-2025_03_02-00_00_00.tar.zst", "keep"),
            ("vzdump-openvz-300-2025_03_04-00_00_00.tgz", "keep"),
            ("vzdump-qemu-300-2025_03_01-00_00_00.vma.zst", "remove"),
            ("vzdump-qemu-300-2025_03_05-00_00_00.vma", "keep"),
            ("vzdump-qemu-301-2025_03_03-00_00_00.vma.zst", "keep"),
        ]
    );
    // The guest filter matches `-<vmid>-` anywhere inside the name.
    let got = run(&list, "keep-last=1", Some(301), None);
    assert_eq!(got.len(), 1);
}

#[test]
fn options_parse_and_normalize() {
    let o = PruneOptions::parse("keep-last=3,keep-daily=7,keep-yearly=1").unwrap();
    assert_eq!((o.keep_all, o.last, o.daily, o.yearly), (false, 3, 7, 1));
    for all in [
        "",
        "keep-all=1",
        "keep-all=0",
        "keep-last=0",
        "keep-all=1,keep-last=0",
    ] {
        assert!(PruneOptions::parse(all).unwrap().keep_all, "{all}");
    }
    assert_eq!(
        PruneOptions::parse("keep-all=1,keep-last=2").unwrap_err(),
        "keep-all cannot be set together with other options."
    );
    for bad in ["keep-last=-1", "keep-often=1", "keep-last=x", "3"] {
        assert!(PruneOptions::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn iso_weeks() {
    for ((y, m, d), want) in [
        ((2021, 1, 3), (2020, 53)),
        ((2021, 1, 4), (2021, 1)),
        ((2024, 12, 30), (2025, 1)),
        ((2020, 12, 31), (2020, 53)),
        ((2023, 1, 1), (2022, 52)),
        ((2025, 1, 1), (2025, 1)),
        ((2026, 6, 15), (2026, 25)),
        ((1970, 1, 1), (1970, 1)),
    ] {
        assert_eq!(iso_week(y, m, d), want, "{y}-{m}-{d}");
    }
}

#[test]
fn utc_and_local_round_trip() {
    for t in [0i64, 59, 86_399, 951_782_400, 1_735_749_727, 3_155_760_000] {
        let c = Utc.civil(t).unwrap();
        assert_eq!(Utc.epoch(&c), Some(t));
        let l = Local.civil(t).unwrap();
        assert_eq!(Local.epoch(&l), Some(t), "{l:?}");
    }
    assert_eq!(
        Utc.civil(951_782_400).unwrap(),
        DateTime {
            year: 2000,
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0
        }
    );
}

/// A `dir` storage with backups in a temporary directory.
fn dir_storage(dir: &std::path::Path, prune: Option<&str>) -> Box<dyn StoragePlugin> {
    let mut cfg = format!(
        "dir: {STORE}\n\tpath {}\n\tcontent backup,iso\n",
        dir.display()
    );
    if let Some(p) = prune {
        cfg.push_str(&format!("\tprune-backups {p}\n"));
    }
    let def = StorageConfig::parse(&format!("{cfg}\n"))
        .get(STORE)
        .unwrap();
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: dir.join("run"),
        secret: None,
    };
    crate::plugins::open(def, env).unwrap()
}

#[test]
fn prune_removes_archives_with_log_and_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = dir_storage(tmp.path(), Some("keep-last=1"));
    plugin.activate().unwrap();
    let dump = tmp.path().join("dump");
    let names = [
        "vzdump-qemu-100-2024_05_01-10_00_00",
        "vzdump-qemu-100-2024_05_02-10_00_00",
        "vzdump-qemu-100-2024_05_03-10_00_00",
    ];
    for n in names {
        std::fs::write(dump.join(format!("{n}.vma.zst")), n).unwrap();
        std::fs::write(dump.join(format!("{n}.log")), "log").unwrap();
        std::fs::write(dump.join(format!("{n}.vma.zst.notes")), "notes").unwrap();
    }
    std::fs::write(dump.join(format!("{}.vma.zst.protected", names[0])), "").unwrap();
    std::fs::write(dump.join("vzdump-qemu-100-by-hand.vma.zst"), "x").unwrap();

    let mut lines = Vec::new();
    let dry = prune_backups(&*plugin, None, None, None, true, &mut |_, l| lines.push(l)).unwrap();
    let marks: Vec<&str> = dry.iter().map(|e| e.mark.as_str()).collect();
    assert_eq!(marks, ["protected", "remove", "keep", "renamed"]);
    assert!(lines.is_empty() && dump.join(format!("{}.vma.zst", names[1])).exists());

    let over = PruneOptions::parse("keep-all=1").unwrap();
    let all = prune_backups(
        &*plugin,
        Some(&over),
        Some(100),
        Some("qemu"),
        true,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(all.iter().all(|e| e.mark != Mark::Remove));

    prune_backups(&*plugin, None, None, None, false, &mut |_, l| lines.push(l)).unwrap();
    assert_eq!(
        lines,
        [format!(
            "removing backup '{STORE}:backup/{}.vma.zst'",
            names[1]
        )]
    );
    let mut left: Vec<String> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec!["vzdump-qemu-100-by-hand.vma.zst".to_string()];
    for n in [names[0], names[2]] {
        want.extend([
            format!("{n}.log"),
            format!("{n}.vma.zst"),
            format!("{n}.vma.zst.notes"),
        ]);
    }
    want.push(format!("{}.vma.zst.protected", names[0]));
    want.sort();
    assert_eq!(left, want);

    let err =
        remove_archive(&dump.join(format!("{}.vma.zst", names[0])), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("protected"), "{err}");
}

#[test]
fn prune_needs_backup_content_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = dir_storage(tmp.path(), None);
    let err = prune_backups(&*plugin, None, None, None, true, &mut |_, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no prune-backups options configured for storage '{STORE}'")
    );
    let def = StorageConfig::parse(&format!(
        "dir: iso\n\tpath {}\n\tcontent iso\n\n",
        tmp.path().display()
    ))
    .get("iso")
    .unwrap();
    let env = Env {
        runner: Arc::new(SystemRunner),
        run_dir: tmp.path().join("run"),
        secret: None,
    };
    let iso = crate::plugins::open(def, env).unwrap();
    let err = prune_backups(
        &*iso,
        Some(&PruneOptions::default()),
        None,
        None,
        true,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "storage 'iso' does not support backups");
}
