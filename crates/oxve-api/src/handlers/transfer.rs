//! Getting files onto a storage: `upload` (streamed from the request
//! straight into the storage's directory), `download-url` (fetched by
//! `curl`, checksummed, optionally decompressed) and `query-url-metadata`.
//! A file is written under a hidden temporary name and renamed into place
//! only when complete and verified, so a failure leaves nothing behind.

use super::{Ctx, Registry};
use crate::blocking;
use crate::error::{ApiError, ApiResult};
use crate::reg;
use bytes::Bytes;
use oxve_storage::{volume, Content, StoragePlugin};
use serde_json::{json, Value};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    reg!(r, POST "/nodes/{node}/storage/{storage}/upload" => upload);
    reg!(r, POST "/nodes/{node}/storage/{storage}/download-url" => download_url);
    reg!(r, GET "/nodes/{node}/query-url-metadata" => query_url_metadata);
}

/// A checksum the caller expects: algorithm and lower-case hex value.
pub(super) struct Expected {
    pub(super) algorithm: String,
    pub(super) hex: String,
}

fn expected_checksum(ctx: &Ctx) -> ApiResult<Option<Expected>> {
    match (ctx.opt_str("checksum"), ctx.opt_str("checksum-algorithm")) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ApiError::param(
            "checksum-algorithm",
            "'checksum-algorithm' is required when 'checksum' is set",
        )),
        (None, Some(_)) => Err(ApiError::param(
            "checksum",
            "'checksum' is required when 'checksum-algorithm' is set",
        )),
        (Some(sum), Some(algorithm)) => Ok(Some(Expected {
            algorithm: algorithm.to_string(),
            hex: sum.trim().to_ascii_lowercase(),
        })),
    }
}

pub(super) fn hasher(algorithm: Option<&str>) -> Option<Box<dyn sha2::digest::DynDigest + Send>> {
    Some(match algorithm? {
        "md5" => Box::new(md5::Md5::new()),
        "sha1" => Box::new(sha1::Sha1::new()),
        "sha224" => Box::new(sha2::Sha224::new()),
        "sha256" => Box::new(sha2::Sha256::new()),
        "sha384" => Box::new(sha2::Sha384::new()),
        "sha512" => Box::new(sha2::Sha512::new()),
        _ => return None,
    })
}

/// Where a new file of `content` named `name` goes on the storage, after
/// checking content, extension and that it does not exist yet.
async fn target_of(
    ctx: &Ctx,
    content: Content,
    name: &str,
) -> ApiResult<(Arc<dyn StoragePlugin>, PathBuf)> {
    let def = ctx.node.storage_def(ctx.str("storage")?)?;
    let plugin: Arc<dyn StoragePlugin> = ctx.node.open_def(def)?.into();
    plugin.check_content(content)?;
    if !volume::file_name_matches(content, name) {
        return Err(ApiError::param(
            "filename",
            format!("wrong file extension or invalid file name for content '{content}': '{name}'"),
        ));
    }
    let p = plugin.clone();
    let dir = blocking(move || {
        p.activate()?;
        let dir = p
            .content_dir(content)
            .ok_or_else(|| ApiError::fail(format!("storage '{}' cannot hold files", p.def().id)))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::fail(format!("unable to create '{}': {e}", dir.display())))?;
        Ok(dir)
    })
    .await?;
    let target = dir.join(name);
    if target.exists() {
        return Err(ApiError::fail(format!(
            "refusing to override existing file '{}'",
            target.display()
        )));
    }
    Ok((plugin, target))
}

/// A hidden temporary name beside `target`.
pub(super) fn temp_beside(target: &Path, tag: &str) -> PathBuf {
    use rand::Rng;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::rngs::OsRng.gen();
    target.with_file_name(format!(".{name}.{tag}-{suffix:016x}"))
}

/// Bytes of an upload handed to the writer thread at once, and how many
/// such batches may wait for it: the upload's memory is bounded by their
/// product, whatever the file's size.
const UPLOAD_BATCH: usize = 512 * 1024;
const UPLOAD_QUEUE: usize = 4;

/// Writes chunks from a channel into a new file on a blocking thread,
/// hashing as it goes. Returns (bytes, hex digest).
fn spawn_writer(
    path: PathBuf,
    algorithm: Option<String>,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<std::io::Result<(u64, Option<String>)>> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hash = hasher(algorithm.as_deref());
        let mut size = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            if let Some(h) = hash.as_mut() {
                h.update(&chunk);
            }
            out.write_all(&chunk)?;
            size += chunk.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let hex = hash.map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect());
        Ok((size, hex))
    })
}

/// Moves a finished temporary file to its name, refusing to replace one.
pub(super) fn finish(tmp: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::hard_link(tmp, target)?;
    std::fs::remove_file(tmp)
}

fn check_sum(expected: &Option<Expected>, got: &Option<String>) -> Result<(), String> {
    match (expected, got) {
        (Some(e), Some(g)) if e.hex != *g => Err(format!(
            "checksum mismatch: got '{g}' != expect '{}'",
            e.hex
        )),
        _ => Ok(()),
    }
}

