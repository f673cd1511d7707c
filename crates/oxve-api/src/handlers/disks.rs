//! `/nodes/{node}/disks`: the read side of the node's disks — the disk
//! list and S.M.A.R.T. data, from `oxve-disks` on the real host. The
//! permission rules (Sys.Audit) come from the schema.

use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_disks::{get_smart_data, list_disks, verify_blockdev_path, Disk, ListOptions, SysHost};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/disks" => index);
    reg!(r, GET "/nodes/{node}/disks/list" => list);
    reg!(r, GET "/nodes/{node}/disks/smart" => smart);
}

/// Upstream's children, in upstream's order (not all of them are built).
async fn index(_ctx: Ctx) -> ApiResult<Value> {
    let names = [
        "list",
        "initgpt",
        "smart",
        "lvm",
        "lvmthin",
        "directory",
        "wipedisk",
        "zfs",
    ];
    Ok(Value::Array(
        names.iter().map(|n| json!({ "name": n })).collect(),
    ))
}

/// Which disks `type=` keeps.
#[derive(Clone, Copy)]
enum Only {
    All,
    /// Nothing uses them.
    Unused,
    /// Usable for a Ceph journal/DB: no OSD, and unused, or GPT-partitioned,
    /// or LVM.
    JournalDisks,
}

impl Only {
    fn keeps(self, disk: &Disk) -> bool {
        match self {
            Only::All => true,
            Only::Unused => disk.used.is_none(),
            Only::JournalDisks => {
                disk.osdid < 0
                    && match disk.used.as_deref() {
                        None => true,
                        Some("partitions") => disk.gpt,
                        Some(used) => used == "LVM",
                    }
            }
        }
    }
}

/// The disks (and with `include-partitions` their partitions), sorted by
/// name; `skipsmart` leaves health `UNKNOWN` instead of asking smartctl.
async fn list(ctx: Ctx) -> ApiResult<Value> {
    let only = match ctx.opt_str("type") {
        Some("unused") => Only::Unused,
        Some("journal_disks") => Only::JournalDisks,
        // The schema's enum admits nothing else.
        _ => Only::All,
    };
    let include_partitions = ctx.flag("include-partitions");
    let skip_smart = ctx.flag("skipsmart");
    blocking(move || {
        let disks = list_disks(
            &SysHost::new(),
            &ListOptions {
                filter: None,
                include_partitions,
                skip_smart,
            },
        )
        .map_err(|e| ApiError::fail(e.to_string()))?;
        let kept: Vec<&Disk> = disks.values().filter(|d| only.keeps(d)).collect();
        serde_json::to_value(kept).map_err(|e| ApiError::fail(format!("disk list: {e}")))
    })
    .await
}

/// S.M.A.R.T. data of one disk. A path that is not a block device is a bad
/// parameter; a disk smartctl cannot read (or a host without smartctl)
/// answers health `UNKNOWN`, as upstream.
async fn smart(ctx: Ctx) -> ApiResult<Value> {
    let disk = ctx.str("disk")?.to_string();
    let health_only = ctx.flag("healthonly");
    blocking(move || {
        let host = SysHost::new();
        let path = verify_blockdev_path(&host, &disk)
            .map_err(|e| ApiError::param("disk", e.to_string()))?;
        let data = match get_smart_data(&host, &path, health_only) {
            Ok(data) => data,
            Err(e) => {
                tracing::info!("S.M.A.R.T. data of {path}: {e}");
                Default::default()
            }
        };
        let health = data
            .health
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "UNKNOWN".into());
        if health_only {
            return Ok(json!({ "health": health }));
        }
        let mut out =
            serde_json::to_value(&data).map_err(|e| ApiError::fail(format!("smart data: {e}")))?;
        out["health"] = json!(health);
        Ok(out)
    })
    .await
}
