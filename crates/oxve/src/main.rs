//! `oxve`: the daemon and the multi-call command-line tools.
//!
//! Invoked as `oxve daemon ...` it runs a node. Invoked as `pvesh`, `pveum`
//! (symlinks to this binary) or as `oxve pvesh ...`, it is that tool, talking
//! to the local node through its Unix socket as root@pam.

mod cli;
mod client;
mod daemon;
mod output;
mod pct;
mod pct_local;
mod pveam;
mod pvesh;
mod pvesm;
mod pvesm_prune;
mod pvesm_scan;
mod pvesm_transfer;
mod pveum;
mod qm;
mod qm_local;

use std::path::PathBuf;
use std::process::ExitCode;

/// Tools this binary answers to, by name.
const TOOLS: &[&str] = &["pvesh", "pveum", "pvesm", "pveam", "pct", "qm"];

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let mut root: Option<PathBuf> = None;
    let tool = if TOOLS.contains(&argv0.as_str()) {
        args.remove(0);
        argv0
    } else {
        args.remove(0);
        // `oxve [--root DIR] <tool|daemon> ...`
        while let Some(first) = args.first() {
            if first == "--root" && args.len() > 1 {
                root = Some(PathBuf::from(args[1].clone()));
                args.drain(..2);
            } else if let Some(dir) = first.strip_prefix("--root=") {
                root = Some(PathBuf::from(dir));
                args.remove(0);
            } else {
                break;
            }
        }
        if args.is_empty() {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
        args.remove(0)
    };
    let root = root
        .or_else(|| std::env::var_os("OXVE_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    let result = match tool.as_str() {
        "daemon" => return daemon::main(root, args),
        "pvesh" => pvesh::main(&root, args),
        "pveum" => pveum::main(&root, args),
        "pvesm" => pvesm::main(&root, args),
        "pveam" => pveam::main(&root, args),
        "pct" => pct::main(&root, args),
        "qm" => qm::main(&root, args),
        "__lxc-hook" => return lxc_hook(args),
        "__qemu-bridge" => return qemu_bridge(args),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        "--version" | "version" => {
            println!("oxve {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => Err(cli::CliError::Usage(format!(
            "unknown command '{other}'\n{}",
            usage()
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// LXC's hooks of a container: `__lxc-hook <root> <hook> <name> lxc <hook>`
/// (LXC appends the last three). After a stop (not a reboot) the
/// container's volumes are unmounted, even when the daemon is down.
fn lxc_hook(args: Vec<String>) -> ExitCode {
    let (Some(root), Some(hook)) = (args.first(), args.get(1)) else {
        eprintln!("usage: oxve __lxc-hook <root> <hook>");
        return ExitCode::from(2);
    };
    if hook == "net-up" {
        // `net-up <bridge> <tag> <trunks> <rate> <name> net up veth <veth>`
        let result = match (args.get(2..6), args.last()) {
            (Some(plug), Some(veth)) if args.len() >= 7 => {
                oxve_lxc::net::Plug::from_args(plug).and_then(|p| p.apply(veth))
            }
            _ => Err(oxve_lxc::LxcError::Config(
                "net-up hook: missing arguments".into(),
            )),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                // For the start task: LXC itself reports only the status.
                if let Some(vmid) = args.get(6).and_then(|n| n.parse().ok()) {
                    let host = oxve_lxc::host::LxcHost::new(std::path::Path::new(root), None);
                    let _ = std::fs::write(host.hook_error_file(vmid), format!("{e}\n"));
                }
                ExitCode::FAILURE
            }
        };
    }
    let name = std::env::var("LXC_NAME").unwrap_or_default();
    let target = std::env::var("LXC_TARGET").unwrap_or_default();
    if hook != "post-stop" || target == "reboot" || name.parse::<u32>().is_err() {
        return ExitCode::SUCCESS;
    }
    let host = oxve_lxc::host::LxcHost::new(std::path::Path::new(root), None);
    let rootfs = host.rootfs_dir(name.parse().unwrap_or_default());
    match oxve_lxc::mount::unmount_all(&rootfs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// QEMU's tap scripts: `__qemu-bridge <root> up|down <tap<vmid>i<n>>`.
/// `up` attaches the new tap to its bridge as the daemon wrote in the
/// NIC's plug file (VLANs, rate limit, the bridge's MTU) and brings it up;
/// `down` has nothing to undo (the kernel removes the tap with its
/// qdiscs and bridge port when QEMU closes it).
fn qemu_bridge(args: Vec<String>) -> ExitCode {
    let [root, action, ifname] = args.as_slice() else {
        eprintln!("usage: oxve __qemu-bridge <root> up|down <tap>");
        return ExitCode::from(2);
    };
    if action != "up" {
        return ExitCode::SUCCESS;
    }
    let result = (|| -> Result<(), String> {
        let (vmid, index) = ifname
            .strip_prefix("tap")
            .and_then(|r| r.split_once('i'))
            .and_then(|(v, i)| Some((v.parse::<u32>().ok()?, i.parse::<u32>().ok()?)))
            .ok_or_else(|| format!("'{ifname}' is not a VM tap (tap<vmid>i<n>)"))?;
        let host = oxve_qemu::host::QemuHost::new(PathBuf::from(root).join("run/oxve/qemu"));
        let file = host.plug_file(vmid, index);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "net{index} of VM {vmid}: cannot read {}: {e}",
                file.display()
            )
        })?;
        let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        let plug = oxve_lxc::net::Plug::from_args(&words).map_err(|e| e.to_string())?;
        plug.apply(ifname)
            .map_err(|e| format!("net{index} of VM {vmid}: {e}"))?;
        let out = std::process::Command::new("ip")
            .args(["link", "set", "dev", ifname, "up"])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot bring '{ifname}' up: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!(
        "oxve {} - a Proxmox VE compatible virtualization environment\n\n\
         USAGE: oxve [--root DIR] <command> [ARGS]\n\n\
         COMMANDS:\n  \
           daemon     run a node (HTTPS API on port 8006, local socket for the CLI)\n  \
           pvesh      call any API path: get|set|create|delete|ls|usage PATH\n  \
           pveum      users, groups, roles, ACLs, tokens and passwords\n  \
           pvesm      storages and their volumes\n  \
           pveam      container templates: appliance index, download, list\n  \
           pct        containers: create, start, stop, config, exec, enter\n  \
           qm         virtual machines: create, start, stop, config, monitor, terminal\n\n\
         The tools are also available as symlinks named after them.\n\
         OXVE_ROOT (or --root) selects the node's root directory (default /).",
        env!("CARGO_PKG_VERSION")
    )
}
