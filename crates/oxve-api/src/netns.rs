//! The node's network namespace (`--netns`): every change the node makes to
//! host networking happens there, so tests and development nodes never
//! touch the host's own interfaces.

use std::path::Path;
use std::process::Command;

/// Creates the named namespace if it does not exist (with `lo` up).
pub fn ensure(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("invalid network namespace name '{name}'"));
    }
    if Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    run(&["netns", "add", name])?;
    run(&["-n", name, "link", "set", "lo", "up"])
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run 'ip' (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
