//! Suspend to disk (hibernation), as upstream: the VM's RAM and device
//! state go into a `vm-<vmid>-state-suspend-<date>` volume named by the
//! config's `vmstate`, QEMU ends, and the config keeps `lock: suspended`
//! with the machine and CPU the state needs (`runningmachine`,
//! `runningcpu`). The next start (or resume) loads the state with that
//! machine and CPU, and then frees the volume and the keys.
//!
//! A failed suspend resumes the VM and removes what it wrote (upstream
//! leaves `lock: suspending` behind instead).

use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::vm::{self, check_unlocked, StartOptions};
use crate::vm_snapshot::{alloc_state, volume_path};
use crate::vm_state;
use oxve_qemu::host::QemuHost;
use oxve_schema::vmconfig::VmSection;
use std::sync::Arc;
use std::time::Duration;

/// Keys a suspend to disk adds to the config (besides the lock).
const STATE_KEYS: &[&str] = &["vmstate", "runningmachine", "runningcpu"];
/// How long QEMU may take to exit after `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// Whether VM config `main` is suspended to disk (a start resumes it).
pub fn is_suspended(main: &VmSection) -> bool {
    main.get("lock") == Some("suspended")
}

/// The `-cpu` value of a generated command line (upstream's `runningcpu`).
pub fn running_cpu(args: &[String]) -> Option<String> {
    let i = args.iter().position(|a| a == "-cpu")?;
    args.get(i + 1).cloned()
}

/// Suspends running VM `vmid` to disk; the state volume goes to
/// `statestorage`, else the VM's state storage (see `vm_snapshot.rs`).
pub async fn to_disk(
    node: &Arc<Node>,
    vmid: u32,
    statestorage: Option<String>,
    skiplock: bool,
    log: Log<'_>,
) -> ApiResult<()> {
    let Some(pid) = node.vm_pid(vmid) else {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    };
    let n = node.clone();
    let section = blocking(move || {
        n.update_vm(vmid, |conf| {
            if !skiplock {
                check_unlocked(conf)?;
            }
            conf.main.props.insert("lock".into(), "suspending".into());
            Ok(conf.main.clone())
        })
    })
    .await?;
    let mut volid = None;
    let result = save(node, vmid, &section, statestorage, &mut volid, log).await;
    let n = node.clone();
    match result {
        Ok(()) => {
            log("state saved, quitting");
            if let Ok(mut qmp) = node.qemu().qmp(vmid, QUIT_TIMEOUT).await {
                let _ = qmp.quit().await;
            }
            if !QemuHost::wait_exit(pid, QUIT_TIMEOUT).await {
                QemuHost::terminate(pid, Duration::from_secs(5)).await;
            }
            blocking(move || {
                n.update_vm(vmid, |conf| {
                    conf.main.props.insert("lock".into(), "suspended".into());
                    Ok(())
                })?;
                vm::cleanup_if_stopped(&n, vmid);
                Ok(())
            })
            .await
        }
        Err(e) => {
            log(&format!("suspend failed, resuming the VM: {}", e.message));
            if let Ok(mut qmp) = node.qemu().qmp(vmid, QUIT_TIMEOUT).await {
                if let Err(e) = qmp.cont().await {
                    log(&format!("could not resume the VM: {e}"));
                }
            }
            blocking(move || {
                if let Some(volid) = &volid {
                    vm::free_volume(&n, volid)?;
                }
                n.update_vm(vmid, |conf| {
                    for key in STATE_KEYS {
                        conf.main.props.remove(*key);
                    }
                    conf.main.props.remove("lock");
                    Ok(())
                })
            })
            .await?;
            Err(e)
        }
    }
}

