//! VM config → QEMU argument vector, as upstream's `config_to_command`.
//!
//! [`build`] is a pure function of the VM config and a [`HostEnv`]; it
//! returns the arguments and the warnings upstream would print. The order
//! of the arguments is upstream's: tests compare them with the qemu-server
//! `cfg2cmd` fixtures line by line.

mod blockdev;
mod cpu;
mod devices;
mod drive;
mod env;
mod hostpci;
mod json;
mod machine;
mod memory;
mod net;
mod ovmf;
mod pci;
mod props;
mod quote;
mod timer;

pub use env::{ChainLink, HostEnv, Paths, PciDevice, PciMapping, SevCapabilities};
pub use machine::{pve_revision as machine_pve_revision, windows_version, Version};
pub use net::NIC_MODELS;
pub use ovmf::vars_template;
pub use quote::{pretty, shell_quote, to_command_string};

use crate::error::{cfg_err, CmdlineError};
use machine::{MachineConf, Version as V};
use props::{perl_true, Props};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

/// The VM to start: its id and the main section of its config.
#[derive(Debug, Clone, Default)]
pub struct VmInput {
    pub vmid: u32,
    /// Key → raw value of the config's main section.
    pub conf: BTreeMap<String, String>,
}

/// A generated command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// The argument vector, starting with the binary.
    pub args: Vec<String>,
    /// Warnings upstream emits with `warn` (`warning: ...`).
    pub warnings: Vec<String>,
    /// Notices upstream prints or logs (`WARN: ...`, informational lines).
    pub notices: Vec<String>,
    /// The SPICE port, when the VM uses SPICE.
    pub spice_port: Option<u16>,
}

/// State shared by the parts of one generation.
pub(crate) struct Ctx<'a> {
    pub env: &'a HostEnv,
    pub conf: BTreeMap<String, String>,
    pub vmid: u32,
    pub arch: String,
    pub kvmver: V,
    pub machine_type: String,
    pub machine_version: V,
    pub q35: bool,
    pub is_template: bool,
    pub winversion: u32,
    required_pve: Cell<u32>,
    pub bridges: BTreeSet<u32>,
    pub warnings: Vec<String>,
    pub notices: Vec<String>,
}

impl Ctx<'_> {
    /// A raw config value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.conf.get(key).map(String::as_str)
    }

    /// Perl truthiness of a config value.
    pub fn truthy(&self, key: &str) -> bool {
        perl_true(self.get(key))
    }

    /// Whether the machine version is at least `major.minor+pve<pve>`.
    pub fn min_machine(&self, major: u32, minor: u32, pve: u32) -> bool {
        self.machine_version.at_least(major, minor, pve)
    }

    /// Upstream's `$version_guard`: like [`Ctx::min_machine`], but a
    /// feature that needs a specific `+pveN` raises the revision printed in
    /// the `-machine type=` flag.
    pub fn version_guard(&self, major: u32, minor: u32, pve: u32) -> bool {
        if !self.machine_version.at_least(major, minor, pve) {
            return false;
        }
        let max = machine::pve_revision(major, minor);
        if self.machine_version.at_least(major, minor, max + 1) {
            return true;
        }
        if pve > self.required_pve.get() {
            self.required_pve.set(pve);
        }
        true
    }

    /// `,bus=pci.N,addr=0xM` for a device id, registering its bridge.
    pub fn pci_addr(&mut self, id: &str) -> Result<String, CmdlineError> {
        pci::pci_addr(id, Some(&mut self.bridges), &self.arch)
    }

    /// Records an upstream `warn`.
    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }

    /// Records an upstream `log_warn` or `print`.
    pub fn notice(&mut self, msg: impl Into<String>) {
        self.notices.push(msg.into());
    }
}

/// Upstream's config defaults that change the command line.
pub(crate) fn default_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "acpi" | "tablet" | "kvm" | "reboot" | "allow-ksm" => "1",
        "scsihw" => "lsi",
        "ostype" => "other",
        "startdate" => "now",
        "bios" => "seabios",
        "hotplug" => "network,disk,usb",
        _ => return None,
    })
}

