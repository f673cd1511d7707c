//! The error type of the disks crate.

/// A disks crate result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when looking at local disks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/sys/block` could not be listed.
    #[error("unable to list /sys/block: {0}")]
    ListBlockDevices(#[source] std::io::Error),
    /// A path that is not a block device under `/dev`.
    #[error("'{0}' is not a valid block device")]
    NotABlockDevice(String),
    /// A tool the request needs is not installed on the host.
    #[error("'{0}' is not installed (install the package that provides it)")]
    ToolMissing(&'static str),
    /// `smartctl` could not be run or did not finish.
    #[error("Error getting S.M.A.R.T. data: {0}")]
    Smart(#[source] std::io::Error),
    /// `smartctl` exited with one of its fatal status bits (0 or 1) set,
    /// e.g. the device could not be opened.
    #[error("Error getting S.M.A.R.T. data: Exit code: {0}")]
    SmartExitCode(i32),
}
