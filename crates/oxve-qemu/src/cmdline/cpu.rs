//! The `-cpu` argument: model (built-in, abstract `x86-64-vN` or custom),
//! flags from PVE, Hyper-V enlightenments, the model and the VM, resolved
//! in that order of priority, plus physical address bits.

use super::props::Props;
use super::Ctx;
use crate::error::{cfg_err, CmdlineError};
use std::collections::BTreeMap;

/// Abstract x86-64 levels: reported model and flags.
const BUILTIN_MODELS: &[(&str, &str)] = &[
    ("x86-64-v2", "+popcnt;+pni;+sse4.1;+sse4.2;+ssse3"),
    ("x86-64-v2-AES", "+aes;+popcnt;+pni;+sse4.1;+sse4.2;+ssse3"),
    ("x86-64-v3", "+aes;+popcnt;+pni;+sse4.1;+sse4.2;+ssse3;+avx;+avx2;+bmi1;+bmi2;+f16c;+fma;+abm;+movbe;+xsave"),
    ("x86-64-v4", "+aes;+popcnt;+pni;+sse4.1;+sse4.2;+ssse3;+avx;+avx2;+bmi1;+bmi2;+f16c;+fma;+abm;+movbe;+xsave;+avx512f;+avx512bw;+avx512cd;+avx512dq;+avx512vl"),
];

/// Flags a VM config may set itself (custom models may set any).
const VM_FLAGS: &[&str] = &[
    "nested-virt",
    "md-clear",
    "pcid",
    "spec-ctrl",
    "ssbd",
    "ibpb",
    "virt-ssbd",
    "amd-ssbd",
    "amd-no-ssb",
    "pdpe1gb",
    "hv-tlbflush",
    "hv-evmcs",
    "aes",
];

const CPUS_32BIT: &[&str] = &[
    "486", "pentium", "pentium2", "pentium3", "coreduo", "athlon", "kvm32", "qemu32",
];

const AARCH64_MODELS: &[&str] = &[
    "a64fx",
    "cortex-a35",
    "cortex-a53",
    "cortex-a55",
    "cortex-a57",
    "cortex-a710",
    "cortex-a72",
    "cortex-a76",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-v1",
];

#[derive(Debug, Clone)]
struct Flag {
    op: String,
    value: Option<String>,
    reason: String,
}

fn flag(op: &str, value: Option<&str>, reason: &str) -> Flag {
    Flag {
        op: op.into(),
        value: value.map(str::to_string),
        reason: reason.into(),
    }
}

type Flags = BTreeMap<String, Flag>;

fn default_cpu_type(arch: &str, kvm: bool) -> &'static str {
    match (arch, kvm) {
        ("aarch64", true) => "host",
        ("aarch64", false) => "max",
        (_, true) => "kvm64",
        (_, false) => "qemu64",
    }
}

fn models_of<'e>(ctx: &Ctx<'e>, arch: &str) -> BTreeMap<String, String> {
    if arch == "aarch64" {
        let mut m: BTreeMap<String, String> = AARCH64_MODELS
            .iter()
            .map(|n| (n.to_string(), "ARM".to_string()))
            .collect();
        m.insert("max".into(), "default".into());
        if ctx.env.host_arch == "aarch64" {
            m.insert("host".into(), "default".into());
        }
        m
    } else {
        let mut m = ctx.env.cpu_models.clone();
        if ctx.env.host_arch != "x86_64" {
            m.remove("host");
        }
        m
    }
}

fn custom_model(ctx: &Ctx, name: &str) -> Result<BTreeMap<String, String>, CmdlineError> {
    let short = name.strip_prefix("custom-").unwrap_or(name);
    match ctx.env.custom_cpu_models.get(short) {
        Some(m) => Ok(m
            .iter()
            .filter(|(_, v)| !v.is_empty() && v.as_str() != "0")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()),
        None => cfg_err(format!("Custom cputype '{short}' not found")),
    }
}

fn vm_cpu(ctx: &Ctx) -> Result<Option<Props>, CmdlineError> {
    match ctx.get("cpu").filter(|c| !c.is_empty()) {
        Some(text) => Ok(Some(Props::parse(text, Some("cputype"))?)),
        None => Ok(None),
    }
}