/// The drive keys in upstream's order (IDE, SCSI, VirtIO, SATA, EFI, TPM).
pub(crate) fn drive_keys() -> Vec<String> {
    let mut out = Vec::new();
    out.extend((0..4).map(|i| format!("ide{i}")));
    out.extend((0..31).map(|i| format!("scsi{i}")));
    out.extend((0..16).map(|i| format!("virtio{i}")));
    out.extend((0..6).map(|i| format!("sata{i}")));
    out.push("efidisk0".into());
    out.push("tpmstate0".into());
    out
}

/// Builds QEMU's argument vector for `vm` on `env`.
pub fn build(vm: &VmInput, env: &HostEnv) -> Result<Generated, CmdlineError> {
    let is_template = perl_true(vm.conf.get("template").map(String::as_str));
    let conf = if is_template {
        template_conf(&vm.conf)
    } else {
        vm.conf.clone()
    };

    let machine_conf = MachineConf::parse(conf.get("machine").map(String::as_str))?;
    let arch = conf
        .get("arch")
        .cloned()
        .unwrap_or_else(|| env.host_arch.clone());
    let native = arch == env.host_arch;
    let kvm_binary = if native {
        "/usr/bin/kvm".to_string()
    } else {
        match arch.as_str() {
            "x86_64" => "/usr/bin/qemu-system-x86_64".to_string(),
            "aarch64" => "/usr/bin/qemu-system-aarch64".to_string(),
            _ => return cfg_err(format!("don't know how to emulate architecture '{arch}'")),
        }
    };
    let kvmver = env.qemu_version;
    if kvmver.major < 6 {
        return cfg_err(format!(
            "Detected old QEMU binary ('{}.{}.{}', at least 6.0 is required)",
            kvmver.major, kvmver.minor, kvmver.micro
        ));
    }
    let meta = conf
        .get("meta")
        .map(|m| Props::parse(m, None))
        .transpose()?;
    let creation_qemu = meta
        .as_ref()
        .and_then(|m| m.get("creation-qemu"))
        .map(str::to_string);
    let ostype = conf.get("ostype").cloned();
    let machine_type = machine::vm_machine(
        machine_conf.kind.as_deref(),
        &arch,
        ostype.as_deref(),
        creation_qemu.as_deref(),
        kvmver,
    )?;
    let machine_version = machine::machine_version(&machine_type, kvmver);
    let kvm = match conf.get("kvm") {
        Some(v) => perl_true(Some(v)),
        None => native,
    };

    if kvmver.micro >= 90 {
        // A release candidate: upstream skips the version checks.
    } else if !kvmver.at_least(machine_version.major, machine_version.minor, 0) {
        return cfg_err(format!(
            "Installed QEMU version '{}.{}.{}' is too old to run machine type '{machine_type}', please upgrade node '{}'",
            kvmver.major, kvmver.minor, kvmver.micro, env.node
        ));
    } else if !machine::can_run(machine_version, kvmver) {
        let max = machine::pve_revision(machine_version.major, machine_version.minor);
        return cfg_err(format!(
            "Installed qemu-server (max feature level for {}.{} is pve{max}) is too old to run machine type '{machine_type}', please upgrade node '{}'",
            machine_version.major, machine_version.minor, env.node
        ));
    }
    if kvm && !env.kvm_available {
        return cfg_err("KVM virtualisation configured, but not available. Either disable in VM configuration or enable in BIOS.");
    }

    let mut ctx = Ctx {
        env,
        vmid: vm.vmid,
        arch,
        kvmver,
        machine_type: machine_type.clone(),
        machine_version,
        q35: machine_conf.is_q35(),
        is_template,
        winversion: machine::windows_version(ostype.as_deref()),
        required_pve: Cell::new(0),
        bridges: BTreeSet::new(),
        warnings: Vec::new(),
        notices: Vec::new(),
        conf,
    };
    let (args, spice_port) = assemble(&mut ctx, &machine_conf, &kvm_binary, kvm)?;
    Ok(Generated {
        args,
        warnings: ctx.warnings,
        notices: ctx.notices,
        spice_port,
    })
}

