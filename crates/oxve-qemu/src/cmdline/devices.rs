//! Smaller devices: SMBIOS, USB controllers and devices, display (VGA,
//! QXL/SPICE), tablet, serial/parallel ports, audio, guest agent, RNG,
//! watchdog and ivshmem.

use super::machine::windows_version;
use super::pci::pcie_addr;
use super::props::Props;
use super::{push2, Ctx};
use crate::error::{cfg_err, CmdlineError};
use std::collections::BTreeMap;

/// `-smbios type=1,...` from `smbios1` (keys sorted; base64 values
/// decoded; commas doubled).
pub fn smbios1(value: &str) -> Result<String, CmdlineError> {
    let mut p = Props::parse(value, None)?;
    let base64 =
        p.0.remove("base64")
            .is_some_and(|v| super::props::is_true(&v));
    let mut out = "type=1".to_string();
    for (k, v) in &p.0 {
        let v = if base64 && k != "uuid" {
            decode_base64(v)?
        } else {
            v.clone()
        };
        let v = v.replace(',', ",,");
        if !v.is_empty() && v != "0" {
            out.push_str(&format!(",{k}={v}"));
        }
    }
    Ok(out)
}

fn decode_base64(text: &str) -> Result<String, CmdlineError> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        let Some(v) = ALPHA.iter().position(|a| *a == c) else {
            return cfg_err(format!("invalid base64 value '{text}'"));
        };
        bits = (bits << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn use_qemu_xhci(ctx: &Ctx) -> bool {
    let ostype = ctx.get("ostype");
    ctx.min_machine(7, 1, 0) && (ostype == Some("l26") || windows_version(ostype) > 7)
}

fn usb_entries(ctx: &Ctx) -> Result<Vec<(u32, Props)>, CmdlineError> {
    let xhci = use_qemu_xhci(ctx);
    let mut out = Vec::new();
    for i in 0..14u32 {
        let Some(v) = ctx.get(&format!("usb{i}")).filter(|v| !v.is_empty()) else {
            continue;
        };
        if i >= 5 && !xhci {
            return cfg_err(format!(
                "using usb{i} is only possible with machine type >= 7.1 and ostype l26 or windows > 7"
            ));
        }
        if let Ok(p) = Props::parse(v, Some("host")) {
            out.push((i, p));
        }
    }
    Ok(out)
}

/// USB controllers (`get_usb_controllers`).
pub fn usb_controllers(ctx: &mut Ctx) -> Result<Vec<String>, CmdlineError> {
    let mut out = Vec::new();
    let xhci = use_qemu_xhci(ctx);
    if ctx.arch == "aarch64" {
        let addr = ctx.pci_addr("ehci")?;
        push2(&mut out, "-device", format!("usb-ehci,id=ehci{addr}"));
    } else if !ctx.q35 {
        let addr = ctx.pci_addr("piix3")?;
        push2(
            &mut out,
            "-device",
            format!("piix3-usb-uhci,id=uhci{addr}.0x2"),
        );
    }
    let entries = usb_entries(ctx)?;
    let any = !entries.is_empty();
    let usb3 = entries.iter().any(|(_, p)| p.truthy("usb3"));
    let usb2 = entries.iter().any(|(_, p)| !p.truthy("usb3"));
    if !xhci && !ctx.q35 && usb2 && ctx.arch != "aarch64" {
        push2(
            &mut out,
            "-readconfig",
            format!("{}/pve-usb.cfg", ctx.env.paths.share_dir),
        );
    }
    let addr = ctx.pci_addr("xhci")?;
    if xhci && any {
        push2(
            &mut out,
            "-device",
            format!("qemu-xhci,p2=15,p3=15,id=xhci{addr}"),
        );
    } else if usb3 {
        push2(&mut out, "-device", format!("nec-usb-xhci,id=xhci{addr}"));
    }
    Ok(out)
}

/// USB devices (`get_usb_devices`).
pub fn usb_devices(
    ctx: &mut Ctx,
    bootorder: &BTreeMap<String, u32>,
) -> Result<Vec<String>, CmdlineError> {
    let mut out = Vec::new();
    let xhci = use_qemu_xhci(ctx);
    let spice_usb3 = ctx.min_machine(4, 0, 0);
    for (i, d) in usb_entries(ctx)? {
        let devname = format!("usb{i}");
        let port = xhci.then_some(i + 1);
        let host = d.get("host").unwrap_or_default();
        if host.eq_ignore_ascii_case("spice") {
            let bus = if (d.truthy("usb3") && spice_usb3) || xhci {
                "xhci"
            } else {
                "ehci"
            };
            push2(
                &mut out,
                "-chardev",
                format!("spicevmc,id=usbredirchardev{i},name=usbredir"),
            );
            let mut dev =
                format!("usb-redir,chardev=usbredirchardev{i},id=usbredirdev{i},bus={bus}.0");
            if let Some(p) = port {
                dev.push_str(&format!(",port={p}"));
            }
            push2(&mut out, "-device", dev);
            if bootorder.contains_key(&devname) {
                ctx.warn("warning: spice usb port set as bootdevice, ignoring");
            }
            continue;
        }
        if d.get("mapping").is_some() {
            return Err(CmdlineError::Unsupported("USB device mappings".into()));
        }
        let mut dev = "usb-host".to_string();
        if d.truthy("usb3") || port.is_some() {
            dev.push_str(",bus=xhci.0");
            if let Some(p) = port {
                dev.push_str(&format!(",port={p}"));
            }
        }
        if let Some((v, p)) = usb_id(host) {
            dev.push_str(&format!(",vendorid=0x{v},productid=0x{p}"));
        } else if let Some((bus, port)) = host
            .split_once('-')
            .filter(|(b, _)| b.chars().all(|c| c.is_ascii_digit()))
        {
            dev.push_str(&format!(",hostbus={bus},hostport={port}"));
        } else {
            return cfg_err("no usb id or path given");
        }
        dev.push_str(&format!(",id={devname}"));
        if let Some(b) = bootorder.get(&devname) {
            dev.push_str(&format!(",bootindex={b}"));
        }
        push2(&mut out, "-device", dev);
    }
    Ok(out)
}

fn usb_id(host: &str) -> Option<(String, String)> {
    let (v, p) = host.split_once(':')?;
    let v = v.strip_prefix("0x").unwrap_or(v);
    let p = p.strip_prefix("0x").unwrap_or(p);
    let hex4 = |s: &str| s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit());
    (hex4(v) && hex4(p)).then(|| (v.to_string(), p.to_string()))
}

