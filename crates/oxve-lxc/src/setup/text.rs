//! Small text rules the setup code depends on to produce upstream's exact
//! file contents: how Perl splits lines and reads numbers, IP address
//! checks, and the `drand48` generator behind the cron minutes.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Lines of `text` as Perl's `split(/\n/, $text)` returns them: trailing
/// empty lines are dropped.
pub(crate) fn perl_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// `join("\n", @lines) . "\n"`.
pub(crate) fn join_lines<S: AsRef<str>>(lines: &[S]) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(l.as_ref());
    }
    out.push('\n');
    out
}

/// The numeric value Perl gives a string (`"8.3 (Final)"` → 8.3, `"x"` → 0).
pub(crate) fn perl_num(s: &str) -> f64 {
    let s = s.trim_start();
    let mut end = 0;
    let mut seen_dot = false;
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' => end = i + 1,
            '.' if !seen_dot => seen_dot = true,
            '+' | '-' if i == 0 => {}
            _ => break,
        }
    }
    s[..end].parse().unwrap_or(0.0)
}

/// Upstream's `at_least($version, $major, $minor)` on a version string.
pub(crate) fn at_least(version: &str, want_major: u64, want_minor: u64) -> bool {
    let digits = |s: &str| -> Option<(u64, usize)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        s[..n].parse().ok().map(|v| (v, n))
    };
    let Some((major, n)) = digits(version) else {
        return false;
    };
    let minor = version[n..]
        .strip_prefix('.')
        .and_then(digits)
        .map(|(m, _)| m);
    want_major < major
        || (want_major == major
            && match minor {
                None => want_minor == 0,
                Some(m) => want_minor <= m,
            })
}

/// `ADDRESS/PREFIX` of an IPv4 CIDR with a prefix of 8 to 32, as the
/// address and the dotted netmask (upstream's `parse_ipv4_cidr`).
pub(crate) fn parse_ipv4_cidr(cidr: &str) -> Option<(String, String)> {
    let (addr, prefix) = cidr.split_once('/')?;
    addr.parse::<Ipv4Addr>().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if !(8..=32).contains(&prefix) {
        return None;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((addr.to_string(), Ipv4Addr::from(mask).to_string()))
}

/// `ADDRESS/PREFIX` of an IPv6 CIDR, split.
pub(crate) fn parse_ipv6_cidr(cidr: &str) -> Option<(String, String)> {
    let (addr, prefix) = cidr.split_once('/')?;
    addr.parse::<Ipv6Addr>().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((addr.to_string(), prefix.to_string()))
}

/// Whether `ip` lies in the network of `cidr` (upstream's
/// `is_ip_in_cidr`); anything unparsable, or of the other family, is not.
pub(crate) fn is_ip_in_cidr(ip: &str, cidr: &str, v6: bool) -> bool {
    let Some((net, prefix)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u32>() else {
        return false;
    };
    if v6 {
        let (Ok(ip), Ok(net)) = (ip.parse::<Ipv6Addr>(), net.parse::<Ipv6Addr>()) else {
            return false;
        };
        if prefix > 128 {
            return false;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        u128::from(ip) & mask == u128::from(net) & mask
    } else {
        let (Ok(ip), Ok(net)) = (ip.parse::<Ipv4Addr>(), net.parse::<Ipv4Addr>()) else {
            return false;
        };
        if prefix > 32 {
            return false;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        u32::from(ip) & mask == u32::from(net) & mask
    }
}

/// The 48-bit linear congruential generator of `drand48(3)`, which Perl's
/// `rand()` uses; `srand(s)` there is `Drand48::new(s)` here.
pub(crate) struct Drand48 {
    x: u64,
}

impl Drand48 {
    const A: u64 = 0x5_DEEC_E66D;
    const C: u64 = 0xB;
    const MASK: u64 = (1 << 48) - 1;

    pub fn new(seed: u64) -> Drand48 {
        Drand48 {
            x: (((seed & 0xffff_ffff) << 16) | 0x330E) & Self::MASK,
        }
    }

    /// The next value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.x = (Self::A.wrapping_mul(self.x).wrapping_add(Self::C)) & Self::MASK;
        self.x as f64 / (1u64 << 48) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_split_drops_trailing_empty_lines() {
        assert_eq!(perl_lines("a\n\nb\n\n\n"), vec!["a", "", "b"]);
        assert!(perl_lines("").is_empty());
        assert_eq!(join_lines(&["a", "b"]), "a\nb\n");
    }

    #[test]
    fn numbers_and_versions() {
        assert_eq!(perl_num("8.3"), 8.3);
        assert_eq!(perl_num("17.10"), 17.1);
        assert_eq!(perl_num("20170729"), 20170729.0);
        assert_eq!(perl_num("abc"), 0.0);
        assert!(at_least("3.13.1", 3, 13));
        assert!(!at_least("3.8.0", 3, 13));
        assert!(at_least("11", 10, 0));
        assert!(!at_least("7", 10, 0));
        assert!(at_least("12", 12, 0));
    }

    #[test]
    fn cidr_helpers() {
        assert_eq!(
            parse_ipv4_cidr("192.168.3.102/20"),
            Some(("192.168.3.102".into(), "255.255.240.0".into()))
        );
        assert_eq!(parse_ipv4_cidr("1.2.3.4/7"), None);
        assert!(is_ip_in_cidr("1.2.3.1", "1.2.3.4/24", false));
        assert!(!is_ip_in_cidr("11.0.0.1", "10.0.0.100/32", false));
        assert!(is_ip_in_cidr("fe80::1", "fe80::/10", true));
        assert!(!is_ip_in_cidr("fc00:1::ff", "fc00::1/64", true));
        assert!(is_ip_in_cidr("2001:1::ffff", "2001:1::/64", true));
        assert!(!is_ip_in_cidr("2001:1::ffff", "2001:1::/64", false));
    }

    #[test]
    fn drand48_seeded_zero_gives_perls_cron_minutes() {
        let mut r = Drand48::new(0);
        let mins: Vec<u32> = (0..4).map(|_| (r.next_f64() * 59.0) as u32).collect();
        assert_eq!(mins, vec![10, 44, 5, 51]);
    }
}
