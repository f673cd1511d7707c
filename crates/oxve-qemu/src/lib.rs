//! QEMU virtual machines: turning a VM config into QEMU's command line
//! (`cmdline`) and talking to a running QEMU (`qmp`). Later: lifecycle,
//! snapshots, migration.

pub mod cmdline;
pub mod error;
pub mod qmp;

pub use error::CmdlineError;
