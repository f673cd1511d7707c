//! `/nodes/{node}/qemu/{vmid}/termproxy` and `vncwebsocket`: a VM's
//! serial console for xterm.js, as upstream runs it — `qm terminal` on the
//! VM's serial socket inside a terminal session (see `termproxy.rs`) — and
//! `vncproxy`, the graphical console (see `vnc.rs`).

use super::qemu::vmid;
use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use serde_json::Value;

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/termproxy" => termproxy);
    reg!(r, GET "/nodes/{node}/qemu/{vmid}/vncwebsocket" => vncwebsocket);
    reg!(r, POST "/nodes/{node}/qemu/{vmid}/vncproxy" => vncproxy);
}

async fn vncproxy(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    crate::vnc::start(&ctx, vmid)
}

async fn termproxy(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let conf = ctx.node.load_vm(vmid)?.conf.main;
    // Upstream's choice: the given serial port, else the first socket one.
    let iface = match ctx.opt_str("serial") {
        Some(s) => s.to_string(),
        None => (0..4)
            .map(|i| format!("serial{i}"))
            .find(|k| conf.get(k) == Some("socket"))
            .ok_or_else(|| ApiError::fail("no serial terminal configured"))?,
    };
    if conf.get(&iface) != Some("socket") {
        return Err(ApiError::fail(format!(
            "{iface} is not a socket serial port"
        )));
    }
    if ctx.node.vm_pid(vmid).is_none() {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    }
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::fail(format!("cannot find own binary: {e}")))?;
    let argv = vec![
        exe.display().to_string(),
        "--root".into(),
        ctx.node.root.display().to_string(),
        "qm".into(),
        "terminal".into(),
        vmid.to_string(),
        "--escape".into(),
        "0".into(),
        "--iface".into(),
        iface,
    ];
    crate::guest::console(&ctx, vmid, argv)
}

async fn vncwebsocket(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    crate::guest::vncwebsocket(&ctx, vmid)
}
