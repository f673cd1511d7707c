//! The QEMU `-readconfig` files the command line names (`pve-usb.cfg`,
//! `pve-q35.cfg`, `pve-q35-4.0.cfg`): the fixed devices of the i440fx USB
//! controllers and of the q35 chipset (USB, HD audio, PCIe root ports, the
//! DMI-to-PCI bridge with four PCI bridges). Their ids and addresses are
//! what guests see, so they match upstream's; the node writes them into
//! its share directory at start.

use std::path::Path;

/// One `[device "id"]` section: driver and properties in order.
struct Dev {
    id: String,
    props: Vec<(&'static str, String)>,
}

fn dev(id: impl Into<String>, driver: &str, props: &[(&'static str, String)]) -> Dev {
    let mut all = vec![("driver", driver.to_string())];
    all.extend(props.iter().cloned());
    Dev {
        id: id.into(),
        props: all,
    }
}

fn render(devs: &[Dev]) -> String {
    let mut out = String::new();
    for d in devs {
        out.push_str(&format!("[device \"{}\"]\n", d.id));
        for (k, v) in &d.props {
            out.push_str(&format!("  {k} = \"{v}\"\n"));
        }
        out.push('\n');
    }
    out
}

/// The ICH9 USB set: EHCI controller `ehci_id` at `slot.7` with three UHCI
/// companions at `slot.0..2`.
fn usb_set(
    ehci_id: &str,
    ehci_driver: &str,
    uhci_first: u32,
    slot: &str,
    bus: Option<&str>,
) -> Vec<Dev> {
    let bus_prop = |v: &mut Vec<(&'static str, String)>| {
        if let Some(b) = bus {
            v.push(("bus", b.to_string()));
        }
    };
    let mut ehci = vec![("multifunction", "on".to_string())];
    bus_prop(&mut ehci);
    ehci.push(("addr", format!("{slot}.7")));
    if bus.is_none() {
        // Without a bus the address comes first, as upstream's i440fx file.
        ehci.reverse();
    }
    let mut out = vec![dev(ehci_id, ehci_driver, &ehci)];
    for i in 0..3 {
        let n = uhci_first + i;
        let mut p = Vec::new();
        if bus.is_some() {
            p.push(("multifunction", "on".to_string()));
            bus_prop(&mut p);
            p.push(("addr", format!("{slot}.{i}")));
        } else {
            p.push(("addr", format!("{slot}.{i}")));
            p.push(("multifunction", "on".to_string()));
        }
        p.push(("masterbus", format!("{ehci_id}.0")));
        p.push(("firstport", (i * 2).to_string()));
        out.push(dev(format!("uhci-{n}"), &format!("ich9-usb-uhci{n}"), &p));
    }
    out
}

/// `pve-usb.cfg`: USB controllers of an i440fx machine.
pub fn usb_cfg() -> String {
    render(&usb_set("ehci", "ich9-usb-ehci1", 1, "1d", None))
}

/// `pve-q35.cfg` (`modern == false`, root ports `ioh3420`) or
/// `pve-q35-4.0.cfg` (`pcie-root-port`).
pub fn q35_cfg(modern: bool) -> String {
    let bus = Some("pcie.0");
    let mut devs = usb_set("ehci", "ich9-usb-ehci1", 1, "1d", bus);
    devs.extend(usb_set("ehci-2", "ich9-usb-ehci2", 4, "1a", bus));
    devs.push(dev(
        "audio0",
        "ich9-intel-hda",
        &[("bus", "pcie.0".into()), ("addr", "1b.0".into())],
    ));
    for port in 1..=4u32 {
        let mut p = Vec::new();
        if modern {
            p.push(("x-speed", "16".to_string()));
            p.push(("x-width", "32".to_string()));
        }
        p.extend([
            ("multifunction", "on".to_string()),
            ("bus", "pcie.0".to_string()),
            ("addr", format!("1c.{}", port - 1)),
            ("port", port.to_string()),
            ("chassis", port.to_string()),
        ]);
        let driver = if modern { "pcie-root-port" } else { "ioh3420" };
        devs.push(dev(format!("ich9-pcie-port-{port}"), driver, &p));
    }
    devs.push(dev(
        "pcidmi",
        "i82801b11-bridge",
        &[("bus", "pcie.0".into()), ("addr", "1e.0".into())],
    ));
    for n in 0..4u32 {
        devs.push(dev(
            format!("pci.{n}"),
            "pci-bridge",
            &[
                ("bus", "pcidmi".into()),
                ("addr", format!("{}.0", n + 1)),
                ("chassis_nr", (n + 1).to_string()),
            ],
        ));
    }
    render(&devs)
}

/// Writes every file into `dir` (created if needed).
pub fn install(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in [
        ("pve-usb.cfg", usb_cfg()),
        ("pve-q35.cfg", q35_cfg(false)),
        ("pve-q35-4.0.cfg", q35_cfg(true)),
    ] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_layout() {
        let t = usb_cfg();
        assert!(t.starts_with(
            "[device \"ehci\"]\n  driver = \"ich9-usb-ehci1\"\n  addr = \"1d.7\"\n  multifunction = \"on\"\n"
        ));
        assert!(t.contains("[device \"uhci-3\"]\n  driver = \"ich9-usb-uhci3\"\n  addr = \"1d.2\"\n  multifunction = \"on\"\n  masterbus = \"ehci.0\"\n  firstport = \"4\"\n"));
    }

    #[test]
    fn q35_layout() {
        let t = q35_cfg(true);
        assert!(t.contains("[device \"uhci-5\"]\n  driver = \"ich9-usb-uhci5\"\n  multifunction = \"on\"\n  bus = \"pcie.0\"\n  addr = \"1a.1\"\n  masterbus = \"ehci-2.0\"\n  firstport = \"2\"\n"));
        assert!(t.contains("[device \"ich9-pcie-port-4\"]\n  driver = \"pcie-root-port\"\n  x-speed = \"16\"\n  x-width = \"32\"\n  multifunction = \"on\"\n  bus = \"pcie.0\"\n  addr = \"1c.3\"\n  port = \"4\"\n  chassis = \"4\"\n"));
        assert!(t.contains("[device \"pci.3\"]\n  driver = \"pci-bridge\"\n  bus = \"pcidmi\"\n  addr = \"4.0\"\n  chassis_nr = \"4\"\n"));
        assert!(q35_cfg(false).contains("driver = \"ioh3420\"\n  multifunction"));
    }

    /// QEMU accepts the files: a q35 and an i440fx machine with them
    /// start and list the devices (skipped without QEMU, except in CI).
    #[test]
    fn qemu_reads_them() {
        let dir = std::env::temp_dir().join(format!("oxve-readconfig-{}", std::process::id()));
        install(&dir).unwrap();
        for (machine, file) in [
            ("q35", "pve-q35-4.0.cfg"),
            ("pc", "pve-usb.cfg"),
            ("q35", "pve-q35.cfg"),
        ] {
            let out = std::process::Command::new(crate::probe::QEMU_X86_64)
                .args(["-machine", machine, "-nodefaults", "-display", "none", "-S"])
                .arg("-readconfig")
                .arg(dir.join(file))
                .args(["-qmp", "stdio"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn();
            let Ok(mut child) = out else {
                assert!(
                    std::env::var("CI").is_err(),
                    "qemu-system-x86_64 is missing"
                );
                eprintln!("skipped: qemu-system-x86_64 is missing");
                return;
            };
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(br#"{"execute":"qmp_capabilities"}{"execute":"qom-list","arguments":{"path":"/machine/peripheral"}}{"execute":"quit"}"#)
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("\"uhci-3\""), "{file}: {stdout}");
            if machine == "q35" {
                assert!(stdout.contains("\"pci.3\""), "{file}: {stdout}");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
