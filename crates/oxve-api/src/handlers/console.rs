//! The node's terminal console: `POST /nodes/{node}/termproxy` starts a
//! shell session for xterm.js (see `termproxy.rs`), and
//! `GET /nodes/{node}/vncwebsocket` checks its ticket; the request pipeline
//! then upgrades the connection to a WebSocket (see `websocket.rs`).

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use crate::termproxy::{self, Terminal};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/termproxy" => node_termproxy);
    reg!(r, GET "/nodes/{node}/vncwebsocket" => node_vncwebsocket);
}

/// Upstream's node shell commands (`cmd`), for root@pam only.
fn shell_command(authid: &str, cmd: Option<&str>) -> ApiResult<Vec<String>> {
    let argv: &[&str] = if authid != "root@pam" {
        // Upstream: everyone else logs in on the host as some host user;
        // `cmd` is ignored for them.
        &["/bin/login"]
    } else {
        match cmd.unwrap_or("login") {
            "login" => &["/bin/login", "-f", "root"],
            other => {
                let tool = if other == "upgrade" {
                    "pveupgrade"
                } else {
                    "pveceph install"
                };
                return Err(ApiError::not_implemented_msg(format!(
                    "shell command '{other}' is not implemented (upstream runs {tool})"
                )));
            }
        }
    };
    Ok(argv.iter().map(|s| s.to_string()).collect())
}

/// The ACL path of a node, after checking that the node is this one.
fn node_path(ctx: &Ctx) -> ApiResult<String> {
    let node = ctx.str("node")?;
    if node != ctx.node.name && node != "localhost" {
        return Err(ApiError::fail(format!("no such cluster node '{node}'")));
    }
    Ok(format!("/nodes/{node}"))
}

async fn node_termproxy(ctx: Ctx) -> ApiResult<Value> {
    let acl_path = node_path(&ctx)?;
    let argv = shell_command(&ctx.caller.authid(), ctx.opt_str("cmd"))?;
    termproxy::start(
        &ctx,
        Terminal {
            argv,
            env: Vec::new(),
            acl_path,
            privs: vec!["Sys.Console"],
            task_type: "vncshell",
            task_id: None,
        },
    )
}

async fn node_vncwebsocket(ctx: Ctx) -> ApiResult<Value> {
    let acl_path = node_path(&ctx)?;
    let port = ctx
        .opt_int("port")
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ApiError::param("port", "property is missing and it is not optional"))?;
    crate::websocket::verify_ticket(ctx.str("vncticket")?, &ctx.caller.authid(), &acl_path, port)?;
    Ok(json!({ "port": port.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn shell_commands_follow_upstream() {
        assert_eq!(
            shell_command("root@pam", None).unwrap(),
            ["/bin/login", "-f", "root"]
        );
        assert_eq!(
            shell_command("root@pam", Some("login")).unwrap(),
            ["/bin/login", "-f", "root"]
        );
        let e = shell_command("root@pam", Some("upgrade")).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert!(shell_command("root@pam", Some("ceph_install")).is_err());
        assert_eq!(shell_command("alice@pve", None).unwrap(), ["/bin/login"]);
        assert_eq!(
            shell_command("alice@pve", Some("upgrade")).unwrap(),
            ["/bin/login"]
        );
        assert_eq!(shell_command("root@pam!t", None).unwrap(), ["/bin/login"]);
    }
}
