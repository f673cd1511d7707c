//! `/nodes/{node}/lxc/{vmid}/termproxy` and `vncwebsocket`: a container's
//! console for xterm.js, as upstream's `cmode` chooses it — `lxc-console`
//! on a tty or on `/dev/console`, or a shell through `lxc-attach`.

use super::lxc::vmid;
use super::{Ctx, Registry};
use crate::ct;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_lxc::host::RunState;
use serde_json::Value;

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/lxc/{vmid}/termproxy" => termproxy);
    reg!(r, GET "/nodes/{node}/lxc/{vmid}/vncwebsocket" => vncwebsocket);
}

/// The console command of CT `vmid` by its `cmode`, run in the node's
/// network namespace (LXC's command socket lives there).
fn console_argv(node: &crate::node::Node, vmid: u32, cmode: &str) -> Vec<String> {
    let lxc = node.lxc();
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = &lxc.netns {
        argv.extend([
            "nsenter".into(),
            format!("--net=/run/netns/{ns}"),
            "--".into(),
        ]);
    }
    let base = |tool: &str| {
        vec![
            tool.to_string(),
            "-n".into(),
            vmid.to_string(),
            "-P".into(),
            lxc.lxcpath.display().to_string(),
        ]
    };
    match cmode {
        "shell" => {
            argv.extend(base("lxc-attach"));
            argv.extend([
                "--clear-env".into(),
                "--set-var".into(),
                "TERM=xterm-256color".into(),
            ]);
        }
        "console" => {
            argv.extend(base("lxc-console"));
            argv.extend(["-e".into(), "-1".into(), "-t".into(), "0".into()]);
        }
        _ => {
            argv.extend(base("lxc-console"));
            argv.extend(["-e".into(), "-1".into()]);
        }
    }
    argv
}

async fn termproxy(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    let ct = ctx.node.ct(vmid)?;
    if ctx.node.lxc().state(vmid).map_err(ct::lxc_err)? == RunState::Stopped {
        return Err(ApiError::fail(format!("CT {vmid} not running")));
    }
    let argv = console_argv(&ctx.node, vmid, &ct.cmode);
    crate::guest::console(&ctx, vmid, argv)
}

async fn vncwebsocket(ctx: Ctx) -> ApiResult<Value> {
    let vmid = vmid(&ctx)?;
    crate::guest::vncwebsocket(&ctx, vmid)
}
