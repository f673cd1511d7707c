//! The node: everything a running daemon holds — its name and root, the
//! config store, the task manager, the ticket keys and the handler registry.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Registry;
use oxve_access::usercfg::UserConfig;
use oxve_config::{Expect, Op, Store};
use oxve_tasks::TaskManager;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub root: PathBuf,
    pub name: String,
    pub netns: Option<String>,
}

/// A running node's state, shared by all requests.
pub struct Node {
    pub name: String,
    pub root: PathBuf,
    pub netns: Option<String>,
    pub store: Store,
    pub tasks: TaskManager,
    pub keys: oxve_access::ticket::TicketKeys,
    pub registry: Registry,
    /// When the daemon started (for uptime figures).
    pub started: std::time::SystemTime,
    /// VM ids handed out by `/cluster/nextid` and not yet used by a guest.
    pub nextid: crate::handlers::cluster::Reservations,
    /// Per-guest locks: config changes and guest operations queue here.
    pub guest_locks: crate::ct::GuestLocks,
    /// Parsed `user.cfg`; dropped whenever this process writes it.
    users: Mutex<Option<Arc<UserConfig>>>,
    /// Tickets already verified: ticket → user id (signature checks are
    /// the dearest part of an authenticated request).
    tickets: Mutex<std::collections::HashMap<String, (String, i64)>>,
    /// The HTTPS certificate's fingerprint, once computed.
    pub fingerprint: std::sync::OnceLock<String>,
    /// What running QEMU once told (see `vm.rs`).
    pub qemu_probe: std::sync::OnceLock<Result<oxve_qemu::probe::QemuProbe, String>>,
}

/// How many verified tickets are remembered before the cache starts over.
const TICKET_CACHE_SIZE: usize = 4096;

/// Store key of the user/group/ACL configuration.
pub const USER_CFG: &str = "user.cfg";
/// Store key of the realms.
pub const DOMAINS_CFG: &str = "domains.cfg";
/// Store key of pve-realm password hashes.
pub const SHADOW_CFG: &str = "priv/shadow.cfg";
/// Store key of API token secret hashes.
pub const TOKEN_CFG: &str = "priv/token.cfg";
/// Store key of second factors.
pub const TFA_CFG: &str = "priv/tfa.cfg";

const DEFAULT_DOMAINS: &str = "pam: pam\n\tcomment Linux PAM standard authentication\n\npve: pve\n\tcomment Proxmox VE authentication server\n\n";
const DEFAULT_USERS: &str = "user:root@pam:1:0::::::\n";

impl Node {
    /// Opens (and on first start creates) the node's state under its root.
    pub fn open(opts: NodeOptions) -> ApiResult<Arc<Node>> {
        let store = Store::open(&opts.root.join("var/lib/oxve/config.db"))?;
        let tasks = TaskManager::new(opts.root.join("var/log/oxve/tasks"), opts.name.clone())?;
        seed(&store, USER_CFG, DEFAULT_USERS)?;
        seed(&store, DOMAINS_CFG, DEFAULT_DOMAINS)?;
        seed(
            &store,
            crate::storage::STORAGE_CFG,
            &crate::storage::default_config(&opts.root),
        )?;
        let keys = load_keys(&store)?;
        Ok(Arc::new(Node {
            name: opts.name,
            root: opts.root,
            netns: opts.netns,
            store,
            tasks,
            keys,
            registry: Registry::build(),
            started: std::time::SystemTime::now(),
            nextid: Default::default(),
            guest_locks: Default::default(),
            users: Mutex::new(None),
            tickets: Mutex::new(Default::default()),
            fingerprint: Default::default(),
            qemu_probe: Default::default(),
        }))
    }

    /// A path under the node's root (`rel` without a leading slash).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The Unix socket of the local CLI.
    pub fn socket_path(root: &Path) -> PathBuf {
        root.join("run/oxve/api.sock")
    }

