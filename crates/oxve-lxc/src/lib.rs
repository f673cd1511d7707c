//! Containers: a CT config (`lxc/<vmid>.conf`) turned into an LXC config,
//! the OS setup of a container's root filesystem, and the lifecycle with
//! real LXC (`lxc-start`, `lxc-stop`, `lxc-info`, `lxc-attach`).

pub mod cmdsock;
pub mod create;
pub mod error;
pub mod host;
pub mod hotplug;
pub mod idmap;
mod inroot;
pub mod lxcconf;
pub mod model;
pub mod mount;
pub mod net;
pub mod setup;
pub mod stats;

pub use error::LxcError;
pub use model::Ct;
