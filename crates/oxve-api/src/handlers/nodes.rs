//! `/version`, `/nodes`, `/nodes/{node}` and the node's own read endpoints,
//! read from /proc and the files under the node's root.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use serde_json::{json, Value};

/// The Proxmox VE release whose API oxve implements (clients gate on it).
pub const PVE_VERSION: &str = "9.1.3";
pub const PVE_RELEASE: &str = "9.1";
/// A repository id in upstream's shape (hex); oxve's version is reported separately.
pub const REPOID: &str = "0c5a0e00";

pub fn register(r: &mut Registry) {
    reg!(r, GET "/version" => version);
    reg!(r, GET "/nodes" => list);
    reg!(r, GET "/nodes/{node}" => super::schema_index);
    reg!(r, GET "/nodes/{node}/status" => status);
    reg!(r, GET "/nodes/{node}/version" => version);
    reg!(r, GET "/nodes/{node}/time" => time);
    reg!(r, GET "/nodes/{node}/dns" => dns);
    reg!(r, PUT "/nodes/{node}/dns" => set_dns);
    reg!(r, GET "/nodes/{node}/hosts" => hosts);
    reg!(r, POST "/nodes/{node}/hosts" => set_hosts);
    reg!(r, GET "/nodes/{node}/syslog" => syslog);
    reg!(r, GET "/nodes/{node}/journal" => journal);
}

async fn version(_ctx: Ctx) -> ApiResult<Value> {
    Ok(json!({
        "version": PVE_VERSION,
        "release": PVE_RELEASE,
        "repoid": REPOID,
        "console": "html5",
        "oxve": env!("CARGO_PKG_VERSION"),
    }))
}

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let s = crate::sys::sample(&ctx.node);
    let mut out = Vec::new();
    {
        let mut entry = json!({
            "node": ctx.node.name,
            "status": "online",
            "level": "",
            "id": format!("node/{}", ctx.node.name),
            "type": "node",
            "ssl_fingerprint": crate::tls::fingerprint(&ctx.node).unwrap_or_default(),
        });
        if ctx.has_privs(&format!("/nodes/{}", ctx.node.name), &["Sys.Audit"], false) {
            entry["cpu"] = json!(s.cpu);
            entry["maxcpu"] = json!(s.cpus);
            entry["mem"] = json!(s.mem_used);
            entry["maxmem"] = json!(s.mem_total);
            entry["disk"] = json!(s.root_used);
            entry["maxdisk"] = json!(s.root_total);
            entry["uptime"] = json!(s.uptime);
        }
        out.push(entry);
    }
    Ok(Value::Array(out))
}

async fn status(ctx: Ctx) -> ApiResult<Value> {
    let s = crate::sys::sample(&ctx.node);
    let uts = nix::sys::utsname::uname().map_err(|e| ApiError::fail(e.to_string()))?;
    let kernel = json!({
        "sysname": uts.sysname().to_string_lossy(),
        "release": uts.release().to_string_lossy(),
        "version": uts.version().to_string_lossy(),
        "machine": uts.machine().to_string_lossy(),
    });
    Ok(json!({
        "cpu": s.cpu,
        "wait": s.iowait,
        "idle": 0,
        "uptime": s.uptime,
        "loadavg": s.loadavg,
        "kversion": format!("{} {} {}", uts.sysname().to_string_lossy(), uts.release().to_string_lossy(), uts.version().to_string_lossy()),
        "current-kernel": kernel,
        "pveversion": format!("pve-manager/{PVE_VERSION}/{REPOID}"),
        "cpuinfo": s.cpuinfo,
        "memory": {"total": s.mem_total, "used": s.mem_used, "free": s.mem_free, "available": s.mem_available},
        "swap": {"total": s.swap_total, "used": s.swap_total - s.swap_free, "free": s.swap_free},
        "rootfs": {"total": s.root_total, "used": s.root_used, "free": s.root_free, "avail": s.root_avail},
        "ksm": {"shared": s.ksm_shared},
        "boot-info": {"mode": if std::path::Path::new("/sys/firmware/efi").exists() { "efi" } else { "legacy-bios" }},
    }))
}

