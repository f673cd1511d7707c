//! Container create from the cached template, against `tar -xpf` of the
//! same archive into the same file system; then many creates fired at
//! once, and as many destroys.

use super::http::fan_out;
use super::{elapsed_ms, Bench, TEMPLATE};
use crate::api::run_tool;
use crate::error::{BenchError, Result};
use crate::stats::Latency;
use std::process::Command;
use std::time::{Duration, Instant};

/// Timed creates (and as many extractions), alternating which goes first.
pub const ROUNDS: usize = 7;
/// The first id of the sequential creates; each is destroyed after it.
const FIRST_SEQUENTIAL: u32 = 200;
/// The first id of the parallel creates.
pub const FIRST_PARALLEL: u32 = 300;
/// How often each of the parallel callers polls its task: often enough
/// for a total of seconds, rarely enough not to load the daemon.
pub const PARALLEL_POLL: Duration = Duration::from_millis(50);
/// Errors quoted in the report.
const QUOTED: usize = 3;

/// What the create benchmark measured.
#[derive(Debug)]
pub struct CreateFigures {
    /// Timed runs of each.
    pub rounds: usize,
    /// The template's file name.
    pub template: String,
    /// Its size, KiB.
    pub template_kib: u64,
    /// `POST /nodes/{node}/lxc` until its task ended OK.
    pub api: Latency,
    /// `tar -xpf <template> -C <empty dir>`.
    pub tar: Latency,
}

/// What the parallel creates (and destroys) did.
#[derive(Debug)]
pub struct ParallelFigures {
    /// Creates fired at once.
    pub count: usize,
    /// First call to last task ended, ms.
    pub create_ms: f64,
    /// Creates that failed (call refused or task not OK).
    pub create_failures: usize,
    /// The first few failures, as `CT <vmid>: <why>`.
    pub create_errors: Vec<String>,
    /// The same for the destroys of every CT that was created.
    pub destroyed: usize,
    /// See [`ParallelFigures::create_ms`].
    pub destroy_ms: f64,
    /// See [`ParallelFigures::create_failures`].
    pub destroy_failures: usize,
    /// See [`ParallelFigures::create_errors`].
    pub destroy_errors: Vec<String>,
    /// Median of one create alone in this run (`None`: not measured).
    pub sequential_ms: Option<f64>,
}

/// Creates and destroys CTs 200… [`ROUNDS`] times, timing each create,
/// and extracts the template with `tar` as often.
pub(super) fn sequential(b: &Bench<'_>) -> Result<CreateFigures> {
    let mut client = b.client()?;
    client.connect()?;
    let work = tempfile::Builder::new()
        .prefix("bench-tar-")
        .tempdir_in(b.daemon.root())
        .map_err(BenchError::file(b.daemon.root()))?;
    let template_kib = std::fs::metadata(&b.template)
        .map_err(BenchError::file(&b.template))?
        .len()
        / 1024;
    let mut api = Vec::with_capacity(ROUNDS);
    let mut tar = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let vmid = FIRST_SEQUENTIAL + round as u32;
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let start = Instant::now();
                b.create(&mut client, vmid)?;
                api.push(elapsed_ms(start));
                b.destroy(&mut client, vmid)?;
            } else {
                let dest = work.path().join(round.to_string());
                std::fs::create_dir(&dest).map_err(BenchError::file(&dest))?;
                let start = Instant::now();
                run_tool(
                    "tar -xpf",
                    Command::new("tar")
                        .arg("-xpf")
                        .arg(&b.template)
                        .arg("-C")
                        .arg(&dest),
                )?;
                tar.push(elapsed_ms(start));
                std::fs::remove_dir_all(&dest).map_err(BenchError::file(&dest))?;
            }
        }
        eprintln!(
            "CT create round {}/{ROUNDS}: API {:.0} ms, tar {:.0} ms",
            round + 1,
            api[round],
            tar[round]
        );
    }
    Ok(CreateFigures {
        rounds: ROUNDS,
        template: TEMPLATE.into(),
        template_kib,
        api: Latency::of(&mut api),
        tar: Latency::of(&mut tar),
    })
}

/// Fires `count` creates (CTs 300…) at once, each on its own connection,
/// waits for all, then destroys every one that exists the same way.
pub(super) fn parallel(
    b: &Bench<'_>,
    count: usize,
    sequential_ms: Option<f64>,
) -> Result<ParallelFigures> {
    if count == 0 {
        return Err(BenchError::Missing(
            "--lxc-parallel 0: no creates to fire".into(),
        ));
    }
    let ids: Vec<u32> = (0..count).map(|i| FIRST_PARALLEL + i as u32).collect();
    eprintln!("{count} creates at once");
    let (create_ms, created) = fan_out(
        &ids,
        || b.client(),
        |client, vmid| {
            let upid = b.post_create(client, vmid, super::ROOTFS)?;
            b.wait_task(client, &upid, PARALLEL_POLL)
        },
    );
    let (create_failures, create_errors) = failures(&ids, &created);
    // Destroy what exists, whatever its create said.
    let listed = b
        .client()?
        .call("GET", &format!("{}/lxc", b.node_path()), &[])?;
    let existing: Vec<u32> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["vmid"].as_u64())
        .filter_map(|v| u32::try_from(v).ok())
        .filter(|v| ids.contains(v))
        .collect();
    eprintln!("{} destroys at once", existing.len());
    let (destroy_ms, destroyed) = fan_out(
        &existing,
        || b.client(),
        |client, vmid| {
            let upid = b.post_destroy(client, vmid)?;
            b.wait_task(client, &upid, PARALLEL_POLL)
        },
    );
    let (destroy_failures, destroy_errors) = failures(&existing, &destroyed);
    Ok(ParallelFigures {
        count,
        create_ms,
        create_failures,
        create_errors,
        destroyed: existing.len(),
        destroy_ms,
        destroy_failures,
        destroy_errors,
        sequential_ms,
    })
}

/// How many failed, and the first few as `CT <vmid>: <why>`.
fn failures(ids: &[u32], results: &[Result<(), String>]) -> (usize, Vec<String>) {
    let failed: Vec<String> = ids
        .iter()
        .zip(results)
        .filter_map(|(vmid, r)| r.as_ref().err().map(|e| format!("CT {vmid}: {e}")))
        .collect();
    (failed.len(), failed.into_iter().take(QUOTED).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_and_quotes_the_first() {
        let ids = [300, 301, 302, 303, 304];
        let results = vec![
            Ok(()),
            Err("a".to_string()),
            Err("b".into()),
            Err("c".into()),
            Err("d".into()),
        ];
        let (n, quoted) = failures(&ids, &results);
        assert_eq!(n, 4);
        assert_eq!(quoted, ["CT 301: a", "CT 302: b", "CT 303: c"]);
        assert_eq!(failures(&ids, &[Ok(()), Ok(())]), (0, vec![]));
    }
}
