//! Errors of this crate.

/// Why a command line could not be generated. The text is upstream's
/// message without its final newline, so callers can show it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// The configuration (or the host) does not allow this VM to run.
    #[error("{0}")]
    Config(String),
    /// A part of the configuration this generator does not handle yet.
    #[error("not implemented: {0}")]
    Unsupported(String),
}

/// Shorthand for a configuration error with upstream's text.
pub(crate) fn cfg_err<T>(msg: impl Into<String>) -> Result<T, CmdlineError> {
    Err(CmdlineError::Config(msg.into()))
}
