//! The trait every distribution implements. A distribution writes its own
//! network and init configuration; hostname, hosts, DNS, time zone,
//! passwords, SSH keys and the order of the hooks are shared and written
//! once here, in provided methods (upstream's `Setup::Base`).

use super::{alpine, archlinux, centos, debian, devuan, fedora, gentoo, nixos, openeuler};
use super::{base, detect, CtRoot, Result, SetupError};
use super::{suse, ubuntu, unmanaged};

/// SSH host key types made at creation: `ssh-keygen -t` type and file name.
pub(crate) type HostKeyTypes = &'static [(&'static str, &'static str)];

const DEFAULT_HOST_KEYS: HostKeyTypes = &[
    ("rsa", "ssh_host_rsa_key"),
    ("ecdsa", "ssh_host_ecdsa_key"),
    ("ed25519", "ssh_host_ed25519_key"),
];

/// One distribution's setup code.
pub(crate) trait Distro {
    /// The ostype name (`debian`, `alpine`, ...).
    fn ostype(&self) -> &'static str;

    /// Init system configuration: ttys, inittab, systemd presets.
    fn setup_init(&self, ct: &CtRoot) -> Result<()>;

    /// The guest's network configuration files.
    fn setup_network(&self, ct: &CtRoot) -> Result<()>;

    /// Where the consoles live below `/dev`: `lxc/` for privileged CTs,
    /// nothing for unprivileged ones or guests that cannot cope with it.
    fn devttydir(&self, ct: &CtRoot) -> &'static str {
        if ct.params.unprivileged {
            ""
        } else {
            "lxc/"
        }
    }

    /// One-time fixups of a freshly unpacked template.
    fn template_fixup(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    /// Deals with a pre-generated snakeoil TLS key shipped by a template.
    fn snakeoil_fixup(&self, _ct: &CtRoot) -> Result<()> {
        Ok(())
    }

    /// `/etc/hostname` and `/etc/hosts`.
    fn set_hostname(&self, ct: &CtRoot) -> Result<()> {
        base::set_hostname(ct)
    }

    /// `/etc/resolv.conf`.
    fn set_dns(&self, ct: &CtRoot) -> Result<()> {
        base::set_dns(ct)
    }

    /// `/etc/localtime` (and `/etc/timezone` where present).
    fn set_timezone(&self, ct: &CtRoot) -> Result<()> {
        base::set_timezone(ct)
    }

    /// The password field of `user` in `/etc/shadow` (or `/etc/passwd`).
    fn set_user_password(&self, ct: &CtRoot, user: &str, hash: Option<&str>) -> Result<()> {
        base::set_user_password(ct, user, hash)
    }

    /// Appends `keys` to `user`'s `~/.ssh/authorized_keys`.
    fn set_user_authorized_ssh_keys(&self, ct: &CtRoot, user: &str, keys: &str) -> Result<()> {
        base::set_user_authorized_ssh_keys(ct, user, keys)
    }

    /// Which SSH host keys to create at creation time.
    fn ssh_host_key_types(&self) -> HostKeyTypes {
        DEFAULT_HOST_KEYS
    }

    /// Before every start.
    fn pre_start(&self, ct: &CtRoot) -> Result<()> {
        // skips fsck, among other things
        ct.set("/fastboot", "", None)?;
        self.setup_init(ct)?;
        self.setup_network(ct)?;
        self.set_hostname(ct)?;
        self.set_dns(ct)?;
        self.set_timezone(ct)
    }

    /// Once, after the rootfs was created.
    fn post_create(&self, ct: &CtRoot, password: Option<&str>, keys: Option<&str>) -> Result<()> {
        base::clear_machine_id(ct, false)?;
        self.snakeoil_fixup(ct)?;
        self.template_fixup(ct)?;
        base::randomize_crontab(ct)?;
        self.set_user_password(ct, "root", password)?;
        if let Some(keys) = keys.filter(|k| !k.is_empty()) {
            self.set_user_authorized_ssh_keys(ct, "root", keys)?;
        }
        self.setup_init(ct)?;
        self.setup_network(ct)?;
        self.set_hostname(ct)?;
        self.set_dns(ct)?;
        self.set_timezone(ct)
    }

    /// Once, after the rootfs was cloned from another CT.
    fn post_clone(&self, ct: &CtRoot) -> Result<()> {
        base::clear_machine_id(ct, true)
    }
}

/// The setup code for the rootfs of `ct`: detected from the rootfs unless
/// the config says `unmanaged`.
pub(crate) fn for_rootfs(ct: &CtRoot) -> Result<Box<dyn Distro>> {
    let os_release = detect::os_release(&ct.fs)?;
    let ostype = if ct.params.ostype.as_deref() == Some("unmanaged") {
        "unmanaged".to_string()
    } else {
        let found = detect::autodetect(&ct.fs, &os_release)?;
        if let Some(expected) = ct.params.ostype.as_deref() {
            if expected != found {
                if !ct.fs.exists("/etc") {
                    tracing::warn!("/etc not present in CT, is the rootfs mounted?");
                }
                tracing::warn!("got unexpected ostype ({found} != {expected})");
            }
        }
        found
    };
    let distro: Box<dyn Distro> = match ostype.as_str() {
        "alpine" => Box::new(alpine::Alpine::new(ct)?),
        "archlinux" => Box::new(archlinux::ArchLinux),
        "centos" => Box::new(centos::CentOS::new(ct)?),
        "debian" => Box::new(debian::Debian::new(ct)?),
        "devuan" => Box::new(devuan::new(ct)?),
        "fedora" => Box::new(fedora::Fedora::new(&os_release)?),
        "gentoo" => Box::new(gentoo::Gentoo::new(ct)?),
        "nixos" => Box::new(nixos::NixOS),
        "openeuler" => Box::new(openeuler::OpenEuler::new(&os_release)?),
        "opensuse" => Box::new(suse::Suse::new(&os_release)?),
        "ubuntu" => Box::new(ubuntu::Ubuntu::new(ct)?),
        "unmanaged" => Box::new(unmanaged::Unmanaged),
        other => return Err(SetupError::NoSuchOstype(other.to_string())),
    };
    tracing::debug!("container OS setup as '{}'", distro.ostype());
    Ok(distro)
}
