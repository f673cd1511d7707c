//! UEFI firmware (OVMF/AAVMF): the code image and the EFI variables disk as
//! pflash block nodes.

use super::blockdev;
use super::drive::Drive;
use super::props::Props;
use super::{json, push2, Ctx};
use crate::error::{cfg_err, CmdlineError};

/// The EFI variables template of an x86_64 VM: 4 MiB images (`efitype=4m`)
/// with or without Microsoft's keys enrolled, or the old 2 MiB one.
fn vars_template_x86(four_m: bool, ms: bool) -> &'static str {
    match (four_m, ms) {
        (true, true) => "OVMF_VARS_4M.ms.fd",
        (true, false) => "OVMF_VARS_4M.fd",
        (false, _) => "OVMF_VARS.fd",
    }
}

/// The file (below the firmware directory) a new x86_64 `efidisk0` with
/// value `efidisk` is initialised from, as upstream.
pub fn vars_template(efidisk: &str) -> &'static str {
    let opt = |k: &str| {
        efidisk
            .split(',')
            .find_map(|p| p.strip_prefix(k)?.strip_prefix('='))
    };
    let ms = opt("pre-enrolled-keys").is_some_and(|v| matches!(v, "1" | "on" | "yes" | "true"));
    vars_template_x86(opt("efitype") == Some("4m"), ms)
}

fn firmware_files(
    ctx: &Ctx,
    efidisk: Option<&Drive>,
    cvm: Option<&str>,
) -> Result<(String, String), CmdlineError> {
    let (code, vars) = match ctx.arch.as_str() {
        "x86_64" if cvm == Some("snp") => ("OVMF_SEV_4M.fd", ""),
        "x86_64" if matches!(cvm, Some("std" | "es")) => {
            ("OVMF_SEV_CODE_4M.fd", "OVMF_SEV_VARS_4M.fd")
        }
        "x86_64" => {
            let four_m = efidisk.is_some_and(|d| d.get("efitype") == Some("4m"));
            let ms = efidisk.is_some_and(|d| d.truthy("pre-enrolled-keys"));
            if four_m {
                let code = if ctx.q35 {
                    "OVMF_CODE_4M.secboot.fd"
                } else {
                    "OVMF_CODE_4M.fd"
                };
                (code, vars_template_x86(true, ms))
            } else {
                ("OVMF_CODE.fd", vars_template_x86(false, false))
            }
        }
        "aarch64" => {
            if efidisk.is_some_and(|d| d.truthy("pre-enrolled-keys")) {
                ("AAVMF_CODE.secboot.fd", "AAVMF_VARS.ms.fd")
            } else {
                ("AAVMF_CODE.fd", "AAVMF_VARS.fd")
            }
        }
        other => return cfg_err(format!("no OVMF images known for architecture '{other}'")),
    };
    let dir = &ctx.env.paths.firmware_dir;
    Ok((format!("{dir}/{code}"), format!("{dir}/{vars}")))
}

