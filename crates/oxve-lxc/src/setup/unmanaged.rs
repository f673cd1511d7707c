//! `ostype: unmanaged`: the guest configures itself; nothing in its
//! rootfs is touched (a plain busybox tree is detected as this).

use super::plugin::{Distro, HostKeyTypes};
use super::{CtRoot, Result};

/// A guest whose OS setup is left to the user.
pub(crate) struct Unmanaged;

impl Distro for Unmanaged {
    fn ostype(&self) -> &'static str {
        "unmanaged"
    }

    fn setup_init(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    fn setup_network(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    fn ssh_host_key_types(&self) -> HostKeyTypes {
        &[]
    }

    fn pre_start(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    fn post_create(&self, _ct: &CtRoot, _pw: Option<&str>, _keys: Option<&str>) -> Result<()> {
        Ok(())
    }

    fn post_clone(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }
}
