//! Which distribution and architecture a rootfs holds, found as upstream
//! finds them: `/etc/os-release` first, then marker files; the ELF header
//! of `/bin/sh` for the architecture.

use std::collections::HashMap;
use std::path::Path;

use super::rootfs::Rootfs;
use super::{CtRoot, Result, SetupError, SetupParams};

/// The variables of an `os-release` file.
pub(crate) type OsRelease = HashMap<String, String>;

/// The ostypes that have setup code.
const OSTYPES: &[&str] = &[
    "alpine",
    "archlinux",
    "centos",
    "debian",
    "devuan",
    "fedora",
    "gentoo",
    "openeuler",
    "opensuse",
    "ubuntu",
    "nixos",
    "unmanaged",
];

/// `os-release` IDs of related flavours and the ostype that handles them.
const ALIASES: &[(&str, &str)] = &[
    ("opensuse-leap", "opensuse"),
    ("opensuse-tumbleweed", "opensuse"),
    ("opensuse-slowroll", "opensuse"),
    ("openEuler", "openeuler"),
    ("arch", "archlinux"),
    ("sles", "opensuse"),
    ("rocky", "centos"),
    ("almalinux", "centos"),
];

/// The distribution of the rootfs at `rootfs`, as an ostype name
/// (`debian`, `ubuntu`, `alpine`, ..., or `unmanaged` for a rootfs with no
/// `os-release` and no marker file, like a plain busybox tree).
///
/// Fails with [`SetupError::UnknownOs`] when `/etc/os-release` exists but
/// neither it nor any marker file names a known distribution.
pub fn detect_ostype(rootfs: &Path) -> std::result::Result<String, SetupError> {
    let params = SetupParams::default();
    let ct = CtRoot::open(rootfs, &params)?;
    let os_release = os_release(&ct.fs)?;
    autodetect(&ct.fs, &os_release)
}

/// The architecture of the rootfs at `rootfs` (`amd64`, `i386`, `arm64`,
/// `armhf`, `riscv32`, `riscv64`), from the ELF header of `/bin/sh`
/// (symlinks followed inside the rootfs only). A rootfs without `/bin/sh`
/// (NixOS before its first boot) is judged by the interpreter that the
/// `#!` line of `/sbin/init` names.
pub fn detect_arch(rootfs: &Path) -> std::result::Result<String, SetupError> {
    let params = SetupParams::default();
    let ct = CtRoot::open(rootfs, &params)?;
    let fs = &ct.fs;
    if !fs.exists("/bin/sh") && !fs.is_symlink("/bin/sh") {
        if let Some(init) = fs.read_bytes("/sbin/init", Some(4096))? {
            let first = init.split(|b| *b == b'\n').next().unwrap_or_default();
            if let Some(rest) = first.strip_prefix(b"#!") {
                let rest = String::from_utf8_lossy(rest);
                let shell = rest.trim_start_matches(' ').split_whitespace().next();
                if let Some(shell) = shell {
                    return elf_arch(fs, shell);
                }
            }
            return Err(SetupError::Arch("could not find a shell".into()));
        }
    }
    elf_arch(fs, "/bin/sh")
}

fn elf_arch(fs: &Rootfs, path: &str) -> Result<String> {
    let header = fs
        .read_bytes(path, Some(20))
        .map_err(|e| SetupError::Arch(format!("open '{path}' failed: {}", e.source)))?
        .ok_or_else(|| {
            SetupError::Arch(format!("open '{path}' failed: No such file or directory"))
        })?;
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return Err(SetupError::Arch(format!(
            "'{path}' does not resolve to an ELF!"
        )));
    }
    let class = header[4];
    let machine = match header[5] {
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => u16::from_le_bytes([header[18], header[19]]),
    };
    Ok(match machine {
        0x03 => "i386",
        0x3e => "amd64",
        0x28 => "armhf",
        0xb7 => "arm64",
        0xf3 => match class {
            1 => "riscv32",
            2 => "riscv64",
            c => {
                return Err(SetupError::Arch(format!(
                    "'{path}' has invalid class '{c}'!"
                )))
            }
        },
        m => {
            return Err(SetupError::Arch(format!(
                "'{path}' has unknown ELF machine '{m}'!"
            )))
        }
    }
    .to_string())
}

