//! Guest file system freeze around a running VM's disk snapshot (without
//! RAM), through the QEMU guest agent, as upstream: when the config enables
//! the agent and does not turn `freeze-fs` off, and the agent answers and
//! has not frozen already. A freeze that fails is logged and the snapshot
//! goes on (upstream's warning); the thaw always follows.

use crate::node::Node;
use oxve_qemu::qga::{self, Qga};
use oxve_schema::vmconfig::VmSection;
use std::time::Duration;

/// How long a snapshot waits for the agent to answer at all.
const AGENT_WAIT: Duration = Duration::from_secs(3);

type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// Whether the `agent` property string asks for freezes: enabled, and
/// `freeze-fs` (aliases `freeze-fs-on-backup`, `guest-fsfreeze`) not 0.
pub fn wants_freeze(agent: Option<&str>) -> bool {
    let Some(agent) = agent else {
        return false;
    };
    if !qga::agent_enabled(agent) {
        return false;
    }
    agent
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| matches!(*k, "freeze-fs" | "freeze-fs-on-backup" | "guest-fsfreeze"))
        .and_then(|(_, v)| oxve_schema::format::parse_boolean(v))
        .unwrap_or(true)
}

/// Freezes the guest's file systems when applicable; the returned agent
/// connection is for [`thaw`].
pub async fn freeze(node: &Node, vmid: u32, main: &VmSection, log: Log<'_>) -> Option<Qga> {
    if !wants_freeze(main.get("agent")) {
        if main.get("agent").is_some_and(qga::agent_enabled) {
            log("skipping guest filesystem freeze - disabled in VM options");
        }
        return None;
    }
    let path = node.qemu().qga_socket(vmid);
    let mut agent = match tokio::time::timeout(AGENT_WAIT, Qga::connect(&path, AGENT_WAIT)).await {
        Ok(Ok(agent)) => agent,
        _ => {
            log("skipping guest filesystem freeze - agent configured but not running?");
            return None;
        }
    };
    match agent.execute("guest-fsfreeze-status", None).await {
        Ok(status) if status.as_str() == Some("frozen") => {
            log("skipping guest filesystem freeze - already frozen");
            return None;
        }
        Ok(_) => {}
        Err(e) => log(&format!("unable to check guest fs freeze status - {e}")),
    }
    log("freezing guest filesystem");
    match agent.execute("guest-fsfreeze-freeze", None).await {
        Ok(count) => {
            log(&format!(
                "froze {} guest filesystem(s)",
                count.as_u64().unwrap_or(0)
            ));
            Some(agent)
        }
        Err(e) => {
            log(&format!("unable to freeze guest fs - {e}"));
            // A freeze that timed out may still complete: thaw anyway.
            Some(agent)
        }
    }
}

/// Thaws what [`freeze`] froze.
pub async fn thaw(agent: Option<Qga>, log: Log<'_>) {
    let Some(mut agent) = agent else {
        return;
    };
    log("thawing guest filesystem");
    if let Err(e) = agent.execute("guest-fsfreeze-thaw", None).await {
        log(&format!("guest-fsfreeze-thaw problems - {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_options() {
        assert!(wants_freeze(Some("1")));
        assert!(wants_freeze(Some("enabled=1,fstrim_cloned_disks=1")));
        assert!(!wants_freeze(Some("1,freeze-fs=0")));
        assert!(!wants_freeze(Some("1,freeze-fs-on-backup=0")));
        assert!(wants_freeze(Some("1,freeze-fs=1")));
        assert!(!wants_freeze(Some("0")));
        assert!(!wants_freeze(None));
    }
}
