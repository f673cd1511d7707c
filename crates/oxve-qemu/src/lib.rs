//! QEMU virtual machines: turning a VM config into QEMU's command line
//! (`cmdline`), probing the host for it (`probe`), running QEMU processes
//! (`host`) and talking to them (`qmp`).

pub mod cloudinit;
pub mod cmdline;
pub mod error;
pub mod host;
pub mod probe;
pub mod qga;
pub mod qmp;
pub mod readconfig;

pub use error::CmdlineError;