/// Templates start only for backup: keep the disks and what they need.
fn template_conf(conf: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("template".into(), "1".into());
    out.insert("kvm".into(), "0".into());
    out.insert("vga".into(), "none".into());
    for key in ["scsihw", "bios", "name"] {
        if let Some(v) = conf.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for key in drive_keys() {
        if let Some(v) = conf.get(&key) {
            out.insert(key, v.clone());
        }
    }
    out
}

fn hotplug_features(value: &str) -> Result<BTreeSet<String>, CmdlineError> {
    let mut out = BTreeSet::new();
    if value == "0" {
        return Ok(out);
    }
    let value = if value == "1" {
        "network,disk,usb"
    } else {
        value
    };
    for f in value.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
        if !matches!(
            f,
            "network" | "disk" | "cpu" | "memory" | "usb" | "cloudinit"
        ) {
            return cfg_err(format!("invalid hotplug feature '{f}'"));
        }
        out.insert(f.to_string());
    }
    Ok(out)
}

fn assemble(
    ctx: &mut Ctx,
    machine_conf: &MachineConf,
    kvm_binary: &str,
    kvm: bool,
) -> Result<(Vec<String>, Option<u16>), CmdlineError> {
    let mut machine_flags: Vec<String> = Vec::new();
    let mut rtc_flags: Vec<String> = Vec::new();
    let mut devices: Vec<String> = Vec::new();
    let mut cmd: Vec<String> = Vec::new();
    let vmid = ctx.vmid;
    let hotplug = hotplug_features(ctx.get("hotplug").unwrap_or("1"))?;
    let (use_old_bios_files, machine_type) = match ctx.machine_type.strip_suffix(".pxe") {
        Some(base) => (true, base.to_string()),
        None => (
            !ctx.machine_version.at_least(2, 4, 0),
            ctx.machine_type.clone(),
        ),
    };

    if let Some(aff) = ctx.get("affinity").filter(|a| !a.is_empty()) {
        cmd.extend(["/usr/bin/taskset", "--cpu-list", "--all-tasks", aff].map(String::from));
    }
    cmd.push(kvm_binary.into());
    cmd.extend(["-id".to_string(), vmid.to_string()]);
    let vmname = ctx
        .get("name")
        .filter(|n| !n.is_empty())
        .map_or(format!("vm{vmid}"), str::to_string);
    cmd.push("-name".into());
    cmd.push(if ctx.kvmver.at_least(11, 0, 0) {
        vmname
    } else {
        format!("{vmname},debug-threads=on")
    });
    cmd.push("-no-shutdown".into());
    push2(
        &mut cmd,
        "-chardev",
        format!(
            "socket,id=qmp,path={}/{vmid}.qmp,server=on,wait=off",
            ctx.env.paths.run_dir
        ),
    );
    push2(&mut cmd, "-mon", "chardev=qmp,mode=control");
    if ctx.min_machine(2, 12, 0) {
        let reconnect = if ctx.kvmver.at_least(9, 2, 0) {
            "reconnect-ms=5000"
        } else {
            "reconnect=5"
        };
        push2(
            &mut cmd,
            "-chardev",
            format!(
                "socket,id=qmp-event,path={},{reconnect}",
                ctx.env.paths.event_socket
            ),
        );
        push2(&mut cmd, "-mon", "chardev=qmp-event,mode=control");
    }
    push2(
        &mut cmd,
        "-pidfile",
        format!("{}/{vmid}.pid", ctx.env.paths.run_dir),
    );
    cmd.push("-daemonize".into());

    if let Some(smbios) = ctx.get("smbios1").filter(|s| !s.is_empty()) {
        cmd.push("-smbios".into());
        cmd.push(devices::smbios1(smbios)?);
    }

    if ctx.get("bios") == Some("ovmf") {
        if cpu::cpu_bitness(ctx)? == 32 {
            return cfg_err("OVMF (UEFI) BIOS is not supported on 32-bit CPU types");
        }
        let (ovmf_cmd, ovmf_flags) = ovmf::commandline(ctx)?;
        cmd.extend(ovmf_cmd);
        machine_flags.extend(ovmf_flags);
    }

    if ctx.q35 {
        let cfg = if ctx.min_machine(4, 0, 0) {
            "pve-q35-4.0.cfg"
        } else {
            "pve-q35.cfg"
        };
        push2(
            &mut devices,
            "-readconfig",
            format!("{}/{cfg}", ctx.env.paths.share_dir),
        );
    }

    if let Some(fixups) = created_version_fixups(ctx, machine_conf) {
        cmd.extend(fixups);
    }

    if let Some(genid) = ctx.get("vmgenid").filter(|g| perl_true(Some(g))) {
        push2(&mut devices, "-device", format!("vmgenid,guid={genid}"));
    }

    devices.extend(devices::usb_controllers(ctx)?);
    let (mut vga, qxlnum) = devices::vga_properties(ctx)?;

    let tablet = match ctx.get("tablet") {
        Some(t) => perl_true(Some(t)),
        None => qxlnum == 0 && !is_serial_vga(&vga.kind),
    };
    if tablet {
        push2(&mut devices, "-device", devices::tablet_device(ctx));
        if ctx.arch == "aarch64" {
            push2(
                &mut devices,
                "-device",
                "usb-kbd,id=keyboard,bus=ehci.0,port=2",
            );
        }
    }

    let bootorder = drive::device_bootorder(ctx)?;

    let pci_out = hostpci::hostpci_devices(ctx, &mut devices, &mut vga, &bootorder)?;

    devices.extend(devices::usb_devices(ctx, &bootorder)?);
    devices::serial_and_parallel(ctx, &mut devices)?;
    devices::audio(ctx, &mut devices)?;
    if !ctx.is_template && ctx.truthy("tpmstate0") {
        push2(
            &mut devices,
            "-chardev",
            format!(
                "socket,id=tpmchar,path={}/{vmid}.swtpm",
                ctx.env.paths.run_dir
            ),
        );
        push2(
            &mut devices,
            "-tpmdev",
            "emulator,id=tpmdev,chardev=tpmchar",
        );
        push2(&mut devices, "-device", "tpm-tis,tpmdev=tpmdev");
    }

    let sockets: u32 = ctx
        .get("sockets")
        .filter(|s| perl_true(Some(s)))
        .or(ctx.get("smp").filter(|s| perl_true(Some(s))))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let cores: u32 = ctx
        .get("cores")
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(1);
    let maxcpus = sockets * cores;
    let vcpus: u32 = ctx
        .get("vcpus")
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(maxcpus);
    if ctx.env.host_cpus < maxcpus {
        return cfg_err(format!(
            "MAX {} vcpus allowed per VM on this node",
            ctx.env.host_cpus
        ));
    }
    if hotplug.contains("cpu") && ctx.min_machine(2, 7, 0) {
        push2(
            &mut cmd,
            "-smp",
            format!("1,sockets={sockets},cores={cores},maxcpus={maxcpus}"),
        );
        for i in 2..=vcpus {
            push2(&mut cmd, "-device", cpu::cpu_device(ctx, i, cores)?);
        }
    } else {
        push2(
            &mut cmd,
            "-smp",
            format!("{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}"),
        );
    }
    cmd.push("-nodefaults".into());
    push2(
        &mut cmd,
        "-boot",
        format!(
            "menu=on,strict=on,reboot-timeout=1000,splash={}/bootsplash.jpg",
            ctx.env.paths.share_dir
        ),
    );
    if ctx.get("acpi") == Some("0") {
        machine_flags.push("acpi=off".into());
    }
    if ctx.get("reboot") == Some("0") {
        cmd.push("-no-reboot".into());
    }

    if !vga.kind.is_empty() && !is_serial_vga(&vga.kind) && vga.kind != "none" {
        let dev = devices::vga_device(ctx, &vga, None, qxlnum)?;
        push2(&mut devices, "-device", dev);
        if vga.kind == "virtio-gl" {
            push2(&mut cmd, "-display", "egl-headless,gl=core");
        }
        push2(
            &mut cmd,
            "-vnc",
            format!("unix:{}/{vmid}.vnc,password=on", ctx.env.paths.run_dir),
        );
    } else {
        if vga.kind == "none" {
            push2(&mut cmd, "-vga", "none");
        }
        cmd.push("-nographic".into());
    }

    let (globals, timer_flags, rtc) = timer::flags(ctx, &machine_type)?;
    for g in globals {
        push2(&mut cmd, "-global", g);
    }
    machine_flags.extend(timer_flags);
    rtc_flags.extend(rtc);

    cmd.extend(cpu::cpu_options(
        ctx,
        kvm,
        pci_out.kvm_off,
        pci_out.gpu_passthrough,
    )?);

    memory::config(
        ctx,
        sockets,
        cores,
        hotplug.contains("memory"),
        &mut cmd,
        &mut machine_flags,
    )?;

    if ctx.truthy("freeze") {
        cmd.push("-S".into());
    }
    if let Some(k) = ctx.get("keyboard") {
        push2(&mut cmd, "-k", k.to_string());
    }

    devices::guest_agent(ctx, &mut devices)?;
    devices::rng(ctx, &mut devices)?;
    let spice_port = devices::spice(ctx, &vga, qxlnum, &mut cmd, &mut devices)?;

    if ctx.get("balloon").is_none_or(|b| perl_true(Some(b))) {
        let addr = ctx.pci_addr("balloon0")?;
        let mut dev = format!("virtio-balloon-pci,id=balloon0{addr}");
        if ctx.min_machine(6, 2, 0) {
            dev.push_str(",free-page-reporting=on");
        }
        push2(&mut devices, "-device", dev);
    }
    devices::watchdog(ctx, &mut devices)?;

    if let Some(initiator) = ctx.env.iscsi_initiator.clone() {
        push2(
            &mut devices,
            "-iscsi",
            format!("initiator-name={initiator}"),
        );
    }

    drive::add_drives(ctx, &bootorder, &mut cmd, &mut devices)?;
    net::add_nets(ctx, &bootorder, use_old_bios_files, &mut devices)?;
    devices::ivshmem(ctx, &mut devices)?;

    // pci.4 is nested in pci.1
    if ctx.bridges.contains(&4) {
        ctx.bridges.insert(1);
    }
    if !ctx.q35 {
        if ctx.min_machine(2, 3, 0) {
            ctx.bridges.insert(1);
            ctx.bridges.insert(2);
        }
        let scsihw = ctx.get("scsihw").unwrap_or("lsi");
        if scsihw.starts_with("virtio-scsi-single") {
            ctx.bridges.insert(3);
        }
    }
    let mut keys: Vec<String> = ctx.bridges.iter().map(|k| k.to_string()).collect();
    keys.sort_by(|a, b| b.cmp(a));
    for k in keys {
        let n: u32 = k.parse().unwrap_or(0);
        if ctx.q35 && n < 4 {
            continue;
        }
        let name = if n == 2 && pci_out.legacy_igd {
            "2-igd".to_string()
        } else {
            k.clone()
        };
        let addr = pci::pci_addr(&format!("pci.{name}"), None, &ctx.arch)?;
        let dev = format!("pci-bridge,id=pci.{k},chassis_nr={k}{addr}");
        if ctx.q35 {
            let at = 2.min(devices.len());
            devices.splice(at..at, ["-device".to_string(), dev]);
        } else if n > 0 {
            devices.splice(0..0, ["-device".to_string(), dev]);
        }
    }

    if !kvm {
        machine_flags.push("accel=tcg".into());
    }
    machine::power_state_flags(ctx, machine_conf, &mut cmd);
    if should_disable_smm(ctx, &vga.kind, &machine_type) {
        machine_flags.push("smm=off".into());
    }
    let base = match machine_type.rsplit_once("+pve") {
        Some((b, r)) if r.chars().all(|c| c.is_ascii_digit()) => b.to_string(),
        _ => machine_type.clone(),
    };
    machine_flags.push(format!("type={base}+pve{}", ctx.required_pve.get()));

    machine_conf.assert_valid()?;
    if let Some(viommu) = machine_conf.viommu.as_deref() {
        let mut extra = String::new();
        if let Some(bits) = machine_conf.aw_bits.as_deref() {
            extra = format!(",aw-bits={bits}");
            ctx.notice(format!("vIOMMU 'aw-bits' set to {bits}. Sometimes it is necessary to set the CPU's 'guest-phys-bits' to the same value."));
        }
        if viommu == "intel" {
            devices.splice(
                0..0,
                [
                    "-device".to_string(),
                    format!("intel-iommu,intremap=on,caching-mode=on{extra}"),
                ],
            );
            machine_flags.push("kernel-irqchip=split".into());
        } else if viommu == "virtio" {
            push2(&mut devices, "-device", format!("virtio-iommu-pci{extra}"));
        }
    }
    if let Some(sev) = ctx.get("amd-sev").map(str::to_string) {
        push2(&mut devices, "-object", cpu::amd_sev_object(ctx, &sev)?);
        machine_flags.push("confidential-guest-support=sev0".into());
    } else if ctx.get("intel-tdx").is_some() {
        return Err(CmdlineError::Unsupported("intel-tdx".into()));
    }
    if ctx.get("allow-ksm").is_some_and(|v| !perl_true(Some(v))) {
        machine_flags.push("mem-merge=off".into());
    }
    if (0..10).any(|i| ctx.get(&format!("virtiofs{i}")).is_some()) {
        return Err(CmdlineError::Unsupported("virtiofs".into()));
    }

    cmd.extend(devices);
    if !rtc_flags.is_empty() {
        push2(&mut cmd, "-rtc", rtc_flags.join(","));
    }
    if !machine_flags.is_empty() {
        push2(&mut cmd, "-machine", machine_flags.join(","));
    }
    if ctx.get("vmstate").is_some() {
        return Err(CmdlineError::Unsupported(
            "vmstate (resume from saved state)".into(),
        ));
    }
    if ctx.is_template {
        // base volumes are read-only
        cmd.push("-snapshot".into());
    }
    if let Some(args) = ctx.get("args").filter(|a| !a.is_empty()) {
        cmd.extend(quote::split_args(args));
    }
    Ok((cmd, spice_port))
}