async fn time(ctx: Ctx) -> ApiResult<Value> {
    let now = crate::auth::now();
    let tz = std::fs::read_to_string(ctx.node.path("etc/timezone"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "UTC".into());
    let offset = local_offset();
    Ok(json!({"time": now, "localtime": now + offset, "timezone": tz}))
}

fn local_offset() -> i64 {
    i64::from(chrono::Local::now().offset().local_minus_utc())
}

/// `etc/resolv.conf` under the node's root.
async fn dns(ctx: Ctx) -> ApiResult<Value> {
    let text = std::fs::read_to_string(ctx.node.path("etc/resolv.conf")).unwrap_or_default();
    let mut out = serde_json::Map::new();
    let mut n = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") if n < 3 => {
                n += 1;
                if let Some(ip) = words.next() {
                    out.insert(format!("dns{n}"), json!(ip));
                }
            }
            Some("search") | Some("domain") => {
                let rest: Vec<&str> = words.collect();
                out.insert("search".into(), json!(rest.join(" ")));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

async fn set_dns(ctx: Ctx) -> ApiResult<Value> {
    let path = ctx.node.path("etc/resolv.conf");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text = format!("search {}\n", ctx.str("search")?);
    for key in ["dns1", "dns2", "dns3"] {
        if let Some(ip) = ctx.opt_str(key) {
            text.push_str(&format!("nameserver {ip}\n"));
        }
    }
    // Keep options and comments the user had.
    for line in old.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !matches!(first, "search" | "domain" | "nameserver") && !line.trim().is_empty() {
            text.push_str(line);
            text.push('\n');
        }
    }
    crate::sys::write_atomic(&path, &text)?;
    Ok(Value::Null)
}

async fn hosts(ctx: Ctx) -> ApiResult<Value> {
    let text = std::fs::read_to_string(ctx.node.path("etc/hosts")).unwrap_or_default();
    Ok(json!({"data": text, "digest": oxve_config::digest(&text)}))
}

async fn set_hosts(ctx: Ctx) -> ApiResult<Value> {
    let path = ctx.node.path("etc/hosts");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(d) = ctx.opt_str("digest") {
        if d != oxve_config::digest(&old) {
            return Err(ApiError::fail(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    let mut data = ctx.str("data")?.to_string();
    if !data.ends_with('\n') {
        data.push('\n');
    }
    crate::sys::write_atomic(&path, &data)?;
    Ok(Value::Null)
}

async fn syslog(ctx: Ctx) -> ApiResult<Value> {
    let start = ctx.opt_int("start").unwrap_or(0).max(0) as usize;
    let limit = ctx.opt_int("limit").unwrap_or(50).max(0) as usize;
    let mut args = vec!["-o".to_string(), "short".into(), "--no-pager".into()];
    if let Some(s) = ctx.opt_str("since") {
        args.push(format!("--since={s}"));
    }
    if let Some(s) = ctx.opt_str("until") {
        args.push(format!("--until={s}"));
    }
    if let Some(s) = ctx.opt_str("service") {
        args.push(format!("--unit={s}"));
    }
    let lines = crate::sys::journal_lines(&args).await;
    let data: Vec<Value> = lines
        .into_iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    Ok(Value::Array(data))
}

async fn journal(ctx: Ctx) -> ApiResult<Value> {
    let mut args = vec!["-o".to_string(), "short".into(), "--no-pager".into()];
    if let Some(n) = ctx.opt_int("lastentries") {
        args.push(format!("--lines={n}"));
    } else if ctx.opt_int("since").is_none() {
        args.push("--lines=50".into());
    }
    if let Some(s) = ctx.opt_int("since") {
        args.push(format!("--since=@{s}"));
    }
    if let Some(s) = ctx.opt_int("until") {
        args.push(format!("--until=@{s}"));
    }
    Ok(json!(crate::sys::journal_lines(&args).await))
}
