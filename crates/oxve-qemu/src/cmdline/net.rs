//! Network devices: the `-netdev` backend (tap on a bridge, or user mode)
//! and the NIC (`virtio-net-pci`, `e1000`, ...).

use super::props::Props;
use super::{push2, Ctx};
use crate::error::{cfg_err, CmdlineError};
use std::collections::BTreeMap;

/// The NIC models of a `net<n>` option (upstream's `$nic_model_list`).
pub const NIC_MODELS: &[&str] = &[
    "rtl8139",
    "ne2k_pci",
    "e1000",
    "pcnet",
    "virtio",
    "ne2k_isa",
    "i82551",
    "i82557b",
    "i82559er",
    "vmxnet3",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
];

/// A parsed `netN` option.
struct Net {
    model: String,
    macaddr: String,
    opts: Props,
}

fn parse_net(value: &str) -> Result<Option<Net>, CmdlineError> {
    let mut opts = Props::parse(value, None).or_else(|_| {
        // `virtio=MAC` is the model key with the MAC as value; a bare model
        // without MAC is upstream's short form.
        Props::parse(value, Some("model"))
    })?;
    let mut model = None;
    let mut mac = None;
    for m in NIC_MODELS {
        if let Some(v) = opts.0.remove(*m) {
            model = Some(m.to_string());
            mac = Some(v);
        }
    }
    if model.is_none() {
        model = opts.0.remove("model");
        mac = opts.0.remove("macaddr");
    }
    let Some(model) = model else { return Ok(None) };
    Ok(Some(Net {
        model,
        macaddr: mac.unwrap_or_default(),
        opts,
    }))
}

/// Adds `-netdev`/`-device` pairs for every `netN`.
pub fn add_nets(
    ctx: &mut Ctx,
    bootorder: &BTreeMap<String, u32>,
    use_old_bios_files: bool,
    devices: &mut Vec<String>,
) -> Result<(), CmdlineError> {
    for i in 0..32u32 {
        let netid = format!("net{i}");
        let Some(value) = ctx
            .get(&netid)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(net) = parse_net(&value)? else {
            continue;
        };
        push2(devices, "-netdev", netdev(ctx, &net, &netid, i)?);
        ctx.version_guard(10, 0, 1);
        let dev = netdevice(
            ctx,
            &net,
            &netid,
            bootorder.get(&netid).copied(),
            use_old_bios_files,
        )?;
        push2(devices, "-device", dev);
    }
    Ok(())
}

fn netdev(ctx: &Ctx, net: &Net, netid: &str, i: u32) -> Result<String, CmdlineError> {
    let ifname = format!("tap{}i{i}", ctx.vmid);
    if ifname.len() >= 16 {
        return cfg_err(format!(
            "interface name '{ifname}' is too long (max 15 character)"
        ));
    }
    let native = ctx.arch == ctx.env.host_arch;
    let vhost = if native && ctx.env.vhost_net && net.model == "virtio" {
        ",vhost=on"
    } else {
        ""
    };
    let mut out = if net.opts.get("bridge").is_some_and(|b| !b.is_empty()) {
        let paths = &ctx.env.paths;
        format!(
            "type=tap,id={netid},ifname={ifname},script={},downscript={}{vhost}",
            paths.bridge_up, paths.bridge_down
        )
    } else {
        let name = ctx
            .get("name")
            .filter(|n| !n.is_empty())
            .map_or(format!("vm{}", ctx.vmid), str::to_string);
        format!("type=user,id={netid},hostname={name}")
    };
    if let Some(q) = net.opts.get("queues").filter(|q| *q != "0") {
        if net.model == "virtio" {
            out.push_str(&format!(",queues={q}"));
        }
    }
    Ok(out)
}

fn netdevice(
    ctx: &mut Ctx,
    net: &Net,
    netid: &str,
    bootindex: Option<u32>,
    use_old_bios_files: bool,
) -> Result<String, CmdlineError> {
    let virtio = net.model == "virtio";
    let device = if virtio {
        "virtio-net-pci".to_string()
    } else {
        net.model.clone()
    };
    let addr = ctx.pci_addr(netid)?;
    let mut s = format!(
        "{device},mac={},netdev={netid}{addr},id={netid}",
        net.macaddr
    );
    let queues = net.opts.int("queues").unwrap_or(0);
    if queues > 1 && virtio {
        s.push_str(&format!(",vectors={},mq=on", queues * 2 + 2));
        if ctx.min_machine(7, 1, 0) {
            s.push_str(",packed=on");
        }
    }
    if ctx.min_machine(7, 1, 0) && virtio {
        s.push_str(",rx_queue_size=1024,tx_queue_size=256");
    }
    if let Some(b) = bootindex.filter(|b| *b > 0) {
        s.push_str(&format!(",bootindex={b}"));
    }
    let mtu = net.opts.int("mtu");
    let bridge = net.opts.get("bridge").filter(|b| !b.is_empty());
    if let (true, Some(bridge)) = (virtio, bridge) {
        let bridge_mtu = i64::from(ctx.env.bridge_mtu(bridge));
        let mtu = match mtu {
            None | Some(1) => bridge_mtu,
            Some(m) if m < 576 => {
                return cfg_err(format!("netdev {netid}: MTU '{m}' is smaller than the IP minimum MTU '576'"))
            }
            Some(m) if m > bridge_mtu => {
                return cfg_err(format!(
                    "netdev {netid}: MTU '{m}' is bigger than the bridge MTU '{bridge_mtu}' - adjust the MTU for the network device in the VM configuration, while ensuring that the bridge is configured as desired."
                ))
            }
            Some(m) => m,
        };
        if ctx.min_machine(10, 0, 1) || mtu != 1500 {
            s.push_str(&format!(",host_mtu={mtu}"));
        }
    } else if let Some(m) = mtu {
        let why = if bridge.is_none() {
            "no bridge configured"
        } else {
            "not using VirtIO"
        };
        ctx.notice(format!("WARN: netdev {netid}: ignoring MTU '{m}', {why}"));
    }
    if use_old_bios_files {
        let rom = match device.as_str() {
            "virtio-net-pci" => Some("pxe-virtio.rom"),
            "e1000" => Some("pxe-e1000.rom"),
            "e1000e" => Some("pxe-e1000e.rom"),
            "ne2k" => Some("pxe-ne2k_pci.rom"),
            "pcnet" => Some("pxe-pcnet.rom"),
            "rtl8139" => Some("pxe-rtl8139.rom"),
            _ => None,
        };
        if let Some(rom) = rom {
            s.push_str(&format!(",romfile={rom}"));
        }
    }
    if virtio {
        let tunnel = net.opts.flag("host-tunnel");
        if ctx.min_machine(11, 0, 1) {
            if tunnel != Some(true) {
                s.push_str(",host_tunnel=off");
            }
        } else if ctx.min_machine(10, 2, 0) && tunnel == Some(false) {
            s.push_str(",host_tunnel=off");
        }
    }
    Ok(s)
}