/// The CT's `/etc/os-release` (or `/usr/lib/os-release`), parsed; empty
/// when it has neither.
pub(crate) fn os_release(fs: &Rootfs) -> Result<OsRelease> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if fs.is_file(path) {
            let data = fs.read_bytes(path, None)?.unwrap_or_default();
            return Ok(parse_os_release(&String::from_utf8_lossy(&data)));
        }
    }
    Ok(OsRelease::new())
}

/// Parses `os-release(5)` text as upstream does: quoted values with the
/// shell escapes `\" \' \` \$ \\ \n \t`, unquoted values up to the first
/// character that is not a letter or digit.
pub(crate) fn parse_os_release(data: &str) -> OsRelease {
    let mut vars = OsRelease::new();
    for line in data.lines().filter(|l| !l.is_empty()) {
        let line = line.trim_start();
        let Some((var, content)) = line.split_once('=') else {
            continue;
        };
        let valid_name = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            continue;
        }
        let value = if let Some(rest) = content.strip_prefix('\'') {
            match rest.find('\'') {
                Some(end) => rest[..end].to_string(),
                None => unquoted(content),
            }
        } else if let Some(rest) = content.strip_prefix('"') {
            double_quoted(rest).unwrap_or_else(|| unquoted(content))
        } else {
            unquoted(content)
        };
        vars.insert(var.to_string(), value);
    }
    vars
}

fn unquoted(content: &str) -> String {
    content
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// The value of a `"..."` string (`rest` follows the opening quote);
/// `None` when it is not closed.
fn double_quoted(rest: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => {
                let next = chars.next()?;
                match next {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    '"' | '\'' | '`' | '$' | '\\' => out.push(next),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// Upstream's detection order: the `os-release` ID (or an alias), then
/// marker files.
pub(crate) fn autodetect(fs: &Rootfs, os_release: &OsRelease) -> Result<String> {
    if let Some(id) = os_release.get("ID") {
        if OSTYPES.contains(&id.as_str()) {
            return Ok(id.clone());
        }
        if let Some((_, ostype)) = ALIASES.iter().find(|(alias, _)| alias == id) {
            return Ok(ostype.to_string());
        }
        tracing::warn!("unknown ID '{id}' in /etc/os-release file, trying fallback detection");
    }

    if fs.is_file("/etc/lsb-release") {
        let data = fs.read_bytes("/etc/lsb-release", None)?.unwrap_or_default();
        let data = String::from_utf8_lossy(&data);
        if data
            .lines()
            .any(|l| l.eq_ignore_ascii_case("DISTRIB_ID=Ubuntu"))
        {
            return Ok("ubuntu".into());
        }
    }

    let markers: &[(&[&str], &str)] = &[
        (&["/etc/debian_version"], "debian"),
        (&["/etc/devuan_version"], "devuan"),
        (&["/etc/SuSE-brand", "/etc/SuSE-release"], "opensuse"),
        (&["/etc/fedora-release"], "fedora"),
        (&["/etc/centos-release", "/etc/redhat-release"], "centos"),
        (&["/etc/arch-release"], "archlinux"),
        (&["/etc/alpine-release"], "alpine"),
        (&["/etc/gentoo-release"], "gentoo"),
    ];
    for (files, ostype) in markers {
        if files.iter().any(|f| fs.is_file(f)) {
            return Ok(ostype.to_string());
        }
    }
    if fs.is_dir("/nix/store") {
        return Ok("nixos".into());
    }
    if fs.is_file("/etc/openEuler-release") {
        return Ok("openeuler".into());
    }
    if fs.is_file("/etc/os-release") {
        return Err(SetupError::UnknownOs);
    }
    tracing::warn!(
        "/etc/os-release file not found and autodetection failed, falling back to 'unmanaged'"
    );
    Ok("unmanaged".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values() {
        let v = parse_os_release(
            "NAME=\"openSUSE Leap\"\nID=opensuse\n# VERSION=\"1\"\nX='a b'\n\
             ESC=\"a\\\"b\\$c\\n\"\nHOME=\"https://x/\nPART=ab-c\n",
        );
        assert_eq!(v["NAME"], "openSUSE Leap");
        assert_eq!(v["ID"], "opensuse");
        assert!(!v.contains_key("VERSION"));
        assert_eq!(v["X"], "a b");
        assert_eq!(v["ESC"], "a\"b$c\n");
        assert_eq!(v["HOME"], "");
        assert_eq!(v["PART"], "ab");
    }
}
