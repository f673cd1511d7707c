//! Errors at the API edge, shaped as upstream answers them.

use http::StatusCode;
use std::collections::BTreeMap;

/// An error answer: HTTP status, message (its first line becomes the HTTP
/// reason phrase) and, for parameter errors, a message per parameter.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: None,
        }
    }

    /// 400 with upstream's `Parameter verification failed.` and per-parameter messages.
    pub fn params(errors: BTreeMap<String, String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }

    /// 400 for a single parameter.
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), message.into())]))
    }

    /// A generic failure of the operation (upstream's `die` → HTTP 500).
    pub fn fail(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 `Permission check failed` as upstream.
    pub fn forbidden(detail: impl AsRef<str>) -> Self {
        let detail = detail.as_ref();
        let message = if detail.is_empty() {
            "Permission check failed".to_string()
        } else {
            format!("Permission check failed ({detail})")
        };
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 501 for a path or method this build does not implement.
    pub fn not_implemented(verb: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Method '{verb} {path}' not implemented"),
        )
    }

    /// 501 for a feature of an implemented method that this build lacks.
    pub fn not_implemented_msg(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(errors) = &self.errors {
            for (k, v) in errors {
                write!(f, "\n{k}: {v}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl From<oxve_config::ConfigError> for ApiError {
    fn from(e: oxve_config::ConfigError) -> Self {
        ApiError::fail(e.to_string())
    }
}

impl From<oxve_tasks::TaskError> for ApiError {
    fn from(e: oxve_tasks::TaskError) -> Self {
        ApiError::fail(e.to_string())
    }
}

impl From<oxve_access::AccessError> for ApiError {
    fn from(e: oxve_access::AccessError) -> Self {
        ApiError::fail(e.to_string())
    }
}

impl From<oxve_storage::StorageError> for ApiError {
    fn from(e: oxve_storage::StorageError) -> Self {
        use oxve_storage::StorageError as E;
        match &e {
            E::Option { key, message } => ApiError::param(key, message.clone()),
            E::BadVolume { .. } => ApiError::bad_request(e.to_string()),
            _ => ApiError::fail(e.to_string()),
        }
    }
}
