//! Setup steps every distribution shares (upstream's `Setup::Base`):
//! the marked `# --- BEGIN PVE ---` sections, hostname and `/etc/hosts`,
//! `resolv.conf`, the time zone, root's password and SSH keys, cron
//! minutes, the machine id and the console list in `/etc/securetty`.

use std::sync::LazyLock;

use regex::Regex;

use super::text::{join_lines, perl_lines, Drand48};
use super::{CtRoot, Result, SetupError};

pub(crate) const PVE_HEAD: &str = "# --- BEGIN PVE ---\n";
pub(crate) const PVE_TAIL: &str = "# --- END PVE ---\n";

static BEGIN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^#\s*---\s*BEGIN\s*PVE\s*"));
static END_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^#\s*---\s*END\s*PVE\s*"));
static LO4_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^[ \t]*127\.0\.0\.1[ \t]+"));
static LO6_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^[ \t]*::1[ \t]+"));
static LXC_NAME_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^127.0.1.1\s+LXC_NAME$"));
static CRON_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\d+(\s+\S+\s+\S+\s+\S+\s+\S+\s+root\s+\S.*)$"));
static HASH_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^\$[0-9a-z]+\$[^:\s]+$"));

/// Compiles one of this module's fixed patterns.
pub(crate) fn re(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(r) => r,
        // The patterns are constants; a typo shows in every test run.
        Err(e) => panic!("invalid built-in pattern {pattern:?}: {e}"),
    }
}

/// How [`modify_file`] places a new marked section in a file that has none.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Modify {
    /// The section replaces the whole file.
    pub replace: bool,
    /// The section goes first (otherwise last).
    pub prepend: bool,
    /// An emptied section that was the whole file removes the file.
    pub delete: bool,
    /// Mode of a newly written file.
    pub mode: Option<u32>,
}

/// Upstream's `ct_modify_file`: puts `data` between the PVE markers of
/// `path`, replacing an existing section and leaving the rest alone.
pub(crate) fn modify_file(ct: &CtRoot, path: &str, data: &str, opts: Modify) -> Result<()> {
    if ct.fs.is_ignored(path) {
        return Ok(());
    }
    let mut data = data.to_string();
    if !data.is_empty() && !data.ends_with('\n') {
        data.push('\n');
    }
    if !ct.fs.is_file(path) {
        if !data.is_empty() {
            ct.set(path, &format!("{PVE_HEAD}{data}{PVE_TAIL}"), opts.mode)?;
        }
        return Ok(());
    }
    let old = ct.get(path)?;
    let mut lines: Vec<String> = perl_lines(&old).into_iter().map(str::to_string).collect();
    let beg = lines.iter().position(|l| BEGIN_RE.is_match(l));
    let end = beg.and_then(|b| {
        lines[b..]
            .iter()
            .position(|l| END_RE.is_match(l))
            .map(|i| b + i)
    });

    match (beg, end) {
        (Some(beg), Some(end)) => {
            let section = if !data.is_empty() {
                format!("{PVE_HEAD}{data}{}", PVE_TAIL.trim_end_matches('\n'))
            } else {
                if beg == 0 && end == lines.len() - 1 {
                    if opts.delete {
                        ct.unlink(path)?;
                    }
                    return Ok(());
                }
                format!("{PVE_HEAD}{PVE_TAIL}")
            };
            lines.splice(beg..=end, [section]);
            ct.set(path, &join_lines(&lines), None)
        }
        _ if !data.is_empty() => {
            let mut content = lines.join("\n");
            if content.ends_with('\n') {
                content.pop();
            }
            content.push('\n');
            let section = format!("{PVE_HEAD}{data}{PVE_TAIL}");
            let text = if opts.replace {
                section
            } else if opts.prepend {
                section + &content
            } else {
                content + &section
            };
            ct.set(path, &text, opts.mode)
        }
        _ => Ok(()),
    }
}

/// `data` without the PVE sections: from the first BEGIN line to the end
/// of the last END line (upstream's greedy `remove_pve_sections`).
pub(crate) fn remove_pve_sections(data: &str) -> String {
    let line_starts = std::iter::once(0).chain(data.match_indices('\n').map(|(i, _)| i + 1));
    let starts_with = |pos: usize, marker: &str| {
        data[pos..]
            .trim_start_matches([' ', '\t'])
            .starts_with(marker.trim_end_matches('\n'))
    };
    let Some(beg) = line_starts.clone().find(|&p| starts_with(p, PVE_HEAD)) else {
        return data.to_string();
    };
    let Some(tail) = line_starts
        .rev()
        .find(|&p| p > beg && starts_with(p, PVE_TAIL))
    else {
        return data.to_string();
    };
    let end = data[tail..].find('\n').map_or(data.len(), |i| tail + i);
    format!("{}{}", &data[..beg], &data[end..])
}

