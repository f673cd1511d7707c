//! Who is calling: a ticket (cookie), an API token (header), the local CLI
//! over the Unix socket (peer credentials), or nobody.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use http::HeaderMap;
use oxve_access::userid::Authid;

/// The connection a request came in on.
#[derive(Debug, Clone)]
pub enum Peer {
    /// HTTPS from this address.
    Tcp(std::net::SocketAddr),
    /// The Unix socket, with the peer's uid.
    Unix { uid: u32 },
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A user logged in with a ticket (CSRF token needed for writes).
    Ticket(String),
    /// root@pam through the local socket (no CSRF: peer credentials).
    Local(String),
    /// An API token `user@realm!name`.
    Token {
        user: String,
        tokenid: String,
    },
}

impl Caller {
    /// The user id; for tokens the owner's.
    pub fn userid(&self) -> String {
        match self {
            Caller::Anonymous => String::new(),
            Caller::Ticket(u) | Caller::Local(u) => u.clone(),
            Caller::Token { user, .. } => user.clone(),
        }
    }

    /// The id permissions are evaluated for (`user@realm!token` for tokens).
    pub fn authid(&self) -> String {
        match self {
            Caller::Token { tokenid, .. } => tokenid.clone(),
            other => other.userid(),
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self, Caller::Ticket(u) | Caller::Local(u) if u == "root@pam")
    }

    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }
}

/// Why a request's credentials were refused (upstream answers 401).
const NO_TICKET: &str = "No ticket";

/// Identifies the caller from the connection and headers. Missing
/// credentials give `Anonymous`; wrong ones are an error.
pub fn authenticate(node: &Node, peer: &Peer, headers: &HeaderMap) -> ApiResult<Caller> {
    if let Peer::Unix { uid: 0 } = peer {
        return Ok(Caller::Local("root@pam".into()));
    }
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("PVEAPIToken") {
            let token = token.trim_start_matches([' ', '=']);
            return authenticate_token(node, token);
        }
    }
    if let Some(ticket) = cookie(headers, "PVEAuthCookie") {
        let now = now();
        let userid = node
            .verify_ticket(&ticket, now)
            .ok_or_else(|| ApiError::unauthorized("authentication failure"))?;
        check_user_valid(node, &userid)?;
        return Ok(Caller::Ticket(userid));
    }
    Ok(Caller::Anonymous)
}

fn authenticate_token(node: &Node, value: &str) -> ApiResult<Caller> {
    let (tokenid, secret) = oxve_access::token::parse_header(value)
        .ok_or_else(|| ApiError::unauthorized("invalid API token"))?;
    let users = node.users()?;
    let secrets = node.read_text(crate::node::TOKEN_CFG)?;
    let authid =
        Authid::parse(&tokenid).map_err(|_| ApiError::unauthorized("invalid API token"))?;
    let user = authid.user().to_string();
    if !users.token_valid(&tokenid, now())
        || !oxve_access::token::verify_secret(&secrets, &tokenid, &secret)
    {
        return Err(ApiError::unauthorized("invalid API token"));
    }
    check_user_valid(node, &user)?;
    Ok(Caller::Token { user, tokenid })
}

/// A user must exist, be enabled and not expired to act (upstream's
/// `check_user_enabled`).
pub fn check_user_valid(node: &Node, userid: &str) -> ApiResult<()> {
    if userid == "root@pam" {
        return Ok(());
    }
    let users = node.users()?;
    if users.user_enabled(userid, now()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(format!(
            "user '{userid}' is disabled, expired or does not exist"
        )))
    }
}

/// Refuses a write through a ticket without a valid CSRF token.
pub fn check_csrf(node: &Node, caller: &Caller, headers: &HeaderMap) -> ApiResult<()> {
    let Caller::Ticket(userid) = caller else {
        return Ok(());
    };
    let token = headers
        .get("CSRFPreventionToken")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if node.keys.verify_csrf_token(userid, token, now()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "Permission denied - invalid csrf token",
        ))
    }
}

/// 401 for calls that need a logged-in caller.
pub fn require_login(caller: &Caller) -> ApiResult<()> {
    if caller.is_authenticated() {
        Ok(())
    } else {
        Err(ApiError::unauthorized(NO_TICKET))
    }
}

/// A cookie's value, percent-decoded as browsers and clients send it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v.trim_matches('"'))
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
