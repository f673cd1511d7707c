//! QEMU virtual machines: turning a VM config into QEMU's command line
//! (`cmdline`). Later: the QMP client, lifecycle, snapshots, migration.

pub mod cmdline;
pub mod error;

pub use error::CmdlineError;
