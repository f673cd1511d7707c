//! A VM's RAM and device state in a file of its own (a snapshot's
//! `vmstate` volume), with stock QEMU's migration: saved by migrating the
//! paused VM to `file:<path>`, loaded by a QEMU started with `-incoming
//! defer` (upstream's patched QEMU has `savevm-start` and `-loadstate`
//! for the same).

use crate::error::{ApiError, ApiResult};
use oxve_qemu::qmp::Qmp;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// How often the migration's progress is polled.
const POLL: Duration = Duration::from_millis(200);

fn qmp_err(what: &str) -> impl Fn(oxve_qemu::qmp::QmpError) -> ApiError + '_ {
    move |e| ApiError::fail(format!("{what}: {e}"))
}

/// Upstream's size of a state volume: twice the memory plus 500 MiB for
/// the devices, in KiB.
pub fn volume_size_kib(memory_mib: u64) -> u64 {
    (memory_mib * 2 + 500) * 1024
}

/// The machine a VM runs, as upstream records it (`pc-i440fx-10.0+pve1`):
/// the `-machine type=` of the command line it was started with
/// (`generated`, before the stock-QEMU transform drops the `+pveN`
/// revision, which decides details such as `host_mtu` that the saved
/// state depends on), an alias (`pc`, `q35`) resolved through
/// `query-machines`.
pub async fn running_machine(qmp: &mut Qmp, generated: &[String]) -> ApiResult<String> {
    let machine = generated
        .iter()
        .position(|a| a == "-machine")
        .and_then(|i| generated.get(i + 1))
        .and_then(|v| {
            v.split(',')
                .enumerate()
                .find_map(|(i, p)| match p.strip_prefix("type=") {
                    Some(t) => Some(t.to_string()),
                    None => (i == 0 && !p.contains('=')).then(|| p.to_string()),
                })
        })
        .unwrap_or_else(|| "pc".to_string());
    let (base, rev) = match machine.split_once("+pve") {
        Some((b, r)) => (b.to_string(), r.parse::<u32>().unwrap_or(0)),
        None => (machine.clone(), 0),
    };
    let machines = qmp
        .execute("query-machines", None)
        .await
        .map_err(qmp_err("query-machines"))?;
    let resolved = machines
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m.get("alias").and_then(Value::as_str) == Some(base.as_str()))
        .and_then(|m| m.get("name").and_then(Value::as_str))
        .unwrap_or(&base)
        .to_string();
    Ok(format!("{resolved}+pve{rev}"))
}

/// Saves the (paused) VM's state into `path`, logging progress; QEMU's
/// block devices are inactive afterwards until [`reactivate`].
pub async fn save(qmp: &mut Qmp, path: &Path, log: &(dyn Fn(&str) + Sync)) -> ApiResult<()> {
    // No throttle: the VM is paused while its state is written.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({"max-bandwidth": 1u64 << 40})),
    )
    .await
    .map_err(qmp_err("migrate-set-parameters"))?;
    let uri = format!("file:{}", path.display());
    qmp.execute("migrate", Some(json!({ "uri": uri })))
        .await
        .map_err(qmp_err("saving the VM state"))?;
    let started = std::time::Instant::now();
    let mut reported = started;
    loop {
        let info = qmp
            .execute("query-migrate", None)
            .await
            .map_err(qmp_err("query-migrate"))?;
        let status = info.get("status").and_then(Value::as_str).unwrap_or("");
        let bytes = info
            .pointer("/ram/transferred")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match status {
            "completed" => {
                log(&format!(
                    "saved the VM state ({} MiB) in {:.1} s",
                    bytes >> 20,
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            "failed" | "cancelled" => {
                let why = info
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(ApiError::fail(format!(
                    "unable to save VM state and RAM - {why}"
                )));
            }
            _ => {}
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            log(&format!("{} MiB saved", bytes >> 20));
            reported = std::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Makes QEMU's block devices usable again after [`save`] when the VM
/// stays paused (a `cont` does it by itself).
pub async fn reactivate(qmp: &mut Qmp) {
    let _ = qmp
        .execute("block-set-active", Some(json!({"active": true})))
        .await;
}

/// Loads the state in `path` into a QEMU started with `-incoming defer`;
/// the VM is paused afterwards.
pub async fn load(qmp: &mut Qmp, path: &Path) -> ApiResult<()> {
    let uri = format!("file:{}", path.display());
    let mut args = json!({ "uri": uri });
    // QEMU 9.1 can report a failed load instead of exiting.
    if (qmp.version.major, qmp.version.minor) >= (9, 1) {
        args["exit-on-error"] = json!(false);
    }
    qmp.execute("migrate-incoming", Some(args))
        .await
        .map_err(qmp_err("loading the VM state"))?;
    loop {
        let info = qmp
            .execute("query-migrate", None)
            .await
            .map_err(qmp_err("loading the VM state"))?;
        match info.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = info
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(ApiError::fail(format!(
                    "unable to load the VM state - {why}"
                )));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn state_volume_size_as_upstream() {
        assert_eq!(super::volume_size_kib(512), 1524 * 1024);
    }
}