/// 32 or 64: the bitness of the configured CPU model.
pub fn cpu_bitness(ctx: &Ctx) -> Result<u32, CmdlineError> {
    let mut cputype = default_cpu_type(&ctx.arch, false).to_string();
    if let Some(cpu) = vm_cpu(ctx)? {
        cputype = cpu.get("cputype").unwrap_or_default().to_string();
        if BUILTIN_MODELS.iter().any(|(n, _)| *n == cputype) {
            cputype = "qemu64".into();
        } else if cputype.starts_with("custom-") {
            let model = custom_model(ctx, &cputype)?;
            cputype = model
                .get("reported-model")
                .cloned()
                .unwrap_or_else(|| "kvm64".into());
        }
    }
    Ok(
        if ctx.arch == "x86_64" && CPUS_32BIT.contains(&cputype.as_str()) {
            32
        } else {
            64
        },
    )
}

fn parse_flag_list(list: Option<&str>, only: Option<&[&str]>, reason: &str) -> Flags {
    let mut out = Flags::new();
    for f in list.unwrap_or_default().split(';') {
        let (op, name) = match f.chars().next() {
            Some(c @ ('+' | '-')) => (c.to_string(), &f[1..]),
            _ => continue,
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid || only.is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        out.insert(name.to_string(), flag(&op, None, reason));
    }
    out
}

fn print_flag(name: &str, f: &Flag) -> String {
    let mut s = format!("'{}{name}", f.op);
    if let Some(v) = &f.value {
        s.push_str(&format!("={v}"));
    }
    s.push('\'');
    s.push_str(&format!(" ({})", f.reason));
    s
}

fn resolve(ctx: &mut Ctx, layers: Vec<Flags>) -> Flags {
    let mut out = Flags::new();
    let nested = ctx
        .env
        .cpu_flags
        .iter()
        .find(|f| *f == "svm" || *f == "vmx")
        .cloned();
    for layer in layers {
        for (mut name, f) in layer {
            if name == "nested-virt" {
                match &nested {
                    Some(n) => name = n.clone(),
                    None => {
                        ctx.notice("WARN: ignoring 'nested-virt' CPU flag - unable to resolve from host CPU flags");
                        continue;
                    }
                }
            }
            if let Some(old) = out.get_mut(&name) {
                if old.op == f.op && old.value == f.value {
                    old.reason.push_str(&format!(" & {}", f.reason));
                    continue;
                }
                let msg = format!(
                    "warning: CPU flag/setting {} overwrites {}",
                    print_flag(&name, &f),
                    print_flag(&name, old)
                );
                ctx.warn(msg);
            }
            out.insert(name, f);
        }
    }
    out
}

/// `-cpu <model>,<flags>` (`get_cpu_options`).
pub fn cpu_options(
    ctx: &mut Ctx,
    kvm: bool,
    mut kvm_off: bool,
    gpu_passthrough: bool,
) -> Result<Vec<String>, CmdlineError> {
    let arch = ctx.arch.clone();
    let mut cputype = default_cpu_type(&arch, kvm).to_string();
    let cpu = vm_cpu(ctx)?;
    let mut custom: Option<BTreeMap<String, String>> = None;
    let mut builtin_flags: Option<&str> = None;
    let mut hv_vendor_id: Option<String> = None;
    if let Some(cpu) = &cpu {
        cputype = cpu.get("cputype").unwrap_or_default().to_string();
        if let Some((_, flags)) = BUILTIN_MODELS
            .iter()
            .find(|(n, _)| *n == cputype)
            .filter(|_| arch == "x86_64")
        {
            cputype = "qemu64".into();
            builtin_flags = Some(flags);
        } else if cputype.starts_with("custom-") {
            let model = custom_model(ctx, &cputype)?;
            cputype = model
                .get("reported-model")
                .cloned()
                .unwrap_or_else(|| "kvm64".into());
            if let Some(h) = model.get("hidden") {
                kvm_off = super::props::is_true(h);
            }
            hv_vendor_id = model.get("hv-vendor-id").cloned();
            custom = Some(model);
        }
        cputype = match cputype.as_str() {
            "Icelake-Client" => "Icelake-Server".into(),
            "Icelake-Client-noTSX" => "Icelake-Server-noTSX".into(),
            _ => cputype,
        };
        if let Some(h) = cpu.flag("hidden") {
            kvm_off = h;
        }
        if let Some(v) = cpu.get("hv-vendor-id") {
            hv_vendor_id = Some(v.to_string());
        }
    }
    let models = models_of(ctx, &arch);
    let Some(vendor) = models.get(&cputype).cloned() else {
        return cfg_err(format!(
            "CPU model '{cputype}' does not exist for configured vCPU architecture '{arch}'"
        ));
    };

    let pve = pve_flags(ctx, kvm, &cputype, &arch);
    let hv = if kvm && arch == "x86_64" {
        hyperv_flags(ctx, gpu_passthrough, hv_vendor_id)
    } else {
        Flags::new()
    };
    let builtin = parse_flag_list(builtin_flags, None, "set by builtin CPU model");
    let custom_flags = parse_flag_list(
        custom
            .as_ref()
            .and_then(|c| c.get("flags"))
            .map(String::as_str),
        None,
        "set by custom CPU model",
    );
    let vm_flags = parse_flag_list(
        cpu.as_ref().and_then(|c| c.get("flags")),
        Some(VM_FLAGS),
        "manually set for VM",
    );
    let mut forced = Flags::new();
    if cputype != "host" && kvm && arch == "x86_64" {
        forced.insert(
            "enforce".into(),
            flag("", None, "error if requested CPU settings not available"),
        );
    }
    if kvm_off && arch == "x86_64" {
        forced.insert(
            "kvm".into(),
            flag("", Some("off"), "hide KVM virtualization from guest"),
        );
    }
    if arch == "x86_64" && vendor != "default" {
        forced.insert("vendor".into(), flag("", Some(&vendor), "unknown origin"));
    }

    let mut cpu_str = cputype.clone();
    let level = cpu
        .as_ref()
        .and_then(|c| c.get("level").map(str::to_string))
        .or_else(|| custom.as_ref().and_then(|c| c.get("level").cloned()));
    if let Some(level) = level {
        if arch == "x86_64" {
            cpu_str.push_str(&format!(",level={level}"));
        } else {
            ctx.warn(format!(
                "CPU 'level' property is ignored for architecture '{arch}'"
            ));
        }
    }
    let resolved = resolve(ctx, vec![pve, hv, builtin, custom_flags, vm_flags, forced]);
    for (name, f) in &resolved {
        cpu_str.push(',');
        cpu_str.push_str(&f.op);
        cpu_str.push_str(name);
        if let Some(v) = f.value.as_deref().filter(|v| !v.is_empty() && *v != "0") {
            cpu_str.push_str(&format!("={v}"));
        }
    }
    let mut above_40 = false;
    for opt in ["guest-phys-bits", "phys-bits"] {
        let mut out = String::new();
        let vm_val = cpu.as_ref().and_then(|c| c.get(opt)).map(str::to_string);
        let custom_val = custom.as_ref().and_then(|c| c.get(opt)).cloned();
        for val in [custom_val, vm_val].into_iter().flatten() {
            if val.is_empty() || val == "0" {
                continue;
            }
            if val == "host" {
                if opt == "guest-phys-bits" {
                    return cfg_err("unexpected value 'host' for guest-phys-bits");
                }
                out = ",host-phys-bits=true".into();
                above_40 = ctx.env.host_phys_bits.is_some_and(|b| b > 40);
            } else {
                out = format!(",{opt}={val}");
                if opt == "phys-bits" && val.parse::<u32>().is_ok_and(|b| b > 40) {
                    above_40 = true;
                }
            }
        }
        cpu_str.push_str(&out);
    }
    if above_40 && (cputype == "qemu64" || cputype == "kvm64") && ctx.get("bios") == Some("ovmf") {
        let pdpe = resolved.get("pdpe1gb");
        if pdpe.is_none_or(|f| f.op == "-") {
            ctx.notice("WARN: OVMF firmware might limit CPU 'phys-bits' to 40 - enable the 'pdpe1gb' CPU flag to avoid this");
        }
    }
    Ok(vec!["-cpu".into(), cpu_str])
}

fn pve_flags(ctx: &Ctx, kvm: bool, cputype: &str, arch: &str) -> Flags {
    let mut f = Flags::new();
    let msg = "set by PVE;";
    let x86 = arch == "x86_64";
    if cputype == "kvm64" && x86 {
        f.insert(
            "lahf_lm".into(),
            flag("+", None, &format!("{msg} to support Windows 8.1+")),
        );
    }
    if ctx.get("ostype") == Some("solaris") {
        f.insert(
            "x2apic".into(),
            flag("-", None, &format!("{msg} incompatible with Solaris")),
        );
    }
    if cputype == "kvm64" || cputype == "kvm32" {
        f.insert(
            "sep".into(),
            flag(
                "+",
                None,
                &format!("{msg} to support Windows 8+ and improve Windows XP+"),
            ),
        );
    }
    if cputype.starts_with("Opteron") {
        f.insert(
            "rdtscp".into(),
            flag("-", None, &format!("{msg} broken on AMD Opteron")),
        );
    }
    if ctx.version_guard(2, 3, 0) && kvm && x86 {
        f.insert(
            "kvm_pv_unhalt".into(),
            flag(
                "+",
                None,
                &format!("{msg} to improve Linux guest spinlock performance"),
            ),
        );
        f.insert(
            "kvm_pv_eoi".into(),
            flag(
                "+",
                None,
                &format!("{msg} to improve Linux guest interrupt performance"),
            ),
        );
    }
    if x86 && ctx.kvmver.at_least(11, 0, 0) && ctx.winversion >= 11 {
        let r = format!("{msg} to avoid issues with certain Windows configurations like VBS");
        f.insert("cet-ibt".into(), flag("-", None, &r));
        f.insert("cet-ss".into(), flag("-", None, &r));
    }
    if x86 && ctx.kvmver.at_least(11, 0, 0) && cputype == "host" && !ctx.version_guard(11, 0, 0) {
        f.insert(
            "vmx-mbec".into(),
            flag(
                "-",
                None,
                &format!("{msg} for backwards compatibility with older kernel and QEMU"),
            ),
        );
    }
    f
}

fn hyperv_flags(ctx: &Ctx, gpu_passthrough: bool, hv_vendor_id: Option<String>) -> Flags {
    let mut f = Flags::new();
    let win = ctx.winversion;
    if win < 6 || (ctx.get("bios") == Some("ovmf") && win < 8) {
        return f;
    }
    let default = "automatic Hyper-V enlightenment for Windows";
    let mut add = |name: &str, value: Option<&str>, reason: &str| {
        f.insert(name.into(), flag("", value, reason));
    };
    if gpu_passthrough || hv_vendor_id.is_some() {
        let reason = if hv_vendor_id.is_some() {
            "custom hv_vendor_id set"
        } else {
            "NVIDIA workaround for GPU passthrough"
        };
        let id = hv_vendor_id.clone().unwrap_or_else(|| "proxmox".into());
        add("hv_vendor_id", Some(&id), reason);
    }
    if ctx.version_guard(2, 3, 0) {
        add("hv_spinlocks", Some("0x1fff"), default);
        add("hv_vapic", None, default);
        add("hv_time", None, default);
    } else {
        add("hv_spinlocks", Some("0xffff"), default);
    }
    if ctx.version_guard(2, 6, 0) {
        add("hv_reset", None, default);
        add("hv_vpindex", None, default);
        add("hv_runtime", None, default);
    }
    if win >= 7 {
        let r7 = format!("{default} 7 and higher");
        add("hv_relaxed", None, &r7);
        if ctx.version_guard(2, 12, 0) {
            add("hv_synic", None, &r7);
            add("hv_stimer", None, &r7);
        }
        if ctx.version_guard(3, 1, 0) {
            add("hv_ipi", None, &r7);
        }
    }
    if ctx.env.cpu_vendor == "GenuineIntel" && win >= 11 && ctx.version_guard(11, 0, 2) {
        add(
            "hv_evmcs",
            None,
            &format!("{default} for Windows 11 on Intel host"),
        );
    }
    f
}

/// A hot-pluggable vCPU device (`print_cpu_device`).
pub fn cpu_device(ctx: &Ctx, id: u32, cores: u32) -> Result<String, CmdlineError> {
    if ctx.arch != "x86_64" {
        return cfg_err("Hotplug of non x86_64 CPU not yet supported");
    }
    let kvm = ctx.get("kvm").map_or(ctx.env.host_arch == "x86_64", |k| {
        super::props::perl_true(Some(k))
    });
    let mut cpu = default_cpu_type("x86_64", kvm).to_string();
    if let Some(c) = vm_cpu(ctx)? {
        cpu = c.get("cputype").unwrap_or_default().to_string();
        if BUILTIN_MODELS.iter().any(|(n, _)| *n == cpu) {
            cpu = "qemu64".into();
        } else if cpu.starts_with("custom-") {
            cpu = custom_model(ctx, &cpu)?
                .get("reported-model")
                .cloned()
                .unwrap_or_else(|| "kvm64".into());
        }
        if cpu == "Icelake-Client" {
            cpu = "Icelake-Server".into();
        } else if cpu == "Icelake-Client-noTSX" {
            cpu = "Icelake-Server-noTSX".into();
        }
    }
    let core = (id - 1) % cores;
    let socket = (id - 1 - core) / cores;
    Ok(format!(
        "{cpu}-x86_64-cpu,id=cpu{id},socket-id={socket},core-id={core},thread-id=0"
    ))
}

/// The confidential VM type of the config (`std`, `es`, `snp`).
pub fn cvm_type(ctx: &Ctx) -> Result<Option<String>, CmdlineError> {
    if let Some(v) = ctx.get("amd-sev").filter(|v| !v.is_empty()) {
        return Ok(Props::parse(v, Some("type"))?
            .get("type")
            .map(str::to_string));
    }
    if ctx.get("intel-tdx").is_some_and(|v| !v.is_empty()) {
        return Err(CmdlineError::Unsupported(
            "intel-tdx: Intel TDX guests".into(),
        ));
    }
    Ok(None)
}

/// The `sev-guest`/`sev-snp-guest` object for `amd-sev`.
pub fn amd_sev_object(ctx: &Ctx, value: &str) -> Result<String, CmdlineError> {
    let conf = Props::parse(value, Some("type"))?;
    let kind = conf.get("type").unwrap_or_default();
    let Some(caps) = ctx.env.sev else {
        return cfg_err("Your CPU does not support AMD SEV.");
    };
    if kind == "es" && !caps.es {
        return cfg_err("Your CPU does not support AMD SEV-ES.");
    }
    if kind == "snp" && !caps.snp {
        return cfg_err("Your CPU does not support AMD SEV-SNP.");
    }
    if ctx.get("bios") != Some("ovmf") {
        return cfg_err("To use AMD SEV, you need to change the BIOS to OVMF.");
    }
    let caps_str = format!(
        "cbitpos={},reduced-phys-bits={}",
        caps.cbitpos, caps.reduced_phys_bits
    );
    let (object, policy) = match kind {
        "std" | "es" => {
            let mut p = 0u32;
            if conf.truthy("no-debug") {
                p |= 1;
            }
            if conf.truthy("no-key-sharing") {
                p |= 1 << 1;
            }
            if kind == "es" {
                p |= 1 << 2;
            }
            p |= 1 << 3; // nosend: no migration
            (format!("sev-guest,id=sev0,{caps_str}"), p)
        }
        "snp" => {
            let mut p = 1u32 << 17;
            if conf.flag("allow-smt").unwrap_or(true) {
                p |= 1 << 16;
            }
            if !conf.truthy("no-debug") {
                p |= 1 << 19;
            }
            (format!("sev-snp-guest,id=sev0,{caps_str}"), p)
        }
        other => return cfg_err(format!("invalid AMD SEV type '{other}'")),
    };
    let policy = if policy == 0 {
        "0".to_string()
    } else {
        format!("{policy:#x}")
    };
    let mut out = format!("{object},policy={policy}");
    if conf.truthy("kernel-hashes") {
        out.push_str(",kernel-hashes=on");
    }
    Ok(out)
}
