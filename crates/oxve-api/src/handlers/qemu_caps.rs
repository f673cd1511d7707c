//! `/nodes/{node}/capabilities/qemu/*`: what a VM config may choose on
//! this node — CPU models, VM-specific CPU flags, machine types and
//! versions (with their `+pveN` revisions) — for the VM wizard and tools.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use oxve_qemu::cmdline::HostEnv;
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/nodes/{node}/capabilities" => index);
    reg!(r, GET "/nodes/{node}/capabilities/qemu" => qemu_index);
    reg!(r, GET "/nodes/{node}/capabilities/qemu/cpu" => cpu);
    reg!(r, GET "/nodes/{node}/capabilities/qemu/cpu-flags" => cpu_flags);
    reg!(r, GET "/nodes/{node}/capabilities/qemu/machines" => machines);
    reg!(r, GET "/nodes/{node}/capabilities/qemu/migration" => migration);
}

/// The abstract x86-64 levels, besides the QEMU build's models.
const X86_64_LEVELS: &[&str] = &["x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4"];

/// The flags a VM config may set in `cpu: ...,flags=`, with what they do.
const VM_FLAGS: &[(&str, &str)] = &[
    ("aes", "Hardware AES instructions"),
    (
        "amd-no-ssb",
        "Tells the guest it is not vulnerable to Spectre v4 (AMD)",
    ),
    (
        "amd-ssbd",
        "Spectre v4 (speculative store bypass) mitigation, AMD",
    ),
    ("hv-evmcs", "Enlightened VMCS for nested Hyper-V (Intel)"),
    (
        "hv-tlbflush",
        "Paravirtualised TLB flushes for Windows guests",
    ),
    (
        "ibpb",
        "Indirect branch prediction barrier (Spectre v2), AMD",
    ),
    ("md-clear", "MDS mitigation (Intel)"),
    (
        "nested-virt",
        "Hardware virtualisation inside the guest (vmx/svm)",
    ),
    (
        "pcid",
        "Process-context identifiers: cheaper Meltdown mitigation (Intel)",
    ),
    ("pdpe1gb", "1 GiB huge pages in the guest"),
    (
        "spec-ctrl",
        "Indirect branch restricted speculation (Spectre v2), Intel",
    ),
    (
        "ssbd",
        "Spectre v4 (speculative store bypass) mitigation, Intel",
    ),
    ("virt-ssbd", "Virtualised Spectre v4 mitigation, AMD"),
];

fn check_arch(ctx: &Ctx) -> ApiResult<()> {
    match ctx.opt_str("arch") {
        None | Some("x86_64") => Ok(()),
        Some(other) => Err(ApiError::not_implemented_msg(format!(
            "architecture '{other}': this node runs x86_64 guests only"
        ))),
    }
}

async fn index(_ctx: Ctx) -> ApiResult<Value> {
    Ok(json!([{ "name": "qemu" }]))
}

async fn qemu_index(_ctx: Ctx) -> ApiResult<Value> {
    Ok(json!([
        { "name": "cpu" },
        { "name": "cpu-flags" },
        { "name": "machines" },
        { "name": "migration" },
    ]))
}

async fn cpu(ctx: Ctx) -> ApiResult<Value> {
    check_arch(&ctx)?;
    let mut out: Vec<Value> = HostEnv::builtin_x86_cpu_models()
        .into_iter()
        .map(|(name, vendor)| json!({ "name": name, "vendor": vendor, "custom": false }))
        .collect();
    out.extend(
        X86_64_LEVELS
            .iter()
            .map(|name| json!({ "name": name, "vendor": "default", "custom": false })),
    );
    Ok(Value::Array(out))
}

async fn cpu_flags(ctx: Ctx) -> ApiResult<Value> {
    check_arch(&ctx)?;
    Ok(Value::Array(
        VM_FLAGS
            .iter()
            .map(|(name, description)| json!({ "name": name, "description": description }))
            .collect(),
    ))
}

async fn machines(ctx: Ctx) -> ApiResult<Value> {
    check_arch(&ctx)?;
    let types = crate::blocking(|| {
        oxve_qemu::probe::machine_types(oxve_qemu::probe::QEMU_X86_64)
            .map_err(|e| ApiError::fail(format!("could not load supported machine versions - {e}")))
    })
    .await?;
    Ok(Value::Array(machine_list(&types)))
}

/// The machine types with their `+pveN` revisions, newest first.
fn machine_list(types: &[oxve_qemu::probe::MachineType]) -> Vec<Value> {
    use oxve_qemu::cmdline::Version;
    let mut out: Vec<(Version, &'static str, Value)> = Vec::new();
    for m in types {
        let Some(v) = Version::parse(&m.version) else {
            continue;
        };
        out.push((
            v,
            m.kind,
            json!({ "id": m.id, "type": m.kind, "version": m.version }),
        ));
        let highest = oxve_qemu::cmdline::machine_pve_revision(v.major, v.minor);
        for rev in 1..=highest {
            out.push((
                Version { pve: rev, ..v },
                m.kind,
                json!({
                    "id": format!("{}+pve{rev}", m.id),
                    "type": m.kind,
                    "version": format!("{}+pve{rev}", m.version),
                }),
            ));
        }
    }
    out.sort_by(|a, b| {
        let key = |v: &Version| (v.major, v.minor, v.micro, v.pve);
        key(&b.0).cmp(&key(&a.0)).then(a.1.cmp(b.1))
    });
    out.into_iter().map(|(_, _, v)| v).collect()
}

async fn migration(_ctx: Ctx) -> ApiResult<Value> {
    // No dbus-vmstate helper: conntrack state does not travel with a VM.
    Ok(json!({ "has-dbus-vmstate": false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxve_qemu::probe::MachineType;

    #[test]
    fn machines_with_revisions_newest_first() {
        let types = [
            MachineType {
                id: "pc-i440fx-9.2".into(),
                kind: "i440fx",
                version: "9.2".into(),
            },
            MachineType {
                id: "pc-q35-10.0".into(),
                kind: "q35",
                version: "10.0".into(),
            },
            MachineType {
                id: "pc-i440fx-10.0".into(),
                kind: "i440fx",
                version: "10.0".into(),
            },
        ];
        let ids: Vec<String> = machine_list(&types)
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "pc-i440fx-10.0+pve1",
                "pc-q35-10.0+pve1",
                "pc-i440fx-10.0",
                "pc-q35-10.0",
                "pc-i440fx-9.2+pve1",
                "pc-i440fx-9.2",
            ]
        );
    }
}
