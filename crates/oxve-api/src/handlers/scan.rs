//! `/nodes/{node}/scan`: what a storage could be made of — NFS exports,
//! SMB shares, iSCSI targets, LVM volume groups and thin pools, ZFS file
//! systems — scanned with the real tools by `oxve_storage::scan`. The
//! permission rule (Datastore.Allocate on /storage) comes from the schema.
//! `scan/pbs` has no handler: oxve does not drive Proxmox Backup Server
//! storages, so it answers 501.

use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_storage::exec::SystemRunner;
use oxve_storage::scan::{CifsLogin, Scanner, SystemNetwork};
use serde::Serialize;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/scan" => index);
    reg!(r, GET "/nodes/{node}/scan/nfs" => nfs);
    reg!(r, GET "/nodes/{node}/scan/cifs" => cifs);
    reg!(r, GET "/nodes/{node}/scan/iscsi" => iscsi);
    reg!(r, GET "/nodes/{node}/scan/lvm" => lvm);
    reg!(r, GET "/nodes/{node}/scan/lvmthin" => lvmthin);
    reg!(r, GET "/nodes/{node}/scan/zfs" => zfs);
}

/// Upstream's list of scan methods (it leaves `lvmthin` out).
async fn index(_ctx: Ctx) -> ApiResult<Value> {
    let methods = ["cifs", "iscsi", "lvm", "nfs", "pbs", "zfs"];
    Ok(Value::Array(
        methods.iter().map(|m| json!({ "method": m })).collect(),
    ))
}

/// Runs one scan off the async threads with the real tools and network.
async fn scan<T: Serialize>(
    ctx: &Ctx,
    f: impl FnOnce(&Scanner<'_>) -> oxve_storage::Result<T> + Send + 'static,
) -> ApiResult<Value> {
    let run_dir = ctx.node.path("run/oxve/storage");
    blocking(move || {
        let found = f(&Scanner::new(&SystemRunner, &SystemNetwork, &run_dir))?;
        serde_json::to_value(found).map_err(|e| ApiError::fail(format!("scan result: {e}")))
    })
    .await
}

async fn nfs(ctx: Ctx) -> ApiResult<Value> {
    let server = ctx.str("server")?.to_string();
    scan(&ctx, move |s| s.nfs(&server)).await
}

async fn cifs(ctx: Ctx) -> ApiResult<Value> {
    let server = ctx.str("server")?.to_string();
    let username = ctx.opt_str("username").map(str::to_string);
    let password = ctx.opt_str("password").map(str::to_string);
    let domain = ctx.opt_str("domain").map(str::to_string);
    scan(&ctx, move |s| {
        let login = CifsLogin {
            username: username.as_deref(),
            password: password.as_deref(),
            domain: domain.as_deref(),
        };
        s.cifs(&server, &login)
    })
    .await
}

async fn iscsi(ctx: Ctx) -> ApiResult<Value> {
    let portal = ctx.str("portal")?.to_string();
    scan(&ctx, move |s| s.iscsi(&portal)).await
}

async fn lvm(ctx: Ctx) -> ApiResult<Value> {
    scan(&ctx, |s| s.lvm()).await
}

async fn lvmthin(ctx: Ctx) -> ApiResult<Value> {
    let vg = ctx.str("vg")?.to_string();
    scan(&ctx, move |s| s.lvmthin(&vg)).await
}

async fn zfs(ctx: Ctx) -> ApiResult<Value> {
    scan(&ctx, |s| s.zfs()).await
}
