//! oxve-access: users, groups, roles, pools and ACLs (`user.cfg`), realms
//! (`domains.cfg`), permission evaluation, tickets and CSRF tokens, API
//! tokens, password hashes, PAM and TOTP.
//!
//! A pure domain crate: it parses and writes the texts the caller keeps in
//! the config store and does the cryptography; its one side effect is PAM.

pub mod acl;
pub mod domains;
pub mod pam;
pub mod password;
pub mod roles;
pub mod tfa;
pub mod ticket;
pub mod token;
pub mod usercfg;
pub mod userid;

/// Errors of access control, with messages that name the object.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("invalid user id '{0}': {1}")]
    InvalidUserid(String, String),
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    #[error("user '{0}' already exists")]
    UserExists(String),
    #[error("group '{0}' does not exist")]
    NoSuchGroup(String),
    #[error("group '{0}' already exists")]
    GroupExists(String),
    #[error("role '{0}' does not exist")]
    NoSuchRole(String),
    #[error("role '{0}' already exists")]
    RoleExists(String),
    #[error("cannot change built-in role '{0}'")]
    BuiltinRole(String),
    #[error("invalid privilege '{0}'")]
    InvalidPrivilege(String),
    #[error("pool '{0}' does not exist")]
    NoSuchPool(String),
    #[error("pool '{0}' already exists")]
    PoolExists(String),
    #[error("token '{0}' does not exist")]
    NoSuchToken(String),
    #[error("token '{0}' already exists")]
    TokenExists(String),
    #[error("no such realm '{0}'")]
    NoSuchRealm(String),
    #[error("realm '{0}' already exists")]
    RealmExists(String),
    #[error("{0}")]
    Parse(String),
    #[error("authentication failure")]
    AuthFailed,
    #[error("{0}")]
    Invalid(String),
}