/// Upstream's `split_list` over a list: every element split at commas,
/// semicolons and whitespace.
pub(crate) fn split_list(items: &[String]) -> Vec<&str> {
    items
        .iter()
        .flat_map(|s| s.split([',', ';', ' ', '\t', '\n']))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Writes the PVE section of `/etc/hosts`: localhost entries the file
/// lacks and the CT's own name.
pub(crate) fn update_etc_hosts(ct: &CtRoot, hostip: Option<&str>, newname: &str) -> Result<()> {
    let hosts = "/etc/hosts";
    if ct.fs.is_ignored(hosts) {
        return Ok(());
    }
    let namepart = newname.split('.').next().unwrap_or(newname);
    let all_names = if newname.contains('.') {
        format!("{newname} {namepart}")
    } else {
        let mut names: Vec<String> = split_list(&ct.params.searchdomains)
            .iter()
            .map(|d| format!("{newname}.{d}"))
            .collect();
        names.push(newname.to_string());
        names.join(" ")
    };

    let lo4 = "127.0.0.1 localhost.localnet localhost\n";
    let lo6 = "::1 localhost.localnet localhost\n";
    let mut section = String::new();
    if ct.fs.is_file(hosts) {
        let data = remove_pve_sections(&ct.get(hosts)?);
        if !LO4_RE.is_match(&data) {
            section.push_str(lo4);
        }
        if !LO6_RE.is_match(&data) {
            section.push_str(lo6);
        }
    } else {
        section.push_str(lo4);
        section.push_str(lo6);
    }
    match hostip {
        Some(ip) => section.push_str(&format!("{ip} {all_names}\n")),
        None if namepart != "localhost" => section.push_str(&format!("127.0.1.1 {all_names}\n")),
        None => section.push_str(&format!("127.0.1.1 {namepart}\n")),
    }
    modify_file(ct, hosts, &section, Modify::default())
}

/// `/etc/hosts` and `/etc/hostname` (the short name).
pub(crate) fn set_hostname(ct: &CtRoot) -> Result<()> {
    let hostname = ct.hostname();
    let namepart = hostname.split('.').next().unwrap_or(hostname);
    update_etc_hosts(ct, ct.primary_ip().as_deref(), hostname)?;
    ct.set("/etc/hostname", &format!("{namepart}\n"), None)
}

/// The PVE section of `/etc/resolv.conf`, replacing any other content.
pub(crate) fn set_dns(ct: &CtRoot) -> Result<()> {
    let mut data = String::new();
    let search = split_list(&ct.params.searchdomains);
    if !search.is_empty() {
        data.push_str(&format!("search {}\n", search.join(" ")));
    }
    for ns in split_list(&ct.params.nameservers) {
        data.push_str(&format!("nameserver {ns}\n"));
    }
    let opts = Modify {
        replace: true,
        ..Modify::default()
    };
    modify_file(ct, "/etc/resolv.conf", &data, opts)
}

/// The host's time zone: the file `/etc/localtime` resolves to and the
/// zone name below `zoneinfo/`.
fn host_localtime() -> Option<(String, String)> {
    let path = std::fs::canonicalize("/etc/localtime").ok()?;
    let path = path.to_str()?.to_string();
    let name = path.split_once("zoneinfo/")?.1.to_string();
    Some((path, name))
}

/// Points `/etc/localtime` at the configured zone (and writes
/// `/etc/timezone` where the guest has one).
pub(crate) fn set_timezone(ct: &CtRoot) -> Result<()> {
    let Some(zone) = ct.params.timezone.as_deref() else {
        return Ok(());
    };
    let (tz_path, zone_name) = if zone == "host" {
        match host_localtime() {
            Some(found) => found,
            None => {
                tracing::warn!("invalid host /etc/localtime, timezone can not be modified");
                return Ok(());
            }
        }
    } else {
        (format!("/usr/share/zoneinfo/{zone}"), zone.to_string())
    };
    if !ct.fs.is_file(&tz_path) {
        tracing::warn!("container does not have {tz_path}, timezone can not be modified");
        return Ok(());
    }
    if ct.fs.canonical("/etc/localtime").as_deref() != Some(tz_path.as_str()) {
        let tmp = format!("/etc/localtime.{}.new.tmpfile", std::process::id());
        ct.unlink(&tmp)?;
        ct.symlink(&tz_path, &tmp)?;
        ct.fs.rename(&tmp, "/etc/localtime")?;
    }
    if ct.fs.is_file("/etc/timezone") {
        ct.set("/etc/timezone", &format!("{zone_name}\n"), None)?;
    }
    Ok(())
}

/// Sets `user`'s password hash in `/etc/shadow` (`x` in `/etc/passwd`),
/// or in `/etc/passwd` when there is no shadow file. No hash locks the
/// account with `*`, as upstream does for a CT created without password.
pub(crate) fn set_user_password(ct: &CtRoot, user: &str, hash: Option<&str>) -> Result<()> {
    let passwd = "/etc/passwd";
    if !ct.fs.is_file(passwd) {
        return Ok(());
    }
    let epw = match hash {
        Some(h) if HASH_RE.is_match(h) => h,
        Some(_) => return Err(SetupError::InvalidPasswordHash),
        None => "*",
    };
    let shadow = "/etc/shadow";
    if ct.fs.is_file(shadow) {
        replace_password(ct, shadow, user, epw, true)?;
        replace_password(ct, passwd, user, "x", false)
    } else {
        replace_password(ct, passwd, user, epw, false)
    }
}

fn replace_password(ct: &CtRoot, file: &str, user: &str, epw: &str, shadow: bool) -> Result<()> {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86400);
    let prefix = format!("{user}:");
    let mut out = String::new();
    for line in ct.get(file)?.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let fields = body
            .strip_prefix(&prefix)
            .map(|rest| rest.splitn(3, ':').collect::<Vec<_>>());
        match fields {
            Some(f) if shadow && f.len() == 3 => {
                out.push_str(&format!("{prefix}{epw}:{days}:{}{nl}", f[2]));
            }
            Some(f) if !shadow && f.len() >= 2 => {
                let rest = body[prefix.len() + f[0].len() + 1..].to_string();
                out.push_str(&format!("{prefix}{epw}:{rest}{nl}"));
            }
            _ => out.push_str(line),
        }
    }
    ct.set(file, &out, None)
}

