//! Uploading an ISO over HTTPS on loopback, against `cp` and `sync` of the
//! same file into the same directory.

use super::{segment, Session};
use crate::api::run_tool;
use crate::daemon::Daemon;
use crate::error::{BenchError, Result};
use crate::stats::median;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Rounds of each (the median is reported), alternating who goes first.
pub const ROUNDS: usize = 3;
/// The storage uploaded to.
const STORAGE: &str = "local";
/// The uploaded file's name.
const FILE: &str = "bench-upload.iso";
/// The baseline's copy, beside the upload.
const COPY: &str = "bench-cp.iso";

/// What the upload benchmark measured.
#[derive(Debug)]
pub struct UploadFigures {
    /// Size of the file, MiB.
    pub mib: u64,
    /// Rounds of each.
    pub rounds: usize,
    /// Median throughput of the upload until its task ended OK, MB/s.
    pub upload_mb_s: f64,
    /// Median throughput of `cp` + `sync FILE`, MB/s.
    pub cp_mb_s: f64,
    /// The directory both wrote into.
    pub dir: PathBuf,
}

/// Uploads a `mib` MiB file to `local` and copies it there with `cp`,
/// [`ROUNDS`] times each.
pub(super) fn run(
    daemon: &Daemon,
    session: &Session,
    node: &str,
    scratch: &Path,
    mib: u64,
) -> Result<UploadFigures> {
    let dir = iso_dir(daemon)?;
    std::fs::create_dir_all(&dir).map_err(BenchError::file(&dir))?;
    let tmp = tempfile::Builder::new()
        .prefix("oxve-bench-upload-")
        .tempdir_in(scratch)
        .map_err(BenchError::file(scratch))?;
    let source = tmp.path().join(FILE);
    eprintln!("writing a {mib} MiB file to upload");
    write_noise(&source, mib)?;
    let bytes = mib << 20;
    let mut uploads = Vec::with_capacity(ROUNDS);
    let mut copies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // Alternate the order so that neither always follows the other's writeback.
        if round % 2 == 0 {
            copies.push(copy_round(&source, &dir, bytes)?);
            uploads.push(upload_round(session, node, &source, &dir, bytes)?);
        } else {
            uploads.push(upload_round(session, node, &source, &dir, bytes)?);
            copies.push(copy_round(&source, &dir, bytes)?);
        }
        eprintln!(
            "upload round {}/{ROUNDS}: oxve {:.0} MB/s, cp {:.0} MB/s",
            round + 1,
            uploads[round],
            copies[round]
        );
    }
    Ok(UploadFigures {
        mib,
        rounds: ROUNDS,
        upload_mb_s: median(&mut uploads),
        cp_mb_s: median(&mut copies),
        dir,
    })
}

/// Where ISO images of `local` live: its `path` + `template/iso`.
fn iso_dir(daemon: &Daemon) -> Result<PathBuf> {
    let text = daemon.cli(&[
        "pvesh",
        "get",
        &format!("/storage/{STORAGE}"),
        "--output-format",
        "json",
    ])?;
    let def: serde_json::Value = serde_json::from_str(&text).map_err(|e| BenchError::Parse {
        what: "pvesh get /storage/local",
        detail: format!("{e}: {text}"),
    })?;
    def["path"]
        .as_str()
        .map(|p| Path::new(p).join("template/iso"))
        .ok_or_else(|| BenchError::Parse {
            what: "pvesh get /storage/local",
            detail: format!("no path in {def}"),
        })
}

/// The baseline: `cp` into the directory, then `sync` of the copy, so that
/// both wait for the data to reach the disk as the upload does.
fn copy_round(source: &Path, dir: &Path, bytes: u64) -> Result<f64> {
    let target = dir.join(COPY);
    let start = Instant::now();
    run_tool("cp", Command::new("cp").arg(source).arg(&target))?;
    run_tool("sync", Command::new("sync").arg(&target))?;
    let rate = mb_per_sec(bytes, start);
    std::fs::remove_file(&target).map_err(BenchError::file(&target))?;
    Ok(rate)
}

/// One multipart POST to `upload`, timed until its task has ended OK;
/// then the ISO is checked and deleted through the API.
fn upload_round(
    session: &Session,
    node: &str,
    source: &Path,
    dir: &Path,
    bytes: u64,
) -> Result<f64> {
    let path = format!("/nodes/{}/storage/{STORAGE}/upload", segment(node));
    let file = format!("filename=@{}", source.display());
    let start = Instant::now();
    let upid = session.call("POST", &path, &["-F", "content=iso", "-F", &file], 1800)?;
    let upid = upid.as_str().ok_or_else(|| BenchError::Parse {
        what: "the upload's answer",
        detail: format!("data is not a task id: {upid}"),
    })?;
    session.wait_task(node, upid)?;
    let rate = mb_per_sec(bytes, start);
    let uploaded = dir.join(FILE);
    let size = std::fs::metadata(&uploaded)
        .map_err(BenchError::file(&uploaded))?
        .len();
    if size != bytes {
        return Err(BenchError::Tool {
            tool: "upload".into(),
            detail: format!("{} has {size} bytes, not {bytes}", uploaded.display()),
        });
    }
    let volume = segment(&format!("{STORAGE}:iso/{FILE}"));
    let content = format!(
        "/nodes/{}/storage/{STORAGE}/content/{volume}",
        segment(node)
    );
    let upid = session.call("DELETE", &content, &[], 60)?;
    if let Some(upid) = upid.as_str() {
        session.wait_task(node, upid)?;
    }
    if uploaded.exists() {
        return Err(BenchError::Tool {
            tool: format!("DELETE {content}"),
            detail: format!("{} is still there", uploaded.display()),
        });
    }
    Ok(rate)
}

/// Writes `mib` MiB of incompressible, non-sparse bytes (xorshift noise)
/// and syncs them, so that neither side can skip holes or zeroes.
fn write_noise(path: &Path, mib: u64) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(BenchError::file(path))?;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        fill_noise(&mut chunk, &mut state);
        file.write_all(&chunk).map_err(BenchError::file(path))?;
    }
    file.sync_all().map_err(BenchError::file(path))
}

/// Fills `buf` from a xorshift64 generator.
fn fill_noise(buf: &mut [u8], state: &mut u64) {
    for word in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
}

/// Throughput in MB/s (10⁶ bytes per second) of `bytes` since `start`.
fn mb_per_sec(bytes: u64, start: Instant) -> f64 {
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_no_runs_of_zeroes() {
        let mut state = 1;
        let mut buf = vec![0u8; 4099];
        fill_noise(&mut buf, &mut state);
        assert!(buf.windows(16).all(|w| w.iter().any(|b| *b != 0)));
        let first = buf.clone();
        fill_noise(&mut buf, &mut state);
        assert_ne!(first, buf, "the generator moves on");
    }

    #[test]
    fn writes_the_requested_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.iso");
        write_noise(&path, 2).expect("written");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 2 << 20);
    }
}