/// The firmware part of the command line and its `-machine` flags.
pub fn commandline(ctx: &mut Ctx) -> Result<(Vec<String>, Vec<String>), CmdlineError> {
    let cvm = super::cpu::cvm_type(ctx)?;
    if cvm.as_deref() == Some("snp") {
        if ctx.get("efidisk0").is_some() {
            ctx.notice("WARN: EFI disks are not supported with Confidential Virtual Machines and will be ignored");
        }
        let (code, _) = firmware_files(ctx, None, cvm.as_deref())?;
        return Ok((vec!["-bios".into(), code], Vec::new()));
    }
    let efidisk = ctx
        .get("efidisk0")
        .and_then(|v| Drive::parse("efidisk0", v));
    let (code, vars) = firmware_files(ctx, efidisk.as_ref(), cvm.as_deref())?;
    let vars_size = ctx.env.firmware_sizes.get(&vars).copied();
    if !ctx.version_guard(10, 0, 0) {
        return legacy_drives(ctx, efidisk.as_ref(), &code, vars_size);
    }
    let mut cmd = Vec::new();
    let code_node = serde_json::json!({
        "driver": "raw",
        "file": {"driver": "file", "filename": code},
        "node-name": "pflash0",
        "read-only": true,
    });
    let (mut drive, format) = match efidisk {
        Some(d) => {
            let format = match d.get("format") {
                Some(f) => f.to_string(),
                None if d.file.contains(':') && !d.file.starts_with('/') => {
                    blockdev::volume(ctx, &d.file, None)?.format
                }
                None => return cfg_err("efidisk format must be specified"),
            };
            (d, format)
        }
        None => {
            ctx.notice("WARN: no efidisk configured! Using temporary efivars disk.");
            let path = format!("/run/qemu-server/efidisk/{}-ovmf.fd", ctx.vmid);
            let d = Drive {
                interface: "efidisk".into(),
                index: 0,
                file: path,
                opts: Props::default(),
                bootindex: None,
            };
            (d, "raw".to_string())
        }
    };
    if drive.get("cache").is_none_or(str::is_empty) {
        drive.opts.0.insert("cache".into(), "writeback".into());
    }
    let size = if format == "raw" {
        match vars_size {
            Some(s) => Some(s),
            None => return cfg_err(format!("EFI vars image '{vars}' not found")),
        }
    } else {
        None
    };
    if drive.file.starts_with('/') && drive.get("format").is_none() {
        drive.opts.0.insert("format".into(), format.clone());
    }
    let vars_node = blockdev::drive_blockdev(ctx, &drive, ctx.is_template, size)?;
    push2(
        &mut cmd,
        "-object",
        json::canonical(&blockdev::throttle_group(&drive)),
    );
    push2(&mut cmd, "-blockdev", json::canonical(&code_node));
    push2(&mut cmd, "-blockdev", json::canonical(&vars_node));
    Ok((
        cmd,
        vec!["pflash0=pflash0".into(), "pflash1=drive-efidisk0".into()],
    ))
}

/// `-drive if=pflash` pairs for machine versions before 10.0.
fn legacy_drives(
    ctx: &mut Ctx,
    efidisk: Option<&Drive>,
    code: &str,
    vars_size: Option<u64>,
) -> Result<(Vec<String>, Vec<String>), CmdlineError> {
    let mut vars = "if=pflash,unit=1,id=drive-efidisk0".to_string();
    let size = vars_size.unwrap_or(0);
    match efidisk {
        Some(d) => {
            let (mut path, mut format) = (d.file.clone(), d.get("format").map(str::to_string));
            if !d.file.starts_with('/') && d.file.contains(':') {
                let vol = blockdev::volume(ctx, &d.file, None)?;
                path = vol.path;
                format.get_or_insert(vol.format);
            }
            let Some(format) = format else {
                return cfg_err("efidisk format must be specified");
            };
            if path.starts_with("rbd:") {
                vars.push_str(",cache=writeback");
                path.push_str(":rbd_cache_policy=writeback");
            }
            vars.push_str(&format!(",format={format},file={path}"));
            if format == "raw" && ctx.version_guard(4, 1, 2) {
                vars.push_str(&format!(",size={size}"));
            }
            if ctx.is_template {
                vars.push_str(",readonly=on");
            }
        }
        None => {
            ctx.notice("WARN: no efidisk configured! Using temporary efivars disk.");
            vars.push_str(&format!(
                ",format=raw,file=/run/qemu-server/efidisk/{}-ovmf.fd",
                ctx.vmid
            ));
            if ctx.version_guard(4, 1, 2) {
                vars.push_str(&format!(",size={size}"));
            }
        }
    }
    let mut cmd = Vec::new();
    push2(
        &mut cmd,
        "-drive",
        format!("if=pflash,unit=0,format=raw,readonly=on,file={code}"),
    );
    push2(&mut cmd, "-drive", vars);
    Ok((cmd, Vec::new()))
}