/// The home directory of `user` in `/etc/passwd` (6th field).
fn home_dir(passwd: &str, user: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let rest = line.strip_prefix(user)?.strip_prefix(':')?;
        let fields: Vec<&str> = rest.split(':').collect();
        // the home field must be followed by a colon (the shell field)
        (fields.len() >= 6).then(|| fields[4].to_string())
    })
}

/// Adds `keys` to `user`'s `authorized_keys` in a PVE section.
pub(crate) fn set_user_authorized_ssh_keys(ct: &CtRoot, user: &str, keys: &str) -> Result<()> {
    let passwd = "/etc/passwd";
    let mut home = Some(if user == "root" {
        "/root/".to_string()
    } else {
        format!("/home/{user}/")
    });
    if ct.fs.is_file(passwd) {
        home = home_dir(&ct.get(passwd)?, user);
    }
    let home = match home {
        Some(h) if ct.fs.is_dir(&h) || ct.fs.is_symlink(&h) => h,
        other => {
            return Err(SetupError::NoHomeDir {
                user: user.to_string(),
                home: other.unwrap_or_default(),
            })
        }
    };
    let ssh_dir = format!("{home}/.ssh");
    if !ct.fs.is_dir(&ssh_dir) {
        ct.fs.mkdir(&ssh_dir, 0o700)?;
    }
    let opts = Modify {
        mode: Some(0o700),
        ..Modify::default()
    };
    modify_file(ct, &format!("{ssh_dir}/authorized_keys"), keys, opts)
}

