//! `-m`, NUMA nodes, huge pages and hot-pluggable DIMMs.

use super::props::Props;
use super::{push2, Ctx};
use crate::error::{cfg_err, CmdlineError};

const STATIC_MEM: u64 = 1024;

fn current_memory(ctx: &Ctx) -> Result<u64, CmdlineError> {
    match ctx.get("memory") {
        None => Ok(512),
        Some(v) => Ok(Props::parse(v, Some("current"))?
            .int("current")
            .unwrap_or(512) as u64),
    }
}

fn max_mem(ctx: &Ctx) -> Result<u64, CmdlineError> {
    let cpu = match ctx.get("cpu") {
        Some(c) => Props::parse(c, Some("cputype"))?,
        None => Props::default(),
    };
    let host = ctx.env.host_phys_bits;
    let mut bits = match cpu.get("phys-bits") {
        Some("host") => host,
        Some(n) => n.parse().ok(),
        None => None,
    };
    if bits.is_none() {
        let host_bits = host.unwrap_or(36);
        bits = Some(if matches!(cpu.get("cputype"), Some("host" | "max")) {
            host_bits
        } else {
            host_bits.min(40)
        });
    }
    let bits = bits.unwrap_or(36) & !1;
    let max = 1u64 << (bits - 21);
    Ok(max.min(4 * 1024 * 1024))
}

fn hugepage_size(ctx: &Ctx, size: u64) -> Result<u64, CmdlineError> {
    let hp = ctx.get("hugepages").unwrap_or_default();
    if size == 0 || size & 1 == 1 {
        return cfg_err(format!(
            "memory size '{size}' is not a positive even integer; cannot use for hugepages"
        ));
    }
    let has = |s: u32| ctx.env.hugepage_sizes.contains(&s);
    if !has(2) && !has(1024) {
        return cfg_err("your system doesn't support hugepages");
    }
    if hp == "any" {
        if has(1024) && size & 1023 == 0 {
            Ok(1024)
        } else if has(2) {
            Ok(2)
        } else {
            cfg_err(format!("host only supports 1024 GB hugepages, but requested size '{size}' is not a multiple of 1024 MB"))
        }
    } else {
        let want: u64 = hp.parse().unwrap_or(0);
        if !has(want as u32) {
            cfg_err(format!(
                "your system doesn't support hugepages of {want} MB"
            ))
        } else if !size.is_multiple_of(want) {
            cfg_err(format!(
                "Memory size {size} is not a multiple of the requested hugepages size {want}"
            ))
        } else {
            Ok(want)
        }
    }
}

fn mem_object(ctx: &Ctx, id: &str, size: u64) -> Result<String, CmdlineError> {
    if ctx.truthy("hugepages") {
        let hp = hugepage_size(ctx, size)?;
        Ok(format!(
            "memory-backend-file,id={id},size={size}M,mem-path=/run/hugepages/kvm/{}kB,share=on,prealloc=yes",
            hp * 1024
        ))
    } else {
        Ok(format!("memory-backend-ram,id={id},size={size}M"))
    }
}

/// Adds `-m` and the NUMA/DIMM objects (`Memory::config`).
pub fn config(
    ctx: &mut Ctx,
    sockets: u32,
    cores: u32,
    hotplug: bool,
    cmd: &mut Vec<String>,
    _machine_flags: &mut Vec<String>,
) -> Result<(), CmdlineError> {
    let memory = current_memory(ctx)?;
    let static_memory;
    if hotplug {
        if !ctx.truthy("numa") {
            return cfg_err("NUMA needs to be enabled for memory hotplug");
        }
        let max = max_mem(ctx)?;
        if memory > max {
            return cfg_err(format!("Total memory is bigger than {max}MB"));
        }
        if (0..8).any(|i| ctx.get(&format!("numa{i}")).is_some()) {
            return cfg_err("cannot enable memory hotplugging with custom NUMA topology");
        }
        let conf_sockets: u64 = ctx
            .get("sockets")
            .and_then(|s| s.parse().ok())
            .filter(|s| *s > 0)
            .unwrap_or(1);
        let mut sm = STATIC_MEM;
        if ctx.get("hugepages") == Some("1024") {
            sm *= conf_sockets;
        }
        if memory < sm {
            return cfg_err(format!("minimum memory must be {sm}MB"));
        }
        push2(cmd, "-m", format!("size={sm},slots=255,maxmem={max}M"));
        static_memory = sm;
    } else {
        static_memory = memory;
        push2(cmd, "-m", memory.to_string());
    }
    if ctx.truthy("hugepages") && !ctx.truthy("numa") {
        return cfg_err("numa needs to be enabled to use hugepages");
    }
    if (0..10).any(|i| ctx.get(&format!("virtiofs{i}")).is_some()) {
        return Err(CmdlineError::Unsupported("virtiofs".into()));
    }
    if ctx.truthy("numa") {
        if (0..8).any(|i| ctx.get(&format!("numa{i}")).is_some()) {
            return Err(CmdlineError::Unsupported(
                "custom NUMA topology (numaN)".into(),
            ));
        }
        let per_node = static_memory / u64::from(sockets);
        for i in 0..sockets {
            if ctx.truthy("hugepages") && !ctx.env.numa_nodes.contains(&i) {
                return cfg_err(format!("host NUMA node{i} doesn't exist"));
            }
            let first = cores * i;
            let cpus = if cores > 1 {
                format!("{first}-{}", first + cores - 1)
            } else {
                first.to_string()
            };
            let memdev = format!("ram-node{i}");
            push2(cmd, "-object", mem_object(ctx, &memdev, per_node)?);
            push2(
                cmd,
                "-numa",
                format!("node,nodeid={i},cpus={cpus},memdev={memdev}"),
            );
        }
    }
    if hotplug && memory != static_memory {
        let mut dimm_size: u64 = if ctx.get("hugepages") == Some("1024") {
            1024
        } else {
            512
        };
        let nodes = sockets.max(1);
        let mut current = static_memory;
        let mut id = 0u32;
        'outer: for _ in 0..8 {
            for i in 0..32u32 {
                let name = format!("dimm{id}");
                id += 1;
                let node = i % nodes;
                current += dimm_size;
                push2(
                    cmd,
                    "-object",
                    mem_object(ctx, &format!("mem-{name}"), dimm_size)?,
                );
                push2(
                    cmd,
                    "-device",
                    format!("pc-dimm,id={name},memdev=mem-{name},node={node}"),
                );
                if current > memory {
                    return cfg_err(format!(
                        "memory size ({memory}) must be aligned to {dimm_size} for hotplugging"
                    ));
                }
                if current >= memory {
                    break 'outer;
                }
            }
            dimm_size *= 2;
        }
    }
    Ok(())
}
