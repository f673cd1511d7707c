//! Alpine Linux: busybox ifupdown (Debian's file format), OpenRC runlevel
//! links, busybox inittab gettys.

use std::sync::LazyLock;

use regex::Regex;

use super::base::{self, re};
use super::plugin::Distro;
use super::text::{at_least, join_lines, perl_lines};
use super::{ifupdown, CtRoot, Result};

static GETTY_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*tty\d+:\d*:[^:]*:.*getty"));

/// An Alpine release (first line of `/etc/alpine-release`).
pub(crate) struct Alpine {
    version: String,
}

impl Alpine {
    pub fn new(ct: &CtRoot) -> Result<Alpine> {
        let version = ct
            .fs
            .read_first_line("/etc/alpine-release")?
            .unwrap_or_default();
        Ok(Alpine { version })
    }
}

impl Distro for Alpine {
    fn ostype(&self) -> &'static str {
        "alpine"
    }

    /// Alpine does not support the `/dev/lxc/` subdirectory.
    fn devttydir(&self, _ct: &CtRoot) -> &'static str {
        ""
    }

    fn template_fixup(&self, ct: &CtRoot) -> Result<()> {
        for (service, runlevel) in [
            // networking, and the links some templates lack
            ("networking", "boot"),
            ("bootmisc", "boot"),
            ("hostname", "boot"),
            // a clean shutdown
            ("killprocs", "shutdown"),
            ("savecache", "shutdown"),
        ] {
            ct.symlink(
                &format!("/etc/init.d/{service}"),
                &format!("/etc/runlevels/{runlevel}/{service}"),
            )?;
        }
        base::setup_securetty(ct, self.devttydir(ct), &[])?;
        base::remove_lxc_name_from_etc_hosts(ct)
    }

    fn setup_init(&self, ct: &CtRoot) -> Result<()> {
        let file = "/etc/inittab";
        if !ct.fs.is_file(file) {
            return Ok(());
        }
        let old = ct.get(file)?;
        let lines: Vec<&str> = perl_lines(&old)
            .into_iter()
            .filter(|l| !GETTY_RE.is_match(l))
            .collect();
        let mut inittab = join_lines(&lines);
        for id in (1..=ct.tty_count()).filter(|id| *id != 7) {
            inittab.push_str(&format!("tty{id}::respawn:/sbin/getty 38400 tty{id}\n"));
        }
        ct.set(file, &inittab, None)
    }

    fn setup_network(&self, ct: &CtRoot) -> Result<()> {
        // busybox has no working DHCPv6 client and no SLAAC method: those
        // NICs are left for the user to configure ('manual')
        let nets: Vec<_> = ct
            .params
            .nets
            .iter()
            .map(|n| {
                let mut n = n.clone();
                if matches!(n.ip6.as_deref(), Some("dhcp" | "auto")) {
                    n.ip6 = Some("manual".into());
                }
                n
            })
            .collect();
        ifupdown::setup_network(ct, &nets, at_least(&self.version, 3, 13))
    }
}