/// The parsed `vga` option.
#[derive(Debug, Clone, Default)]
pub struct Vga {
    pub kind: String,
    pub memory: Option<u64>,
    pub clipboard: Option<String>,
}

/// The display type and the number of QXL heads (`get_vga_properties`).
pub fn vga_properties(ctx: &Ctx) -> Result<(Vga, u32), CmdlineError> {
    let p = match ctx.get("vga").filter(|v| !v.is_empty()) {
        Some(v) => Props::parse(v, Some("type"))?,
        None => Props::default(),
    };
    let mut vga = Vga {
        kind: p.get("type").unwrap_or_default().to_string(),
        memory: p
            .get("memory")
            .and_then(|m| m.parse().ok())
            .filter(|m| *m > 0),
        clipboard: p.get("clipboard").map(str::to_string),
    };
    let qxlnum = match vga.kind.as_str() {
        "qxl" => 1,
        "qxl2" => 2,
        "qxl3" => 3,
        "qxl4" => 4,
        _ => 0,
    };
    if qxlnum > 0 {
        vga.kind = "qxl".into();
    }
    if vga.kind.is_empty() {
        let win = ctx.winversion;
        vga.kind = if ctx.arch == "aarch64" {
            "virtio".into()
        } else if ctx.min_machine(2, 9, 0) {
            if win == 0 || win >= 6 {
                "std".into()
            } else {
                "cirrus".into()
            }
        } else if win >= 6 {
            "std".into()
        } else {
            "cirrus".into()
        };
    }
    Ok((vga, qxlnum))
}