    /// The parsed `user.cfg`. Every write of it goes through
    /// [`Node::update_text`], which drops the cached copy.
    pub fn users(&self) -> ApiResult<Arc<UserConfig>> {
        let mut cache = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cfg) = cache.as_ref() {
            return Ok(cfg.clone());
        }
        let text = self
            .store
            .get(USER_CFG)?
            .map(|e| e.text)
            .unwrap_or_default();
        let cfg = Arc::new(
            UserConfig::parse(&text).map_err(|e| ApiError::fail(format!("user.cfg: {e}")))?,
        );
        *cache = Some(cfg.clone());
        Ok(cfg)
    }

    /// Verifies a login ticket, remembering good ones until they expire.
    pub fn verify_ticket(&self, ticket: &str, now: i64) -> Option<String> {
        let mut cache = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((user, time)) = cache.get(ticket) {
            if now - time <= oxve_access::ticket::TICKET_LIFETIME && now - time >= -300 {
                return Some(user.clone());
            }
        }
        let user = self.keys.verify_ticket(ticket, now).ok()?;
        let time = ticket
            .split(':')
            .nth(2)
            .and_then(|t| i64::from_str_radix(t, 16).ok())
            .unwrap_or(now);
        if cache.len() >= TICKET_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(ticket.to_string(), (user.clone(), time));
        Some(user)
    }

    /// Read-modify-write of `user.cfg`: `f` edits the parsed config; the
    /// write is retried if another writer got there first.
    pub fn update_users<T>(
        &self,
        mut f: impl FnMut(&mut UserConfig) -> ApiResult<T>,
    ) -> ApiResult<T> {
        self.update_text(USER_CFG, |text| {
            let mut cfg = UserConfig::parse(text.unwrap_or(""))
                .map_err(|e| ApiError::fail(format!("user.cfg: {e}")))?;
            let out = f(&mut cfg)?;
            Ok((Some(cfg.write()), out))
        })
    }

    /// Read-modify-write of one store key with optimistic retry. `f` gets the
    /// current text and returns the new text (`None`: delete) and a result.
    pub fn update_text<T>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&str>) -> ApiResult<(Option<String>, T)>,
    ) -> ApiResult<T> {
        loop {
            let current = self.store.get(key)?;
            let expect = match &current {
                Some(e) => Expect::Version(e.version),
                None => Expect::Absent,
            };
            let (new, out) = f(current.as_ref().map(|e| e.text.as_str()))?;
            let op = match new {
                Some(text) => Op::Put {
                    key: key.to_string(),
                    text,
                    expect,
                },
                None if current.is_some() => Op::Delete {
                    key: key.to_string(),
                    expect,
                },
                None => return Ok(out),
            };
            match self.store.apply(op) {
                Ok(_) => {
                    if key == USER_CFG {
                        *self.users.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    return Ok(out);
                }
                Err(oxve_config::ConfigError::VersionMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The text of a store key, empty when absent.
    pub fn read_text(&self, key: &str) -> ApiResult<String> {
        Ok(self.store.get(key)?.map(|e| e.text).unwrap_or_default())
    }
}

fn seed(store: &Store, key: &str, text: &str) -> ApiResult<()> {
    let op = Op::Put {
        key: key.to_string(),
        text: text.to_string(),
        expect: Expect::Absent,
    };
    match store.apply(op) {
        Ok(_) | Err(oxve_config::ConfigError::VersionMismatch { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Loads the ticket signing keys, creating them on first start.
fn load_keys(store: &Store) -> ApiResult<oxve_access::ticket::TicketKeys> {
    use oxve_access::ticket::TicketKeys;
    const KEY: &str = "priv/authkey.key";
    if let Some(e) = store.get(KEY)? {
        return TicketKeys::from_text(&e.text).map_err(|e| ApiError::fail(e.to_string()));
    }
    let keys = TicketKeys::generate();
    let op = Op::Put {
        key: KEY.into(),
        text: keys.to_text(),
        expect: Expect::Absent,
    };
    match store.apply(op) {
        Ok(_) => Ok(keys),
        // Another process created them first: use theirs.
        Err(oxve_config::ConfigError::VersionMismatch { .. }) => load_keys(store),
        Err(e) => Err(e.into()),
    }
}