/// Pauses the VM and saves its state into a new state volume (its id goes
/// to `volid` at once, so that a failure frees it), recorded in the config.
async fn save(
    node: &Arc<Node>,
    vmid: u32,
    section: &VmSection,
    statestorage: Option<String>,
    volid: &mut Option<String>,
    log: Log<'_>,
) -> ApiResult<()> {
    let mut main = section.clone();
    if let Some(storage) = statestorage {
        main.props.insert("vmstatestorage".into(), storage);
    }
    let name = format!("suspend-{}", chrono::Local::now().format("%Y-%m-%d"));
    let (n, m) = (node.clone(), main.clone());
    let id = blocking(move || alloc_state(&n, vmid, &name, &m)).await?;
    *volid = Some(id.clone());
    let (n, i) = (node.clone(), id.clone());
    let path = blocking(move || volume_path(&n, &i)).await?;
    let mut qmp = node
        .qemu()
        .qmp(vmid, QUIT_TIMEOUT)
        .await
        .map_err(|e| ApiError::fail(format!("VM {vmid} qmp: {e}")))?;
    qmp.stop()
        .await
        .map_err(|e| ApiError::fail(format!("cannot pause the VM: {e}")))?;
    let n = node.clone();
    let generated = blocking(move || Ok(vm::command_line(&n, vmid, &main, true)?.0.args)).await?;
    let machine = vm_state::running_machine(&mut qmp, &generated).await?;
    let cpu = running_cpu(&generated);
    let (n, i) = (node.clone(), id.clone());
    blocking(move || {
        n.update_vm(vmid, |conf| {
            conf.main.props.insert("vmstate".into(), i.clone());
            conf.main
                .props
                .insert("runningmachine".into(), machine.clone());
            if let Some(cpu) = &cpu {
                conf.main.props.insert("runningcpu".into(), cpu.clone());
            }
            Ok(())
        })
    })
    .await?;
    log(&format!("saving VM state and RAM to '{id}'"));
    vm_state::save(&mut qmp, &path, log).await
}

/// Starts VM `vmid`: resumes it when it is suspended to disk (see
/// [`resume_from_disk`]), else a plain start.
pub async fn start(node: &Arc<Node>, vmid: u32, log: Log<'_>) -> ApiResult<()> {
    let n = node.clone();
    let suspended = blocking(move || Ok(is_suspended(&n.load_vm(vmid)?.conf.main))).await?;
    if suspended {
        resume_from_disk(node, vmid, log).await
    } else {
        vm::start(node, vmid, log).await
    }
}

/// Starts VM `vmid` that is suspended to disk: loads its saved state with
/// the recorded machine and CPU, then frees the state volume and clears
/// the suspend keys and lock. A failed start leaves all of it in place.
pub async fn resume_from_disk(node: &Arc<Node>, vmid: u32, log: Log<'_>) -> ApiResult<()> {
    let n = node.clone();
    let main = blocking(move || Ok(n.load_vm(vmid)?.conf.main)).await?;
    let volid = main
        .get("vmstate")
        .ok_or_else(|| {
            ApiError::fail(format!(
                "VM {vmid} is locked (suspended) but has no vmstate"
            ))
        })?
        .to_string();
    let (n, v) = (node.clone(), volid.clone());
    let statefile = blocking(move || volume_path(&n, &v)).await?;
    log("Resuming suspended VM");
    let opts = StartOptions {
        statefile: Some(statefile),
        forcemachine: main.get("runningmachine").map(str::to_string),
        forcecpu: main.get("runningcpu").map(str::to_string),
        allow_lock: Some("suspended"),
    };
    vm::start_with(node, vmid, opts, log).await?;
    log("Resumed VM, removing state");
    let n = node.clone();
    blocking(move || {
        n.update_vm(vmid, |conf| {
            for key in STATE_KEYS {
                conf.main.props.remove(*key);
            }
            conf.main.props.remove("lock");
            Ok(())
        })?;
        vm::free_volume(&n, &volid)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_a_command_line() {
        let args: Vec<String> = ["qemu", "-smp", "1", "-cpu", "qemu64,+aes", "-m", "512"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(running_cpu(&args).as_deref(), Some("qemu64,+aes"));
        assert_eq!(running_cpu(&args[..3]), None);
    }

    #[test]
    fn suspended_lock() {
        let mut main = VmSection::default();
        assert!(!is_suspended(&main));
        main.props.insert("lock".into(), "suspended".into());
        assert!(is_suspended(&main));
    }
}