/// The display device (`print_vga_device`); `id` is the head number for
/// extra QXL heads.
pub fn vga_device(
    ctx: &mut Ctx,
    vga: &Vga,
    id: Option<u32>,
    qxlnum: u32,
) -> Result<String, CmdlineError> {
    let aarch64 = ctx.arch == "aarch64";
    let mut kind = match vga.kind.as_str() {
        "cirrus" => "cirrus-vga",
        "std" => "VGA",
        "vmware" => "vmware-svga",
        "virtio" if aarch64 => "virtio-gpu",
        "virtio" => "virtio-vga",
        "virtio-gl" if aarch64 => "virtio-gpu-gl",
        "virtio-gl" => "virtio-vga-gl",
        _ => "",
    }
    .to_string();
    let mut max_outputs = "";
    if qxlnum > 0 {
        kind = if id.is_some_and(|i| i > 0) {
            "qxl".into()
        } else {
            "qxl-vga".into()
        };
        let ostype = ctx.get("ostype");
        // upstream: `^(?:l\d\d)|(?:other)$`
        let linuxish = ostype.is_none_or(|o| {
            let b = o.as_bytes();
            (b.len() >= 3 && b[0] == b'l' && b[1].is_ascii_digit() && b[2].is_ascii_digit())
                || o.ends_with("other")
        });
        if linuxish && ctx.min_machine(4, 1, 0) {
            max_outputs = ",max_outputs=4";
        }
    }
    if kind.is_empty() {
        return cfg_err(format!("no device-type for {}", vga.kind));
    }
    let head = id.filter(|i| *i > 0);
    let mut memory = String::new();
    if let Some(mb) = vga.memory {
        if vga.kind.starts_with("virtio") {
            memory = format!(",max_hostmem={}", mb * 1024 * 1024);
        } else if qxlnum > 0 {
            memory = format!(
                ",vgamem_mb={mb},ram_size_mb={},vram_size_mb={}",
                mb * 4,
                mb * 2
            );
        } else {
            memory = format!(",vgamem_mb={mb}");
        }
    } else if qxlnum > 0 && head.is_some() {
        memory = ",ram_size=67108864,vram_size=33554432".into();
    }
    let mut edidoff = "";
    if kind == "VGA" && ctx.winversion > 0 && ctx.get("bios") != Some("ovmf") {
        edidoff = ",edid=off";
    }
    let vgaid = match head {
        Some(i) => format!("vga{i}"),
        None => "vga".into(),
    };
    let addr = if ctx.q35 && vgaid == "vga" {
        pcie_addr(&vgaid)
    } else {
        ctx.pci_addr(&vgaid)?
    };
    if vga.kind == "virtio-gl" {
        return Err(CmdlineError::Unsupported(
            "virtio-gl display (needs a host GPU probe)".into(),
        ));
    }
    Ok(format!(
        "{kind},id={vgaid}{memory}{max_outputs}{addr}{edidoff}"
    ))
}

/// The absolute pointing device (VNC needs it).
pub fn tablet_device(ctx: &Ctx) -> String {
    let bus = if ctx.q35 || ctx.arch == "aarch64" {
        "ehci"
    } else {
        "uhci"
    };
    format!("usb-tablet,id=tablet,bus={bus}.0,port=1")
}

/// `serialN` and `parallelN`.
pub fn serial_and_parallel(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    let vmid = ctx.vmid;
    for i in 0..4 {
        let Some(path) = ctx
            .get(&format!("serial{i}"))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
        else {
            continue;
        };
        if path == "socket" {
            push2(
                devices,
                "-chardev",
                format!(
                    "socket,id=serial{i},path={}/{vmid}.serial{i},server=on,wait=off",
                    ctx.env.paths.run_dir
                ),
            );
            if ctx.arch == "aarch64" && i == 0 {
                push2(devices, "-serial", format!("chardev:serial{i}"));
            } else {
                push2(devices, "-device", format!("isa-serial,chardev=serial{i}"));
            }
        } else {
            if !ctx.env.is_device_path(&path) {
                return cfg_err("no such serial device");
            }
            push2(
                devices,
                "-chardev",
                format!("serial,id=serial{i},path={path}"),
            );
            push2(devices, "-device", format!("isa-serial,chardev=serial{i}"));
        }
    }
    for i in 0..3 {
        let Some(path) = ctx
            .get(&format!("parallel{i}"))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
        else {
            continue;
        };
        if !ctx.env.is_device_path(&path) {
            return cfg_err("no such parallel device");
        }
        let kind = if path.starts_with("/dev/usb/lp") {
            "serial"
        } else {
            "parallel"
        };
        push2(
            devices,
            "-chardev",
            format!("{kind},id=parallel{i},path={path}"),
        );
        push2(
            devices,
            "-device",
            format!("isa-parallel,chardev=parallel{i}"),
        );
    }
    Ok(())
}