fn content_param(ctx: &Ctx) -> ApiResult<Content> {
    Content::parse(ctx.str("content")?)
        .ok_or_else(|| ApiError::param("content", "unknown content type"))
}

async fn upload(mut ctx: Ctx) -> ApiResult<Value> {
    let file = ctx.upload.take().ok_or_else(|| {
        ApiError::param(
            "filename",
            "no file uploaded (send it as multipart/form-data)",
        )
    })?;
    let checked = async {
        let content = content_param(&ctx)?;
        let name = ctx.str("filename")?.to_string();
        volume::check_file_name(&name).map_err(|e| ApiError::param("filename", e.to_string()))?;
        let expected = expected_checksum(&ctx)?;
        let (plugin, target) = target_of(&ctx, content, &name).await?;
        Ok::<_, ApiError>((content, name, expected, plugin, target))
    }
    .await;
    let (content, name, expected, plugin, target) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            file.discard().await;
            return Err(e);
        }
    };
    let mut file = file;
    let tmp = temp_beside(&target, "upload");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let writer = spawn_writer(
        tmp.clone(),
        expected.as_ref().map(|e| e.algorithm.clone()),
        rx,
    );
    let mut failure = None;
    let mut writer_gone = false;
    // The body arrives in TLS-record-sized pieces; handing each to the
    // writer thread costs a wake-up, so they go over in batches.
    let mut batch = bytes::BytesMut::with_capacity(UPLOAD_BATCH);
    loop {
        match file.chunk().await {
            Ok(Some(chunk)) => {
                batch.extend_from_slice(&chunk);
                if batch.len() >= UPLOAD_BATCH {
                    let full =
                        std::mem::replace(&mut batch, bytes::BytesMut::with_capacity(UPLOAD_BATCH));
                    if tx.send(full.freeze()).await.is_err() {
                        writer_gone = true;
                        break;
                    }
                }
            }
            Ok(None) => {
                if !batch.is_empty() {
                    let _ = tx.send(batch.split().freeze()).await;
                }
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| ApiError::fail(e.to_string()))?;
    let (size, got) = match (failure, written) {
        (None, Ok(done)) => done,
        (Some(e), _) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        (None, Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            if writer_gone {
                // The writer failed (a full disk) while the client still
                // sends: take in the rest so that it reads this error
                // instead of a reset connection.
                file.discard().await;
            }
            return Err(ApiError::fail(format!(
                "upload failed: unable to write '{}': {e}",
                target.display()
            )));
        }
    };
    let volid = format!(
        "{}:{}/{name}",
        plugin.def().id,
        volume::content_prefix(content)
    );
    let node_name = ctx.node.name.clone();
    let upid = ctx.node.tasks.spawn(
        "imgcopy",
        None,
        &ctx.caller.authid(),
        move |task| async move {
            task.log(format!("target node: {node_name}"));
            task.log(format!("target file: {}", target.display()));
            task.log(format!("file size is: {size}"));
            let result = check_sum(&expected, &got).and_then(|_| {
                if expected.is_some() {
                    task.log("checksum verified");
                }
                finish(&tmp, &target)
                    .map_err(|e| format!("unable to move upload to '{}': {e}", target.display()))
            });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
            task.log(format!("finished file import successfully: {volid}"));
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// The decompressor for a `compression` value.
fn decompressor(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "gz" => "gzip",
        "xz" => "xz",
        "zst" => "zstd",
        "bz2" => "bzip2",
        "lzo" => "lzop",
        _ => return None,
    })
}

fn curl_args(url: &str, verify: bool) -> Vec<String> {
    let mut args = vec![
        "--fail".into(),
        "--location".into(),
        "--silent".into(),
        "--show-error".into(),
    ];
    if !verify {
        args.push("--insecure".into());
    }
    args.push("--".into());
    args.push(url.into());
    args
}

async fn download_url(ctx: Ctx) -> ApiResult<Value> {
    let content = content_param(&ctx)?;
    let name = ctx.str("filename")?.to_string();
    let url = ctx.str("url")?.to_string();
    let expected = expected_checksum(&ctx)?;
    let compression = ctx.opt_str("compression").map(str::to_string);
    let tool = match &compression {
        Some(c) => Some(decompressor(c).ok_or_else(|| {
            ApiError::param("compression", format!("unsupported compression '{c}'"))
        })?),
        None => None,
    };
    let verify = ctx.opt_bool("verify-certificates").unwrap_or(true);
    let (plugin, target) = target_of(&ctx, content, &name).await?;
    let volid = format!(
        "{}:{}/{name}",
        plugin.def().id,
        volume::content_prefix(content)
    );
    let upid = ctx.node.tasks.spawn(
        "download",
        Some(&name),
        &ctx.caller.authid(),
        move |task| async move {
            let tmp = temp_beside(&target, "download");
            let unpacked = temp_beside(&target, "unpack");
            let result =
                fetch(&task, &url, verify, &tmp, &expected)
                    .await
                    .and_then(|_| match tool {
                        Some(tool) => {
                            task.log(format!("decompressing {} with {tool}", tmp.display()));
                            decompress(tool, &tmp, &unpacked).map(|_| unpacked.clone())
                        }
                        None => Ok(tmp.clone()),
                    });
            let result = result.and_then(|done| {
                finish(&done, &target)
                    .map_err(|e| format!("unable to move download to '{}': {e}", target.display()))
            });
            for t in [&tmp, &unpacked] {
                let _ = std::fs::remove_file(t);
            }
            result?;
            task.log(format!(
                "download of '{url}' to '{}' finished: {volid}",
                target.display()
            ));
            Ok(())
        },
    )?;
    Ok(json!(upid.to_string()))
}

/// Downloads `url` into `tmp` with progress lines, then checks the sum.
pub(super) async fn fetch(
    task: &oxve_tasks::TaskContext,
    url: &str,
    verify: bool,
    tmp: &Path,
    expected: &Option<Expected>,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    task.log(format!("downloading {url} to {}", tmp.display()));
    let mut child = tokio::process::Command::new("curl")
        .args(curl_args(url, verify))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("unable to run curl: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("curl has no output")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = spawn_writer(
        tmp.to_path_buf(),
        expected.as_ref().map(|e| e.algorithm.clone()),
        rx,
    );
    let mut total = 0u64;
    let mut next_report = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::select! {
            n = stdout.read(&mut buf) => n.map_err(|e| format!("download failed: {e}"))?,
            _ = task.cancelled() => return Err("download aborted".into()),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total >= next_report {
            task.log(format!("received {} MiB", total >> 20));
            next_report = total + (64 << 20);
        }
        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
            break;
        }
    }
    drop(tx);
    let status = child
        .wait_with_output()
        .await
        .map_err(|e| format!("curl failed: {e}"))?;
    let (size, got) = writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("unable to write '{}': {e}", tmp.display()))?;
    if !status.status.success() {
        return Err(format!(
            "download failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ));
    }
    task.log(format!("downloaded {size} bytes"));
    check_sum(expected, &got)?;
    if expected.is_some() {
        task.log("checksum verified");
    }
    Ok(())
}

fn decompress(tool: &str, from: &Path, to: &Path) -> Result<(), String> {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| format!("unable to create '{}': {e}", to.display()))?;
    let status = std::process::Command::new(tool)
        .arg("-dc")
        .arg(from)
        .stdout(out)
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("unable to run {tool}: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "decompression failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ));
    }
    Ok(())
}