/// Gives root's cron jobs random minutes, so that not every CT made from
/// one template runs them at the same time.
pub(crate) fn randomize_crontab(ct: &CtRoot) -> Result<()> {
    let mut files = Vec::new();
    if ct.fs.is_file("/etc/crontab") {
        files.push("/etc/crontab".to_string());
    }
    for name in ct.fs.list_dir("/etc/cron.d") {
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let path = format!("/etc/cron.d/{name}");
        if valid && ct.fs.is_file(&path) {
            files.push(path);
        }
    }
    let mut rng = Drand48::new(ct.params.random_seed.unwrap_or_else(os_random_seed));
    for file in files {
        let data = ct.get(&file)?;
        let mut new = String::new();
        for line in perl_lines(&data) {
            match CRON_RE.captures(line) {
                Some(c) => {
                    let min = (rng.next_f64() * 59.0) as u32;
                    new.push_str(&format!("{min}{}\n", &c[1]));
                }
                None => {
                    new.push_str(line);
                    new.push('\n');
                }
            }
        }
        ct.set(&file, &new, None)?;
    }
    Ok(())
}

fn os_random_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        u64::from_ne_bytes(buf)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

/// A new CT (or a clone) must not share its machine id with the template.
pub(crate) fn clear_machine_id(ct: &CtRoot, clone: bool) -> Result<()> {
    let uses_systemd = ct.fs.is_executable("/lib/systemd/systemd")
        || ct.fs.is_executable("/usr/lib/systemd/systemd");
    let dbus_id = "/var/lib/dbus/machine-id";
    let machine_id = "/etc/machine-id";
    let existed = ct.fs.is_file(machine_id);
    if ct.fs.is_file(dbus_id) && !ct.fs.is_symlink(dbus_id) && uses_systemd {
        ct.unlink(dbus_id)?;
    }
    if existed {
        if clone {
            let old = ct.fs.read_first_line(machine_id)?.unwrap_or_default();
            if uses_systemd && old != "uninitialized" {
                ct.set(machine_id, "\n", None)?;
            }
        } else {
            ct.unlink(machine_id)?;
        }
    }
    Ok(())
}

/// Lets root log in on the CT's consoles: adds them to `/etc/securetty`
/// where the guest has one.
pub(crate) fn setup_securetty(ct: &CtRoot, ttydir: &str, add: &[&str]) -> Result<()> {
    let file = "/etc/securetty";
    if !ct.fs.is_file(file) {
        return Ok(());
    }
    let devs: Vec<String> = if add.is_empty() {
        ["console", "tty1", "tty2", "tty3", "tty4"]
            .iter()
            .map(|d| format!("{ttydir}{d}"))
            .collect()
    } else {
        add.iter().map(|d| d.to_string()).collect()
    };
    let mut data = ct.get(file)?;
    if data.ends_with('\n') {
        data.pop();
    }
    data.push('\n');
    for dev in devs {
        let present = data.lines().any(|l| {
            l.strip_prefix(dev.as_str())
                .is_some_and(|rest| rest.chars().all(char::is_whitespace))
        });
        if !present {
            data.push_str(&dev);
            data.push('\n');
        }
    }
    ct.set(file, &data, None)
}

/// Templates from images.linuxcontainers.org have a bogus `LXC_NAME`
/// line in `/etc/hosts`.
pub(crate) fn remove_lxc_name_from_etc_hosts(ct: &CtRoot) -> Result<()> {
    let hosts = "/etc/hosts";
    if !ct.fs.exists(hosts) {
        return Ok(());
    }
    let data = ct.get(hosts)?;
    let lines: Vec<&str> = perl_lines(&data)
        .into_iter()
        .filter(|l| !LXC_NAME_RE.is_match(l))
        .collect();
    ct.set(hosts, &join_lines(&lines), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_sections_are_removed_greedily() {
        let text = "a\n# --- BEGIN PVE ---\nx\n# --- END PVE ---\nb\n  # --- END PVE --- y\nc\n";
        assert_eq!(remove_pve_sections(text), "a\n\nc\n");
        assert_eq!(remove_pve_sections("a\nb\n"), "a\nb\n");
    }

    #[test]
    fn home_dir_field() {
        let passwd = "root:x:0:0:root:/roothome:/bin/bash\nbin:x:2:2:bin:/bin:/bin/sh\n";
        assert_eq!(home_dir(passwd, "root").as_deref(), Some("/roothome"));
        assert_eq!(home_dir(passwd, "nobody"), None);
        assert_eq!(home_dir("root:x:0:0:root:/root\n", "root"), None);
    }

    #[test]
    fn lists_split_like_upstream() {
        let v = vec!["8.8.8.8,8.8.8.9".to_string(), "a; b".to_string()];
        assert_eq!(split_list(&v), vec!["8.8.8.8", "8.8.8.9", "a", "b"]);
    }
}