/// `audio0`.
pub fn audio(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    if !ctx.min_machine(4, 0, 0) {
        return Ok(());
    }
    let Some(value) = ctx.get("audio0").map(str::to_string) else {
        return Ok(());
    };
    let p = Props::parse(&value, Some("device"))?;
    let dev = p.get("device").unwrap_or_default().to_string();
    let backend = p.get("driver").unwrap_or("spice").to_string();
    let id = "audiodev0";
    let backend_id = format!("{backend}-backend0");
    let addr = ctx.pci_addr("audio0")?;
    let audiodev = if ctx.min_machine(4, 2, 0) {
        format!(",audiodev={backend_id}")
    } else {
        String::new()
    };
    if dev == "AC97" {
        push2(devices, "-device", format!("AC97,id={id}{addr}{audiodev}"));
    } else if dev.ends_with("intel-hda") {
        push2(devices, "-device", format!("{dev},id={id}{addr}"));
        push2(
            devices,
            "-device",
            format!("hda-micro,id={id}-codec0,bus={id}.0,cad=0{audiodev}"),
        );
        push2(
            devices,
            "-device",
            format!("hda-duplex,id={id}-codec1,bus={id}.0,cad=1{audiodev}"),
        );
    } else {
        return cfg_err(format!("unknown audio device '{dev}', implement me!"));
    }
    push2(devices, "-audiodev", format!("{backend},id={backend_id}"));
    Ok(())
}

/// The QEMU guest agent channel.
pub fn guest_agent(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    let Some(value) = ctx.get("agent").map(str::to_string) else {
        return Ok(());
    };
    let p = Props::parse(&value, Some("enabled"))?;
    if !p.truthy("enabled") {
        return Ok(());
    }
    let vmid = ctx.vmid;
    push2(
        devices,
        "-chardev",
        format!(
            "socket,path={}/{vmid}.qga,server=on,wait=off,id=qga0",
            ctx.env.paths.run_dir
        ),
    );
    match p.get("type") {
        None | Some("virtio") | Some("") => {
            let addr = ctx.pci_addr("qga0")?;
            push2(devices, "-device", format!("virtio-serial,id=qga0{addr}"));
            push2(
                devices,
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            );
        }
        Some("isa") => push2(devices, "-device", "isa-serial,chardev=qga0"),
        Some(_) => {}
    }
    Ok(())
}

/// `rng0` (a VirtIO RNG fed from a host source).
pub fn rng(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    let Some(value) = ctx
        .get("rng0")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let p = Props::parse(&value, Some("source"))?;
    if !ctx.version_guard(4, 1, 2) {
        return Ok(());
    }
    let source = p.get("source").unwrap_or_default();
    if !matches!(source, "/dev/urandom" | "/dev/random" | "/dev/hwrng") {
        return cfg_err(format!("invalid RNG source '{source}'"));
    }
    push2(
        devices,
        "-object",
        format!("rng-random,filename={source},id=rng0"),
    );
    let max_bytes = p.int("max_bytes").unwrap_or(1024);
    let period = p.int("period").unwrap_or(1000);
    let limiter = if max_bytes != 0 {
        format!(",max-bytes={max_bytes},period={period}")
    } else {
        String::new()
    };
    let addr = ctx.pci_addr("rng0")?;
    push2(
        devices,
        "-device",
        format!("virtio-rng-pci,rng=rng0{limiter}{addr}"),
    );
    Ok(())
}