pub(crate) fn push2(list: &mut Vec<String>, opt: &str, value: impl Into<String>) {
    list.push(opt.to_string());
    list.push(value.into());
}

pub(crate) fn is_serial_vga(kind: &str) -> bool {
    kind.strip_prefix("serial")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn should_disable_smm(ctx: &Ctx, vga: &str, machine: &str) -> bool {
    if machine.starts_with("virt") {
        return false;
    }
    let seabios = ctx.get("bios").is_none_or(|b| b == "seabios");
    seabios && (is_serial_vga(vga) || vga == "none")
}

fn created_version_fixups(ctx: &Ctx, machine_conf: &MachineConf) -> Option<Vec<String>> {
    let unversioned = machine_conf
        .kind
        .as_deref()
        .is_none_or(|t| matches!(t, "pc" | "q35" | "virt"));
    let meta = ctx.get("meta").and_then(|m| Props::parse(m, None).ok());
    let created_old = meta
        .as_ref()
        .and_then(|m| m.get("creation-qemu"))
        .and_then(V::parse)
        .is_none_or(|v| !v.at_least(6, 1, 0));
    if unversioned
        && created_old
        && ctx.kvmver.at_least(6, 1, 0)
        && ctx.q35
        && ctx.get("ostype") == Some("l26")
    {
        return Some(vec![
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
        ]);
    }
    None
}