async fn query_url_metadata(ctx: Ctx) -> ApiResult<Value> {
    let url = ctx.str("url")?.to_string();
    let verify = ctx.opt_bool("verify-certificates").unwrap_or(true);
    let mut args = vec!["--head".to_string(), "--max-time".into(), "30".into()];
    args.extend(curl_args(&url, verify));
    let out = tokio::process::Command::new("curl")
        .args(&args)
        .output()
        .await
        .map_err(|e| ApiError::fail(format!("unable to run curl: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::fail(format!(
            "invalid server response: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse_head(&String::from_utf8_lossy(&out.stdout), &url))
}

/// The metadata of the last response in `curl --head` output (after redirects).
fn parse_head(text: &str, url: &str) -> Value {
    let last = text
        .split("\r\n\r\n")
        .filter(|block| !block.trim().is_empty())
        .last()
        .unwrap_or("");
    let mut out = json!({});
    for line in last.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "content-length" => {
                if let Ok(n) = value.parse::<u64>() {
                    out["size"] = json!(n);
                }
            }
            "content-type" => {
                out["mimetype"] = json!(value.split(';').next().unwrap_or(value).trim())
            }
            "content-disposition" => {
                if let Some(name) = value
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("filename="))
                {
                    out["filename"] = json!(name.trim_matches('"'));
                }
            }
            _ => {}
        }
    }
    if out.get("filename").is_none() {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        if let Some(name) = path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !path.ends_with("//"))
        {
            out["filename"] = json!(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_of_last_response() {
        let text = "HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: application/x-iso9660-image; charset=binary\r\n\r\n";
        let v = parse_head(text, "http://h/dir/debian.iso?x=1");
        assert_eq!(
            v,
            json!({"size": 1234, "mimetype": "application/x-iso9660-image", "filename": "debian.iso"})
        );
        let v = parse_head(
            "HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"a.iso\"\r\n\r\n",
            "http://h/get",
        );
        assert_eq!(v["filename"], "a.iso");
    }

    #[test]
    fn checksum_mismatch_names_both() {
        let e = Some(Expected {
            algorithm: "sha256".into(),
            hex: "aa".into(),
        });
        assert_eq!(
            check_sum(&e, &Some("bb".into())),
            Err("checksum mismatch: got 'bb' != expect 'aa'".into())
        );
        assert!(check_sum(&e, &Some("aa".into())).is_ok());
    }
}