/// SPICE (QXL or VirtIO displays) and the VNC clipboard agent.
pub fn spice(
    ctx: &mut Ctx,
    vga: &Vga,
    qxlnum: u32,
    cmd: &mut Vec<String>,
    devices: &mut Vec<String>,
) -> Result<Option<u16>, CmdlineError> {
    let vnc_clipboard = vga.clipboard.as_deref() == Some("vnc");
    if vnc_clipboard {
        let ok = ["std", "cirrus", "vmware", "virtio", "qxl"]
            .iter()
            .any(|p| vga.kind.starts_with(p));
        if !vga.kind.is_empty() && !ok {
            return cfg_err(format!(
                "vga type {} is not compatible with VNC clipboard",
                vga.kind
            ));
        }
    }
    let is_spice = qxlnum > 0 || vga.kind.starts_with("virtio");
    if !is_spice && !vnc_clipboard {
        return Ok(None);
    }
    if qxlnum > 1 {
        if ctx.winversion > 0 {
            for i in 1..qxlnum {
                let dev = vga_device(ctx, vga, Some(i), qxlnum)?;
                push2(devices, "-device", dev);
            }
        } else {
            let (ram, vram) = match vga.memory {
                Some(m) => (
                    (u64::from(qxlnum) * 4 * m * 1024 * 1024).to_string(),
                    (u64::from(qxlnum) * 2 * m * 1024 * 1024).to_string(),
                ),
                None => ("134217728".to_string(), "67108864".to_string()),
            };
            push2(cmd, "-global", format!("qxl-vga.ram_size={ram}"));
            push2(cmd, "-global", format!("qxl-vga.vram_size={vram}"));
        }
    }
    let addr = ctx.pci_addr("spice")?;
    push2(devices, "-device", format!("virtio-serial,id=spice{addr}"));
    if vnc_clipboard {
        push2(
            devices,
            "-chardev",
            "qemu-vdagent,id=vdagent,name=vdagent,clipboard=on",
        );
    } else {
        push2(devices, "-chardev", "spicevmc,id=vdagent,name=vdagent");
    }
    push2(
        devices,
        "-device",
        "virtserialport,chardev=vdagent,name=com.redhat.spice.0",
    );
    if !is_spice {
        return Ok(None);
    }
    let port = ctx.env.spice_port;
    let addr = ctx.env.spice_addr.clone();
    let enh = match ctx.get("spice_enhancements") {
        Some(v) => Props::parse(v, None)?,
        None => Props::default(),
    };
    if enh.truthy("foldersharing") {
        push2(
            devices,
            "-chardev",
            "spiceport,id=foldershare,name=org.spice-space.webdav.0",
        );
        push2(
            devices,
            "-device",
            "virtserialport,chardev=foldershare,name=org.spice-space.webdav.0",
        );
    }
    let mut opts = format!("tls-port={port},addr={addr},tls-ciphers=HIGH,seamless-migration=on");
    if let Some(v) = enh
        .get("videostreaming")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        opts.push_str(&format!(",streaming-video={v}"));
    }
    push2(devices, "-spice", opts);
    Ok(Some(port))
}

/// `watchdog`.
pub fn watchdog(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    let Some(value) = ctx
        .get("watchdog")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let p = Props::parse(&value, Some("model"))?;
    let addr = ctx.pci_addr("watchdog")?;
    let model = p.get("model").unwrap_or("i6300esb");
    push2(devices, "-device", format!("{model}{addr}"));
    if let Some(a) = p.get("action").filter(|a| !a.is_empty()) {
        push2(devices, "-watchdog-action", a.to_string());
    }
    Ok(())
}

/// `ivshmem` (shared memory between VMs).
pub fn ivshmem(ctx: &mut Ctx, devices: &mut Vec<String>) -> Result<(), CmdlineError> {
    let Some(value) = ctx
        .get("ivshmem")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let p = Props::parse(&value, None)?;
    let bus = if ctx.q35 {
        pcie_addr("ivshmem")
    } else {
        ctx.pci_addr("ivshmem")?
    };
    let name = p.get("name").map_or(ctx.vmid.to_string(), str::to_string);
    let size = p.get("size").unwrap_or_default();
    push2(
        devices,
        "-device",
        format!("ivshmem-plain,memdev=ivshmem{bus},"),
    );
    push2(
        devices,
        "-object",
        format!(
            "memory-backend-file,id=ivshmem,share=on,mem-path=/dev/shm/pve-shm-{name},size={size}M"
        ),
    );
    Ok(())
}
