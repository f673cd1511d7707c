//! `/storage`: the cluster-wide storage definitions in `storage.cfg`.
//! Secrets given with a definition (CIFS password, Ceph keyring) go to
//! `priv/` and never into `storage.cfg` or an answer.

use super::{Ctx, Registry};
use crate::error::{ApiError, ApiResult};
use crate::reg;
use crate::storage::secret_key;
use oxve_config::{Expect, Op};
use oxve_storage::config::is_boolean;
use oxve_storage::types::SECRET_OPTIONS;
use oxve_storage::{StorageDef, StorageType};
use serde_json::{json, Value};

pub fn register(r: &mut Registry) {
    reg!(r, GET "/storage" => list);
    reg!(r, POST "/storage" => create);
    reg!(r, GET "/storage/{storage}" => read);
    reg!(r, PUT "/storage/{storage}" => update);
    reg!(r, DELETE "/storage/{storage}" => delete);
}

/// Parameters that are not storage options.
const NOT_OPTIONS: &[&str] = &["storage", "type", "delete", "digest"];

async fn list(ctx: Ctx) -> ApiResult<Value> {
    let (cfg, digest) = ctx.node.storage_config()?;
    let only = ctx.opt_str("type");
    let mut out = Vec::new();
    for def in cfg.storages() {
        if only.is_some_and(|t| t != def.kind.as_str())
            || !ctx.has_privs(
                &format!("/storage/{}", def.id),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
                true,
            )
        {
            continue;
        }
        let mut v = def.to_json();
        v["digest"] = json!(digest);
        out.push(v);
    }
    Ok(Value::Array(out))
}

async fn read(ctx: Ctx) -> ApiResult<Value> {
    let (cfg, digest) = ctx.node.storage_config()?;
    let mut v = cfg.get(ctx.str("storage")?)?.to_json();
    v["digest"] = json!(digest);
    Ok(v)
}

/// The option lines and the secret carried by the parameters.
fn options(ctx: &Ctx) -> (Vec<(String, String)>, Option<String>) {
    let mut props = Vec::new();
    let mut secret = None;
    for (k, v) in &ctx.params {
        if NOT_OPTIONS.contains(&k.as_str()) || k == "node" {
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => u8::from(*b).to_string(),
            Value::Number(n) if is_boolean(k) => u8::from(n.as_i64() != Some(0)).to_string(),
            other => other.to_string(),
        };
        if SECRET_OPTIONS.contains(&k.as_str()) {
            secret = Some(text);
        } else {
            props.push((k.clone(), text));
        }
    }
    (props, secret)
}

async fn create(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("storage")?.to_string();
    let kind = StorageType::parse(ctx.str("type")?)
        .ok_or_else(|| ApiError::param("type", "unknown storage type"))?;
    if !kind.info().driven {
        return Err(ApiError::not_implemented_msg(format!(
            "storage type '{}' is not supported by oxve yet",
            kind.as_str()
        )));
    }
    let (mut props, secret) = options(&ctx);
    // Network file systems mount under /mnt/pve/<id> unless told otherwise.
    if matches!(
        kind,
        StorageType::Nfs | StorageType::Cifs | StorageType::CephFs
    ) && !props.iter().any(|(k, _)| k == "path")
    {
        let mnt = ctx.node.path(&format!("mnt/pve/{id}"));
        props.push(("path".into(), mnt.display().to_string()));
    }
    let def = StorageDef {
        id: id.clone(),
        kind,
        props,
    };
    ctx.node
        .update_storage_config(None, |cfg| Ok(cfg.add(def.clone())?))?;
    let key = secret_key(kind, &id);
    let result = async {
        if let Some(secret) = &secret {
            put_secret(&ctx, &key, secret)?;
        }
        let plugin = ctx.node.open_def(def.clone())?;
        tokio::task::spawn_blocking(move || plugin.activate())
            .await
            .map_err(|e| ApiError::fail(e.to_string()))??;
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = result {
        // Roll back: the definition and its secret go again.
        let _ = ctx.node.update_storage_config(None, |cfg| {
            let _ = cfg.remove(&id);
            Ok(())
        });
        let _ = delete_key(&ctx, &key);
        return Err(ApiError::fail(format!(
            "create storage failed: {}",
            e.message
        )));
    }
    Ok(json!({"storage": id, "type": kind.as_str()}))
}

async fn update(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("storage")?.to_string();
    let (set, secret) = options(&ctx);
    let delete: Vec<String> = ctx
        .opt_str("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let digest = ctx.opt_str("digest").map(str::to_string);
    let (set_cfg, del_cfg): (Vec<_>, Vec<_>) = (
        set.clone(),
        delete
            .iter()
            .filter(|k| !SECRET_OPTIONS.contains(&k.as_str()))
            .cloned()
            .collect(),
    );
    let def = ctx.node.update_storage_config(digest.as_deref(), |cfg| {
        Ok(cfg.update(&id, &set_cfg, &del_cfg)?)
    })?;
    let key = secret_key(def.kind, &id);
    if let Some(secret) = secret {
        put_secret(&ctx, &key, &secret)?;
    } else if delete.iter().any(|k| SECRET_OPTIONS.contains(&k.as_str())) {
        delete_key(&ctx, &key)?;
    }
    Ok(json!({"storage": id, "type": def.kind.as_str()}))
}

async fn delete(ctx: Ctx) -> ApiResult<Value> {
    let id = ctx.str("storage")?.to_string();
    let def = ctx.node.storage_def(&id)?;
    if let Ok(plugin) = ctx.node.open_def(def.clone()) {
        // Unmount network storages; a failure does not keep the definition.
        let _ = tokio::task::spawn_blocking(move || plugin.deactivate()).await;
    }
    ctx.node.update_storage_config(None, |cfg| {
        cfg.remove(&id)?;
        Ok(())
    })?;
    delete_key(&ctx, &secret_key(def.kind, &id))?;
    Ok(Value::Null)
}

fn put_secret(ctx: &Ctx, key: &str, secret: &str) -> ApiResult<()> {
    ctx.node.store.apply(Op::Put {
        key: key.into(),
        text: format!("{secret}\n"),
        expect: Expect::Any,
    })?;
    Ok(())
}

fn delete_key(ctx: &Ctx, key: &str) -> ApiResult<()> {
    if ctx.node.store.get(key)?.is_some() {
        ctx.node.store.apply(Op::Delete {
            key: key.into(),
            expect: Expect::Any,
        })?;
    }
    Ok(())
}
