//! Real PAM: a throwaway local user authenticates; a wrong password does not.

use oxve_access::pam;
use std::process::Command;

#[test]
fn pam_accepts_the_right_password_only() {
    if !nix_is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "the PAM test needs root in CI"
        );
        eprintln!("skipping: the PAM test needs root");
        return;
    }
    let user = format!("oxvepam{}", std::process::id() % 100000);
    let ok = Command::new("useradd")
        .args(["-M", "-s", "/usr/sbin/nologin", &user])
        .status()
        .unwrap();
    assert!(ok.success(), "useradd failed");
    let guard = Cleanup(user.clone());
    let mut chpasswd = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}:Right-pass-1\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success());
    assert!(pam::authenticate(pam::service(), &user, "Right-pass-1").is_ok());
    assert!(pam::authenticate(pam::service(), &user, "wrong").is_err());
    assert!(pam::authenticate(pam::service(), "no-such-user-oxve", "x").is_err());
    drop(guard);
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}
